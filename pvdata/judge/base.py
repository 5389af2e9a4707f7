"""The judge interface, the sync wrapper, and the `none` and `scripted` judges.

A judge has a `name` (the judge model, e.g. "openai:gpt-4.1-mini": the cache key and the judgments'
judge_model) and `async score_many(prompts) -> list[JudgeResult]`, one result per prompt in order,
never raising for a single prompt's failure (that is a result with `error` set). `make_judge(spec)`
lives in pvdata.judge.factory, so this module imports no backend.

Optional, read when present: `async score_each(prompts, on_result)`, which calls on_result(index,
result) as each prompt finishes (so results reach the warehouse and the progress line as they come,
with no batch barrier); `cacheable` (default True); `stats` (counters); `batch_hint` (at most this many
prompts are rendered and handed over per call).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

from pvdata.errors import ConfigError
from pvdata.judge.score import JudgeResult


class JudgeFatalError(ConfigError):
    """A failure that would repeat for every prompt (bad key, unknown model): stop the job."""


@runtime_checkable
class Judge(Protocol):
    name: str

    async def score_many(self, prompts: Sequence[str]) -> list[JudgeResult]: ...


OnResult = Callable[[int, JudgeResult], None]
ScoreEach = Callable[[Sequence[str], OnResult], Coroutine[Any, Any, None]]


async def score_each(judge: Judge, prompts: Sequence[str], on_result: OnResult) -> None:
    """Report each prompt's result as soon as the judge has it (all at the end for a judge without
    its own score_each)."""
    each = getattr(judge, "score_each", None)
    if each is not None:
        await each(prompts, on_result)
        return
    results = await judge.score_many(prompts)
    if len(results) != len(prompts):
        raise RuntimeError(f"judge {judge.name} returned {len(results)} results for {len(prompts)} prompts")
    for i, r in enumerate(results):
        on_result(i, r)


async def collect(each: ScoreEach, prompts: Sequence[str]) -> list[JudgeResult]:
    """score_many from a score_each: the results in prompt order."""
    out: list[JudgeResult | None] = [None] * len(prompts)

    def put(i: int, r: JudgeResult) -> None:
        out[i] = r

    await each(prompts, put)
    return [r if r is not None else JudgeResult.failed("not judged") for r in out]


T = TypeVar("T")


def run_sync(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code, in a helper thread if a loop is already running."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


def judge_prompts(judge: Judge, prompts: Sequence[str]) -> list[JudgeResult]:
    """Score prompts synchronously: the sync face of `judge.score_many`."""
    items = list(prompts)
    return run_sync(lambda: judge.score_many(items))


class NoneJudge:
    """Judges nothing: every prompt gets a null score, no error, and a note. Used to skip judging."""

    name = "none"
    cacheable = False
    batch_hint = 100_000

    def __init__(self) -> None:
        self.stats: Counter[str] = Counter()

    async def score_many(self, prompts: Sequence[str]) -> list[JudgeResult]:
        self.stats["prompts"] += len(prompts)
        note = "not judged (judge 'none')"
        return [JudgeResult(score=None, valid_mass=None, refusal=False, note=note) for _ in prompts]


ScriptedValue = float | int | None | JudgeResult
ScriptedRule = Callable[[str], ScriptedValue] | Mapping[str, ScriptedValue]


def hash_score(prompt: str) -> float:
    """The default scripted score: a whole number 0..100 from the prompt's sha256."""
    return float(int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "big") % 101)


class ScriptedJudge:
    """A deterministic judge for tests: scores from a callable or a {prompt: score} mapping.

    A score may be a number (valid mass 1.0), None (a null score, valid mass 0.0) or a full JudgeResult.
    A prompt missing from a mapping gets an error result. `calls` records every batch it was given.
    """

    def __init__(
        self,
        rule: ScriptedRule | None = None,
        *,
        name: str = "scripted",
        cacheable: bool = False,
        batch_hint: int = 20_000,
    ) -> None:
        self.rule: ScriptedRule = rule if rule is not None else hash_score
        self.name = name
        self.cacheable = cacheable
        self.batch_hint = batch_hint
        self.calls: list[list[str]] = []
        self.stats: Counter[str] = Counter()

    def _one(self, prompt: str) -> JudgeResult:
        if isinstance(self.rule, Mapping):
            if prompt not in self.rule:
                return JudgeResult.failed("no scripted score for this prompt")
            value = self.rule[prompt]
        else:
            value = self.rule(prompt)
        if isinstance(value, JudgeResult):
            return value
        if value is None:
            return JudgeResult(score=None, valid_mass=0.0, refusal=False)
        return JudgeResult(score=float(value), valid_mass=1.0, refusal=False)

    async def score_many(self, prompts: Sequence[str]) -> list[JudgeResult]:
        self.calls.append(list(prompts))
        self.stats["requests"] += len(prompts)
        return [self._one(p) for p in prompts]
