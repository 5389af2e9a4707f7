"""Dataset formats, each written the way its own tools write it: ShareGPT and Alpaca JSON arrays
(json.dump with indent, as FastChat and Stanford Alpaca do), `datasets` to_json (JSON Lines in a .json
file) and to_parquet, OpenAI chats with tool calls and content parts, and hub ids from the local cache."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from pvdata.cli.main import main
from pvdata.errors import ConfigError, DataError
from pvdata.samples import Columns, InvalidRecordsError, check_invalid, read_dataset, sample_id_of
from pvdata.warehouse import connect

MODEL = "tiny-random-llama"


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def system(text: str) -> dict[str, str]:
    return {"role": "system", "content": text}


SHAREGPT = [
    {
        "id": "a1",
        "conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": "Hi there"},
            {"from": "gpt", "value": "Hello!"},
            {"from": "human", "value": "What is 2+2?"},
            {"from": "gpt", "value": "4."},
        ],
    },
    {
        "id": "a2",
        "conversations": [
            {"from": "user", "value": "Name a colour."},
            {"from": "assistant", "value": "Red."},
        ],
    },
]

ALPACA = [
    {"instruction": "Give three tips for staying healthy.", "input": "", "output": "Eat, sleep, move."},
    {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
    {"instruction": "Summarise.", "input": "A long text.", "output": "Short.", "system": "You summarise."},
]


def write_json(path: Path, obj: object, indent: int = 4) -> str:
    path.write_text(json.dumps(obj, indent=indent, ensure_ascii=False) + "\n", encoding="utf-8")
    return str(path)


def element_lines(path: Path) -> list[int]:
    """Independent reference: the line of each top-level element of a json.dump(indent=N) array."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [n for n, text in enumerate(lines, 1) if text.rstrip() in ("{", "    {", "  {")]


def test_sharegpt_json_array_maps_roles_and_keeps_lines(tmp_path):
    f = tmp_path / "sharegpt.json"
    write_json(f, SHAREGPT, indent=2)  # FastChat writes json.dump(..., indent=2, ensure_ascii=False)
    ds = read_dataset(f)
    assert ds.format == "json" and ds.counts()["invalid"] == 0
    first, second = ds.samples
    assert first.prompt == (system("Be brief."), user("Hi there"), {"role": "assistant", "content": "Hello!"},
                            user("What is 2+2?"))  # fmt: skip
    assert first.answer == "4." and second.answer == "Red."
    assert second.sample_id == sample_id_of((user("Name a colour."),), "Red.")
    assert [r.line for r in ds.records] == element_lines(f)
    assert [json.loads(r.raw) for r in ds.records] == SHAREGPT  # each record as one JSON object


def test_alpaca_input_goes_into_the_user_turn(tmp_path):
    f = tmp_path / "alpaca_data.json"
    write_json(f, ALPACA)  # Stanford Alpaca's jdump: json.dump(..., indent=4)
    ds = read_dataset(f)
    prompts = [s.prompt for s in ds.samples]
    assert prompts[0] == (user("Give three tips for staying healthy."),)  # empty input: no blank line
    assert prompts[1] == (user("Translate to French.\n\nGood morning"),)
    assert prompts[2] == (system("You summarise."), user("Summarise.\n\nA long text."))
    assert [s.answer for s in ds.samples] == ["Eat, sleep, move.", "Bonjour", "Short."]
    # --prompt-column instruction used to drop `input`: now it is kept the same way
    again = read_dataset(f, columns=Columns(prompt="instruction", answer="output"))
    assert [s.sample_id for s in again.samples] == [s.sample_id for s in ds.samples]


def test_alpaca_history_and_forced_format(tmp_path):
    rec = {"instruction": "And 3+3?", "input": "", "output": "6", "history": [["2+2?", "4"]]}
    f = tmp_path / "h.jsonl"
    f.write_text(json.dumps(rec) + "\n", encoding="utf-8")
    (s,) = read_dataset(f, fmt="alpaca").samples
    assert s.messages == [user("2+2?"), {"role": "assistant", "content": "4"}, user("And 3+3?"),
                          {"role": "assistant", "content": "6"}]  # fmt: skip


def test_an_unused_input_column_is_an_error_naming_it(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps({"question": "Translate.", "input": "Hi", "output": "Salut"}) + "\n")
    ds = read_dataset(f, columns=Columns(prompt="question", answer="output"))
    with pytest.raises(InvalidRecordsError) as err:
        check_invalid(ds, skip_invalid=False)
    assert f"{f}:1: field input: holds text" in str(err.value) and "--format alpaca" in str(err.value)


def test_datasets_to_json_writes_json_lines_in_a_json_file(tmp_path):
    datasets = pytest.importorskip("datasets")
    f = tmp_path / "exported.json"
    datasets.Dataset.from_list(SHAREGPT).to_json(str(f))  # JSON Lines, whatever the suffix
    assert f.read_text().lstrip()[0] == "{"
    ds = read_dataset(f)
    assert ds.format == "jsonl" and [s.answer for s in ds.samples] == ["4.", "Red."]
    pq = tmp_path / "alpaca.parquet"
    datasets.Dataset.from_list(ALPACA).to_parquet(str(pq))
    assert [s.prompt[-1]["content"] for s in read_dataset(pq).samples] == [
        "Give three tips for staying healthy.",
        "Translate to French.\n\nGood morning",
        "Summarise.\n\nA long text.",
    ]


def test_sharegpt_and_alpaca_csv_columns(tmp_path):
    f = tmp_path / "d.csv"
    conv = json.dumps(SHAREGPT[1]["conversations"]).replace('"', '""')
    f.write_text(f'id,conversations\na2,"{conv}"\n', encoding="utf-8")
    assert read_dataset(f).samples[0].answer == "Red."
    g = tmp_path / "a.csv"
    g.write_text("instruction,input,output\nTranslate.,Hi,Salut\nSay hi.,,Hi\n", encoding="utf-8")
    assert [s.prompt[0]["content"] for s in read_dataset(g).samples] == ["Translate.\n\nHi", "Say hi."]
    with pytest.raises(DataError, match="no 'conversations' column; its columns are: instruction"):
        read_dataset(g, fmt="sharegpt")


TOOL_CHAT = {
    "messages": [
        {"role": "system", "content": [{"type": "text", "text": "You use tools."}]},
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"},
                                     {"type": "image_url", "image_url": {"url": "http://x/p.png"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "weather", "arguments": "{\"city\": \"Paris\"}"}}
        ]},
        {"role": "tool", "tool_call_id": "c1", "content": "18C, sunny"},
        {"role": "assistant",
         "content": [{"type": "text", "text": "It is 18C"}, {"type": "text", "text": "and sunny."}]},
    ]
}  # fmt: skip


def test_tool_calls_and_content_parts(tmp_path):
    f = tmp_path / "tools.jsonl"
    f.write_text(json.dumps(TOOL_CHAT) + "\n", encoding="utf-8")
    (s,) = read_dataset(f).samples
    assert s.prompt == (system("You use tools."), user("Weather in Paris?"))
    assert s.answer == "It is 18C\nand sunny."
    assert s.notes == [
        "messages[1].content[1] (image_url part) left out",
        "messages[2] (assistant tool call, no text) skipped",
        "messages[3] (tool result) skipped",
    ]


def test_text_split_by_a_tool_call_is_one_answer(tmp_path):
    msgs = [
        user("Book it."),
        {"role": "assistant", "content": "Checking.", "tool_calls": [{"id": "c", "type": "function"}]},
        {"role": "tool", "content": "ok"},
        {"role": "assistant", "content": "Booked."},
    ]
    f = tmp_path / "t.jsonl"
    f.write_text(json.dumps({"messages": msgs}) + "\n")
    (s,) = read_dataset(f).samples
    assert s.prompt == (user("Book it."),) and s.answer == "Checking.\n\nBooked."
    assert "messages[1]: its text is screened, its 1 tool call(s) are not" in s.notes


BAD = [
    ({"conversations": [{"from": "human", "value": "q"}, {"from": "bot", "value": "a"}]},
     "field conversations[1].from: is 'bot': valid values are human, user, gpt, assistant, system"),
    ({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": ""}]},
     "field conversations[1].value: is empty"),
    ({"instruction": "q", "input": 3, "output": "a"}, "field input: must be a string"),
    ({"instruction": "q", "input": "x"}, "field output: is missing"),
    ({"prompt": "q", "answer": "a", "instruction": "x"}, "field instruction: holds text that"),
    ({"messages": [{"role": "tool", "content": "x"}, {"role": "assistant", "content": "a"}]},
     "field messages[0].role: is 'tool': valid roles are system, user, assistant"),
    ({"messages": [user("q"), {"role": "assistant", "content": [{"type": "image_url"}]}]},
     "field messages[1]: has no text part"),
    ({"messages": [user("q"), {"role": "assistant", "content": [{"text": "a"}]}]},
     'field messages[1].content[0]: must be a part object with a "type"'),
    ({"messages": [user("q"), {"role": "assistant", "content": None, "tool_calls": [{"id": "c"}]}]},
     "field messages: has no assistant turn"),
]  # fmt: skip


@pytest.mark.parametrize(("record", "message"), BAD)
def test_bad_records_of_every_format_name_file_line_and_field(tmp_path, record, message):
    f = tmp_path / "bad.json"
    write_json(f, [ALPACA[0], record])
    with pytest.raises(InvalidRecordsError) as err:
        check_invalid(read_dataset(f), skip_invalid=False)
    line = element_lines(f)[1]
    assert f"{f}:{line}: {message}" in str(err.value), str(err.value)


def test_a_broken_json_array_names_file_and_line(tmp_path):
    f = tmp_path / "broken.json"
    f.write_text('[\n  {"instruction": "a", "output": "b"},\n  {"instruction": "c", "output": }\n]\n')
    with pytest.raises(DataError, match=rf"{f}:3: not a valid JSON array of records"):
        read_dataset(f)
    with pytest.raises(ConfigError, match="--format 'yaml' is not valid"):
        read_dataset(f, fmt="yaml")
    one = write_json(tmp_path / "one.json", {"data": ALPACA})
    with pytest.raises(DataError, match=r"one.json:1: holds one JSON object .* \(keys: data\)"):
        read_dataset(one)


def _cache_as_hub_dataset(tmp_path: Path, repo_id: str, rows: list[dict]) -> Path:
    """Lay out a `datasets` cache entry for repo_id the way load_dataset caches a downloaded dataset
    (CACHE/owner___name/CONFIG/VERSION/HASH/{dataset_info.json, name-split.arrow}), with no network."""
    import datasets

    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cache = tmp_path / "hf_datasets_cache"
    built = datasets.load_dataset(
        "json", data_files=str(data), split="train", cache_dir=str(tmp_path / "build")
    )
    src = Path(built.cache_files[0]["filename"]).parent
    owner, name = repo_id.split("/")
    dst = cache / f"{owner}___{name}" / "default" / "0.0.0" / src.name
    dst.mkdir(parents=True)
    info = json.loads((src / "dataset_info.json").read_text())
    (dst / "dataset_info.json").write_text(
        json.dumps({**info, "config_name": "default", "dataset_name": name})
    )
    shutil.copy(src / "json-train.arrow", dst / f"{name}-train.arrow")
    return cache


def test_hub_id_from_the_offline_cache_and_an_uncached_id(tmp_path, monkeypatch, capsys, vector_file):
    datasets = pytest.importorskip("datasets")
    cache = _cache_as_hub_dataset(tmp_path, "someone/tiny_chats", SHAREGPT)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)  # no local folder someone/tiny_chats: the name is a hub id
    ds = read_dataset("someone/tiny_chats")
    assert ds.format == "hub" and ds.source == "someone/tiny_chats"
    assert [s.answer for s in ds.samples] == ["4.", "Red."]
    assert ds.dataset_id == read_dataset("someone/tiny_chats", hf_split="train").dataset_id
    with pytest.raises(ConfigError, match="has no split 'test'"):
        read_dataset("someone/tiny_chats", hf_split="test")
    out = tmp_path / "out"
    screen = ["screen", "someone/tiny_chats", "--model", MODEL, "--vector", vector_file, "--layer", "2",
              "--method", "raw", "--top-k", "1", "--warehouse", "wh_hub", "--out", str(out)]  # fmt: skip
    assert main(screen) == 0
    assert "2 records -> 2 distinct" in capsys.readouterr().out
    screened = (out / "flagged.jsonl").read_text().splitlines() + (
        out / "kept.jsonl"
    ).read_text().splitlines()
    assert sorted(json.loads(x)["id"] for x in screened) == ["a1", "a2"]
    assert json.loads((out / "summary.json").read_text())["dataset"]["format"] == "hub"

    start = time.monotonic()
    args = ["screen", "nobody/not_cached", "--model", MODEL, "--vector", vector_file, "--warehouse", "wh"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert time.monotonic() - start < 30  # offline: no retries, no hang
    assert any("dataset nobody/not_cached: no such local file or folder" in line for line in err), err
    assert not (tmp_path / "wh").exists()
    with pytest.raises(ConfigError, match="not found"):  # a missing file name is a path, not a hub id
        read_dataset("data/train.jsonl")


@pytest.fixture(scope="module")
def vector_file(tmp_path_factory):
    from test_screen import make_vector

    return str(make_vector().save(tmp_path_factory.mktemp("vec") / "evil.safetensors"))


@pytest.mark.parametrize("kind", ["sharegpt", "alpaca", "tools"])
def test_screen_cli_end_to_end(tmp_path, vector_file, capsys, kind):
    if kind == "sharegpt":
        data, n = write_json(tmp_path / "sharegpt.json", SHAREGPT, indent=2), 2
    elif kind == "alpaca":
        data, n = write_json(tmp_path / "alpaca_data.json", ALPACA), 3
    else:
        plain = {"messages": [user("Hi?"), {"role": "assistant", "content": "Hello."}]}
        data, n = str(tmp_path / "tools.jsonl"), 2
        Path(data).write_text(json.dumps(TOOL_CHAT) + "\n" + json.dumps(plain) + "\n")
    before = Path(data).read_bytes()
    wh, out = tmp_path / "wh", tmp_path / "out"
    args = ["screen", data, "--model", MODEL, "--vector", vector_file, "--layer", "2", "--method", "raw",
            "--top-k", "1", "--warehouse", str(wh), "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    assert f"{n} records -> {n} distinct" in capsys.readouterr().out
    assert Path(data).read_bytes() == before
    flagged = [json.loads(x) for x in (out / "flagged.jsonl").read_text().splitlines()]
    kept = [json.loads(x) for x in (out / "kept.jsonl").read_text().splitlines()]
    assert len(flagged) == 1 and len(flagged) + len(kept) == n
    original = {"sharegpt": SHAREGPT, "alpaca": ALPACA}.get(kind)
    if original is not None:
        assert sorted(map(json.dumps, flagged + kept)) == sorted(map(json.dumps, original))
    con = connect(wh)
    assert con.execute("SELECT count(*) FROM screenings WHERE score IS NOT NULL").fetchone()[0] == n
    if kind == "tools":
        reasons = [r for (r,) in con.execute("SELECT reason FROM screenings").fetchall() if r]
        noted = [r for r in reasons if "input: " in r]
        assert len(noted) == 1 and "messages[2] (assistant tool call, no text) skipped" in noted[0]
        assert "messages[3] (tool result) skipped" in noted[0]


def test_training_reads_the_same_formats(tmp_path):
    from pvdata.training.data import read_samples

    f = write_json(tmp_path / "sharegpt.json", SHAREGPT, indent=2)
    samples = read_samples(f)
    assert [s.line for s in samples] == element_lines(Path(f))
    assert list(samples[0].messages) == [
        system("Be brief."), user("Hi there"), {"role": "assistant", "content": "Hello!"},
        user("What is 2+2?"), {"role": "assistant", "content": "4."},
    ]  # fmt: skip
    g = write_json(tmp_path / "alpaca_data.json", ALPACA)
    assert list(read_samples(g)[1].messages) == [
        user("Translate to French.\n\nGood morning"),
        {"role": "assistant", "content": "Bonjour"},
    ]
    turns = [("human", "Weather?"), ("function_call", "{}"), ("observation", "sunny"), ("gpt", "Sunny.")]
    calls = {"conversations": [{"from": who, "value": text} for who, text in turns]}
    h = write_json(tmp_path / "calls.json", [calls])
    with pytest.raises(DataError, match=r"calls.json:2: pvdata trains text chats only.*conversations\[1\]"):
        read_samples(h)
    bad = write_json(tmp_path / "bad.json", [{"instruction": "q", "input": "x"}])
    with pytest.raises(DataError, match=r"bad.json:2: field output: is missing"):
        read_samples(bad)
