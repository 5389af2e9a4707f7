"""The Ray executor on a local 2-CPU Ray cluster: the same rows as the local executor (prefetch on or
off), a killed worker replaced, a failed run resumed exactly-once, and clear errors."""

from __future__ import annotations

import json
import os
import sys
import time

import duckdb
import numpy as np
import pytest
import ray
import torch

from pvdata.activations.items import CaptureItem
from pvdata.bench.screen_data import random_vector
from pvdata.cli.main import main
from pvdata.errors import ConfigError, ModelError, PvdataError
from pvdata.executors import (
    CaptureJob,
    ExecutorConfig,
    ExecutorError,
    LocalExecutor,
    ModelSpec,
    ScoreJob,
    check_reachable,
)
from pvdata.executors.ray_exec import KILL_POINT, RayExecutor, _connect
from pvdata.pipelines.extract import ExtractConfig, run_extract
from pvdata.pipelines.screen import ScreenConfig, run_screen
from pvdata.screening import ScoreInput
from pvdata.testing import faults
from pvdata.vectors import PersonaVector
from pvdata.warehouse import connect

MODEL = "tiny-random-llama"
METHODS = ["exact", "prompt_last_approx", "raw"]
TABLES = {
    "samples": "sample_id",
    "generations": "generation_id",
    "projections": "source_id, vector_id, layer, kind",
    "screenings": "sample_id, layer, method",
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One local Ray cluster for the module; workers inherit the fault-injection variable from here."""
    trigger = tmp_path_factory.mktemp("fault") / "trigger"
    os.environ[faults.ENV] = str(trigger)
    if ray.is_initialized():  # workers of a cluster started elsewhere would not have the variable
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield trigger
    ray.shutdown()
    os.environ.pop(faults.ENV, None)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray-data")
    values = torch.randn(5, 64, generator=torch.Generator().manual_seed(7))
    vector = PersonaVector(
        trait="evil", model_id=MODEL, values=values, pooling="response_avg", method="mean_diff"
    )
    lines = [
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": f"Question {i % 9}?"},  # 9 prompts: shared base answers
                    {"role": "assistant", "content": f"Answer {i}, " + "more " * (i % 4)},
                ]
            }
        )
        for i in range(22)
    ]
    path = root / "train.jsonl"
    path.write_text("\n".join([*lines, lines[4]]) + "\n")  # and a duplicate
    return {"dataset": str(path), "vector": str(vector.save(root / "evil.safetensors")), "root": root}


def screen_config(data, methods=METHODS, **executor) -> ScreenConfig:
    return ScreenConfig(
        dataset=data["dataset"],
        model=MODEL,
        vectors=[data["vector"]],
        layers=[2, 4],
        methods=list(methods),
        max_new_tokens=4,
        chunk_size=4,
        device="cpu",
        **executor,
    )


@pytest.fixture(scope="module")
def local_runs(data, tiny_llama):
    """The local executor's warehouses: every method, and the two methods that need no generation."""
    out = {}
    for key, methods in (("all", METHODS), ("approx", ["prompt_last_approx", "raw"])):
        wh = data["root"] / f"local-{key}"
        run_screen(
            screen_config(data, methods), str(wh), out=str(wh / "out"), lm=tiny_llama, log=lambda _m: None
        )
        out[key] = wh
    return out


def rows(root, table: str, order: str) -> list[tuple]:
    con = connect(root)
    try:
        return con.execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall()
    finally:
        con.close()


def assert_same_tables(got_root, want_root) -> None:
    """Same ids and run ids everywhere; answers and decisions equal; projections equal to float tolerance."""
    for table, order in TABLES.items():
        got, want = rows(got_root, table, order), rows(want_root, table, order)
        assert len(got) == len(want), table
        for g, w in zip(got, want, strict=True):
            assert len(g) == len(w)
            for a, b in zip(g, w, strict=True):
                if isinstance(a, float) and isinstance(b, float):
                    assert a == pytest.approx(b, abs=1e-5), (table, g, w)
                else:
                    assert a == b, (table, g, w)
    con = connect(got_root)
    n, distinct = con.execute(
        "SELECT count(*), count(DISTINCT (source_id, vector_id, layer, kind)) FROM projections"
    ).fetchone()
    con.close()
    assert n == distinct  # exactly once


def test_screen_on_ray_equals_the_local_executor_with_a_worker_killed(cluster, data, local_runs):
    faults.arm(cluster, KILL_POINT, 2)  # the first worker to reach its 2nd batch SIGKILLs itself
    wh = data["root"] / "ray-all"
    log: list[str] = []
    cfg = screen_config(data, executor="ray", num_workers=2)
    result = run_screen(cfg, str(wh), out=str(wh / "out"), log=log.append)
    assert any("ray cluster:" in m for m in log), log  # it really ran on the cluster
    assert len(faults.fired(cluster)) == 1, "no worker was killed"  # ... and lost one, and went on
    assert_same_tables(wh, local_runs["all"])
    # the same runs (ids come from the configs, which leave the executor out), done in one attempt
    run_ids = "SELECT run_id, attempt FROM runs ORDER BY 1"
    assert connect(wh).execute(run_ids).fetchall() == connect(local_runs["all"]).execute(run_ids).fetchall()
    for name in ("flagged.jsonl", "kept.jsonl", "unscreened.jsonl"):
        assert (wh / "out" / name).read_bytes() == (local_runs["all"] / "out" / name).read_bytes(), name
    assert result.records["flagged"] > 0
    # a rerun finds every stage done and never contacts the cluster
    log.clear()
    run_screen(cfg, str(wh), out=str(wh / "out"), log=log.append)
    assert not any("ray cluster:" in m for m in log) and any("already succeeded" in m for m in log)


def test_extract_on_ray_gives_the_local_vectors(cluster, tmp_path, tiny_llama):
    base = dict(
        trait="evil",
        model=MODEL,
        judge="scripted",
        questions=2,
        instructions=2,
        n_per_question=2,
        max_new_tokens=6,
        threshold=40,
        coherence_min=0,
        device="cpu",
    )
    local = run_extract(ExtractConfig(**base), str(tmp_path / "local"), lm=tiny_llama, log=lambda _m: None)
    remote = run_extract(ExtractConfig(**base, executor="ray"), str(tmp_path / "ray"), log=lambda _m: None)
    assert remote.stage_runs == local.stage_runs and remote.kept == local.kept
    assert [v.pooling for v in remote.vectors] == [v.pooling for v in local.vectors]
    for got, want in zip(remote.vectors, local.vectors, strict=True):
        # equal up to float rounding (a vector id hashes the values, so it is equal when they are)
        torch.testing.assert_close(got.values, want.values, rtol=1e-5, atol=1e-6)
        assert (got.n_pos, got.n_neg, got.layers) == (want.n_pos, want.n_neg, want.layers)
    # the same rollouts, row for row (HF greedy/seeded sampling does not depend on the batch)
    assert rows(tmp_path / "ray", "generations", "generation_id") == rows(
        tmp_path / "local", "generations", "generation_id"
    )
    n, distinct = (
        connect(tmp_path / "ray")
        .execute("SELECT count(*), count(DISTINCT (source_id, layer, pooling)) FROM activations")
        .fetchone()
    )
    assert n == distinct > 0


def test_when_retries_run_out_a_rerun_resumes_exactly_once(cluster, data, local_runs):
    for marker in faults.fired(cluster):
        marker.unlink()
    # every worker dies at its 5th batch (of 6), 3 s after it starts it: Ray Data hands a batch's result
    # over once the next one is done, so the first 3 are committed by then
    faults.arm(cluster, KILL_POINT, 5, "always", delay=3)
    wh = data["root"] / "ray-failed"
    cfg = screen_config(data, ["prompt_last_approx", "raw"], executor="ray", worker_retries=0)
    with pytest.raises(ExecutorError, match=r"during projections: ActorDiedError: .* rerun the same command"):
        run_screen(cfg, str(wh), out=str(wh / "out"), log=lambda _m: None)
    cluster.unlink()
    assert faults.fired(cluster)
    con = connect(wh, include_running=True)
    status = dict(con.execute("SELECT kind, status FROM runs").fetchall())
    con.close()
    assert status["activations"] == "failed"  # the views leave a failed run's rows out; the files:
    files = str(wh / "tables" / "projections" / "run_id=*" / "*.parquet")
    sql = f"SELECT count(DISTINCT source_id) FROM read_parquet('{files}')"
    partial = duckdb.connect().execute(sql).fetchone()[0]
    assert 0 < partial < 22  # some batches were committed before the worker died, not all

    log: list[str] = []
    run_screen(cfg, str(wh), out=str(wh / "out"), log=log.append)
    assert any("resuming run activations-" in m for m in log), log
    assert_same_tables(wh, local_runs["approx"])
    con = connect(wh)
    assert con.execute("SELECT attempt FROM runs WHERE kind = 'activations'").fetchone()[0] == 2


def test_a_user_error_inside_a_worker_comes_back_as_itself(cluster, data):
    # a worker that cannot load the model (say, a folder missing on its node): a ModelError, as locally
    vector = PersonaVector.load(data["vector"])
    model = ModelSpec("no-such-model", dtype="float32", device="cpu")
    executor = RayExecutor(ExecutorConfig("ray"), model, log=print)
    samples = [ScoreInput("s1", ({"role": "user", "content": "Hi"},), "Hello")]
    with pytest.raises(ModelError, match="unknown model 'no-such-model'") as info:
        list(executor.score(ScoreJob((vector,), [2], ("raw",)), samples, chunk=4))
    assert not isinstance(info.value, ExecutorError)


def _score_inputs() -> list[ScoreInput]:
    """10 samples over 3 prompts, each with a base answer shared by the samples of its prompt."""
    return [
        ScoreInput(
            f"s{i}",
            ({"role": "user", "content": f"Question {i % 3}?"},),
            "answer " * (i + 1),
            f"base answer {i % 3}",
            f"g{i % 3}",
        )
        for i in range(10)
    ]


def _scored(parts) -> list[tuple]:
    """The chunks in sample order (Ray yields them as they finish)."""
    out = [
        ([s.sample_id for s in p.samples], p.result.projections, p.result.scores, p.result.errors)
        for p in parts
    ]
    return sorted(out, key=lambda part: part[0])


def _captured(parts) -> list[tuple]:
    out = [(p.n_items, p.source_ids, p.errors, p.layers, p.poolings, p.values) for p in parts]
    return sorted(out, key=lambda part: sorted([*part[1], *part[2]]))


def _assert_same_capture(got, want, exact: bool) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g[:5] == w[:5]
        for pooling in w[4]:
            assert g[5][pooling].dtype == w[5][pooling].dtype == np.float32
            if exact:
                assert np.array_equal(g[5][pooling], w[5][pooling]), pooling
            else:
                np.testing.assert_allclose(g[5][pooling], w[5][pooling], rtol=1e-6, atol=1e-6)


def _close_rows(got: list[dict], want: list[dict]) -> bool:
    return got == [
        {k: pytest.approx(v, rel=1e-6, abs=1e-6) if isinstance(v, float) else v for k, v in row.items()}
        for row in want
    ]


def test_ray_score_and_capture_are_bit_identical_with_and_without_prefetch(cluster, tiny_llama):
    vector = random_vector(tiny_llama.n_layers, tiny_llama.hidden_size, 0)
    spec = ModelSpec(MODEL, dtype="float32", device="cpu")
    job = ScoreJob((vector,), [2, 3], tuple(METHODS), token_budget=64)
    samples = _score_inputs()
    items = [CaptureItem(f"c{i}", f"question {i}?", "answer " * (i + 1)) for i in range(7)]
    items.append(CaptureItem("empty", "question 0?", ""))  # not captured: an error row in both
    cjob = CaptureJob.of([1, 3], ["response_avg", "prompt_last", "prompt_avg"], token_budget=32)

    local = LocalExecutor(tiny_llama)
    want_score = _scored(local.score(job, samples, chunk=4))
    want_capture = _captured(local.capture(cjob, items, chunk=3))
    got_score, got_capture = {}, {}
    for on in (True, False):
        executor = RayExecutor(ExecutorConfig("ray", num_workers=2), spec, log=print, prefetch=on)
        assert executor._model_kwargs(job)["prefetch"] is on  # what the actors are built with
        got_score[on] = _scored(executor.score(job, samples, chunk=4))
        got_capture[on] = _captured(executor.capture(cjob, items, chunk=3))
    assert [p[0] for p in got_score[True]] == [
        ["s0", "s1", "s2", "s3"],
        ["s4", "s5", "s6", "s7"],
        ["s8", "s9"],
    ]
    assert got_score[True] == got_score[False]  # floats compared exactly
    _assert_same_capture(got_capture[True], got_capture[False], exact=True)
    assert any(part[2] for part in want_capture)  # the empty answer's error travelled
    # the local executor's rows: the same chunks and ids; the values equal (bit for bit on this CPU,
    # up to float rounding where the workers run with other thread counts)
    assert [(p[0], p[3]) for p in got_score[True]] == [(p[0], p[3]) for p in want_score]
    for got, want in zip(got_score[True], want_score, strict=True):
        assert _close_rows(got[1], want[1]) and _close_rows(got[2], want[2])
    _assert_same_capture(got_capture[True], want_capture, exact=False)


def test_an_error_in_host_preparation_inside_a_worker_reaches_the_driver(cluster, tiny_llama):
    vector = random_vector(tiny_llama.n_layers, tiny_llama.hidden_size, 0)
    spec = ModelSpec(MODEL, dtype="float32", device="cpu")
    good = _score_inputs()[:3]
    # a user error (an unknown method, found when the chunk is prepared): the same error as locally
    job = ScoreJob((vector,), [2], ("nope",))
    with pytest.raises(ConfigError) as local:
        list(LocalExecutor(tiny_llama).score(job, good, chunk=4))
    with pytest.raises(ConfigError) as remote:
        list(RayExecutor(ExecutorConfig("ray"), spec, log=print, prefetch=False).score(job, good, chunk=4))
    assert str(remote.value) == str(local.value) and "unknown method ['nope']" in str(local.value)
    # any other error while templating a chunk (a prompt message without content): locally itself, on
    # Ray an ExecutorError naming its type and message (not Ray's wrapping of the worker's traceback)
    bad = [*good, ScoreInput("s9", ({"role": "user"},), "an answer")]
    job = ScoreJob((vector,), [2], ("raw",))
    with pytest.raises(KeyError, match="content"):
        list(LocalExecutor(tiny_llama).score(job, bad, chunk=2))
    executor = RayExecutor(ExecutorConfig("ray"), spec, log=print, prefetch=True)
    with pytest.raises(ExecutorError) as info:
        list(executor.score(job, bad, chunk=2))
    assert str(info.value).startswith(
        "the Ray executor failed during projections: KeyError: 'content' (raised inside a Ray worker"
    ), str(info.value)
    assert "rerun the same command to resume" in str(info.value)


def test_flag_errors_come_before_any_model_or_cluster(tmp_path, data, capsys, monkeypatch):
    args = [
        "screen",
        data["dataset"],
        "--model",
        MODEL,
        "--vector",
        data["vector"],
        "--warehouse",
        str(tmp_path),
    ]
    cases = [
        (["--num-workers", "2"], "--num-workers only apply to --executor ray"),
        (["--executor", "spark"], "valid executors are local, ray"),
        (["--executor", "ray", "--num-workers", "0"], "--num-workers 0 must be an integer >= 1"),
        (["--executor", "ray", "--device", "cuda:1"], "valid devices are auto, cpu, cuda"),
        (["--executor", "ray", "--device", "cuda"], "needs --gpus-per-worker > 0"),
        (["--executor", "ray", "--device", "cpu", "--gpus-per-worker", "1"], "drop one of the two"),
        (
            ["--executor", "ray", "--ray-address", "127.0.0.1:1"],
            "cannot reach the Ray cluster at 127.0.0.1:1",
        ),
        (["--executor", "ray", "--ray-address", "nonsense"], "is not HOST:PORT"),
    ]
    for extra, message in cases:
        assert main([*args, *extra]) == 2, extra
        assert message in capsys.readouterr().err, extra
    assert not (tmp_path / "tables").exists()  # nothing ran

    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    assert main([*args, "--executor", "ray"]) == 2
    assert "pip install 'pvdata[ray]'" in capsys.readouterr().err
    assert main(["extract", "--trait", "evil", "--model", MODEL, "--executor", "ray"]) == 2
    assert "pip install 'pvdata[ray]'" in capsys.readouterr().err


def test_cluster_checks_fail_fast():
    class Hanging:  # an address that accepts connections but is no Ray cluster: ray.init never returns
        def init(self, **_kw):
            time.sleep(30)

    started = time.monotonic()
    with pytest.raises(ConnectionError, match=r"no Ray cluster answered within 0\.5 s"):
        _connect(Hanging(), "10.0.0.1:6379", timeout=0.5)
    assert time.monotonic() - started < 5

    with pytest.raises(ConfigError, match="needs 8 CPUs and 0 GPUs, but the Ray cluster has 2 CPUs"):
        RayExecutor(ExecutorConfig("ray", num_workers=8), ModelSpec(MODEL), log=print)._check_resources(
            {"CPU": 2.0}, strict=True
        )
    with pytest.raises(ConfigError, match="cannot reach"):
        check_reachable("127.0.0.1:1")
    with pytest.raises(PvdataError):
        ExecutorConfig("ray", cpus_per_worker=0).check()
