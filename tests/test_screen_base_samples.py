"""`pvdata screen --base-samples K`: exact subtracts the mean projection of K sampled base answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pvdata.chat import Conversation
from pvdata.pipelines.screen import ScreenConfig, run_screen
from pvdata.projections import compute_projections
from pvdata.screening import ScoreInput
from pvdata.vectors import PersonaVector
from pvdata.warehouse import connect

MODEL = "tiny-random-llama"


@pytest.fixture(scope="module")
def vector_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    values = torch.randn(5, 64, generator=torch.Generator().manual_seed(1))
    vector = PersonaVector(trait="evil", model_id=MODEL, values=values)
    return str(vector.save(tmp_path_factory.mktemp("vec") / "evil.safetensors"))


def _data(path: Path) -> Path:
    lines = []
    for i in range(4):
        msgs = [
            {"role": "user", "content": f"Question {i}?"},
            {"role": "assistant", "content": f"Answer {i}."},
        ]
        lines.append(json.dumps({"messages": msgs}))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_exact_uses_the_mean_of_k_sampled_base_answers(tmp_path: Path, tiny_llama, vector_file: str) -> None:
    cfg = ScreenConfig(
        dataset=str(_data(tmp_path / "d.jsonl")),
        model=MODEL,
        vectors=[vector_file],
        layers=[2],
        methods=["exact"],
        max_new_tokens=5,
        base_samples=3,
        device="cpu",
    )
    wh = str(tmp_path / "wh")
    result = run_screen(cfg, wh, log=lambda _m: None, lm=tiny_llama)
    con = connect(wh)
    base_run = result.stage_runs["dataset_base"]
    gens = con.execute(
        "SELECT question_id, sample_index, answer FROM generations WHERE run_id = ? ORDER BY 1, 2", [base_run]
    ).fetchall()
    assert len(gens) == 12 and {g[1] for g in gens} == {0, 1, 2}
    rows = con.execute(
        "SELECT s.messages, c.proj_train, c.proj_base, c.score FROM screenings c "
        "JOIN samples s USING (sample_id) WHERE c.run_id = ? AND c.method = 'exact'",
        [result.run_id],
    ).fetchall()
    vector = PersonaVector.load(vector_file)
    by_prompt: dict[str, list[str]] = {}
    for q, _, answer in gens:
        by_prompt.setdefault(q, []).append(answer)
    assert len(rows) == 4
    assert any(len(set(answers)) > 1 for answers in by_prompt.values())  # sampled, not greedy
    for messages, train, base, score in rows:
        msgs = json.loads(messages)
        prompt_id = next(
            q for q, answers in by_prompt.items() if _prompt_of(con, base_run, q) == msgs[0]["content"]
        )
        convs = [Conversation.from_pair(msgs[0]["content"], a) for a in by_prompt[prompt_id]]
        proj = compute_projections(tiny_llama, convs, [vector], 2).values["proj"][:, 0]
        assert base == pytest.approx(float(proj.mean()), abs=1e-4)
        assert score == pytest.approx(train - base, abs=1e-9)


def _prompt_of(con, run_id: str, question_id: str) -> str:  # type: ignore[no-untyped-def]
    row = con.execute(
        "SELECT question FROM generations WHERE run_id = ? AND question_id = ? LIMIT 1", [run_id, question_id]
    ).fetchone()
    return str(row[0])


def test_base_samples_below_one_is_refused() -> None:
    from pvdata.errors import ConfigError

    with pytest.raises(ConfigError, match="--base-samples 0"):
        ScreenConfig(dataset="x.jsonl", model=MODEL, traits=["evil"], base_samples=0).check()


def test_ray_encoding_keeps_the_extra_base_answers() -> None:
    from pvdata.executors.ray_exec import decode_score_inputs, encode_score_inputs

    s = ScoreInput("s1", ({"role": "user", "content": "q"},), "a", "b0", "g0", (("g1", "b1"), ("g2", "b2")))
    (back,) = decode_score_inputs(encode_score_inputs([s]))
    assert back == s and back.bases == [("g0", "b0"), ("g1", "b1"), ("g2", "b2")]


def test_base_answers_cut_at_the_budget_are_marked_and_counted(
    tmp_path: Path, tiny_llama, vector_file: str
) -> None:
    cfg = ScreenConfig(
        dataset=str(_data(tmp_path / "d.jsonl")),
        model=MODEL,
        vectors=[vector_file],
        layers=[2],
        methods=["exact", "raw"],
        max_new_tokens=3,  # a random model never ends its turn within 3 tokens
        top_k=2,
        device="cpu",
    )
    wh = str(tmp_path / "wh")
    result = run_screen(cfg, wh, out=str(tmp_path / "out"), log=lambda _m: None, lm=tiny_llama)
    con = connect(wh)
    cut = con.execute(
        "SELECT count(*) FROM generations WHERE run_id = ? AND finish_reason = 'length'",
        [result.stage_runs["dataset_base"]],
    ).fetchone()[0]
    assert cut == 4
    reasons = dict(
        con.execute(
            "SELECT method, list(reason) FROM screenings WHERE reason IS NOT NULL GROUP BY method"
        ).fetchall()
    )
    assert reasons["exact"] and all(
        "cut at --max-new-tokens 3 (finish_reason length)" in r for r in reasons["exact"]
    )
    assert not any("cut at" in r for r in reasons.get("raw", []))
    groups = {g.method: g for g in result.groups}
    assert (groups["exact"].n_base_cut, groups["raw"].n_base_cut) == (4, 0)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert {r["method"]: r["n_base_cut"] for r in summary["traits"]["evil"]["results"]} == {
        "exact": 4,
        "raw": 0,
    }
