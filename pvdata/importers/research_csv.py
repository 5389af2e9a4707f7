"""Import the research code's evaluation CSV (question, prompt, answer, question_id, <trait>, coherence)
as generations and judgments, so old runs can be queried next to pvdata's own."""

from __future__ import annotations

import csv
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pvdata.errors import DataError
from pvdata.warehouse import item_id

REQUIRED = ("question", "prompt", "answer", "question_id")
KNOWN = (*REQUIRED, "coherence")


@dataclass(frozen=True)
class ImportedRow:
    line: int
    question_id: str
    question: str
    prompt: str
    answer: str
    scores: dict[str, float | None]


def _score(text: str, path: Path, line: int, field: str) -> float | None:
    if text.strip() == "" or text.strip().lower() in ("nan", "none", "null"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise DataError(
            f"{path}:{line}: field {field!r} is {text[:40]!r}, not a number 0..100 or empty"
        ) from None
    if math.isnan(value):
        return None
    if not 0 <= value <= 100:
        raise DataError(f"{path}:{line}: field {field!r} is {value}, outside 0..100")
    return value


def read_research_csv(path: str | Path, trait: str | None = None) -> tuple[str, list[ImportedRow]]:
    """(trait, rows); the trait is the one score column besides coherence unless given."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    csv.field_size_limit(sys.maxsize)
    with p.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = list(reader.fieldnames or [])
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise DataError(
                f"{p}: missing column(s) {missing}; a research evaluation CSV has "
                f"question, prompt, answer, question_id, <trait>, coherence (found {header})"
            )
        extra = [c for c in header if c not in KNOWN]
        if trait is None:
            if len(extra) != 1:
                raise DataError(
                    f"{p}: cannot tell the trait column among {extra or 'no extra columns'}: pass --trait"
                )
            trait = extra[0]
        elif trait not in header:
            raise DataError(f"{p}: no column {trait!r} for the trait score (columns: {header})")
        metrics = [trait] + (["coherence"] if "coherence" in header else [])
        rows = []
        end = reader.line_num
        for record in reader:
            line, end = end + 1, reader.line_num  # the line the record starts on (fields may hold newlines)
            if any(record.get(c) is None for c in REQUIRED):
                raise DataError(f"{p}:{line}: the record has fewer fields than the header")
            rows.append(
                ImportedRow(
                    line=line,
                    question_id=record["question_id"],
                    question=record["question"],
                    prompt=record["prompt"],
                    answer=record["answer"],
                    scores={m: _score(record[m] or "", p, line, m) for m in metrics},
                )
            )
    return trait, rows


def import_rows(
    trait: str, rows: list[ImportedRow], *, source: str, model_id: str, judge_model: str
) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """(generation row, judgment rows) per CSV record, with deterministic ids."""
    per_question: dict[str, int] = {}
    for row in rows:
        sample = per_question.get(row.question_id, 0)
        per_question[row.question_id] = sample + 1
        gid = item_id("research-csv", source, row.question_id, sample, row.answer)
        generation = {
            "generation_id": gid,
            "trait": trait,
            "split": "eval",
            "polarity": "none",
            "question_id": row.question_id,
            "question": row.question,
            "system_prompt": None,
            "prompt_text": row.prompt,
            "answer": row.answer,
            "model_id": model_id,
            "adapter": None,
            "steering": None,
            "sample_index": sample,
            "seed": None,
            "n_tokens": None,
        }
        judgments = [
            {
                "judgment_id": item_id(gid, metric, judge_model),
                "generation_id": gid,
                "metric": metric,
                "judge_model": judge_model,
                "score": score,
                "valid_mass": None,
                "refusal": None,
                "error": None if score is not None else "no score in the imported file",
            }
            for metric, score in row.scores.items()
        ]
        yield generation, judgments
