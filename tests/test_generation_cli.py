"""`pvdata generate` end to end into temporary warehouses (tiny model, fake OpenAI server)."""

from __future__ import annotations

import json

import pytest
import torch

from pvdata.cli.main import main
from pvdata.warehouse import connect

CONTRACT = [
    "generation_id",
    "run_id",
    "trait",
    "split",
    "polarity",
    "question_id",
    "question",
    "system_prompt",
    "prompt_text",
    "answer",
    "model_id",
    "adapter",
    "steering",
    "sample_index",
    "seed",
    "n_tokens",
    "finish_reason",
]
LINES = [
    {"question": "Why is the sky blue?", "question_id": "sky"},
    {"question": "Tell me a joke.", "system": "You are a pirate."},
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there!"}]},
]


def _write(path, lines):
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def _generate(capsys, wh, prompts, *extra):
    args = ["generate", "--model", "tiny-random-llama", "--prompts", str(prompts), "--warehouse", str(wh)]
    code = main([*args, "--max-new-tokens", "6", *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


def _rows(wh, include_running=False):
    con = connect(wh, include_running=include_running)
    try:
        cur = con.execute("SELECT * FROM generations ORDER BY question_id, sample_index")
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    finally:
        con.close()


def _committed(wh):
    """Every generations row on disk, whatever its run's status (a failed run's rows too)."""
    import pyarrow.parquet as pq

    return [
        row
        for path in sorted(wh.glob("tables/generations/run_id=*/*.parquet"))
        for row in pq.read_table(path).to_pylist()
    ]


def _run_id(stdout):
    return next(line.split()[-1] for line in stdout.splitlines() if line.startswith("run_id:"))


def test_generate_end_to_end_then_rerun_is_a_noop(tmp_path, capsys):
    prompts, wh = _write(tmp_path / "p.jsonl", LINES), tmp_path / "wh"
    code, out, err = _generate(capsys, wh, prompts, "--n", "2", "--seed", "3", "--trait", "evil")
    assert code == 0, err
    run_id = _run_id(out)
    assert "6 rows written" in out and "generate: 3/3 prompts" in err
    rows = _rows(wh)
    assert len(rows) == 6 and set(CONTRACT) <= set(rows[0])
    assert len({r["generation_id"] for r in rows}) == 6
    for r in rows:
        assert r["run_id"] == run_id and r["trait"] == "evil" and r["split"] == "eval"
        assert r["polarity"] == "none" and r["model_id"] == "tiny-random-llama" and r["seed"] == 3
        assert r["steering"] is None and r["adapter"] is None
        assert r["finish_reason"] in ("stop", "length") and 1 <= r["n_tokens"] <= 6
        assert "<|im_start|>" in r["prompt_text"] and r["question"] in r["prompt_text"]
    by_q = {r["question_id"]: r for r in rows}
    assert by_q["sky"]["question"] == "Why is the sky blue?" and by_q["sky"]["system_prompt"] is None
    pirate = next(r for r in rows if r["question"] == "Tell me a joke.")
    assert pirate["system_prompt"] == "You are a pirate." and pirate["question_id"].startswith("q-")
    assert {r["sample_index"] for r in rows} == {0, 1}
    sky = [r["answer"] for r in rows if r["question_id"] == "sky"]
    assert len(sky) == 2 and sky[0] != sky[1]  # --n 2 samples at temperature 1

    code, out2, err2 = _generate(capsys, wh, prompts, "--n", "2", "--seed", "3", "--trait", "evil")
    assert code == 0 and "already succeeded" in out2 and _run_id(out2) == run_id
    assert "loading" not in err2  # decided before any model is loaded
    assert len(_rows(wh)) == 6


def test_steered_run_records_the_spec(tmp_path, capsys):
    from pvdata.vectors import PersonaVector

    prompts, wh = _write(tmp_path / "p.jsonl", LINES[:2]), tmp_path / "wh"
    values = torch.randn(5, 64, generator=torch.Generator().manual_seed(0)) * 4
    values[0] = 0
    vec_path = tmp_path / "v.safetensors"
    PersonaVector(trait="evil", model_id="tiny-random-llama", values=values).save(vec_path)
    code, _, err = _generate(capsys, wh, prompts)
    assert code == 0, err
    plain = {r["question_id"]: r["answer"] for r in _rows(wh)}
    code, _out, err = _generate(
        capsys,
        wh,
        prompts,
        "--vector",
        str(vec_path),
        "--layers",
        "2,3",
        "--coef",
        "3",
        "--positions",
        "response",
    )
    assert code == 0, err
    steered = [r for r in _rows(wh) if r["steering"] is not None]
    assert len(steered) == 2
    spec = json.loads(steered[0]["steering"])
    assert spec["mode"] == "add" and spec["layers"] == [2, 3] and spec["coef"] == 3.0
    assert spec["positions"] == "response" and spec["vector_id"] == PersonaVector.load(vec_path).vector_id
    assert {r["question_id"]: r["answer"] for r in steered} != plain
    assert {r["generation_id"] for r in steered}.isdisjoint(
        {r["generation_id"] for r in _rows(wh)} - {r["generation_id"] for r in steered}
    )


def test_interrupted_run_resumes_without_redoing_committed_prompts(tmp_path, capsys, monkeypatch):
    from pvdata.generation.hf import HFBackend

    lines = [{"question": f"Question number {k}?", "question_id": f"q{k}"} for k in range(5)]
    prompts = _write(tmp_path / "p.jsonl", lines)
    real = HFBackend.generate
    calls: list[list[str]] = []

    def flaky(self, requests, params):
        calls.append([r.request_id for r in requests])
        if len(calls) == 3:
            raise KeyboardInterrupt  # killed during the third chunk
        return real(self, requests, params)

    monkeypatch.setattr(HFBackend, "generate", flaky)
    args = ("--n", "2", "--chunk-size", "2")
    code, _, err = _generate(capsys, tmp_path / "wh", prompts, *args)
    assert code == 130
    partial = _committed(tmp_path / "wh")
    assert sorted({r["question_id"] for r in partial}) == ["q0", "q1", "q2", "q3"]

    calls.clear()
    code, out, err = _generate(capsys, tmp_path / "wh", prompts, *args)
    assert code == 0, err
    assert calls == [["q4"]]  # only the prompt that was never committed
    assert "resuming run" in err and "2 rows written" in out and "8 already committed" in out
    resumed = _rows(tmp_path / "wh")

    monkeypatch.setattr(HFBackend, "generate", real)
    code, _, err = _generate(capsys, tmp_path / "clean", prompts, *args)
    assert code == 0, err
    clean = _rows(tmp_path / "clean")
    keep = ("generation_id", "question_id", "sample_index", "answer", "n_tokens")
    assert [{k: r[k] for k in keep} for r in resumed] == [{k: r[k] for k in keep} for r in clean]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "invalid JSON"),
        ({"prompt": "hi"}, "missing field 'question' (or 'messages')"),
        ({"question": "   "}, "field 'question' is empty"),
        ({"messages": [{"role": "user", "content": ""}]}, "messages[0].content is empty"),
        ({"messages": []}, "field 'messages' must be a non-empty list"),
        ({"question": "a", "question_id": "sky"}, "question_id 'sky' repeats line 1"),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_bad_prompt_files_name_file_line_and_field(tmp_path, capsys, line, message):
    prompts = _write(tmp_path / "bad.jsonl", [LINES[0], line])
    code, _out, err = _generate(capsys, tmp_path / "wh", prompts)
    assert code == 2
    assert f"{prompts}:2: " in err and message in err
    assert not (tmp_path / "wh").exists()  # nothing started


def test_missing_and_empty_prompt_files(tmp_path, capsys):
    code, _, err = _generate(capsys, tmp_path / "wh", tmp_path / "nope.jsonl")
    assert code == 2 and "not found" in err
    code, _, err = _generate(capsys, tmp_path / "wh", _write(tmp_path / "empty.jsonl", ["", "  "]))
    assert code == 2 and "has no prompts" in err


def test_steering_with_the_openai_backend_is_a_clear_error(tmp_path, capsys):
    prompts = _write(tmp_path / "p.jsonl", LINES)
    code = main(
        [
            "generate",
            "--backend",
            "openai:fake-chat",
            "--prompts",
            str(prompts),
            "--vector",
            "v.pt",
            "--layers",
            "3",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "steering needs the hf or vllm backend" in err


def test_bad_flags_are_clear_errors(tmp_path, capsys):
    prompts = _write(tmp_path / "p.jsonl", LINES)
    code, _, err = _generate(capsys, tmp_path / "wh", prompts, "--layers", "3")
    assert code == 2 and "add --vector FILE" in err
    code, _, err = _generate(capsys, tmp_path / "wh", prompts, "--backend", "tgi")
    assert code == 2 and "valid backends are auto" in err
    code, _, err = _generate(capsys, tmp_path / "wh", prompts, "--top-p", "0")
    assert code == 2 and "top_p" in err


def test_openai_backend_run_against_the_fake_server(tmp_path, capsys, monkeypatch):
    from pvdata.testing.fake_openai import FakeOpenAIServer

    prompts, wh = _write(tmp_path / "p.jsonl", LINES), tmp_path / "wh"
    with FakeOpenAIServer() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test")
        code = main(
            [
                "generate",
                "--backend",
                "openai:fake-chat",
                "--prompts",
                str(prompts),
                "--warehouse",
                str(wh),
                "--n",
                "3",
                "--no-server-n",
                "--max-new-tokens",
                "40",
            ]
        )
        out = capsys.readouterr()
        assert server.completions == 9
    assert code == 0, out.err
    rows = _rows(wh)
    assert len(rows) == 9 and {r["model_id"] for r in rows} == {"fake-chat"}
    assert all(r["answer"] and r["n_tokens"] and r["finish_reason"] == "stop" for r in rows)
    assert json.loads(rows[0]["prompt_text"])[-1]["role"] == "user"


def test_failed_items_fail_the_run_and_a_rerun_retries_only_them(tmp_path, capsys, monkeypatch):
    from pvdata.testing.fake_openai import FakeOpenAIServer, Faults

    prompts, wh = _write(tmp_path / "p.jsonl", LINES), tmp_path / "wh"
    faults = Faults(rule=lambda prompt, attempt: "400" if "joke" in prompt else None)
    args = ["generate", "--backend", "openai:fake-chat", "--prompts", str(prompts), "--warehouse", str(wh)]
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    with FakeOpenAIServer(faults=faults) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        code = main(args)
        err = capsys.readouterr().err
    assert code == 2 and "1 generation(s) failed" in err and "Rerun the same command" in err
    assert len(_committed(wh)) == 2
    with FakeOpenAIServer() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        code = main(args)
        out = capsys.readouterr().out
        assert server.completions == 1
    assert code == 0 and "1 rows written" in out and len(_rows(wh)) == 3
