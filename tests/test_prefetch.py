"""The background prefetcher: same items in order, errors raised in the caller, the thread joined on
every exit; capture and scoring give bit-identical results with and without it; --profile traces."""

from __future__ import annotations

import argparse
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from pvdata.activations import capture_encoded
from pvdata.activations.prefetch import PassTimings, prefetch

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def _alive() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "pvdata-prefetch"]


@pytest.mark.parametrize("enabled", [True, False])
def test_items_in_order_and_bounded(enabled: bool) -> None:
    produced: list[int] = []

    def source() -> Iterator[int]:
        for i in range(20):
            produced.append(i)
            yield i

    seen = []
    with prefetch(source(), enabled=enabled, depth=2) as ready:
        for item in ready:
            # the producer is at most depth queued + one in hand ahead of the consumer
            assert len(produced) - len(seen) <= 4
            seen.append(item)
    assert seen == list(range(20))
    assert not _alive()


def test_producer_error_reaches_the_caller_with_its_message() -> None:
    def source() -> Iterator[int]:
        yield 1
        raise KeyError("bad sample s000042")

    got = []
    with pytest.raises(KeyError, match="bad sample s000042"), prefetch(source()) as ready:
        for item in ready:
            got.append(item)
    assert got == [1]
    assert not _alive()


def test_leaving_early_stops_and_joins_the_producer() -> None:
    closed = threading.Event()

    def source() -> Iterator[int]:
        try:
            yield from range(1000)
        finally:
            closed.set()

    with prefetch(source()) as ready:
        for item in ready:
            if item == 3:
                break
    assert not _alive()
    assert closed.is_set()  # the source generator was closed, not left suspended


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (
        a.dtype == b.dtype
        and torch.equal(a.isnan(), b.isnan())
        and torch.equal(a.nan_to_num(), b.nan_to_num())
    )


def test_capture_is_bit_identical_with_and_without_prefetch(tiny_llama: Any) -> None:
    gen = torch.Generator().manual_seed(0)
    samples = [
        (
            torch.randint(10, 200, (int(n),), generator=gen).tolist(),
            torch.randint(10, 200, (int(m),)).tolist(),
        )
        for n, m in zip(
            torch.randint(2, 12, (9,), generator=gen), torch.randint(1, 15, (9,), generator=gen), strict=True
        )
    ]
    samples.append(([5, 6], []))  # an error row (empty answer): NaN in both
    timings = PassTimings()
    on = capture_encoded(tiny_llama, samples, layers=[1, 3], token_budget=40, timings=timings)
    off = capture_encoded(tiny_llama, samples, layers=[1, 3], token_budget=40, prefetch_batches=False)
    assert on.stats == off.stats and on.stats["batches"] > 2  # several batches, the same ones
    assert on.errors == off.errors and on.errors[-1] is not None
    for pooling in on.poolings:
        assert _same(on.values[pooling], off.values[pooling])
    assert timings.batches == on.stats["batches"]
    summary = timings.summary(max(timings.device_s, 1e-9) * 2)
    assert summary["host_prep_s"] > 0 and summary["device_s"] > 0
    assert summary["device_idle_share"] == pytest.approx(0.5)


def _score_inputs() -> list[Any]:
    from pvdata.bench.screen_data import demo_samples

    out = []
    for i, s in enumerate(demo_samples(7)):
        base = [(f"g{i}", s.answer[: 20 + i])] if i % 2 == 0 else []
        out.append(s if not base else type(s)(s.sample_id, s.prompt, s.answer, base[0][1], base[0][0]))
    return out


def test_executor_score_and_capture_identical_with_and_without_prefetch(tiny_llama: Any) -> None:
    from pvdata.bench.screen_data import random_vector
    from pvdata.executors import CaptureJob, LocalExecutor, ScoreJob
    from pvdata.pipelines.capture_stage import CaptureItem

    vector = random_vector(tiny_llama.n_layers, tiny_llama.hidden_size, 0)
    job = ScoreJob((vector,), [2, 3], ("raw", "exact", "prompt_last_approx"), token_budget=64)
    samples = _score_inputs()
    runs = []
    for on in (True, False):
        timings = PassTimings()
        parts = list(LocalExecutor(tiny_llama, prefetch=on, timings=timings).score(job, samples, chunk=3))
        runs.append([(p.samples, p.result.projections, p.result.scores, p.result.errors) for p in parts])
        assert timings.host_prep_s > 0 and timings.batches >= len(parts) == 3
    assert runs[0] == runs[1]  # floats compared exactly

    items = [CaptureItem(f"c{i}", f"question {i}?", "answer " * (i + 1)) for i in range(5)]
    cjob = CaptureJob.of([1, 3], ["response_avg", "prompt_last"], token_budget=32)
    caps = [
        list(LocalExecutor(tiny_llama, prefetch=on).capture(cjob, items, chunk=2)) for on in (True, False)
    ]
    for a, b in zip(*caps, strict=True):
        assert a.source_ids == b.source_ids and a.errors == b.errors
        for p in a.poolings:
            assert (a.values[p] == b.values[p]).all()


def test_executor_error_in_tokenisation_propagates(tiny_llama: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import pvdata.screening.scoring as scoring
    from pvdata.bench.screen_data import random_vector
    from pvdata.executors import LocalExecutor, ScoreJob

    real = scoring.prepare_score

    def failing(tok: Any, part: Any, methods: Any) -> Any:
        if part[0].sample_id == "s000003":
            raise ValueError("chat template failed on s000003")
        return real(tok, part, methods)

    monkeypatch.setattr(scoring, "prepare_score", failing)
    vector = random_vector(tiny_llama.n_layers, tiny_llama.hidden_size, 0)
    job = ScoreJob((vector,), [2], ("raw",))
    got = []
    with pytest.raises(ValueError, match="chat template failed on s000003"):
        for part in LocalExecutor(tiny_llama).score(job, _score_inputs(), chunk=3):
            got.append(part)
    assert len(got) == 1
    assert not _alive()


def _bench(argv: list[str]) -> int:
    from pvdata.bench import add_bench_parsers, run_bench

    parser = argparse.ArgumentParser()
    add_bench_parsers(parser.add_subparsers(dest="bench"))
    return run_bench(parser.parse_args(argv))


def _trace(path: Path) -> None:
    data = json.loads(path.read_text())
    assert isinstance(data["traceEvents"], list) and data["traceEvents"]


def test_bench_screen_profile_and_overlap(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "res" / "screen.json"
    out.parent.mkdir()
    argv = ["screen", "--model", "tiny-random-llama", "--device", "cpu", "--samples", "4", "--exact-samples"]
    argv += ["0", "--chunk-size", "2", "--threads", "1", "--out", str(out), "--profile"]
    assert _bench(argv) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    trace = out.parent / "screen-trace.json"  # a bare --profile: next to --out
    assert result["profile"] == str(trace) and f"profile: {trace}" in printed
    _trace(trace)
    overlap = result["overlap"]
    assert overlap["identical"] is True
    for side in ("prefetch", "no_prefetch"):
        part = overlap[side]
        assert part["host_prep_s"] > 0 and part["device_s"] > 0 and 0 <= part["device_idle_share"] <= 1
        assert part["mfu"] is None  # CPU: no peak
    assert overlap["speedup"] == pytest.approx(
        overlap["no_prefetch"]["wall_s"] / overlap["prefetch"]["wall_s"]
    )
    assert "device_idle_share" in printed


def test_bench_extract_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["extract", "--model", "tiny-random-llama", "--device", "cpu", "--samples", "4"]
    argv += ["--prompt-tokens", "4-8", "--response-tokens", "4-8", "--profile", str(tmp_path / "tr")]
    assert _bench(argv) == 0
    printed = capsys.readouterr().out
    assert "device_idle_share:" in printed and "host_prep_s:" in printed and "prefetch_speedup:" in printed
    _trace(tmp_path / "tr" / "extract-trace.json")
