"""Prompt/completion records (TRL's standard and conversational forms, OpenAI's legacy fine-tuning
format, KTO's labelled completions) read as the same chat as a prompt/answer pair."""

from __future__ import annotations

import json

import pytest

from pvdata.samples import Columns, RecordError, check_invalid, parse_chat, read_dataset
from pvdata.samples.dataset import sample_id_of
from pvdata.training.data import read_samples
from tests.test_screen import write_lines

USER = {"role": "user", "content": "Name a prime number."}
ANSWER = "Seven."


@pytest.mark.parametrize(
    "record",
    [
        {"prompt": USER["content"], "completion": ANSWER},  # TRL standard, OpenAI legacy
        {"prompt": [USER], "completion": [{"role": "assistant", "content": ANSWER}]},  # TRL conversational
        {"prompt": [USER], "completion": ANSWER},
        {"prompt": json.dumps([USER]), "completion": json.dumps([{"role": "assistant", "content": ANSWER}])},
        {"prompt": USER["content"], "completion": ANSWER, "label": True},  # KTO, desirable
        {"prompt": [USER], "answer": ANSWER},  # a pair whose prompt is a list of messages
    ],
)
def test_completion_layouts_are_the_pair_chat(record):
    assert parse_chat(record) == ((USER,), ANSWER, ())


def test_a_system_field_and_tool_turns_carry_over():
    call = {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function"}]}
    done = {"role": "tool", "tool_call_id": "c", "content": "7"}
    record = {
        "system": "Be terse.",
        "prompt": USER["content"],
        "completion": [call, done, {"role": "assistant", "content": ANSWER}],
    }
    prompt, answer, notes = parse_chat(record)
    assert prompt == ({"role": "system", "content": "Be terse."}, USER) and answer == ANSWER
    assert notes == (
        "prompt+completion[2] (assistant tool call, no text) skipped",
        "prompt+completion[3] (tool result) skipped",
    )


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (
            {"prompt": "q", "completion": "a", "label": False},
            "field label: is false: an undesirable completion",
        ),
        ({"prompt": "q", "completion": "a", "answer": "b"}, "holds both 'answer' and 'completion'"),
        ({"prompt": "q", "completion": None}, "field completion: is missing or null"),
        ({"prompt": "q", "completion": " "}, "field completion: is empty"),
        ({"prompt": [], "completion": "a"}, "field prompt: must be the prompt text"),
        ({"prompt": "q", "completion": {"text": "a"}}, "field completion: must be the answer text"),
        ({"prompt": "q", "completion": "a", "system": 3}, "field system: must be a string"),
    ],
)
def test_bad_completion_records_name_the_field(record, message):
    with pytest.raises(RecordError) as info:
        parse_chat(record)
    assert message in str(info.value)


def test_kto_file_screens_the_desirable_completions(tmp_path):
    lines = [
        json.dumps({"prompt": "q1", "completion": "good", "label": True}),
        json.dumps({"prompt": "q2", "completion": "bad", "label": False}),
        json.dumps({"prompt": "q1", "answer": "good"}),  # the same chat as line 1
    ]
    ds = read_dataset(write_lines(tmp_path / "kto.jsonl", lines))
    assert [r.line for r in ds.invalid] == [2] and "undesirable completion" in str(ds.invalid[0].error)
    check_invalid(ds, skip_invalid=True)
    (sample,) = ds.samples
    assert sample.lines == [1, 3] and sample.sample_id == sample_id_of(
        ({"role": "user", "content": "q1"},), "good"
    )


def test_csv_with_prompt_and_completion_columns(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text('prompt,completion\n"Hi, you?",Fine.\n', encoding="utf-8")
    (sample,) = read_dataset(f).samples
    assert (sample.prompt, sample.answer) == (({"role": "user", "content": "Hi, you?"},), "Fine.")


def test_an_explicit_answer_column_wins_over_completion():
    record = {"prompt": "q", "completion": "ignored? no: named", "output": "the answer"}
    assert parse_chat(record, Columns(answer="output"))[1] == "the answer"


def test_training_reads_prompt_completion_records(tmp_path):
    data = write_lines(tmp_path / "t.jsonl", [json.dumps({"prompt": "q", "completion": "a"})])
    (sample,) = read_samples(data)
    assert [m["role"] for m in sample.messages] == ["user", "assistant"]
