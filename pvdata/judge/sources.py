"""What a judge run can score: the answers of a generation run, or a screened dataset's training answers.

A screen stores the training answers as `samples` rows of its import run (no generation), and the base
answers of its exact method as a generation run. Judging both with the trait's rubric lets SQL compare
projection difference, raw projection and judged score per sample (warehouse/queries/
projection_vs_score.sql). For a training answer, `judgments.generation_id` holds its `sample_id`, the
same id its projections carry in `projections.source_id`.
"""

from __future__ import annotations

import json
from typing import Any

from pvdata.errors import ConfigError, WarehouseError


def finished_run(wh: Any, run_id: str) -> dict[str, Any]:
    """The latest runs row of a succeeded run, or a clear error."""
    if not wh.exists():
        raise WarehouseError(
            f"warehouse {wh.uri} does not exist; pass --warehouse DIR or set PVDATA_WAREHOUSE"
        )
    last = wh.get_run(run_id)
    if last is None:
        raise WarehouseError(
            f"run {run_id!r} is not in warehouse {wh.root}; list runs with `pvdata runs list --kind "
            "generate` (or --kind screen)"
        )
    if last["status"] != "succeeded":
        raise WarehouseError(
            f"run {run_id} has status {last['status']}; judge a finished run (rerun its command to finish it)"
        )
    return last


def judge_items(wh: Any, run_id: str) -> list[dict[str, Any]]:
    """generation_id, question, answer of everything a run holds to judge, in id order.

    A generation run gives its generations (first row per generation_id); an import run (a screen's
    samples stage) gives its valid samples, keyed by sample_id, the question being the last user turn.
    """
    last = finished_run(wh, run_id)
    rows: dict[str, dict[str, Any]] = {}
    if last["kind"] == "import":
        t = wh.read_run_table("samples", run_id, ["sample_id", "messages", "error"])
        for r in t.to_pylist():
            if r["error"] is None and r["messages"] is not None:
                rows.setdefault(r["sample_id"], _sample_item(r["sample_id"], r["messages"]))
    else:
        t = wh.read_run_table("generations", run_id, ["generation_id", "question", "answer"])
        for r in t.to_pylist():
            rows.setdefault(r["generation_id"], r)
    if not rows:
        what = "screen" if last["kind"] == "screen" else last["kind"]
        hint = " (judge a screen with --screen RUN_ID)" if last["kind"] == "screen" else ""
        raise WarehouseError(
            f"run {run_id} ({what}) has no generations or samples to judge: give a generation run, or a "
            f"screen's import run{hint}"
        )
    return [rows[k] for k in sorted(rows)]


def _sample_item(sample_id: str, messages: Any) -> dict[str, Any]:
    chat = json.loads(messages) if isinstance(messages, str) else messages
    answer = chat[-1]["content"]
    user = next((m["content"] for m in reversed(chat[:-1]) if m.get("role") == "user"), None)
    return {"generation_id": sample_id, "question": user, "answer": answer}


def screen_sources(wh: Any, screen_run_id: str) -> tuple[list[str], list[tuple[str, str]]]:
    """(traits screened, [(what, run_id)]) of a screen run: its dataset's samples and base answers."""
    last = finished_run(wh, screen_run_id)
    if last["kind"] != "screen":
        raise ConfigError(
            f"--screen {screen_run_id}: that is a {last['kind']} run, not a screen; for a generation run "
            "use --run"
        )
    config = last["config"]
    config = json.loads(config) if isinstance(config, str) else config
    runs = config.get("runs", {})
    sources = [("training answers", runs["dataset_samples"])]
    if runs.get("dataset_base"):
        sources.append(("base answers", runs["dataset_base"]))
    return sorted(config.get("vectors", {})), sources
