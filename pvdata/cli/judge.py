"""`pvdata judge`: score every generation of a generation run with an LLM judge (docs/JUDGING.md)."""

from __future__ import annotations

import argparse
import sys
import time

from pvdata.cli.options import add_warehouse_option, warehouse_root


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "judge",
        help="judge a generation run's answers (logprob-weighted 0..100 scores)",
        description="Judge every generation of a generation run, or a screened dataset's training and "
        "base answers; writes a judge run with one judgments row per answer. --metric TRAIT uses the "
        "trait's rubric from traits/. Rerunning resumes or reports it already succeeded.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--run", metavar="RUN_ID", help="the generation run to judge (or a screen's import run: its samples)"
    )
    source.add_argument(
        "--screen",
        metavar="RUN_ID",
        help="a screen run: judge its training answers and its base answers, with each screened trait's "
        "rubric (or --metric's)",
    )
    parser.add_argument(
        "--judge",
        required=True,
        metavar="SPEC",
        help="openai:<model> (needs OPENAI_API_KEY; OPENAI_BASE_URL for other servers), hf:<model>, "
        "none, or scripted",
    )
    what = parser.add_argument_group("what to judge (one of)")
    what.add_argument("--coherence", action="store_true", help="the built-in coherence rubric")
    what.add_argument(
        "--metric", help="a trait (its rubric from traits/), or a name for --rubric FILE's scores"
    )
    what.add_argument("--rubric", metavar="FILE", help="rubric text with {question} and {answer}")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight (openai judge)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per request (default 30)")
    parser.add_argument("--max-retries", type=int, default=None, help="retries per request (default 6)")
    parser.add_argument(
        "--force", action="store_true", help="judge again as a new run (cached judgments are reused)"
    )
    add_warehouse_option(parser)
    parser.set_defaults(func=run_judge)


class _Progress:
    """Items done, rate and time left on stderr, at most once a second (and at the end)."""

    def __init__(self) -> None:
        self.last = 0.0
        self.last_done = -1
        self.tty = sys.stderr.isatty()

    def __call__(self, done: int, total: int, seconds: float) -> None:
        now = time.monotonic()
        if done == self.last_done or (done not in (0, total) and now - self.last < 1.0):
            return
        self.last, self.last_done = now, done
        rate = done / seconds if seconds > 0 else 0.0
        left = (total - done) / rate if rate > 0 else float("nan")
        eta = f", {left:.0f}s left" if rate > 0 and done < total else ""
        shown = f"{rate:.0f}" if rate >= 10 else f"{rate:.2g}"
        line = f"judged {done}/{total} ({shown}/s{eta})"
        end = "\n" if done >= total or not self.tty else ""
        print(("\r" if self.tty else "") + line, end=end, file=sys.stderr, flush=True)


def run_judge(args: argparse.Namespace) -> int:
    from pvdata.errors import ConfigError
    from pvdata.judge import make_judge
    from pvdata.judge.pipeline import judge_generation_run, metric_and_rubric

    if args.concurrency < 1:
        raise ConfigError(f"--concurrency {args.concurrency} must be at least 1")
    if args.max_retries is not None and args.max_retries < 0:
        raise ConfigError(f"--max-retries {args.max_retries} must be 0 or more")
    if args.timeout is not None and args.timeout <= 0:
        raise ConfigError(f"--timeout {args.timeout} must be positive")
    root = warehouse_root(args.warehouse)
    if args.screen is not None:
        from pvdata.judge.sources import screen_sources
        from pvdata.warehouse import Warehouse

        traits, sources = screen_sources(Warehouse(root), args.screen)
        metrics = [metric_and_rubric(m, args.rubric, args.coherence) for m in _screen_metrics(args, traits)]
    else:
        sources = [("answers", args.run)]
        metrics = [metric_and_rubric(args.metric, args.rubric, args.coherence)]
    judge = make_judge(
        args.judge, concurrency=args.concurrency, timeout=args.timeout, max_retries=args.max_retries
    )
    for metric, rubric in metrics:
        for what, run_id in sources:
            if args.screen is not None:
                print(f"{what} of screen {args.screen} ({metric}):", file=sys.stderr)
            summary = judge_generation_run(
                root, run_id, judge, metric=metric, rubric=rubric, force=args.force, progress=_Progress()
            )
            if summary.message:
                print(summary.message, file=sys.stderr)
            for line in summary.lines():
                print(line)
    if args.screen is not None:
        print("next: pvdata sql --file warehouse/queries/screen_vs_score.sql")
    return 0


def _screen_metrics(args: argparse.Namespace, traits: list[str]) -> list[str | None]:
    """--metric if given (or --coherence's), else every trait the screen scored."""
    if args.metric is not None or args.coherence:
        return [args.metric]
    return list(traits)
