"""`pvdata screen --turns all`: every assistant turn of a multi-turn chat is scored, the sample takes its
highest turn, checked against independent projections of each turn on a tiny model."""

from __future__ import annotations

import json

import pytest

from pvdata.chat import Conversation
from pvdata.cli.main import main
from pvdata.pipelines.screen import ScreenConfig, run_screen
from pvdata.projections import compute_projections
from pvdata.samples import read_dataset
from pvdata.screening.turns import best_turn_rows, earlier_turns, turn_owners
from pvdata.warehouse import connect
from tests.test_screen import MODEL, QUIET, make_vector, write_lines

SYSTEM = {"role": "system", "content": "Be brief."}


def multi(first: str, last: str) -> dict:
    return {
        "messages": [
            SYSTEM,
            {"role": "user", "content": "Hi, who are you?"},
            {"role": "assistant", "content": first},
            {"role": "user", "content": "And what do you do?"},
            {"role": "assistant", "content": last},
        ]
    }


def row(sid: str, score: float | None, error: str | None = None) -> dict:
    return {"sample_id": sid, "vector_id": "v", "layer": 3, "method": "raw", "score": score, "error": error}


def test_best_turn_rows_takes_the_highest_turn_and_names_a_failed_one():
    owners = {"a@2": ("a", 1, 3), "a@4": ("a", 2, 3), "b@2": ("b", 1, 2)}
    rows = [
        row("a", 1.0),
        row("a@2", 3.0),
        row("a@4", 2.0),
        row("b", 5.0),
        row("b@2", None, "too long"),
        row("c", 0.5),
    ]
    got = {r["sample_id"]: r for r in best_turn_rows(rows, owners)}
    assert got["a"]["score"] == 3.0 and got["a"]["turn"] == (1, 3)
    assert got["b"]["score"] is None and got["b"]["error"] == "assistant turn 1 of 2: too long"
    assert got["c"]["score"] == 0.5 and got["c"]["turn"] is None  # a one-turn chat is itself


def test_preference_pairs_are_not_expanded(tmp_path):
    pair = {"prompt": multi("x", "y")["messages"][:4], "chosen": "Good.", "rejected": "Bad."}
    ds = read_dataset(write_lines(tmp_path / "p.jsonl", [json.dumps(pair)]))
    assert earlier_turns(ds.samples[0]) == [] and turn_owners(ds.samples) == {}


def test_turns_all_scores_every_assistant_turn(tmp_path, tiny_llama):
    v = make_vector(4)
    vector_file = str(v.save(tmp_path / "evil.safetensors"))
    records = [
        multi("I am a helper.", "I answer questions."),
        multi("Nobody you know.", "I answer questions."),
    ]
    records.append(
        {"messages": [{"role": "user", "content": "One turn?"}, {"role": "assistant", "content": "Yes."}]}
    )
    data = write_lines(tmp_path / "chats.jsonl", [json.dumps(r) for r in records])
    wh = str(tmp_path / "wh")
    logs: list[str] = []
    last = ScreenConfig(
        dataset=data, model=MODEL, vectors=[vector_file], layers=[3], methods=["raw"], top_k=1
    )
    run_screen(last, wh, out=str(tmp_path / "o1"), lm=tiny_llama, log=logs.append)
    assert any("2 sample(s) have assistant turns before the last" in line for line in logs)

    cfg = ScreenConfig(
        dataset=data, model=MODEL, vectors=[vector_file], layers=[3], methods=["raw", "exact"], top_k=1,
        turns="all", max_new_tokens=3,
    )  # fmt: skip
    result = run_screen(cfg, wh, out=str(tmp_path / "o2"), lm=tiny_llama, **QUIET)
    ds = read_dataset(data)
    convs, owner = [], []
    for s in ds.samples:
        convs.append(Conversation(s.prompt, s.answer))
        owner.append((s.sample_id, None))
        for k, (_i, prompt, text) in enumerate(earlier_turns(s), start=1):
            convs.append(Conversation(prompt, text))
            owner.append((s.sample_id, k))
    ref = compute_projections(tiny_llama, convs, [v], [3]).values["proj"][:, 0]
    con = connect(wh)
    got = dict(
        con.execute(
            "SELECT sample_id, score FROM screenings WHERE method = 'raw' AND run_id = ?", [result.run_id]
        ).fetchall()
    )
    earlier_wins = 0
    for s in ds.samples:
        turns = [float(x) for (sid, _k), x in zip(owner, ref, strict=True) if sid == s.sample_id]
        assert got[s.sample_id] == pytest.approx(max(turns), abs=1e-5)
        earlier_wins += max(turns) > turns[0]
    assert earlier_wins >= 1  # the check above tells a last-turn score from the highest turn's
    reasons = [
        r
        for (r,) in con.execute(
            "SELECT reason FROM screenings WHERE run_id = ? AND reason LIKE '%assistant turn%'",
            [result.run_id],
        ).fetchall()
    ]
    assert all("of 2 (--turns all)" in r for r in reasons)
    # exact: a base answer to every distinct conversation so far: 3 last-turn prompts, and the two
    # chats' first turns share one ([system, user])
    base_run = result.stage_runs["dataset_base"]
    n_base = con.execute("SELECT count(*) FROM generations WHERE run_id = ?", [base_run]).fetchone()[0]
    assert n_base == 4
    assert (
        result.stage_runs["dataset_projections"]
        != run_screen(last, wh, out=str(tmp_path / "o3"), lm=tiny_llama, **QUIET).stage_runs[
            "dataset_projections"
        ]
    )
    again = run_screen(cfg, wh, out=str(tmp_path / "o4"), lm=tiny_llama, **QUIET)
    assert again.stage_runs == result.stage_runs  # a rerun finds every stage done


def test_an_unscorable_earlier_turn_leaves_the_sample_unscored(tmp_path, tiny_llama):
    vector_file = str(make_vector(4).save(tmp_path / "evil.safetensors"))
    long = " ".join(f"w{i}" for i in range(700))  # longer than the tiny model's 512 positions
    record = multi(long, "Short.")
    record["messages"][3]["content"] = "ok"
    data = write_lines(tmp_path / "d.jsonl", [json.dumps(record)])
    cfg = ScreenConfig(
        dataset=data,
        model=MODEL,
        vectors=[vector_file],
        layers=[3],
        methods=["raw"],
        threshold=0.0,
        turns="all",
    )
    # the last turn's context holds the long turn too, so both are too long: the first is named
    result = run_screen(cfg, str(tmp_path / "wh"), out=str(tmp_path / "o"), lm=tiny_llama, **QUIET)
    assert result.records["unscreened"] == 1
    reason = connect(tmp_path / "wh").execute("SELECT reason FROM screenings").fetchone()[0]
    assert "not scored: assistant turn 1 of 2: training answer: too long" in reason


def test_turns_must_be_last_or_all(tmp_path, capsys):
    data = write_lines(tmp_path / "d.jsonl", [json.dumps(multi("a", "b"))])
    with pytest.raises(SystemExit) as info:
        main(["screen", data, "--model", MODEL, "--trait", "evil", "--turns", "some"])
    assert info.value.code == 2 and "invalid choice: 'some'" in capsys.readouterr().err
