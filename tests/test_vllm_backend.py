"""The vLLM offline backend on SmolLM2 for real (CPU build of vLLM): run with `make test-vllm`.

Compared against the HF backend in the same process: greedy answers, steering (add and ablate at each
position rule) and LoRA must give the same tokens, which checks the (hidden, residual) handling.
"""

from __future__ import annotations

import pytest

pytest.importorskip("vllm", reason="vllm not installed: run `make test-vllm`")

import torch

from pvdata.generation.base import GenerationRequest, SamplingParams
from pvdata.generation.hf import HFBackend
from pvdata.generation.vllm_offline import VLLMBackend
from pvdata.steering import SteeringSpec

pytestmark = pytest.mark.slow

QUESTIONS = [
    "What should I do this weekend?",
    "Say just the word yes.",
    "Explain in two sentences why the sky is blue, for a curious child who keeps asking questions.",
]
ENGINE = {"dtype": "float32", "max_model_len": 1024, "enforce_eager": True}


def _requests() -> list[GenerationRequest]:
    return [GenerationRequest.from_question(q) for q in QUESTIONS]


@pytest.fixture(scope="module")
def engine():
    return VLLMBackend("smollm2-135m", steerable=True, **ENGINE)


@pytest.fixture(scope="module")
def hf(smollm2):
    return HFBackend(smollm2)


@pytest.fixture(scope="module")
def vector(smollm2):
    gen = torch.Generator().manual_seed(0)
    rows = torch.randn(smollm2.n_layers + 1, smollm2.hidden_size, generator=gen)
    return rows / rows.norm(dim=-1, keepdim=True) * 4.0


def _texts(results):
    return [(r.text, r.n_tokens, r.finish_reason) for r in results]


def test_greedy_matches_hf(engine, hf):
    params = SamplingParams(max_new_tokens=16)
    assert _texts(engine.generate(_requests(), params)) == _texts(hf.generate(_requests(), params))


def test_auto_picks_the_installed_vllm_on_a_gpu_only():
    from pvdata.generation.backends import resolve_backend, vllm_installed

    assert vllm_installed()  # the real check, against this venv's vllm
    assert resolve_backend("auto", "cuda") == "vllm" and resolve_backend("auto", "cpu") == "hf"


def test_bench_compares_vllm_with_hf_on_the_same_prompts(engine, smollm2, capsys):
    from types import SimpleNamespace

    from pvdata.bench.generate import build_prompts
    from pvdata.bench.generate_vllm import compare_vllm

    args = SimpleNamespace(seed=0, repeats=1, token_budget=None)
    compare_vllm(smollm2, "smollm2-135m", build_prompts(3), SamplingParams(max_new_tokens=8), args, engine)
    out = capsys.readouterr().out
    assert (
        "backend vllm (paged, continuous batching)" in out and "backend hf (HF backend, decode drop)" in out
    )
    assert "same answers vllm/hf: 3/3" in out  # greedy float32, 8 tokens: the two agree exactly


def test_stop_length_and_at_least_one_token(engine):
    out = engine.generate(_requests(), SamplingParams(max_new_tokens=12))
    assert out[1].finish_reason == "stop" and 1 <= out[1].n_tokens < 12
    assert out[0].finish_reason == "length" and out[0].n_tokens == 12
    one = engine.generate(_requests(), SamplingParams(max_new_tokens=1))
    assert all(r.n_tokens == 1 and r.text for r in one)


def test_seeded_samples_differ_and_do_not_depend_on_batch(engine):
    params = SamplingParams(n=3, max_new_tokens=16, seed=7)
    first = engine.generate(_requests(), params)
    assert len({r.text for r in first[:3]}) > 1  # n samples of one prompt differ
    alone = engine.generate(_requests()[:1], params)
    assert _texts(alone) == _texts(first[:3])  # same (seed, prompt, sample) without its batch-mates
    other_seed = engine.generate(_requests()[:1], SamplingParams(n=3, max_new_tokens=16, seed=8))
    assert _texts(other_seed) != _texts(alone)


@pytest.mark.parametrize(
    ("mode", "positions", "coef"),
    [("add", "all", 2.0), ("add", "prompt", 4.0), ("add", "response", 3.0), ("ablate", "all", 1.0)],
)
def test_steering_matches_hf_steering(engine, smollm2, vector, mode, positions, coef):
    spec = SteeringSpec(mode=mode, layers=(10, 15), coef=coef, positions=positions)  # type: ignore[arg-type]
    params = SamplingParams(max_new_tokens=12)
    plain = engine.generate(_requests(), params)
    steered = engine.steered(spec, vector).generate(_requests(), params)
    hf_steered = HFBackend(smollm2, steering=spec, vector=vector).generate(_requests(), params)
    assert _texts(steered) == _texts(hf_steered)
    assert _texts(steered) != _texts(plain)
    # the hooks come off after each call
    assert _texts(engine.generate(_requests(), params)) == _texts(plain)


def test_coef_zero_is_the_plain_output(engine, vector):
    params = SamplingParams(max_new_tokens=12)
    zero = engine.steered(SteeringSpec(layers=(12,), coef=0.0), vector).generate(_requests(), params)
    assert _texts(zero) == _texts(engine.generate(_requests(), params))


def test_lora_adapter_matches_hf(tmp_path_factory, smollm2):
    from peft import LoraConfig, get_peft_model

    from pvdata.models import load_model

    folder = tmp_path_factory.mktemp("lora")
    base = load_model("smollm2-135m", device="cpu").model
    torch.manual_seed(0)
    cfg = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base, cfg).save_pretrained(folder)
    params = SamplingParams(max_new_tokens=12)
    lm = load_model("smollm2-135m", device="cpu", adapter=str(folder))
    hf_out = HFBackend(lm).generate(_requests(), params)
    be = VLLMBackend("smollm2-135m", adapter=str(folder), **ENGINE)
    out = be.generate(_requests(), params)
    assert _texts(out) == _texts(hf_out)
    assert _texts(out) != _texts(HFBackend(smollm2).generate(_requests(), params))


MULTIPROCESS_SCRIPT = """
import json, sys
import torch
from pvdata.generation.base import GenerationRequest, SamplingParams
from pvdata.generation.vllm_offline import VLLMBackend
from pvdata.steering import SteeringSpec

if __name__ == "__main__":
    rows = torch.randn(31, 576, generator=torch.Generator().manual_seed(0))
    rows = rows / rows.norm(dim=-1, keepdim=True) * 4.0
    be = VLLMBackend("smollm2-135m", steerable=True, dtype="float32", max_model_len=1024)
    reqs = [GenerationRequest.from_question(q) for q in json.loads(sys.argv[1])]
    params = SamplingParams(max_new_tokens=12)
    plain = [r.text for r in be.generate(reqs, params)]
    spec = SteeringSpec(mode="add", layers=(10, 15), coef=2.0, positions="all")
    steered = [r.text for r in be.steered(spec, rows).generate(reqs, params)]
    after = [r.text for r in be.generate(reqs, params)]
    print("RESULT " + json.dumps({"plain": plain, "steered": steered, "after": after}))
"""


def test_steering_in_a_multiprocess_engine(tmp_path, smollm2, vector):
    """vLLM's default engine runs the model in another process: the hooks are shipped there."""
    import json
    import os
    import subprocess
    import sys

    script = tmp_path / "steer_mp.py"
    script.write_text(MULTIPROCESS_SCRIPT)
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "1"}
    proc = subprocess.run(
        [sys.executable, str(script), json.dumps(QUESTIONS)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    got = json.loads(line.removeprefix("RESULT "))
    spec = SteeringSpec(mode="add", layers=(10, 15), coef=2.0, positions="all")
    hf_steered = HFBackend(smollm2, steering=spec, vector=vector).generate(
        _requests(), SamplingParams(max_new_tokens=12)
    )
    assert got["steered"] == [r.text for r in hf_steered]
    assert got["steered"] != got["plain"] and got["after"] == got["plain"]
