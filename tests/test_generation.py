"""The HF generation backend and the shared types, on the tiny random models (fast, float32, CPU)."""

from __future__ import annotations

import pytest
import torch
from generation_helpers import random_steering_vector

from pvdata.errors import ConfigError, DataError
from pvdata.generation import (
    GenerationBackend,
    GenerationRequest,
    HFBackend,
    SamplingParams,
    generate,
    make_backend,
)
from pvdata.generation.hf import plan_batches, plan_prefill, stop_token_ids
from pvdata.steering import SteeringSpec

QUESTIONS = [
    "Hi",
    "What is the capital of France and why did it grow so large over the centuries?",
    "Tell me a story about a dragon who loved tea.",
    "Why is the sky blue?",
    "Give me three tips for learning the violin as an adult with little free time in the evenings.",
]


def _reqs(questions=QUESTIONS, system=None):
    return [
        GenerationRequest.from_question(q, system=system, request_id=f"q{i}") for i, q in enumerate(questions)
    ]


def _texts(results):
    return [(r.request_index, r.sample_index, r.text, r.n_tokens, r.finish_reason) for r in results]


# -- types --------------------------------------------------------------------------------------------------


def test_sampling_defaults_follow_the_paper():
    assert SamplingParams().temperature == 0.0 and SamplingParams().greedy
    assert SamplingParams(n=10).temperature == 1.0
    assert SamplingParams(n=10, temperature=0.3).temp == 0.3
    assert SamplingParams().top_p == 1.0 and SamplingParams().max_new_tokens == 1000


@pytest.mark.parametrize(
    "kwargs",
    [{"n": 0}, {"temperature": -1.0}, {"top_p": 0.0}, {"top_p": 1.5}, {"max_new_tokens": 0}, {"seed": 1.5}],
)
def test_bad_sampling_params_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        SamplingParams(**kwargs)


def test_request_validation():
    req = GenerationRequest.from_question("Q?", system="Be brief.")
    assert req.system_prompt == "Be brief." and req.question == "Q?"
    with pytest.raises(DataError):
        GenerationRequest(())
    with pytest.raises(DataError, match="role"):
        GenerationRequest(({"role": "robot", "content": "x"},))
    with pytest.raises(DataError, match="assistant"):
        GenerationRequest(({"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}))


def test_make_backend_specs(tiny_llama):
    be = make_backend("hf", lm=tiny_llama)
    assert isinstance(be, GenerationBackend) and be.name == "hf"
    with pytest.raises(ConfigError, match="valid backends"):
        make_backend("tgi")
    with pytest.raises(ConfigError, match="needs --model"):
        make_backend("hf")


def test_vllm_backend_without_vllm_names_the_extra(monkeypatch):
    import builtins

    from pvdata.errors import MissingExtraError
    from pvdata.generation.vllm_offline import import_vllm

    real = builtins.__import__

    def fake(name, *args, **kwargs):
        if name == "vllm" or name.startswith("vllm."):
            raise ImportError("no vllm")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(MissingExtraError, match="'vllm' extra"):
        import_vllm()


# -- HF backend ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_qwen2"])
@pytest.mark.parametrize("budget", [None, 120])
def test_greedy_batched_equals_unbatched(request, fixture, budget):
    lm = request.getfixturevalue(fixture)
    params = SamplingParams(max_new_tokens=12)
    batched = HFBackend(lm, token_budget=budget).generate(_reqs(), params)
    single = [HFBackend(lm).generate([r], params)[0] for r in _reqs()]
    assert [r.text for r in batched] == [r.text for r in single]
    assert [r.request_id for r in batched] == [f"q{i}" for i in range(len(QUESTIONS))]


def test_token_budget_plans_several_sorted_batches():
    batches = plan_batches([5, 50, 20, 48], max_new_tokens=10, token_budget=130)
    assert batches == [[1, 3], [2, 0]]


def test_samples_differ_and_are_reproducible(tiny_llama):
    be = HFBackend(tiny_llama)
    params = SamplingParams(n=3, max_new_tokens=10, seed=11)
    first = be.generate(_reqs(), params)
    assert len(first) == 3 * len(QUESTIONS)
    assert [(r.request_index, r.sample_index) for r in first[:3]] == [(0, 0), (0, 1), (0, 2)]
    assert len({r.text for r in first[3:6]}) == 3
    assert _texts(be.generate(_reqs(), params)) == _texts(first)
    assert _texts(be.generate(_reqs(), SamplingParams(n=3, max_new_tokens=10, seed=12))) != _texts(first)


def test_a_sample_does_not_depend_on_its_batch(tiny_llama):
    params = SamplingParams(n=2, max_new_tokens=10, seed=5)
    full = HFBackend(tiny_llama).generate(_reqs(), params)
    by_key = {(r.request_id, r.sample_index): r.text for r in full}
    reordered = HFBackend(tiny_llama, token_budget=60).generate(_reqs()[::-1][:3], params)
    assert {(r.request_id, r.sample_index): r.text for r in reordered}.items() <= by_key.items()


def test_top_p_restricts_sampling(tiny_llama):
    be = HFBackend(tiny_llama)
    tiny_p = be.generate(_reqs()[:2], SamplingParams(n=3, temperature=1.0, top_p=1e-6, max_new_tokens=8))
    greedy = be.generate(_reqs()[:2], SamplingParams(max_new_tokens=8))
    assert {r.text for r in tiny_p[:3]} == {greedy[0].text}  # only the top token survives


@pytest.fixture
def eos_always(tiny_llama):
    """Make end-of-turn the argmax at every step (a hook on the LM head), then undo it."""
    eos = stop_token_ids(tiny_llama.tokenizer, tiny_llama.model.generation_config)[0]

    def boost(module, args, output):
        output = output.clone()
        output[..., eos] += 1e4
        return output

    handle = tiny_llama.model.get_output_embeddings().register_forward_hook(boost)
    yield eos
    handle.remove()


def test_at_least_one_token_then_stop_at_end_of_turn(tiny_llama, eos_always):
    out = HFBackend(tiny_llama).generate(_reqs(), SamplingParams(max_new_tokens=10))
    for r in out:
        assert r.finish_reason == "stop"
        assert r.n_tokens == 2  # one forced token, then the end-of-turn token (counted)
        assert r.text  # the end-of-turn token is not in the text


def test_length_when_no_end_of_turn(tiny_llama):
    out = HFBackend(tiny_llama).generate(_reqs(), SamplingParams(max_new_tokens=6))
    assert any(r.finish_reason == "length" for r in out)
    for r in out:
        assert (r.finish_reason == "length") == (r.n_tokens == 6)
        assert 1 <= r.n_tokens <= 6
    one = HFBackend(tiny_llama).generate(_reqs(), SamplingParams(max_new_tokens=1))
    assert all(r.n_tokens == 1 for r in one)


def test_greedy_n_copies_one_answer(tiny_llama):
    out = HFBackend(tiny_llama).generate(_reqs()[:2], SamplingParams(n=3, temperature=0.0, max_new_tokens=6))
    assert [r.sample_index for r in out] == [0, 1, 2, 0, 1, 2]
    assert len({r.text for r in out[:3]}) == 1


@pytest.mark.parametrize("positions", ["all", "prompt", "response"])
def test_steering_during_generation(tiny_llama, positions):
    params = SamplingParams(max_new_tokens=8)
    plain = HFBackend(tiny_llama).generate(_reqs(), params)
    vec = random_steering_vector(tiny_llama)
    spec = SteeringSpec(layers=(2,), coef=4.0, positions=positions)  # type: ignore[arg-type]
    steered = HFBackend(tiny_llama, steering=spec, vector=vec).generate(_reqs(), params)
    assert _texts(steered) != _texts(plain)
    zero = HFBackend(tiny_llama, steering=SteeringSpec(layers=(2,), coef=0.0), vector=vec).generate(
        _reqs(), params
    )
    assert _texts(zero) == _texts(plain)
    # hooks are off after the call
    assert _texts(HFBackend(tiny_llama).generate(_reqs(), params)) == _texts(plain)


def test_steering_needs_a_vector_of_the_right_shape(tiny_llama):
    with pytest.raises(ConfigError, match="vector"):
        HFBackend(tiny_llama, steering=SteeringSpec(layers=(1,)))
    from pvdata.errors import VectorError

    with pytest.raises(VectorError):
        HFBackend(
            tiny_llama, steering=SteeringSpec(layers=(1,)), vector=torch.ones(3, tiny_llama.hidden_size)
        )


def test_lora_adapter_changes_output(tmp_path, tiny_llama):
    from peft import LoraConfig, get_peft_model

    from pvdata.models import load_model

    base = load_model("tiny-random-llama", device="cpu")
    torch.manual_seed(0)
    cfg = LoraConfig(r=8, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base.model, cfg).save_pretrained(tmp_path / "adapter")
    with_adapter = load_model("tiny-random-llama", device="cpu", adapter=str(tmp_path / "adapter"))
    params = SamplingParams(max_new_tokens=8)
    assert with_adapter.adapter
    lora = make_backend("hf", lm=with_adapter).generate(_reqs(), params)
    plain = HFBackend(tiny_llama).generate(_reqs(), params)
    assert _texts(lora) != _texts(plain)


def test_function_api_keeps_working(tiny_llama):
    prompts = [r.messages for r in _reqs()[:2]]
    out = generate(tiny_llama, prompts, max_new_tokens=5, n=2)
    assert [(g.prompt_index, g.sample_index) for g in out] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert out[0].text == out[1].text  # temperature 0 by default here
    sampled = generate(tiny_llama, prompts, max_new_tokens=5, n=2, temperature=1.0, seed=3)
    assert sampled == generate(tiny_llama, prompts, max_new_tokens=5, n=2, temperature=1.0, seed=3)


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_qwen2"])
def test_same_tokens_as_plain_hf_generate(request, fixture):
    """The split prefill + cache hand-off gives exactly what one HF generate call per prompt gives."""
    from pvdata.chat import encode_prompt

    lm = request.getfixturevalue(fixture)
    stops = stop_token_ids(lm.tokenizer, lm.model.generation_config)
    ours = HFBackend(lm, prefill_budget=50).generate(_reqs(), SamplingParams(max_new_tokens=10))
    for req, got in zip(_reqs(), ours, strict=True):
        ids = torch.tensor([encode_prompt(lm.tokenizer, req.messages)])
        with torch.inference_mode():
            out = lm.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=10,
                min_new_tokens=1,
                do_sample=False,
                eos_token_id=stops,
                pad_token_id=lm.tokenizer.pad_token_id,
            )
        tokens = out[0, ids.shape[1] :].tolist()
        cut = next((k for k, t in enumerate(tokens) if t in stops), len(tokens))
        assert got.text == lm.tokenizer.decode(tokens[:cut], skip_special_tokens=True)
        assert got.n_tokens == min(cut + 1, len(tokens))


@pytest.mark.parametrize("positions", ["all", "prompt", "response"])
def test_split_prefill_keeps_answers_and_steering(tiny_llama, positions):
    from pvdata.chat import encode_prompt

    lengths = sorted((len(encode_prompt(tiny_llama.tokenizer, r.messages)) for r in _reqs()), reverse=True)
    assert len(plan_prefill(lengths, 50)) > 2
    spec = SteeringSpec(layers=(1, 3), coef=3.0, positions=positions)  # type: ignore[arg-type]
    vec = random_steering_vector(tiny_llama)
    for params in (SamplingParams(max_new_tokens=8), SamplingParams(n=2, max_new_tokens=8, seed=4)):
        split = HFBackend(tiny_llama, steering=spec, vector=vec, prefill_budget=50).generate(_reqs(), params)
        whole = HFBackend(tiny_llama, steering=spec, vector=vec, prefill_budget=10**6).generate(
            _reqs(), params
        )
        assert _texts(split) == _texts(whole)


def test_plain_path_for_caches_that_cannot_be_merged(tiny_llama, monkeypatch):
    """Models whose cache is not plain per-layer tensors (sliding window, hybrid) use one generate call."""
    import pvdata.generation.hf as hf

    assert hf._can_split_prefill(tiny_llama.model)
    params = [SamplingParams(max_new_tokens=8), SamplingParams(n=2, max_new_tokens=8, seed=2)]
    split = [HFBackend(tiny_llama, prefill_budget=50).generate(_reqs(), p) for p in params]
    monkeypatch.setattr(hf, "_can_split_prefill", lambda model: False)
    plain = [HFBackend(tiny_llama).generate(_reqs(), p) for p in params]
    assert [_texts(x) for x in plain] == [_texts(x) for x in split]


def test_bench_generate_runs_and_compares(capsys):
    from pvdata.cli.main import main

    code = main(
        ["bench", "generate", "--model", "tiny-random-llama", "--prompts", "7", "--max-new-tokens", "4"]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "identical_answers: 7/7" in out and "speedup_vs_research_batches: " in out
