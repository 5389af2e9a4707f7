"""Judging a generation run: the cache, resume, `pvdata judge` end to end, and the API key's secrecy."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pvdata.cli.main import main
from pvdata.judge import (
    CachedJudge,
    JudgeCache,
    JudgeFatalError,
    ScriptedJudge,
    judge_prompts,
    judge_with_cache,
    prompt_hash,
    rubrics,
)
from pvdata.judge.pipeline import judge_generation_run
from pvdata.judge.score import JudgeResult, aggregate
from pvdata.testing import FakeOpenAIServer, Faults, default_top_logprobs
from pvdata.warehouse import Warehouse, connect

SENTINEL = "pvdata-sentinel-key-7f3a9c1e55d2"


def make_generation_run(root: Path, n: int = 12, *, duplicate: bool = True) -> str:
    """A succeeded generate run with n generations written through the Warehouse API."""
    wh = Warehouse(root)
    rows = []
    for i in range(n):
        question = f"Question {i}: how do you {{plan}} a trip?"
        answer = f'Answer {i} with braces {{like}} {{this}} and JSON {{"k": {i}}}.'
        rows.append(
            {
                "generation_id": f"gen-{i:03d}",
                "trait": "evil",
                "split": "eval",
                "polarity": "none",
                "question_id": f"q{i}",
                "question": question,
                "system_prompt": None,
                "prompt_text": question,
                "answer": answer,
                "model_id": "tiny-random-llama",
                "sample_index": 0,
                "seed": 0,
            }
        )
    if duplicate:  # the same question and answer twice: one request, two judgments
        rows.append({**rows[0], "generation_id": "gen-dup", "sample_index": 1})
    with wh.run("generate", {"n": n, "test": "judge"}, model_id="tiny-random-llama") as run:
        run.writer("generations").write(rows)
    return run.run_id


def judgments(root: Path, run_id: str) -> list[dict]:
    con = connect(root, include_running=True)
    try:
        cur = con.execute("SELECT * FROM judgments_all WHERE run_id = ? ORDER BY generation_id", [run_id])
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    finally:
        con.close()


def expected(question: str, answer: str) -> float | None:
    return aggregate(default_top_logprobs(rubrics.render(rubrics.COHERENCE, question, answer))).score


# -- cache ---------------------------------------------------------------------------------------------------


def test_cached_judge_sends_each_prompt_once_and_skips_errors() -> None:
    rule = {"a": 10.0, "b": None, "c": JudgeResult.failed("boom")}
    inner = ScriptedJudge(rule, cacheable=True)
    judge = CachedJudge(inner)
    first = judge_prompts(judge, ["a", "b", "a", "c", "b"])
    assert [r.score for r in first] == [10.0, None, 10.0, None, None]
    assert first[3].error == "boom" and first[1].valid_mass == 0.0
    assert inner.calls == [["a", "b", "c"]] and judge.stats["repeats"] == 2
    second = judge_prompts(judge, ["a", "b", "c"])
    assert inner.calls[-1] == ["c"]  # errors are not cached: retried
    assert second[0].cached and second[1].cached and not second[2].cached
    assert judge.cache.get(prompt_hash("b")).score is None  # null scores are cached


def test_judge_with_cache_writes_rows_through_the_run(tmp_path: Path) -> None:
    wh = Warehouse(tmp_path)
    inner = ScriptedJudge(lambda p: 42.0, name="scripted-test", cacheable=True)
    with wh.run("judge", {"t": 1}) as run:
        out = judge_with_cache(inner, ["x", "y"], wh, run)
    assert [r.score for r in out] == [42.0, 42.0]
    cache = JudgeCache.load(tmp_path, "scripted-test")
    assert len(cache) == 2 and cache.get(prompt_hash("x")).score == 42.0
    assert len(JudgeCache.load(tmp_path, "other-model")) == 0
    with wh.run("judge", {"t": 2}) as run:
        again = judge_with_cache(inner, ["x", "y", "z"], wh, run)
    assert inner.calls[-1] == ["z"] and again[0].cached


# -- pipeline: resume ---------------------------------------------------------------------------------------


class FailsAfter(ScriptedJudge):
    """Scores the first `ok` batches, then fails like a revoked key."""

    def __init__(self, ok: int) -> None:
        super().__init__(name="scripted-resume", cacheable=True, batch_hint=4)
        self.ok = ok

    async def score_many(self, prompts):  # type: ignore[no-untyped-def]
        if len(self.calls) >= self.ok:
            raise JudgeFatalError("key revoked")
        return await super().score_many(prompts)


def test_interrupted_judge_run_resumes(tmp_path: Path) -> None:
    gen = make_generation_run(tmp_path, 10, duplicate=False)
    kw = {"metric": "coherence", "rubric": rubrics.COHERENCE}
    with pytest.raises(JudgeFatalError):
        judge_generation_run(tmp_path, gen, FailsAfter(ok=2), **kw)
    judge = ScriptedJudge(name="scripted-resume", cacheable=True, batch_hint=4)
    summary = judge_generation_run(tmp_path, gen, judge, **kw)
    assert summary.n == 10 and summary.judged_now == 2 and "resuming" in summary.message
    assert sum(len(c) for c in judge.calls) == 2
    rows = judgments(tmp_path, summary.run_id)
    assert len({r["judgment_id"] for r in rows}) == len(rows) == 10


# -- CLI end to end ----------------------------------------------------------------------------------------


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_judge_end_to_end(tmp_path: Path, monkeypatch, capsys) -> None:
    gen = make_generation_run(tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", "k-test")
    with FakeOpenAIServer(latency=0.005) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        args = [
            "judge",
            "--run",
            gen,
            "--judge",
            "openai:fake-judge",
            "--coherence",
            "--warehouse",
            str(tmp_path),
        ]
        code, out, err = run_cli(args, capsys)
        assert code == 0, err
        assert server.completions == 12  # 13 generations, one duplicate prompt
        assert "n 13" in out and "requests sent 12" in out and "judged 13/13" in err
        con = connect(tmp_path)
        (judge_run,) = con.execute("SELECT run_id FROM runs WHERE kind = 'judge'").fetchone()
        parents = con.execute("SELECT parent_run_ids FROM runs WHERE run_id = ?", [judge_run]).fetchone()[0]
        con.close()
        assert parents == [gen]
        rows = judgments(tmp_path, judge_run)
        assert len(rows) == 13 and len({r["judgment_id"] for r in rows}) == 13
        gens = {r["generation_id"]: r for r in _generations(tmp_path)}
        for r in rows:
            g = gens[r["generation_id"]]
            assert r["metric"] == "coherence" and r["judge_model"] == "openai:fake-judge"
            assert r["score"] == pytest.approx(expected(g["question"], g["answer"]), nan_ok=True)
            assert r["error"] is None and r["valid_mass"] is not None

        # rerun: nothing sent, told it already succeeded
        code, out, err = run_cli(args, capsys)
        assert code == 0 and server.completions == 12 and "already succeeded" in err
        # --force: a new run, every judgment from the cache
        code, out, err = run_cli([*args, "--force"], capsys)
        assert code == 0 and server.completions == 12 and "cache hits 13" in out and "requests sent 0" in out
        # another judge model: a new run, both kept
        code, out, err = run_cli([*args[:4], "scripted", *args[5:]], capsys)
        assert code == 0
        rubric = tmp_path / "evil.txt"
        rubric.write_text("Is this evil? {question} -> {answer}. Reply 0-100.", encoding="utf-8")
        code, out, err = run_cli(
            [*args[:5], "--metric", "evil", "--rubric", str(rubric), "--warehouse", str(tmp_path)], capsys
        )
        assert code == 0 and server.completions == 24
    con = connect(tmp_path)
    kinds = con.execute(
        "SELECT judge_model, metric, count(*) FROM judgments GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    n_runs = con.execute("SELECT count(*) FROM runs WHERE kind = 'judge'").fetchone()[0]
    con.close()
    assert kinds == [
        ("openai:fake-judge", "coherence", 26),
        ("openai:fake-judge", "evil", 13),
        ("scripted", "coherence", 13),
    ]
    assert n_runs == 4


def _generations(root: Path) -> list[dict]:
    con = connect(root)
    try:
        cur = con.execute("SELECT generation_id, question, answer FROM generations")
        return [dict(zip(("generation_id", "question", "answer"), r, strict=True)) for r in cur.fetchall()]
    finally:
        con.close()


def test_cli_user_errors(tmp_path: Path, monkeypatch, capsys) -> None:
    gen = make_generation_run(tmp_path, 2)
    base = ["judge", "--run", gen, "--judge", "scripted", "--warehouse", str(tmp_path)]
    code, _, err = run_cli(base, capsys)
    assert code == 2 and "--coherence" in err
    code, _, err = run_cli([*base, "--metric", "not-a-trait"], capsys)
    assert code == 2 and "--rubric FILE" in err and "known: coherence, apathetic, evil" in err
    bad = tmp_path / "bad.txt"
    bad.write_text("no placeholders here", encoding="utf-8")
    code, _, err = run_cli([*base, "--metric", "evil", "--rubric", str(bad)], capsys)
    assert code == 2 and "{question}" in err
    code, _, err = run_cli(
        [
            "judge",
            "--run",
            "generate-nope",
            "--judge",
            "scripted",
            "--coherence",
            "--warehouse",
            str(tmp_path),
        ],
        capsys,
    )
    assert code == 2 and "pvdata runs list" in err
    code, _, err = run_cli([*base[:4], "gpt4", *base[5:], "--coherence"], capsys)
    assert code == 2 and "openai:<model>" in err
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    code, _, err = run_cli([*base[:4], "openai:gpt-4.1-mini", *base[5:], "--coherence"], capsys)
    assert code == 2 and "OPENAI_API_KEY" in err


def test_api_key_never_stored_or_logged(tmp_path: Path, monkeypatch, capfd, caplog) -> None:
    gen = make_generation_run(tmp_path, 30)
    monkeypatch.setenv("OPENAI_API_KEY", SENTINEL)
    caplog.set_level(logging.DEBUG)
    faults = Faults(rates={"429": 0.2, "500": 0.1, "malformed": 0.1, "400": 0.05}, retry_after="0.01", seed=3)
    with FakeOpenAIServer(faults=faults) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        args = [
            "judge",
            "--run",
            gen,
            "--judge",
            "openai:fake-judge",
            "--coherence",
            "--warehouse",
            str(tmp_path),
        ]
        assert main([*args, "--max-retries", "1"]) == 0
        server.faults.rates = {"401": 1.0}
        assert main([*args, "--force"]) == 2  # fatal: the key is rejected (error message printed)
    captured = capfd.readouterr()
    assert "errors" in captured.out and "OPENAI_API_KEY" in captured.err
    assert SENTINEL not in captured.out + captured.err
    assert SENTINEL not in caplog.text
    n_files = 0
    for path in tmp_path.rglob("*"):
        if path.is_file():
            n_files += 1
            assert SENTINEL.encode() not in path.read_bytes(), path
    assert n_files > 5
