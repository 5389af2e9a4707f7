"""Judge every generation of a generation run: a `judge` run with one judgments row per generation.

The run id is a hash of (generation run, judge model, metric, rubric hash), so rerunning the same
command resumes it (committed judgments are skipped) or reports it already succeeded; another judge
model, metric or rubric is a new run and both are kept. judgment_id = item_id(judge model,
generation_id, metric, rubric sha256). Failed judgments are rows with `error` set and null scores are
rows with `score` null: nothing is dropped. To retry the errors of a finished run, rerun with --force:
a new run whose successes come from the cache, so only the errors are sent again.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pvdata.errors import ConfigError
from pvdata.judge import rubrics
from pvdata.judge.base import Judge, run_sync
from pvdata.judge.cache import CachedJudge, JudgeCache, prompt_hash
from pvdata.judge.factory import make_judge
from pvdata.judge.score import JudgeResult

Progress = Callable[[int, int, float], None]  # (done, total, seconds since start)


@dataclass
class JudgeSummary:
    """What a judge run produced, over all its rows (all attempts)."""

    run_id: str
    generation_run_id: str
    judge_model: str
    metric: str
    n: int = 0
    n_valid: int = 0
    n_null: int = 0
    n_errors: int = 0
    n_refusals: int = 0
    mean_score: float | None = None
    judged_now: int = 0
    requests: int = 0
    retries: int = 0
    cache_hits: int = 0
    sent: int = 0
    seconds: float = 0.0
    skipped: bool = False
    message: str = ""
    error_examples: list[str] = field(default_factory=list)

    @property
    def null_rate(self) -> float:
        return self.n_null / self.n if self.n else 0.0

    @property
    def error_rate(self) -> float:
        return self.n_errors / self.n if self.n else 0.0

    def stats(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("run_id", "generation_run_id", "judge_model", "metric", "skipped", "message"):
            d.pop(k)
        d["null_rate"] = round(self.null_rate, 6)
        d["error_rate"] = round(self.error_rate, 6)
        return d

    def lines(self) -> list[str]:
        mean = f"{self.mean_score:.2f}" if self.mean_score is not None else "n/a"
        out = [
            f"judge run {self.run_id} ({self.judge_model}, metric {self.metric}) of generation run "
            f"{self.generation_run_id}",
            f"  n {self.n}  valid {self.n_valid}  null {self.n_null} ({100 * self.null_rate:.1f}%)  "
            f"errors {self.n_errors} ({100 * self.error_rate:.1f}%)  refusals {self.n_refusals}",
            f"  mean score {mean} (over the {self.n_valid} valid scores; nulls and errors are not zeros)",
            f"  this call: judged {self.judged_now}, cache hits {self.cache_hits}, prompts sent {self.sent}, "
            f"requests sent {self.requests} (retries {self.retries}) in {self.seconds:.1f}s",
        ]
        if self.n_errors:
            out.append(f"  errors, e.g.: {'; '.join(self.error_examples)}")
            out.append("  to retry the errors, rerun with --force: cached successes are not sent again")
        return out


def metric_and_rubric(metric: str | None, rubric_file: str | None, coherence: bool) -> tuple[str, str]:
    """Resolve --metric/--rubric/--coherence to (metric name, rubric text)."""
    if coherence and rubric_file:
        raise ConfigError("give either --coherence or --rubric FILE, not both")
    if coherence:
        if metric not in (None, "coherence"):
            raise ConfigError(f"--coherence judges metric 'coherence', not {metric!r}; drop --metric")
        return "coherence", rubrics.COHERENCE
    if rubric_file:
        if not metric:
            raise ConfigError("--rubric FILE needs --metric NAME (the trait the rubric scores, e.g. evil)")
        _check_metric(metric)
        return metric, rubrics.load(rubric_file)
    if metric in rubrics.BUILTIN:
        return metric, rubrics.BUILTIN[metric]
    if metric:
        return metric, trait_rubric(metric)
    raise ConfigError("choose what to judge: --coherence, or --metric NAME --rubric FILE")


def trait_rubric(metric: str) -> str:
    """The judge rubric of the trait named `metric`, from the trait folders (traits/ and the user's)."""
    from pvdata.traits import list_traits, load_trait, resolve_trait_path

    try:
        resolve_trait_path(metric)
    except ConfigError:
        known = ", ".join([*rubrics.BUILTIN, *list_traits()])
        raise ConfigError(
            f"metric {metric!r} is neither a trait nor a built-in rubric; known: {known}; or give "
            "--rubric FILE with {question} and {answer} placeholders"
        ) from None
    return load_trait(metric).rubric  # a broken trait file: its own error, naming file and field


def _check_metric(metric: str) -> None:
    if not metric.replace("_", "").replace("-", "").replace(".", "").isalnum():
        raise ConfigError(f"--metric {metric!r}: use letters, digits, '_', '-' and '.'")


def load_generations(root: Any, run_id: str) -> list[dict[str, Any]]:
    """generation_id, question, answer of what a run holds to judge (see pvdata.judge.sources)."""
    from pvdata.judge.sources import judge_items
    from pvdata.warehouse import Warehouse

    return judge_items(Warehouse(root), run_id)


def judge_generation_run(
    root: str | os.PathLike[str],
    generation_run_id: str,
    judge: Judge | str,
    *,
    metric: str,
    rubric: str,
    force: bool = False,
    concurrency: int = 64,
    progress: Progress | None = None,
    chunk_size: int | None = None,
) -> JudgeSummary:
    """Judge all generations of a run with a rubric; see the module docstring."""
    from pvdata.warehouse import Warehouse, item_id

    rubrics.validate(rubric)
    gens = load_generations(root, generation_run_id)
    if isinstance(judge, str):
        judge = make_judge(judge, concurrency=concurrency)
    rhash = rubrics.rubric_hash(rubric)
    config = {
        "generation_run_id": generation_run_id,
        "judge": judge.name,
        "metric": metric,
        "rubric_sha256": rhash,
    }
    wh = Warehouse(root)
    t0 = time.monotonic()
    with wh.run("judge", config, parent_run_ids=[generation_run_id], model_id=judge.name, force=force) as run:
        summary = JudgeSummary(run.run_id, generation_run_id, judge.name, metric)
        if run.skipped:
            _fill_from_rows(summary, run.rows("judgments"))
            summary.skipped = True
            summary.message = run.message
            return summary
        summary.message = run.message
        done = run.done_ids("judgments", "judgment_id")
        todo = []
        for g in gens:
            jid = item_id(judge.name, g["generation_id"], metric, rhash)
            if jid not in done:
                todo.append((jid, g))
        jwriter = run.writer("judgments", chunk_rows=20_000, chunk_seconds=10.0)
        cwriter = run.writer("judge_cache", chunk_rows=20_000, chunk_seconds=10.0)
        cache = None
        if getattr(judge, "cacheable", True):
            prompts = (_prompt(rubric, g) for _, g in todo)
            keys = [prompt_hash(p) for p in prompts if p is not None]
            cache = JudgeCache.load(wh.root, judge.name, keys, sink=cwriter.write)
        cached = CachedJudge(judge, cache)
        size = chunk_size or max(1, int(getattr(judge, "batch_hint", 20_000)))
        ticker = _Ticker(progress, len(todo), t0)
        run_sync(lambda: _judge_all(cached, todo, rubric, metric, size, jwriter.write, ticker))
        jwriter.flush()
        cwriter.flush()
        summary.judged_now = len(todo)
        stats = getattr(judge, "stats", {})
        summary.requests = int(stats.get("requests", 0)) + int(stats.get("stale_resends", 0))
        summary.retries = int(stats.get("retries", 0))
        summary.cache_hits = cached.stats["hits"]
        summary.sent = cached.stats["sent"]
        _fill_from_rows(summary, run.rows("judgments"))
        summary.seconds = round(time.monotonic() - t0, 3)
        run.stats.update(summary.stats())
    return summary


class _Ticker:
    """Items judged so far, for the progress callback (which throttles its own output)."""

    def __init__(self, progress: Progress | None, total: int, t0: float) -> None:
        self.progress, self.total, self.t0 = progress, total, t0
        self.done = 0

    def report(self) -> None:
        if self.progress is not None:
            self.progress(self.done, self.total, time.monotonic() - self.t0)

    def tick(self) -> None:
        self.done += 1
        self.report()


def _prompt(rubric: str, g: dict[str, Any]) -> str | None:
    if g.get("question") is None or g.get("answer") is None:
        return None
    return rubrics.render(rubric, g["question"], g["answer"])


async def _judge_all(
    judge: CachedJudge,
    todo: Sequence[tuple[str, dict[str, Any]]],
    rubric: str,
    metric: str,
    size: int,
    write: Callable[[dict[str, Any]], None],
    ticker: _Ticker,
) -> None:
    """Judge in slices of `size` prompts (bounded memory); each row is written as its result arrives."""
    ticker.report()

    def row(jid: str, g: dict[str, Any], r: JudgeResult) -> dict[str, Any]:
        return {
            "judgment_id": jid,
            "generation_id": g["generation_id"],
            "metric": metric,
            "judge_model": judge.name,
            "score": r.score,
            "valid_mass": r.valid_mass,
            "refusal": r.refusal,
            "error": r.error,
        }

    for start in range(0, len(todo), size):
        chunk = todo[start : start + size]
        items: list[tuple[str, dict[str, Any]]] = []
        prompts: list[str] = []
        for jid, g in chunk:
            p = _prompt(rubric, g)
            if p is None:
                write(row(jid, g, JudgeResult.failed("generation has no question or answer")))
                ticker.tick()
            else:
                items.append((jid, g))
                prompts.append(p)

        def on_result(i: int, r: JudgeResult, items: list[tuple[str, dict[str, Any]]] = items) -> None:
            write(row(*items[i], r))  # one row per call: each judgment is committed whole
            ticker.tick()

        await judge.score_each(prompts, on_result)


def _fill_from_rows(summary: JudgeSummary, table: Any) -> None:
    rows = table.select(["score", "refusal", "error"]).to_pylist()
    summary.n = len(rows)
    scores = [r["score"] for r in rows if r["score"] is not None and not math.isnan(r["score"])]
    summary.n_valid = len(scores)
    summary.n_errors = sum(1 for r in rows if r["error"] is not None)
    summary.n_null = summary.n - summary.n_valid - summary.n_errors
    summary.n_refusals = sum(1 for r in rows if r["refusal"])
    summary.mean_score = math.fsum(scores) / len(scores) if scores else None
    examples = list(dict.fromkeys(r["error"] for r in rows if r["error"] is not None))
    summary.error_examples = [e[:160] for e in examples[:3]]
