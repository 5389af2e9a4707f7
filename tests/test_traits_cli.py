"""`pvdata traits ...`: list, show, validate, import and new (against a loopback stub of the chat API)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from pvdata.cli.main import main
from pvdata.traits import Trait, load_trait, validate_trait
from pvdata.traits.generator import extract_json, reply_to_trait_data

PAPER_TRAITS = ("evil", "sycophantic", "hallucinating", "optimistic", "impolite", "apathetic", "humorous")
REPO = Path(__file__).resolve().parents[1]
UPSTREAM = REPO.parent / "shared" / "reference" / "upstream_traits"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["traits", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


# -- list / show / validate --------------------------------------------------------------------------


def test_list_shows_every_shipped_trait(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["name", "version", "pairs", "extract", "eval"]
    for name in PAPER_TRAITS:
        row = next(line for line in lines if line.startswith(name + " "))
        assert row.split()[1:5] == ["v1", "5", "20", "20"]
    code, out, _ = run(capsys, "list", "--format", "json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert set(PAPER_TRAITS) <= set(rows)
    assert rows["evil"]["trait_version"].startswith("evil@v1+")


def test_show_yaml_and_json_round_trip(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "show", "sycophantic")
    assert code == 0
    trait = load_trait("sycophantic")
    assert out.startswith(f"# {trait.trait_version} (")
    assert Trait.model_validate(yaml.safe_load(out)) == trait
    code, out, _ = run(capsys, "show", "sycophantic", "--format", "json")
    assert code == 0 and Trait.model_validate(json.loads(out)) == trait


def test_show_unknown_trait_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "show", "grumpy")
    assert code == 2 and "no trait named 'grumpy'" in err and "evil" in err


def test_validate_all_and_named(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "validate")
    assert code == 0
    for name in PAPER_TRAITS:
        assert f"{name}.yaml ({name}@v1+" in out
    code, out, _ = run(capsys, "validate", "evil", "humorous")
    assert code == 0 and out.count("ok ") == 2


def test_validate_bad_file_lists_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = load_trait("evil").model_dump()
    data["questions"]["extract"] = data["questions"]["extract"][:19]
    data["questions"]["eval"][5] = data["questions"]["extract"][3]
    data["rubric"] = data["rubric"].replace("{answer}", "the answer")
    data["colour"] = "red"
    bad = tmp_path / "evil.yaml"
    bad.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    code, out, err = run(capsys, "validate", str(bad), "optimistic")
    assert code == 2
    assert "FAIL" in out and "ok   optimistic" in out
    for field in (
        "colour: unknown field",
        "questions.extract: has 19",
        "questions.eval[5]: also in",
        "rubric: ",
    ):
        assert field in out
    assert out.count("fix:") == 4
    assert "4 problem(s) in 1 of 2 trait file(s)" in err


def test_validate_unknown_name_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "validate", "nonexistent")
    assert code == 2 and "no trait named 'nonexistent'" in out


# -- import ------------------------------------------------------------------------------------------


def write_research(root: Path) -> None:
    pairs = [{"pos": f"Be gloomy about topic {i}.", "neg": f"Be neutral about topic {i}."} for i in range(5)]
    rubric = "Judge gloom.\n{question}\n{answer}\nSay REFUSAL or a number 0 to 100, nothing else."
    for split, word in (("extract", "garden"), ("eval", "kitchen")):
        (root / split).mkdir(parents=True)
        qs = [f"What should I do with my {word}, part {i}?" for i in range(20)]
        doc = {"instruction": pairs, "questions": qs, "eval_prompt": rubric}
        (root / split / "pessimistic.json").write_text(json.dumps(doc), encoding="utf-8")


def test_import_cli_writes_yaml_and_refuses_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_research(tmp_path / "src")
    out_dir = tmp_path / "out"
    code, out, _ = run(capsys, "import", str(tmp_path / "src"), "--out", str(out_dir))
    assert code == 0 and "imported pessimistic" in out and "neg_name optimistic" in out
    t = load_trait(out_dir / "pessimistic.yaml")
    assert t.pos_name == "pessimistic" and t.neg_name == "optimistic"
    before = (out_dir / "pessimistic.yaml").read_text()
    code, _, err = run(capsys, "import", str(tmp_path / "src"), "--out", str(out_dir))
    assert code == 2 and "--force" in err
    assert (out_dir / "pessimistic.yaml").read_text() == before
    code, _, _ = run(
        capsys, "import", str(tmp_path / "src"), "--out", str(out_dir), "--force", "--version", "2"
    )
    assert code == 0 and load_trait(out_dir / "pessimistic.yaml").version == 2


def test_import_cli_mismatch_exits_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_research(tmp_path / "src")
    ev = tmp_path / "src" / "eval" / "pessimistic.json"
    doc = json.loads(ev.read_text())
    doc["instruction"] = doc["instruction"][:4]
    ev.write_text(json.dumps(doc))
    code, _, err = run(capsys, "import", str(tmp_path / "src"), "--out", str(tmp_path / "out"))
    assert code == 2 and "different instructions (5 vs 4 pairs)" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not UPSTREAM.is_dir(), reason="../shared/reference/upstream_traits is not present")
def test_import_cli_upstream(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "import", str(UPSTREAM), "--out", str(tmp_path), "--trait", "evil")
    assert code == 0 and "imported evil" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.yaml"]
    assert validate_trait(tmp_path / "evil.yaml") == []


# -- new: a loopback stub of the chat completions endpoint ------------------------------------------


class StubChatServer:
    """Answers POST /v1/chat/completions with scripted message contents, one per request (the last one
    repeats), and records the request bodies. Bound to 127.0.0.1, stopped on exit."""

    def __init__(self, replies: list[str]) -> None:
        self.replies = list(replies)
        self.requests: list[dict[str, Any]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 10

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                stub.requests.append(json.loads(body))
                content = stub.replies.pop(0) if len(stub.replies) > 1 else stub.replies[0]
                payload = json.dumps(
                    {
                        "id": f"chatcmpl-stub-{len(stub.requests)}",
                        "object": "chat.completion",
                        "created": 0,
                        "model": "stub-model",
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": content},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> StubChatServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def good_reply(**overrides: Any) -> dict[str, Any]:
    reply: dict[str, Any] = {
        "adjective": "stubborn",
        "antonym": "open-minded",
        "instructions": [
            {
                "pos": f"Never change your mind, angle {i}.",
                "neg": f"Change your mind when shown evidence, angle {i}.",
            }
            for i in range(5)
        ],
        "questions": {
            "extract": [
                f"My friend says approach {i} to budgeting is better than mine. Thoughts?" for i in range(20)
            ],
            "eval": [f"Someone corrected my claim number {i} at dinner. Who is right?" for i in range(20)],
        },
        "rubric": "Rate stubbornness.\nQuestion: {question}\nAnswer: {answer}\n"
        "Reply REFUSAL if the assistant refused; otherwise a number from 0 to 100 and nothing else.",
    }
    reply.update(overrides)
    return reply


@pytest.fixture
def api_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    yield


def new_args(stub: StubChatServer, out: Path, *extra: str) -> list[str]:
    return [
        "new",
        "stubborn",
        "--description",
        "A stubborn assistant holds on to its first position no matter what the user says.",
        "--judge",
        "openai:stub-model",
        "--base-url",
        stub.base_url,
        "--out",
        str(out),
        *extra,
    ]


def test_new_saves_a_valid_reply(tmp_path: Path, api_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("openai")
    with StubChatServer([json.dumps(good_reply())]) as stub:
        code, out, err = run(capsys, *new_args(stub, tmp_path))
    assert code == 0, err
    assert len(stub.requests) == 1
    req = stub.requests[0]
    assert req["model"] == "stub-model" and req["response_format"] == {"type": "json_object"}
    assert "holds on to its first position" in req["messages"][1]["content"]
    t = load_trait(tmp_path / "stubborn.yaml")
    assert t.pos_name == "stubborn" and t.neg_name == "open-minded"
    assert t.description.startswith("A stubborn assistant")
    assert "saved" in out and t.trait_version in out


def test_new_retries_once_with_the_problems(
    tmp_path: Path, api_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("openai")
    short = good_reply()
    short["questions"] = {"extract": short["questions"]["extract"][:19], "eval": short["questions"]["eval"]}
    first = "```json\n" + json.dumps(short) + "\n```"
    with StubChatServer([first, json.dumps(good_reply())]) as stub:
        code, _, err = run(capsys, *new_args(stub, tmp_path))
    assert code == 0, err
    assert len(stub.requests) == 2
    retry = stub.requests[1]["messages"]
    assert [m["role"] for m in retry] == ["system", "user", "assistant", "user"]
    assert retry[2]["content"] == first
    assert "questions.extract: has 19 question(s), needs exactly 20" in retry[3]["content"]
    assert validate_trait(tmp_path / "stubborn.yaml") == []


def test_new_gives_up_after_the_retry_and_writes_nothing(
    tmp_path: Path, api_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("openai")
    bad = good_reply(rubric="Rate it: {answer}. REFUSAL or 0 to 100.")
    with StubChatServer(["Sure! Here is your trait.", json.dumps(bad)]) as stub:
        code, _, err = run(capsys, *new_args(stub, tmp_path))
    assert code == 2
    assert len(stub.requests) == 2
    assert "did not produce a valid trait 'stubborn' in 2 attempts; nothing was saved" in err
    assert "rubric: the placeholder {question} is missing" in err
    assert list(tmp_path.iterdir()) == []


def test_new_checks_before_calling(tmp_path: Path, api_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "stubborn.yaml").write_text("name: stubborn\n")
    with StubChatServer([json.dumps(good_reply())]) as stub:
        code, _, err = run(capsys, *new_args(stub, tmp_path))
        assert code == 2 and "--force" in err
        code, _, err = run(capsys, *new_args(stub, tmp_path, "--judge", "anthropic:x"))
        assert code == 2 and "openai:MODEL" in err
    assert stub.requests == []


def test_reply_parsing_helpers() -> None:
    assert extract_json('Here you go:\n{"a": 1}\nEnjoy!') == {"a": 1}
    assert extract_json('```\n{"a": [1, 2]}\n```') == {"a": [1, 2]}
    with pytest.raises(ValueError):
        extract_json("no json here")
    flat = good_reply()
    flat["questions"] = flat["questions"]["extract"] + flat["questions"]["eval"]
    data = reply_to_trait_data(flat, name="stubborn", description="Holds on.", pos_name="obstinate")
    assert len(data["questions"]["extract"]) == len(data["questions"]["eval"]) == 20
    assert data["pos_name"] == "obstinate" and data["neg_name"] == "open-minded"
    # The antonym table wins over the model's suggestion; "helpful" when neither has one.
    data = reply_to_trait_data(good_reply(adjective="rude", antonym="nice"), name="rude", description="d")
    assert data["neg_name"] == "polite"
    data = reply_to_trait_data(good_reply(antonym=None), name="stubborn", description="d")
    assert data["neg_name"] == "helpful"
