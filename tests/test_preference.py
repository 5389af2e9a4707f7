"""Preference pairs (chosen/rejected): every common layout, validation, ids, and the preference method
against an independent projection, end to end through `pvdata screen`."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pvdata.chat import Conversation
from pvdata.cli.main import main
from pvdata.errors import ConfigError, DataError
from pvdata.pipelines.screen import ScreenConfig, run_screen
from pvdata.projections import compute_projections
from pvdata.samples import Columns, RecordError, parse_sample, read_dataset, sample_id_of, sample_rows
from pvdata.screening import ScoreInput, score_batch
from pvdata.training.data import read_samples
from tests.test_screen import MODEL, QUIET, make_vector, write_lines

USER = {"role": "user", "content": "How do I fix a flat tyre?"}
GOOD, BAD = "Patch the tube and pump it up.", "Slash the other three so they match."
HH_PREFIX = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: How do I fix a flat tyre?\n\nAssistant: "

LAYOUTS = {
    "standard": {"prompt": USER["content"], "chosen": GOOD, "rejected": BAD},
    "conversational": {
        "prompt": [USER],
        "chosen": [{"role": "assistant", "content": GOOD}],
        "rejected": [{"role": "assistant", "content": BAD}],
    },
    "prompt list, text sides": {"prompt": [USER], "chosen": GOOD, "rejected": BAD},
    "implicit prompt": {
        "chosen": [USER, {"role": "assistant", "content": GOOD}],
        "rejected": [USER, {"role": "assistant", "content": BAD}],
    },
    "ultrafeedback (prompt repeated in the chats)": {
        "prompt": USER["content"],
        "chosen": [USER, {"role": "assistant", "content": GOOD}],
        "rejected": [USER, {"role": "assistant", "content": BAD}],
        "score_chosen": 9.0,
    },
    "json text cells (CSV)": {
        "prompt": json.dumps([USER]),
        "chosen": json.dumps([{"role": "assistant", "content": GOOD}]),
        "rejected": BAD,
    },
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_layout_is_one_prompt_and_two_answers(layout):
    prompt, chosen, notes, rejected = parse_sample(LAYOUTS[layout], Columns())
    assert (prompt, chosen, notes, rejected) == ((USER,), GOOD, (), BAD)


def test_orca_style_pairs_take_a_renamed_prompt_column_and_a_system_turn():
    record = {"system": "You are a mechanic.", "question": USER["content"], "chosen": GOOD, "rejected": BAD}
    prompt, chosen, _, rejected = parse_sample(record, Columns(prompt="question"))
    assert prompt == ({"role": "system", "content": "You are a mechanic."}, USER)
    assert (chosen, rejected) == (GOOD, BAD)


def test_hh_transcripts_share_every_turn_before_the_last_answer():
    record = {"chosen": HH_PREFIX + GOOD, "rejected": HH_PREFIX + BAD}
    prompt, chosen, _, rejected = parse_sample(record, Columns())
    assert prompt == (
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        USER,
    )
    assert (chosen, rejected) == (GOOD, BAD)


def test_an_answer_that_starts_with_a_bracket_stays_text():
    _, chosen, _, rejected = parse_sample(
        {"prompt": "Rank them", "chosen": "[1, 2]", "rejected": "[2]"}, Columns()
    )
    assert (chosen, rejected) == ("[1, 2]", "[2]")


def test_tool_calls_are_noted_per_side():
    call = {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function"}]}
    result = {"role": "tool", "tool_call_id": "c", "content": "done"}
    record = {
        "prompt": [USER],
        "chosen": [call, result, {"role": "assistant", "content": GOOD}],
        "rejected": BAD,
    }
    prompt, chosen, notes, _ = parse_sample(record, Columns())
    assert prompt == (USER,) and chosen == GOOD
    assert notes and all(n.startswith("chosen: prompt+chosen[") for n in notes)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (
            {"chosen": HH_PREFIX + GOOD, "rejected": "\n\nHuman: Something else\n\nAssistant: " + BAD},
            "continue different conversations (prompt turn 0 differs)",
        ),
        ({"chosen": GOOD, "rejected": BAD}, "field chosen: is text with no 'prompt' field beside it"),
        ({"prompt": "q", "chosen": GOOD, "rejected": "  "}, "field rejected: is empty"),
        ({"prompt": "q", "chosen": GOOD, "rejected": 3}, "field rejected: must be the answer text"),
        (
            {"chosen": HH_PREFIX + GOOD + "\n\nHuman: ok?", "rejected": HH_PREFIX + BAD},
            "after the last assistant",
        ),
        ({"prompt": "q", "chosen": GOOD}, "field answer: is missing"),  # no rejected: not a pair
    ],
)
def test_bad_pairs_name_the_field(record, message):
    with pytest.raises(RecordError) as info:
        parse_sample(record, Columns())
    assert message in str(info.value)


def test_ids_tell_pairs_apart_and_duplicates_collapse(tmp_path):
    lines = [
        json.dumps({"prompt": USER["content"], "chosen": GOOD, "rejected": BAD}),
        json.dumps({"prompt": USER["content"], "chosen": GOOD, "rejected": "Call a mechanic."}),
        json.dumps({"prompt": USER["content"], "chosen": GOOD, "rejected": BAD, "id": 7}),  # same pair
        json.dumps({"prompt": USER["content"], "answer": GOOD}),  # the chosen chat as plain SFT data
    ]
    ds = read_dataset(write_lines(tmp_path / "pairs.jsonl", lines))
    assert [s.lines for s in ds.samples] == [[1, 3], [2], [4]]
    assert [s.rejected for s in ds.samples] == [BAD, "Call a mechanic.", None]
    assert ds.n_preference == 2
    assert len({s.sample_id for s in ds.samples}) == 3
    assert ds.samples[2].sample_id == sample_id_of((USER,), GOOD)  # SFT ids are unchanged
    assert ds.samples[0].sample_id == sample_id_of((USER,), GOOD, BAD)
    assert ds.samples[0].prompt_id == ds.samples[2].prompt_id  # one base answer serves all three
    rows = sample_rows(ds)
    assert [r["rejected"] for r in rows] == [BAD, "Call a mechanic.", None]


def test_csv_and_parquet_pairs_read_like_jsonl(tmp_path):
    csv_file = tmp_path / "pairs.csv"
    csv_file.write_text(f'prompt,chosen,rejected\n"{USER["content"]}",{GOOD},{BAD}\n', encoding="utf-8")
    table = pa.table(
        {
            "prompt": [[USER]],
            "chosen": [[{"role": "assistant", "content": GOOD}]],
            "rejected": [[{"role": "assistant", "content": BAD}]],
        }
    )
    pq.write_table(table, tmp_path / "pairs.parquet")
    for path in (csv_file, tmp_path / "pairs.parquet"):
        (sample,) = read_dataset(path).samples
        assert (sample.prompt, sample.answer, sample.rejected) == ((USER,), GOOD, BAD)
    assert read_dataset(csv_file, fmt="csv,preference").n_preference == 1
    pq.write_table(pa.table({"prompt": ["q"], "answer": ["a"]}), tmp_path / "sft.parquet")
    with pytest.raises(DataError, match="no 'chosen' \\+ 'rejected' columns"):
        read_dataset(tmp_path / "sft.parquet", fmt="preference")


def test_training_data_refuses_pairs_with_what_to_do(tmp_path):
    data = write_lines(tmp_path / "pairs.jsonl", [json.dumps(LAYOUTS["standard"])])
    with pytest.raises(DataError, match=r"pairs.jsonl:1: a preference record .* give the chosen chats"):
        read_samples(data)


def test_preference_score_is_chosen_minus_rejected(tiny_llama):
    v = make_vector(3)
    prompt = ({"role": "system", "content": "S"}, USER)
    samples = [
        ScoreInput("s1", prompt, GOOD, rejected=BAD),
        ScoreInput("s2", prompt, BAD, rejected=BAD),  # the same answer on both sides scores 0
        ScoreInput("s3", prompt, GOOD),  # not a pair
    ]
    batch = score_batch(tiny_llama, samples, [v], [2, 4], ["preference", "raw"])
    ref = compute_projections(
        tiny_llama, [Conversation(prompt, GOOD), Conversation(prompt, BAD)], [v, v], [2, 4]
    ).values["proj"]
    got = {(r["sample_id"], r["layer"], r["method"]): r for r in batch.scores}
    for k, layer in enumerate((2, 4)):
        chosen, rejected = float(ref[0, k]), float(ref[1, k])
        row = got[("s1", layer, "preference")]
        assert row["score"] == pytest.approx(chosen - rejected, abs=1e-5)
        assert row["proj_train"] == pytest.approx(chosen, abs=1e-5)
        assert row["proj_base"] == pytest.approx(rejected, abs=1e-5)
        assert got[("s2", layer, "preference")]["score"] == pytest.approx(0.0, abs=1e-6)
        assert got[("s1", layer, "raw")]["score"] == pytest.approx(chosen, abs=1e-5)
        not_pair = got[("s3", layer, "preference")]
        assert not_pair["score"] is None and "no rejected answer" in not_pair["error"]
    sources = {r["source_id"] for r in batch.projections}
    assert sources == {"s1", "s2", "s3", "rj-s1", "rj-s2"}


def test_screen_preference_pairs_end_to_end(tmp_path, tiny_llama, monkeypatch):
    vector_file = str(make_vector(3).save(tmp_path / "evil.safetensors"))
    lines = [
        json.dumps({"prompt": f"Question {i}?", "chosen": f"Answer {i}.", "rejected": f"Worse answer {i}!"})
        for i in range(5)
    ]
    lines.append(json.dumps({"prompt": "Plain?", "answer": "Plain answer."}))
    data = write_lines(tmp_path / "pairs.jsonl", lines)
    wh = str(tmp_path / "wh")
    cfg = ScreenConfig(
        dataset=data, model=MODEL, vectors=[vector_file], layers=[3], methods=["preference", "raw"], top_k=2
    )
    result = run_screen(cfg, wh, out=str(tmp_path / "out"), lm=tiny_llama, **QUIET)
    assert result.records["kept"] + result.records["flagged"] == 6  # the plain record is scored by raw
    from pvdata.warehouse import connect

    con = connect(wh)
    rows = con.execute(
        "SELECT s.rejected, sc.proj_train, sc.proj_base, sc.score, p.value FROM screenings sc "
        "JOIN samples s USING (sample_id) JOIN projections p ON p.source_id = 'rj-' || sc.sample_id "
        "AND p.kind = 'proj' AND p.layer = sc.layer WHERE sc.method = 'preference' ORDER BY s.line"
    ).fetchall()
    assert [r[0] for r in rows] == [f"Worse answer {i}!" for i in range(5)]
    for _rejected, train, base, score, value in rows:
        assert base == pytest.approx(value) and score == pytest.approx(train - base)
    reason = con.execute(
        "SELECT reason FROM screenings WHERE method = 'preference' AND score IS NULL"
    ).fetchone()[0]
    assert "not a preference pair" in reason
    # the dashboard's sample view shows the pair's rejected answer beside the chosen chat
    from dashboard_apptest import run_app

    first = con.execute("SELECT sample_id FROM samples WHERE line = 1").fetchone()[0]
    at = run_app(wh, monkeypatch, page="screening", sample_id=first)
    assert not at.exception
    shown = [m.value for m in at.markdown]
    assert "Answer 0." in shown and "Worse answer 0!" in shown
    # the same screen again: every stage is found done
    again = run_screen(cfg, wh, out=str(tmp_path / "out2"), lm=tiny_llama, **QUIET)
    assert again.stage_runs == result.stage_runs
    # raw alone projects no rejected answer, so it is another projection run
    raw = ScreenConfig(dataset=data, model=MODEL, vectors=[vector_file], layers=[3], methods=["raw"], top_k=2)
    other = run_screen(raw, wh, out=str(tmp_path / "out3"), lm=tiny_llama, **QUIET)
    assert other.stage_runs["dataset_projections"] != result.stage_runs["dataset_projections"]


def test_preference_on_data_without_pairs_fails_before_anything_runs(tmp_path, capsys):
    vector_file = str(make_vector(3).save(tmp_path / "evil.safetensors"))
    data = write_lines(tmp_path / "sft.jsonl", [json.dumps({"prompt": "q?", "answer": "a."})])
    wh = tmp_path / "wh"
    args = [
        "screen",
        data,
        "--model",
        MODEL,
        "--vector",
        vector_file,
        "--layer",
        "3",
        "--method",
        "preference",
    ]
    assert main([*args, "--warehouse", str(wh)]) == 2
    err = capsys.readouterr().err
    assert "--method preference scores preference pairs" in err and "sft.jsonl holds none" in err
    assert not wh.exists()
    with pytest.raises(ConfigError):
        from pvdata.pipelines.screen import plan_screen

        plan_screen(
            ScreenConfig(dataset=data, model=MODEL, vectors=[vector_file], methods=["preference"]), str(wh)
        )
