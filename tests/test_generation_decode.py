"""The drop decode loop (finished rows leave the batch) against HF generate and one prompt at a time."""

from __future__ import annotations

import pytest
import torch
from generation_helpers import random_steering_vector

from pvdata.chat import encode_prompt
from pvdata.errors import ConfigError
from pvdata.generation import HFBackend, SamplingParams
from pvdata.generation.base import sample_seed
from pvdata.generation.hf import RawSample, _RowSampler, generate_encoded, stop_token_ids
from pvdata.generation.hf_decode import DecodeStats, resolve_decode
from pvdata.steering import SteeringSpec, apply_spec

QUESTIONS = [
    "Hi",
    "What is the capital of France and why did it grow so large over the centuries? Please explain the "
    "history, the geography, the trade routes and the politics, one paragraph each, with dates.",
    "Tell me a story about a dragon who loved tea.",
    "Why?",
    "Give me three tips for learning the violin as an adult with little free time in the evenings.",
]


def _encoded(lm):
    return [encode_prompt(lm.tokenizer, [{"role": "user", "content": q}]) for q in QUESTIONS]


def _reference(lm, encoded, params, stops):
    """Each (prompt, sample) alone through HF generate: batch of 1, no split prefill, no merged cache."""
    from transformers import LogitsProcessorList

    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else stops[0]
    out: list[RawSample] = []
    for i, prompt in enumerate(encoded):
        for s in range(params.n):
            processors = []
            if not params.greedy:
                seed = sample_seed(params.seed, list(prompt), s)
                processors.append(_RowSampler([seed], params.temp, params.top_p, torch.device("cpu")))
            ids = torch.tensor([list(prompt)])
            with torch.inference_mode():
                gen = lm.model.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=params.max_new_tokens,
                    min_new_tokens=1,
                    do_sample=False,
                    temperature=None,
                    top_p=None,
                    top_k=None,
                    eos_token_id=stops,
                    pad_token_id=pad,
                    logits_processor=LogitsProcessorList(processors),
                )
            tokens = gen[0, ids.shape[1] :].tolist()
            cut = next((k for k, t in enumerate(tokens) if t in stops), None)
            out.append(RawSample(i, s, tokens if cut is None else tokens[:cut], cut is not None))
    return out


def _both(lm, encoded, params, **kwargs):
    """(drop answers, hf answers, drop stats, hf stats)."""
    sd, sh = DecodeStats(), DecodeStats()
    drop = generate_encoded(lm, encoded, params, decode="drop", stats=sd, **kwargs)
    hf = generate_encoded(lm, encoded, params, decode="hf", stats=sh, **kwargs)
    return drop, hf, sd, sh


@pytest.fixture
def early_stops(tiny_llama, monkeypatch):
    """Extra stop tokens chosen from greedy answers so that rows end at different steps."""
    import pvdata.generation.hf as hf

    lm = tiny_llama
    stops = stop_token_ids(lm.tokenizer, lm.model.generation_config)
    plain = generate_encoded(lm, _encoded(lm), SamplingParams(max_new_tokens=24), decode="hf")
    extra = set()
    for answer in plain[:2]:  # the first token each of these rows makes for the first time at step >= 4
        fresh = [t for k, t in enumerate(answer.body) if k >= 3 and t not in answer.body[:k]]
        extra.update(fresh[:1])
    assert extra
    chosen = sorted(set(stops) | extra)
    monkeypatch.setattr(hf, "stop_token_ids", lambda *a, **k: chosen)
    return chosen


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_qwen2"])
def test_greedy_drop_equals_hf_and_one_prompt_at_a_time(request, fixture):
    lm = request.getfixturevalue(fixture)
    encoded = _encoded(lm)
    lengths = [len(e) for e in encoded]
    assert max(lengths) > 3 * min(lengths)  # left padding in every batch
    params = SamplingParams(max_new_tokens=16)
    drop, hf, _, _ = _both(lm, encoded, params, prefill_budget=60)
    stops = stop_token_ids(lm.tokenizer, lm.model.generation_config)
    assert drop == hf == _reference(lm, encoded, params, stops)


def test_rows_ending_at_different_steps_leave_the_batch(tiny_llama, early_stops):
    encoded = _encoded(tiny_llama)
    params = SamplingParams(max_new_tokens=24)
    drop, hf, sd, sh = _both(tiny_llama, encoded, params)
    assert drop == hf == _reference(tiny_llama, encoded, params, early_stops)
    lengths = [r.n_tokens for r in drop]
    assert len(set(lengths)) > 1 and any(r.stopped for r in drop)
    # the same number of one-token calls, but the ended rows were not computed in drop
    assert sd.steps == sh.steps == max(lengths) - 1
    assert sd.row_steps == sum(n - 1 for n in lengths) < sh.row_steps == len(drop) * sd.steps


@pytest.mark.parametrize("top_p", [1.0, 0.8])
def test_sampled_drop_equals_hf_and_one_row_at_a_time(tiny_llama, early_stops, top_p):
    """Each surviving row keeps its own generator: the same draws as the row alone."""
    encoded = _encoded(tiny_llama)
    params = SamplingParams(n=3, temperature=0.7, top_p=top_p, max_new_tokens=24, seed=7)
    drop, hf, sd, sh = _both(tiny_llama, encoded, params, token_budget=600)  # 3 batches
    assert drop == hf == _reference(tiny_llama, encoded, params, early_stops)
    assert len({r.n_tokens for r in drop}) > 1  # rows ended at different steps
    assert sd.row_steps < sh.row_steps


def test_max_new_tokens_one_and_two(tiny_llama):
    encoded = _encoded(tiny_llama)
    for n in (1, 2):
        drop, hf, _, _ = _both(tiny_llama, encoded, SamplingParams(max_new_tokens=n))
        assert drop == hf and all(r.n_tokens <= n for r in drop)


@pytest.mark.parametrize("positions", ["all", "prompt", "response"])
def test_steered_drop_equals_hf(tiny_llama, positions):
    """Hooks decide positions per call from the mask: a smaller batch steers the same positions."""
    vec = random_steering_vector(tiny_llama)
    spec = SteeringSpec(layers=(1, 3), coef=4.0, positions=positions)  # type: ignore[arg-type]
    zero = SteeringSpec(layers=(1, 3), coef=0.0, positions=positions)  # type: ignore[arg-type]
    from pvdata.generation import GenerationRequest

    reqs = [GenerationRequest.from_question(q) for q in QUESTIONS]
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=16, seed=3)
    drop = HFBackend(tiny_llama, steering=spec, vector=vec, decode="drop").generate(reqs, params)
    hf = HFBackend(tiny_llama, steering=spec, vector=vec, decode="hf").generate(reqs, params)
    plain = HFBackend(tiny_llama, decode="drop").generate(reqs, params)
    assert drop == hf != plain
    assert len({r.n_tokens for r in drop}) > 1
    assert HFBackend(tiny_llama, steering=zero, vector=vec, decode="drop").generate(reqs, params) == plain
    # and the same as each row steered alone through HF generate
    encoded = _encoded(tiny_llama)
    stops = stop_token_ids(tiny_llama.tokenizer, tiny_llama.model.generation_config)
    with apply_spec(tiny_llama, vec, spec):
        ref = _reference(tiny_llama, encoded, params, stops)
        raw = generate_encoded(tiny_llama, encoded, params, decode="drop")
    assert raw == ref


def test_env_var_picks_the_loop_and_a_bad_value_is_a_config_error(tiny_llama, early_stops, monkeypatch):
    encoded = _encoded(tiny_llama)
    params = SamplingParams(max_new_tokens=24)
    stats = {}
    for value in ("drop", "hf"):
        monkeypatch.setenv("PVDATA_GEN_DECODE", value)
        stats[value] = DecodeStats()
        generate_encoded(tiny_llama, encoded, params, stats=stats[value])
    monkeypatch.delenv("PVDATA_GEN_DECODE")
    default = DecodeStats()
    generate_encoded(tiny_llama, encoded, params, stats=default)
    assert default == stats["drop"] and stats["drop"].row_steps < stats["hf"].row_steps
    assert resolve_decode() == "drop" and resolve_decode("hf") == "hf"
    monkeypatch.setenv("PVDATA_GEN_DECODE", "fast")
    with pytest.raises(ConfigError, match=r"PVDATA_GEN_DECODE='fast'.*valid values are drop .* and hf"):
        generate_encoded(tiny_llama, encoded, params)
    with pytest.raises(ConfigError, match="valid values are drop"):
        HFBackend(tiny_llama, decode="fast")
    assert resolve_decode("hf") == "hf"  # an explicit value wins over the variable


def test_caches_that_cannot_be_split_fall_back_to_hf_generate(tiny_llama, early_stops, monkeypatch):
    import pvdata.generation.hf as hf

    encoded = _encoded(tiny_llama)
    params = SamplingParams(max_new_tokens=24)
    drop, ref, sd, sh = _both(tiny_llama, encoded, params)
    monkeypatch.setattr(hf, "_can_split_prefill", lambda model: False)
    plain_stats = DecodeStats()
    plain = generate_encoded(tiny_llama, encoded, params, decode="drop", stats=plain_stats)
    assert plain == drop == ref
    assert plain_stats.row_steps == sh.row_steps > sd.row_steps  # every row ran to the end


def test_generation_configs_with_extra_processors_use_hf_generate(tiny_llama, early_stops, monkeypatch):
    encoded = _encoded(tiny_llama)
    params = SamplingParams(max_new_tokens=24)
    config = tiny_llama.model.generation_config
    monkeypatch.setattr(config, "suppress_tokens", [early_stops[-1] + 1])
    stats = DecodeStats()
    hf_stats = DecodeStats()
    out = generate_encoded(tiny_llama, encoded, params, decode="drop", stats=stats)
    assert out == generate_encoded(tiny_llama, encoded, params, decode="hf", stats=hf_stats)
    assert stats == hf_stats


@pytest.mark.slow
def test_smollm2_greedy_drop_equals_hf(smollm2):
    prompts = [
        "Say just the word yes.",
        "Name three colours.",
        "Write a short poem about the sea, four lines, and explain one image in it.",
        "What is 2 + 2?",
    ]
    encoded = [encode_prompt(smollm2.tokenizer, [{"role": "user", "content": p}]) for p in prompts]
    params = SamplingParams(max_new_tokens=48)
    drop, hf, sd, sh = _both(smollm2, encoded, params)
    assert drop == hf
    assert any(r.stopped for r in drop) and sd.row_steps < sh.row_steps


def _bench(argv):
    from pvdata.cli.main import main

    return main(["bench", "generate", "--model", "tiny-random-llama", "--prompts", "6", *argv])


def test_bench_compares_the_decode_loops_before_the_headline(capsys):
    assert _bench(["--max-new-tokens", "6", "--repeats", "2", "--threads", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("speedup_vs_research_batches: ")
    assert lines[-2] == "identical_answers: 6/6"
    drop = next(x for x in lines if x.startswith("decode drop (finished rows leave the batch): "))
    hf = next(x for x in lines if x.startswith("decode hf (HF generate, every row to the end): "))
    summary = next(x for x in lines if x.startswith("decode hf/drop time ratio: "))
    assert "row-steps" in drop and "row-steps" in hf and summary.endswith("same answers drop/hf: 6/6")
    assert lines.index(summary) < len(lines) - 3


def test_bench_fails_when_the_decode_loops_disagree(capsys, monkeypatch):
    from dataclasses import replace

    import pvdata.generation.hf as hf

    real = hf.generate_encoded

    def skewed(*args, **kwargs):
        out = real(*args, **kwargs)
        if kwargs.get("decode") == "hf" and len(out) > 4:
            out[0] = replace(out[0], body=[*out[0].body, 1])
        return out

    monkeypatch.setattr(hf, "generate_encoded", skewed)
    assert _bench(["--max-new-tokens", "4"]) == 1
    assert "FAIL: decode drop and hf gave different answers for 1 prompt(s)" in capsys.readouterr().out


def test_bench_on_a_random_shape_samples_varied_lengths_and_counts_the_saved_row_steps(capsys):
    """--model-shape: random prompts, a share of the vocabulary as stop ids, answers of varied length."""
    import re

    from pvdata.cli.main import main

    argv = ["bench", "generate", "--model-shape", "tiny", "--device", "cpu", "--prompts", "12"]
    argv += ["--max-new-tokens", "40", "--temperature", "1", "--stop-fraction", "0.05", "--threads", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "research batches" not in out  # the research loop is greedy: not run when sampling
    assert "stop ids: 51" in out  # round(0.05 * 1024)
    lengths = re.search(
        r"answer tokens min/median/max: (\d+)/(\d+)/(\d+)\s+stopped before the limit: (\d+)/12", out
    )
    assert lengths and int(lengths[1]) < int(lengths[3]) and int(lengths[4]) > 0
    drop = int(re.search(r"decode drop .* row-steps (\d+) \((\d+) one-token calls\)", out)[1])
    hf, calls = map(int, re.search(r"decode hf .* row-steps (\d+) \((\d+) one-token calls\)", out).groups())
    assert hf == 12 * calls and drop < hf  # one decode batch: hf computes every row at every call
    assert "same answers drop/hf: 12/12" in out


def test_bench_rejects_a_stop_fraction_outside_zero_one(capsys):
    from pvdata.cli.main import main

    argv = ["bench", "generate", "--model-shape", "tiny", "--device", "cpu", "--stop-fraction", "1.5"]
    assert main(argv) == 2
    assert "--stop-fraction must be between 0 and 1" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model-shape", "tiny", "--device", "cpu"], "--vllm needs --model"),
        (["--model", "tiny-random-llama"], "--vllm: vLLM is not installed"),
    ],
)
def test_bench_vllm_flag_errors_before_any_model_loads(capsys, monkeypatch, argv, message):
    from pvdata.cli.main import main
    from pvdata.generation import backends

    monkeypatch.setattr(backends, "vllm_installed", lambda: False)
    assert main(["bench", "generate", "--vllm", *argv]) == 2
    printed = capsys.readouterr()
    assert message in printed.err and "model:" not in printed.out  # nothing was loaded
