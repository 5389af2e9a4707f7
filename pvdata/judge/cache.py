"""The judge cache: (judge model, sha256 of the rendered prompt) -> result, in the warehouse.

Every measured result is cached, null scores and refusals included; errors are not, so a later run
retries them. Rows live in the `judge_cache` table of the run that paid for them and are read from
every run that committed them (also failed or interrupted ones: a paid answer stays valid). Keys are
looked up all at once before anything is sent, and a prompt repeated within a job is sent once.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from pvdata.judge.base import Judge, OnResult, collect, judge_prompts, score_each
from pvdata.judge.score import JudgeResult

CacheSink = Callable[[list[dict[str, Any]]], None]


def prompt_hash(prompt: str) -> str:
    """sha256 hex of the rendered prompt's UTF-8 bytes."""
    return hashlib.sha256(prompt.encode()).hexdigest()


def cache_row(judge_model: str, key: str, result: JudgeResult) -> dict[str, Any]:
    from pvdata.warehouse.runs import utcnow

    return {
        "judge_model": judge_model,
        "prompt_hash": key,
        "score": result.score,
        "valid_mass": result.valid_mass,
        "refusal": result.refusal,
        "top_logprobs": json.dumps([[t, lp] for t, lp in result.top_logprobs], ensure_ascii=False),
        "created_at": utcnow(),
    }


def result_from_row(row: Mapping[str, Any]) -> JudgeResult:
    raw = row.get("top_logprobs")
    top = [(str(t), float(lp)) for t, lp in json.loads(raw)] if raw else []
    return JudgeResult(
        score=row.get("score"),
        valid_mass=row.get("valid_mass"),
        refusal=bool(row.get("refusal")),
        top_logprobs=top,
        cached=True,
    )


class JudgeCache:
    """Cached results of one judge model, plus a sink that persists new entries (a table writer)."""

    def __init__(
        self,
        judge_model: str,
        entries: Mapping[str, JudgeResult] | None = None,
        sink: CacheSink | None = None,
    ) -> None:
        self.judge_model = judge_model
        self._entries: dict[str, JudgeResult] = dict(entries or {})
        self.sink = sink
        self.stored = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get(self, key: str) -> JudgeResult | None:
        hit = self._entries.get(key)
        return hit.as_cached() if hit is not None else None

    def put_many(self, items: Sequence[tuple[str, JudgeResult]]) -> None:
        """Store measured results (errors are skipped) and hand their rows to the sink in one call."""
        rows = []
        for key, result in items:
            if not result.ok or key in self._entries:
                continue
            self._entries[key] = result
            rows.append(cache_row(self.judge_model, key, result))
        if rows and self.sink is not None:
            self.sink(rows)
        self.stored += len(rows)

    @classmethod
    def load(
        cls,
        root: str | os.PathLike[str],
        judge_model: str,
        keys: Iterable[str] | None = None,
        *,
        sink: CacheSink | None = None,
    ) -> JudgeCache:
        """Read the cached entries of judge_model (only those in keys, when given) from a warehouse."""
        import pyarrow.compute as pc
        import pyarrow.dataset as ds

        from pvdata.warehouse import files

        store = files.open_store(root)
        infos = files.table_files(store, "judge_cache") if store.exists() else []
        entries: dict[str, JudgeResult] = {}
        if infos:
            wanted = None if keys is None else sorted(set(keys))
            expr = pc.field("judge_model") == judge_model
            if wanted is not None:
                if not wanted:
                    return cls(judge_model, {}, sink)
                expr = expr & pc.field("prompt_hash").isin(wanted)
            columns = ["prompt_hash", "score", "valid_mass", "refusal", "top_logprobs"]
            table = ds.dataset([i.path for i in infos], format="parquet", filesystem=store.fs).to_table(
                columns=columns, filter=expr
            )
            for row in table.to_pylist():
                entries.setdefault(row["prompt_hash"], result_from_row(row).as_cached())
        return cls(judge_model, entries, sink)


class CachedJudge:
    """A judge that answers from a JudgeCache first and sends each missing prompt once.

    stats: hits (prompts answered from the cache), sent (distinct prompts sent to the inner judge),
    repeats (prompts answered by another copy of the same prompt in the job).
    """

    def __init__(self, judge: Judge, cache: JudgeCache | None = None) -> None:
        self.judge = judge
        self.name = judge.name
        self.cache = cache if cache is not None else JudgeCache(judge.name)
        self.cacheable = bool(getattr(judge, "cacheable", True))
        self.batch_hint = int(getattr(judge, "batch_hint", 20_000))
        self.stats: Counter[str] = Counter()

    async def score_many(self, prompts: Sequence[str]) -> list[JudgeResult]:
        return await collect(self.score_each, prompts)

    async def score_each(self, prompts: Sequence[str], on_result: OnResult) -> None:
        """Hits are reported at once; each missing prompt is sent once, cached and reported as it ends."""
        keys = [prompt_hash(p) for p in prompts]
        waiting: dict[str, list[int]] = {}  # key -> indices of the prompts that share it
        for i, key in enumerate(keys):
            hit = self.cache.get(key) if self.cacheable else None
            if hit is not None:
                self.stats["hits"] += 1
                on_result(i, hit)
            elif key in waiting:
                self.stats["repeats"] += 1
                waiting[key].append(i)
            else:
                waiting[key] = [i]
        if not waiting:
            return
        order = list(waiting)
        self.stats["sent"] += len(order)

        def done(j: int, result: JudgeResult) -> None:
            key = order[j]
            if self.cacheable:
                self.cache.put_many([(key, result)])
            for i in waiting[key]:
                on_result(i, result)

        await score_each(self.judge, [prompts[waiting[k][0]] for k in order], done)


def judge_with_cache(
    judge: Judge,
    prompts: Sequence[str],
    warehouse: Any,
    run: Any,
) -> list[JudgeResult]:
    """Score prompts through the warehouse cache; new entries are written through run's writer.

    warehouse is a Warehouse or a root path; run is the open Run the cache rows belong to.
    """
    root = getattr(warehouse, "root", warehouse)
    writer = run.writer("judge_cache")
    cache = JudgeCache.load(root, judge.name, [prompt_hash(p) for p in prompts], sink=writer.write)
    return judge_prompts(CachedJudge(judge, cache), prompts)
