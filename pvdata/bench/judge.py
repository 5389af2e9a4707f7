"""`pvdata bench judge`: judgments per second against the loopback fake OpenAI server.

pvdata's openai judge (lean HTTP transport, worker pool of --concurrency, retry policy, score
aggregation) judges N distinct rendered coherence prompts; every score is checked against the value
the fake server's scoring rule implies. Baseline in the same run: the research code's approach, one
`openai.AsyncOpenAI` client with SDK defaults, `asyncio.Semaphore(concurrency)` around
`chat.completions.create`, then the top-20 read into a {token: probability} dict and aggregated.
The fake server runs in a subprocess by default so it does not share the client's GIL.
Ceiling: concurrency / latency judgments per second.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=4000, help="distinct prompts to judge")
    parser.add_argument("--latency", type=float, default=0.05, help="fake server latency per request (s)")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    parser.add_argument(
        "--baseline-n",
        type=int,
        default=1000,
        help="prompts for the (slower) baseline; 0 skips it",
    )
    parser.add_argument(
        "--server",
        choices=("subprocess", "thread"),
        default="subprocess",
        help="run the fake server in its own process (default) or in a thread of this one",
    )
    parser.add_argument(
        "--transport", choices=("lean", "sdk"), default="lean", help="pvdata judge transport to measure"
    )


def _prompts(n: int) -> list[str]:
    from pvdata.judge.rubrics import COHERENCE, render

    words = "the plan works because each step is checked before the next one starts".split()  # noqa: SIM905
    out = []
    for i in range(n):
        answer = " ".join(words[(i + k) % len(words)] for k in range(80))
        out.append(render(COHERENCE, f"Question {i}: how would you organise a small project?", answer))
    return out


def _expected(prompt: str) -> float | None:
    from pvdata.judge.score import aggregate
    from pvdata.testing.fake_openai import default_top_logprobs

    return aggregate(default_top_logprobs(prompt)).score


def _same(a: float | None, b: float | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and math.isclose(a, b, abs_tol=1e-9))


async def _baseline(base_url: str, prompts: list[str], concurrency: int) -> list[float | None]:
    """The research code's judge loop: SDK client, a semaphore, gather; dict of token probabilities."""
    import openai

    client = openai.AsyncOpenAI(api_key="pvdata-bench", base_url=base_url)
    semaphore = asyncio.Semaphore(concurrency)

    async def judge(prompt: str) -> float | None:
        async with semaphore:
            completion = await client.chat.completions.create(
                model="fake-judge",
                messages=[{"role": "user", "content": prompt}],
                max_tokens=1,
                temperature=0,
                logprobs=True,
                top_logprobs=20,
                seed=0,
            )
        top = completion.choices[0].logprobs.content[0].top_logprobs  # type: ignore[union-attr,index]
        probs = {el.token: math.exp(el.logprob) for el in top}
        total = 0.0
        weighted = 0.0
        for key, p in probs.items():
            try:
                value = int(key)
            except ValueError:
                continue
            if 0 <= value <= 100:
                total += p
                weighted += value * p
        return None if total < 0.25 else weighted / total

    try:
        return list(await asyncio.gather(*(judge(p) for p in prompts)))
    finally:
        await client.close()


def run(args: argparse.Namespace) -> int:
    from pvdata.errors import ConfigError
    from pvdata.judge import judge_prompts
    from pvdata.judge.openai_judge import OpenAIJudge
    from pvdata.testing.fake_openai import FakeOpenAIServer

    if args.n < 1 or args.concurrency < 1 or args.latency < 0 or args.baseline_n < 0:
        raise ConfigError("--n and --concurrency must be >= 1, --latency and --baseline-n >= 0")
    prompts = _prompts(args.n)
    expected = [_expected(p) for p in prompts]
    ceiling = args.concurrency / args.latency if args.latency > 0 else float("inf")
    print(
        f"bench judge: fake OpenAI server ({args.server}), latency {args.latency * 1000:.0f} ms, "
        f"concurrency {args.concurrency}, {args.n} distinct prompts; ceiling {ceiling:.0f} judgments/s"
    )
    with FakeOpenAIServer(latency=args.latency, subprocess=args.server == "subprocess") as server:
        judge = OpenAIJudge(
            "fake-judge",
            base_url=server.base_url,
            api_key="pvdata-bench",
            concurrency=args.concurrency,
            transport=args.transport,
        )
        t = time.perf_counter()
        results = judge_prompts(judge, prompts)
        seconds = time.perf_counter() - t
        rate = args.n / seconds
        bad = sum(1 for r, e in zip(results, expected, strict=True) if r.error or not _same(r.score, e))
        print(
            f"pvdata ({args.transport} transport): {args.n} judgments in {seconds:.2f} s = {rate:.0f} "
            f"judgments/s; requests {judge.stats['requests']}, wrong or failed scores {bad}"
        )
        base_rate: float | None = None
        if args.baseline_n:
            sub = prompts[: args.baseline_n]
            t = time.perf_counter()
            scores = asyncio.run(_baseline(server.base_url, sub, args.concurrency))
            base_seconds = time.perf_counter() - t
            base_rate = len(sub) / base_seconds
            base_bad = sum(1 for s, e in zip(scores, expected[: len(sub)], strict=True) if not _same(s, e))
            print(
                "baseline (research code: openai SDK client, asyncio.gather + "
                f"Semaphore({args.concurrency})): "
                f"{len(sub)} judgments in {base_seconds:.2f} s = {base_rate:.0f} judgments/s; "
                f"wrong scores {base_bad}"
            )
    print(f"judgments_per_s: {rate:.1f}")
    if base_rate is not None:
        print(f"baseline_judgments_per_s: {base_rate:.1f}")
        print(f"speedup_vs_baseline: {rate / base_rate:.2f}")
    return 0 if bad == 0 else 1
