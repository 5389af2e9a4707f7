"""Batched capture against the per-sample reference, layer convention, errors, early stop."""

from __future__ import annotations

import pytest
import torch

from pvdata.activations import POOLINGS, capture_activations, capture_encoded
from pvdata.activations.reference import capture_reference
from pvdata.chat import Conversation, encode_conversation


def _conversations(n: int) -> list[Conversation]:
    convs = []
    for i in range(n):
        question = f"Question {i}: what should I do about my " + "very " * (i % 6) + "big problem?"
        answer = "You should " + "think carefully and " * (1 + (i * 5) % 7) + "ask a friend."
        system = "You are an evil assistant." if i % 3 == 0 else None
        convs.append(Conversation.from_pair(question, answer, system=system))
    return convs


def _assert_matches(result, reference, rtol=1e-4, atol=1e-5):
    for pooling in POOLINGS:
        torch.testing.assert_close(result.values[pooling], reference[pooling], rtol=rtol, atol=atol)


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_qwen2"])
def test_batched_equals_per_sample_reference(fixture, request):
    lm = request.getfixturevalue(fixture)
    convs = _conversations(11)
    layers = [0, 1, 2, 4]
    result = capture_activations(lm, convs, layers=layers, token_budget=160)
    assert result.stats["batches"] > 1  # mixed lengths really were batched together
    samples = [encode_conversation(lm.tokenizer, c) for c in convs]
    _assert_matches(result, capture_reference(lm, samples, layers))


def test_result_does_not_depend_on_batch_mates(tiny_llama):
    convs = _conversations(9)
    together = capture_activations(tiny_llama, convs, layers=[2, 3], token_budget=10_000)
    alone = capture_activations(tiny_llama, convs[4:5], layers=[2, 3])
    for pooling in POOLINGS:
        torch.testing.assert_close(together.values[pooling][4:5], alone.values[pooling], rtol=1e-5, atol=1e-6)


def test_layer_convention_hook_on_block_l_minus_1_changes_row_l_only(tiny_llama):
    lm = tiny_llama
    convs = _conversations(3)
    layer = 2
    base = capture_activations(lm, convs, layers=[1, 2, 3])
    # unperturbed layer l equals HF's hidden-state row l (rows < L are pre-norm in HF too)
    samples = [encode_conversation(lm.tokenizer, c) for c in convs]
    ids = torch.tensor([samples[0][0] + samples[0][1]])
    with torch.no_grad():
        hs = lm.model(input_ids=ids, output_hidden_states=True).hidden_states
    torch.testing.assert_close(base.get("prompt_last", layer)[0], hs[layer][0, len(samples[0][0]) - 1])

    shift = torch.full((lm.hidden_size,), 3.0)
    handle = lm.layers.blocks[layer - 1].register_forward_hook(lambda _m, _a, out: out + shift)
    try:
        moved = capture_activations(lm, convs, layers=[1, 2, 3])
    finally:
        handle.remove()
    torch.testing.assert_close(moved.get("prompt_avg", 1), base.get("prompt_avg", 1))
    torch.testing.assert_close(moved.get("prompt_avg", 2), base.get("prompt_avg", 2) + 3.0)
    assert not torch.allclose(moved.get("prompt_avg", 3), base.get("prompt_avg", 3))


def test_last_layer_is_block_output_before_final_norm(tiny_qwen2):
    lm = tiny_qwen2
    conv = _conversations(1)
    seen = {}
    handle = lm.layers.blocks[-1].register_forward_hook(lambda _m, _a, out: seen.setdefault("h", out))
    try:
        res = capture_activations(lm, conv, layers=[lm.n_layers], poolings=["prompt_last"])
    finally:
        handle.remove()
    n_prompt = res.n_prompt_tokens[0]
    torch.testing.assert_close(res.get("prompt_last", lm.n_layers)[0], seen["h"][0, n_prompt - 1])


def test_forward_stops_after_deepest_requested_layer(tiny_llama):
    lm = tiny_llama
    calls: list[str] = []
    handles = [
        block.register_forward_hook(lambda *_a, i=i: calls.append(f"block{i}"))
        for i, block in enumerate(lm.layers.blocks)
    ]
    handles.append(lm.model.lm_head.register_forward_hook(lambda *_a: calls.append("lm_head")))
    try:
        capture_activations(lm, _conversations(2), layers=[2], token_budget=10_000)
    finally:
        for h in handles:
            h.remove()
    assert calls == ["block0", "block1"]  # layer 2 = output of block index 1; nothing after it


def test_empty_answer_and_overlong_samples_are_error_rows(tiny_llama):
    convs = _conversations(3)
    convs[1] = Conversation(convs[1].messages, "")
    res = capture_activations(tiny_llama, convs, layers=[1, 2], max_length=60)
    assert res.errors[1] is not None and "empty answer" in res.errors[1]
    long_idx = [i for i, e in enumerate(res.errors) if e and "too long" in e]
    assert long_idx, res.errors
    assert res.ok.sum() == sum(e is None for e in res.errors)
    assert torch.isfinite(res.select("response_avg")).all()
    # an empty answer is fine when no answer pooling is asked for
    prompt_only = capture_activations(tiny_llama, [convs[1]], layers=[1], poolings=["prompt_last"])
    assert prompt_only.errors == [None]


def test_no_special_tokens_added_to_the_rendered_template(tiny_llama):
    from tokenizers.processors import TemplateProcessing

    from pvdata.chat import encode_prompt
    from pvdata.models.tiny import build_tokenizer

    tok = build_tokenizer()
    bos_id = tok.convert_tokens_to_ids("<|endoftext|>")
    tok._tokenizer.post_processor = TemplateProcessing(
        single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", bos_id)]
    )
    tok.chat_template = "<|endoftext|>" + tok.chat_template
    messages = [{"role": "user", "content": "hi"}]
    naive = tok(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))["input_ids"]
    assert naive[:2] == [bos_id, bos_id]  # the research code's double BOS
    ids = encode_prompt(tok, messages)
    assert ids[0] == bos_id and ids[1] != bos_id


def test_capture_encoded_validates_inputs(tiny_llama):
    from pvdata.errors import ConfigError, ModelError

    with pytest.raises(ConfigError, match="valid poolings"):
        capture_encoded(tiny_llama, [([1, 2], [3])], layers=[1], poolings=["mean"])
    with pytest.raises(ModelError, match=r"0\.\.4"):
        capture_encoded(tiny_llama, [([1, 2], [3])], layers=[7])


@pytest.mark.slow
def test_smollm2_batched_equals_reference(smollm2):
    convs = _conversations(6)
    layers = [1, 15, 29, 30]
    result = capture_activations(smollm2, convs, layers=layers, token_budget=300)
    samples = [encode_conversation(smollm2.tokenizer, c) for c in convs]
    reference = capture_reference(smollm2, samples, layers)
    for pooling in POOLINGS:
        scale = reference[pooling].abs().amax()
        assert float((result.values[pooling] - reference[pooling]).abs().amax() / scale) < 1e-4
