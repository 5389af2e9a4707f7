"""`--backend auto`: vllm when it is installed and the model runs on a GPU (unsteered), else hf; runs
record the backend that answered, so `auto` and the backend it stands for are the same run."""

from __future__ import annotations

import json

import pytest
from test_screen import MODEL, chat, make_vector, write_lines

from pvdata.cli.main import main
from pvdata.errors import ConfigError
from pvdata.executors.base import ExecutorConfig
from pvdata.generation import backends
from pvdata.generation.backends import make_backend, resolve_backend
from pvdata.generation.hf import HFBackend
from pvdata.pipelines.screen import ScreenConfig, plan_screen
from pvdata.warehouse import connect


@pytest.fixture
def vector_file(tmp_path):
    return str(make_vector().save(tmp_path / "evil.safetensors"))


@pytest.mark.parametrize(
    ("device", "installed", "steered", "expected"),
    [
        ("cpu", True, False, "hf"),  # vLLM on a CPU is not what auto picks, even when installed
        ("cuda", False, False, "hf"),
        ("cuda", True, False, "vllm"),
        ("cuda:1", True, False, "vllm"),
        ("cuda", True, True, "hf"),  # steered: hf, whose steering positions are exact
    ],
)
def test_auto_resolves_by_device_installation_and_steering(monkeypatch, device, installed, steered, expected):
    monkeypatch.setattr(backends, "vllm_installed", lambda: installed)
    assert resolve_backend("auto", device, steered=steered) == expected


@pytest.mark.parametrize("spec", ["hf", "vllm", "openai:gpt-4o-mini"])
def test_concrete_specs_come_back_unchanged(monkeypatch, spec):
    monkeypatch.setattr(backends, "vllm_installed", lambda: True)
    assert resolve_backend(spec, "cuda") == spec and resolve_backend(spec, "cpu", steered=True) == spec


def test_an_unknown_spec_lists_auto_among_the_valid_ones():
    with pytest.raises(ConfigError, match=r"valid backends are auto .*hf .*vllm .*openai:MODEL"):
        resolve_backend("tgi", "cpu")


def test_vllm_installed_reflects_importability(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "vllm" else object())
    assert backends.vllm_installed() is False
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    assert backends.vllm_installed() is True


def test_make_backend_auto_on_a_cpu_model_is_hf(tiny_llama):
    gen = make_backend("auto", lm=tiny_llama)
    assert isinstance(gen, HFBackend) and gen.name == "hf"


def _screen_inputs(tmp_path):
    data = write_lines(tmp_path / "train.jsonl", [chat(f"Q{i}?", f"Answer {i}.") for i in range(4)])
    return data, str(tmp_path / "wh")


def test_plan_resolves_auto_where_the_model_runs(tmp_path, vector_file, monkeypatch):
    data, wh = _screen_inputs(tmp_path)
    cfg = ScreenConfig(dataset=data, model=MODEL, vectors=[vector_file], layers=[2])
    assert cfg.backend == "auto"
    assert plan_screen(cfg, wh).backend == "hf"  # this machine: no GPU
    monkeypatch.setattr(backends, "vllm_installed", lambda: True)
    monkeypatch.setattr(ExecutorConfig, "worker_device", lambda self, device: "cuda")
    plan = plan_screen(cfg, wh)
    assert plan.backend == "vllm" and plan.dtype == "torch.bfloat16"
    explicit = ScreenConfig(dataset=data, model=MODEL, vectors=[vector_file], layers=[2], backend="hf")
    assert plan_screen(explicit, wh).backend == "hf"  # asked for: kept, whatever is installed


def test_screen_default_auto_is_the_hf_run_on_a_cpu(tmp_path, vector_file, capsys):
    data, wh = _screen_inputs(tmp_path)
    args = [
        "screen", data, "--model", MODEL, "--vector", vector_file, "--layer", "2", "--method", "exact",
        "--max-new-tokens", "3", "--warehouse", wh,
    ]  # fmt: skip
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "base answers to 4 distinct prompts with hf (auto)" in err
    con = connect(wh)
    ((config,),) = con.execute("SELECT config FROM runs WHERE kind = 'generate'").fetchall()
    con.close()
    config = json.loads(config) if isinstance(config, str) else config
    assert config["backend"] == "hf" and config["dtype"] == "torch.float32"

    assert main([*args, "--backend", "hf"]) == 0  # the same run: nothing is generated again
    err = capsys.readouterr().err
    assert "base answers: " in err and "already succeeded" in err
    con = connect(wh)
    assert con.execute("SELECT count(*) FROM runs WHERE kind = 'generate'").fetchone() == (1,)
    con.close()


def test_generate_auto_records_the_resolved_backend(tmp_path, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"question": "Hi?", "question_id": "hi"}) + "\n")
    wh = tmp_path / "wh"
    base = ["generate", "--model", MODEL, "--prompts", str(prompts), "--warehouse", str(wh)]
    assert main([*base, "--max-new-tokens", "3", "--backend", "auto"]) == 0
    out = capsys.readouterr()
    assert "loading hf backend" in out.err
    assert main([*base, "--max-new-tokens", "3", "--backend", "hf"]) == 0
    assert "already succeeded" in capsys.readouterr().out  # auto was hf: the same run
