"""Reading training data: formats, prompt/answer split, validation with file and line, content ids, dedup."""

from __future__ import annotations

import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pvdata.errors import ConfigError, DataError
from pvdata.samples import (
    Columns,
    InvalidRecordsError,
    check_invalid,
    read_dataset,
    sample_id_of,
    sample_rows,
)
from pvdata.warehouse import item_id


def chat(user: str, answer: str, system: str | None = None) -> dict[str, object]:
    msgs = [{"role": "system", "content": system}] if system else []
    msgs += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return {"messages": msgs}


def write_jsonl(path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def test_multi_turn_prompt_is_everything_before_the_last_assistant_turn(tmp_path):
    turns = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "And now?"},
        {"role": "assistant", "content": "Now this."},
    ]
    f = tmp_path / "d.jsonl"
    write_jsonl(f, [json.dumps({"messages": turns, "id": 7})])
    ds = read_dataset(f)
    (sample,) = ds.samples
    assert [m["content"] for m in sample.prompt] == ["Be brief.", "Hi", "Hello!", "And now?"]
    assert sample.answer == "Now this."
    assert sample.messages == turns  # extra keys dropped, the chat itself unchanged
    assert sample.sample_id == item_id(turns)  # the documented content id


def test_identical_records_are_one_sample_with_every_line(tmp_path):
    a, b = json.dumps(chat("q1", "a1")), json.dumps(chat("q2", "a2"))
    # the same chat with other key order and spacing is still the same sample
    a_again = json.dumps(
        {"messages": [{"content": "q1", "role": "user"}, {"content": "a1", "role": "assistant"}]}
    )
    f = tmp_path / "d.jsonl"
    write_jsonl(f, [a, b, "", a_again, a])
    ds = read_dataset(f)
    assert [s.lines for s in ds.samples] == [[1, 4, 5], [2]]
    assert ds.counts() == {"records": 4, "distinct": 2, "duplicates": 2, "invalid": 0}
    assert [r.raw for r in ds.records] == [a, b, a_again, a]  # the original text, blank line skipped
    rows = sample_rows(ds)
    assert [(r["line"], r["n_copies"], r["lines"]) for r in rows] == [(1, 3, [1, 4, 5]), (2, 1, [2])]
    assert json.loads(rows[0]["messages"]) == chat("q1", "a1")["messages"]


BAD_LINES = [
    ("{not json", "invalid JSON"),
    (json.dumps({"messages": [{"role": "user", "content": "q"}]}), "has no assistant turn"),
    (json.dumps(chat("q", "   ")), "field messages[1].content: is empty"),
    (
        json.dumps({"messages": [{"role": "tool", "content": "x"}, {"role": "assistant", "content": "a"}]}),
        "field messages[0].role: is 'tool': valid roles are system, user, assistant",
    ),
    (json.dumps({"text": "hello"}), "missing field 'messages'"),
    (json.dumps([1, 2]), "expected a JSON object"),
    (
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "a"},
                    {"role": "user", "content": "more"},
                ]
            }
        ),
        "after the last assistant turn",
    ),
    (
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "system", "content": "s"},
                    {"role": "assistant", "content": "a"},
                ]
            }
        ),
        "a system turn may only come first",
    ),
    (json.dumps({"prompt": "q", "answer": 3}), "field answer: must be a string"),
]


@pytest.mark.parametrize(("line", "message"), BAD_LINES)
def test_bad_records_name_file_line_and_field(tmp_path, line, message):
    f = tmp_path / "bad.jsonl"
    write_jsonl(f, [json.dumps(chat("fine", "ok")), line])
    ds = read_dataset(f)
    assert [r.line for r in ds.invalid] == [2]
    with pytest.raises(InvalidRecordsError) as err:
        check_invalid(ds, skip_invalid=False)
    text = str(err.value)
    assert f"{f}:2: " in text and message in text, text
    assert "--skip-invalid" in text
    check_invalid(ds, skip_invalid=True)  # skipping: no error, the record keeps its reason
    (bad_row,) = [r for r in sample_rows(ds) if r["error"]]
    assert bad_row["line"] == 2 and message.split(":")[0] in bad_row["error"]
    assert bad_row["raw_record"] == line and bad_row["messages"] is None
    assert bad_row["sample_id"].startswith("bad-")


def test_the_error_lists_every_bad_line(tmp_path):
    f = tmp_path / "bad.jsonl"
    write_jsonl(f, ["{", json.dumps(chat("q", "a")), "[]", "nope"])
    with pytest.raises(DataError, match=r"3 invalid record\(s\) of 4") as err:
        check_invalid(read_dataset(f), skip_invalid=False)
    assert all(f"{f}:{n}:" in str(err.value) for n in (1, 3, 4))


def test_raw_lines_survive_crlf_bom_and_bad_utf8(tmp_path):
    good = json.dumps(chat("é?", "ü!"), ensure_ascii=False)
    f = tmp_path / "d.jsonl"
    f.write_bytes(b"\xef\xbb\xbf" + good.encode() + b"\r\n" + b'{"x": "\xff"}\n' + good.encode() + b"\n")
    ds = read_dataset(f)
    assert ds.records[0].raw == "\ufeff" + good + "\r"  # kept byte for byte (re-encoded identically)
    assert ds.records[0].sample_id == ds.records[2].sample_id
    assert "not UTF-8" in (ds.records[1].error or "")
    assert ds.records[1].raw.encode("utf-8", "surrogateescape") == b'{"x": "\xff"}'


def test_csv_and_parquet_and_jsonl_pairs_give_the_same_ids(tmp_path):
    rows = [
        {"prompt": "What now?", "answer": "Rest.", "system": ""},
        {"prompt": "Why?", "answer": "Because,\nwell.", "system": "Be kind."},
    ]
    c = tmp_path / "d.csv"
    with c.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["prompt", "answer", "system"])
        w.writeheader()
        w.writerows(rows)
        fh.write("Last?,,\n")  # an empty answer, on line 5 (row 2's answer spans two lines)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    j = tmp_path / "d.jsonl"
    write_jsonl(
        j, [json.dumps(chat("What now?", "Rest.")), json.dumps(chat("Why?", "Because,\nwell.", "Be kind."))]
    )
    from_csv, from_pq, from_jsonl = (read_dataset(p) for p in (c, tmp_path / "d.parquet", j))
    ids = [s.sample_id for s in from_jsonl.samples]
    assert [s.sample_id for s in from_csv.samples] == ids == [s.sample_id for s in from_pq.samples]
    assert [s.lines for s in from_csv.samples] == [[2], [3]]
    assert [s.lines for s in from_pq.samples] == [[1], [2]]  # Parquet: 1-based row numbers
    (bad,) = from_csv.invalid
    assert bad.line == 5 and "field answer: is empty" in (bad.error or "")
    assert json.loads(from_pq.records[1].raw) == rows[1]  # the row itself, as a JSON object
    assert {from_csv.format, from_pq.format, from_jsonl.format} == {"csv", "parquet", "jsonl"}


def test_custom_columns_and_missing_columns(tmp_path):
    f = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist([{"q": "Hi?", "r": "Yo."}]), f)
    with pytest.raises(DataError, match=r"no 'messages' column.*its columns are: q, r"):
        read_dataset(f)
    ds = read_dataset(f, columns=Columns(prompt="q", answer="r"))
    assert ds.samples[0].sample_id == sample_id_of(({"role": "user", "content": "Hi?"},), "Yo.")


def test_hf_dataset_folders(tmp_path):
    datasets = pytest.importorskip("datasets")
    msgs = [chat("a?", "b.")["messages"], chat("c?", "d.")["messages"]]
    datasets.Dataset.from_dict({"messages": msgs}).save_to_disk(str(tmp_path / "single"))
    ds = read_dataset(tmp_path / "single")
    assert ds.format == "hf" and [s.answer for s in ds.samples] == ["b.", "d."]
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"prompt": ["x?"], "answer": ["y."]}),
            "test": datasets.Dataset.from_dict({"prompt": ["z?"], "answer": ["w."]}),
        }
    )
    dd.save_to_disk(str(tmp_path / "dict"))
    assert read_dataset(tmp_path / "dict").samples[0].answer == "y."  # train by default
    assert read_dataset(tmp_path / "dict", hf_split="test").samples[0].answer == "w."
    with pytest.raises(ConfigError, match="holds splits train, test"):
        read_dataset(tmp_path / "dict", hf_split="valid")


def test_dataset_id_is_a_content_hash_and_the_input_is_untouched(tmp_path):
    f = tmp_path / "a.jsonl"
    write_jsonl(f, [json.dumps(chat("q", "a"))])
    before = f.read_bytes()
    copy = tmp_path / "b.jsonl"
    copy.write_bytes(before)
    assert read_dataset(f).dataset_id == read_dataset(copy).dataset_id
    write_jsonl(copy, [json.dumps(chat("q", "a!"))])
    assert read_dataset(f).dataset_id != read_dataset(copy).dataset_id
    assert f.read_bytes() == before


def test_unknown_format_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        read_dataset(tmp_path / "nope.jsonl")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(ConfigError, match="cannot tell the format"):
        read_dataset(tmp_path / "x.txt")
