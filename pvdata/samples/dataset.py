"""A screened dataset: every input record in order, and the distinct samples they hold.

Records keep their original text (the line itself for JSONL) so the screen can write them back out
untouched. Samples are deduplicated by a content hash of their canonical messages: identical records
become one sample that remembers every line it came from, so it is scored once and its copies follow its
decision.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pvdata.samples.records import Message

SAMPLE_ID_LENGTH = 16
FORMATS: tuple[str, ...] = ("jsonl", "json", "csv", "parquet", "hf", "hub")


def canonical_messages(prompt: Sequence[Message], answer: str) -> list[dict[str, str]]:
    """The full chat as plain {role, content} dicts: the answer is the final assistant turn."""
    msgs = [{"role": m["role"], "content": m["content"]} for m in prompt]
    msgs.append({"role": "assistant", "content": answer})
    return msgs


def messages_json(prompt: Sequence[Message], answer: str) -> str:
    """Canonical JSON of the chat (sorted keys, no spaces, UTF-8): what sample_id hashes."""
    return json.dumps(
        canonical_messages(prompt, answer), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )


def sample_id_of(prompt: Sequence[Message], answer: str, rejected: str | None = None) -> str:
    """`item_id(messages)`: 16 hex chars of sha256 over the canonical messages JSON (the warehouse's
    work-item id), so equal chats get equal ids whatever file or format they came from. A preference
    pair hashes its rejected answer too: the same chosen chat against another rejected answer is
    another sample."""
    from pvdata.warehouse.ids import item_id

    messages = canonical_messages(prompt, answer)
    if rejected is None:
        return item_id(messages, length=SAMPLE_ID_LENGTH)
    return item_id({"chosen": messages, "rejected": rejected}, length=SAMPLE_ID_LENGTH)


def prompt_id_of(prompt: Sequence[Message]) -> str:
    """Id of a prompt alone: samples that share a prompt share one base-model answer."""
    blob = json.dumps([dict(m) for m in prompt], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "p-" + hashlib.sha256(blob.encode()).hexdigest()[:SAMPLE_ID_LENGTH]


@dataclass(frozen=True)
class Record:
    """One input record in file order.

    line: the 1-based line of a JSONL record or the line a CSV record starts on; the 1-based row number
    for Parquet and HF datasets. raw: the original text (the line itself for JSONL, without its newline;
    a JSON object of the row for the other formats). sample_id is None when the record is invalid.
    """

    index: int
    line: int
    raw: str
    sample_id: str | None = None
    error: str | None = None


@dataclass
class Sample:
    """A distinct chat: the prompt (everything before the last assistant turn) and that answer.

    notes: what reading its records left out (tool calls, tool results, non-text parts), once each.
    rejected: a preference record's rejected answer to the same prompt (`answer` is the chosen one)."""

    sample_id: str
    prompt: tuple[Message, ...]
    answer: str
    lines: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rejected: str | None = None

    @property
    def n_copies(self) -> int:
        return len(self.lines)

    @property
    def prompt_id(self) -> str:
        return prompt_id_of(self.prompt)

    @property
    def messages(self) -> list[dict[str, str]]:
        return canonical_messages(self.prompt, self.answer)

    def conversation(self) -> Any:
        from pvdata.chat import Conversation

        return Conversation(tuple(self.prompt), self.answer)


@dataclass
class Dataset:
    """What a reader produced: records in input order, distinct valid samples in first-seen order."""

    source: str
    format: str
    dataset_id: str
    records: list[Record]
    samples: list[Sample]

    def __post_init__(self) -> None:
        self._by_id = {s.sample_id: s for s in self.samples}

    def sample(self, sample_id: str) -> Sample:
        return self._by_id[sample_id]

    @property
    def invalid(self) -> list[Record]:
        return [r for r in self.records if r.error is not None]

    @property
    def n_records(self) -> int:
        return len(self.records)

    @property
    def n_valid_records(self) -> int:
        return sum(1 for r in self.records if r.error is None)

    @property
    def n_duplicates(self) -> int:
        """Valid records that repeat a sample seen earlier in the file."""
        return self.n_valid_records - len(self.samples)

    @property
    def n_preference(self) -> int:
        """Distinct samples that are preference pairs (hold a rejected answer)."""
        return sum(1 for s in self.samples if s.rejected is not None)

    def counts(self) -> dict[str, int]:
        return {
            "records": self.n_records,
            "distinct": len(self.samples),
            "duplicates": self.n_duplicates,
            "invalid": len(self.invalid),
        }


def build_dataset(
    source: str,
    fmt: str,
    dataset_id: str,
    parsed: Sequence[
        tuple[int, str, tuple[tuple[Message, ...], str, tuple[str, ...], str | None] | None, str | None]
    ],
) -> Dataset:
    """Records and deduplicated samples from (line, raw, (prompt, answer, notes, rejected) or None,
    error)."""
    records: list[Record] = []
    samples: dict[str, Sample] = {}
    for index, (line, raw, chat, error) in enumerate(parsed):
        if chat is None:
            records.append(Record(index, line, raw, None, error or "invalid record"))
            continue
        prompt, answer, notes, rejected = chat
        sid = sample_id_of(prompt, answer, rejected)
        sample = samples.get(sid)
        if sample is None:
            sample = samples[sid] = Sample(sid, prompt, answer, rejected=rejected)
        sample.lines.append(line)
        sample.notes.extend(n for n in notes if n not in sample.notes)
        records.append(Record(index, line, raw, sid))
    return Dataset(source, fmt, dataset_id, records, list(samples.values()))
