"""The local hf judge: exact number probabilities on a tokenizer that splits numbers into digits."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from pvdata.judge import judge_prompts, make_judge, rubrics
from pvdata.judge.hf_judge import HFJudge, build_plan, numeral_segmentations, tree_inputs

PROMPT = rubrics.render(rubrics.COHERENCE, "What is the capital of France?", "Paris is the capital.")


class FakeVocabTokenizer:
    def __init__(self, vocab: dict[str, int]) -> None:
        self.vocab = vocab

    def get_vocab(self) -> dict[str, int]:
        return dict(self.vocab)


def test_segmentations_cover_every_split() -> None:
    vocab = {"5": 1, "7": 2, "57": 3, "1": 4, "0": 5, "10": 6, "00": 7, "100": 8}
    assert sorted(numeral_segmentations("57", vocab)) == [(1, 2), (3,)]
    assert sorted(numeral_segmentations("100", vocab)) == [(4, 5, 5), (4, 7), (6, 5), (8,)]
    assert numeral_segmentations("9", vocab) == []


def test_plan_is_a_trie_and_tree_inputs_see_only_ancestors() -> None:
    digits = {str(d): d + 10 for d in range(10)}
    vocab = {**digits, "57": 30, "100": 31, "Ġ5": 32, "x": 33, "5x": 34}
    plan = build_plan(FakeVocabTokenizer(vocab), 40)
    assert sorted(plan.sequences[57]) == [(15, 17), (30,)]
    assert sorted(plan.sequences[100]) == [(11, 10, 10), (31,)]
    for path, node in plan.node_of.items():
        token, parent = plan.nodes[node]
        assert token == path[-1] and parent == (plan.node_of[path[:-1]] if len(path) > 1 else -1)
        assert parent < node  # parents first
    assert len(plan.nodes) == 10 + 90 + 1 + 2  # digit paths "0".."9", "10".."99", "100", plus "57", "100"
    # "5x" starts with a digit (it would continue the number); "Ġ5" (space-5) and "x" do not
    assert plan.digit_start[34] and not plan.digit_start[32] and not plan.digit_start[33]
    assert all(plan.digit_start[t] for t in digits.values())
    ids, positions, visible = tree_inputs([1, 2, 3], [(7, -1), (8, 0), (9, 1), (6, -1)])
    assert ids == [1, 2, 3, 7, 8, 9, 6] and positions == [0, 1, 2, 3, 4, 5, 3]
    assert [sorted(v) for v in visible] == [[3], [3, 4], [3, 4, 5], [6]]


@pytest.fixture(scope="module")
def hf_judge(tiny_llama: Any) -> HFJudge:
    return HFJudge(tiny_llama)


@pytest.fixture(scope="module")
def computed(hf_judge: HFJudge) -> tuple[list[float], float, list[tuple[str, float]]]:
    return hf_judge.number_probs(PROMPT)


def brute_force(judge: HFJudge, prompt: str, seq: tuple[int, ...], *, end: bool = True) -> float:
    """P(seq | prompt) by plain teacher forcing (one causal forward, no tree mask, no cache), times
    P(no digit next) if end."""
    ids, _ = judge._prompt_ids(prompt)
    with torch.inference_mode():
        logits = judge.lm.model(input_ids=torch.tensor([ids + list(seq)])).logits[0].double()
    lp = torch.log_softmax(logits, -1)
    total = sum(float(lp[len(ids) - 1 + i, t]) for i, t in enumerate(seq))
    if end:
        non_digit = ~torch.tensor(judge.plan.digit_start[: lp.shape[-1]])
        total += float(torch.logsumexp(lp[-1, non_digit], -1))
    return math.exp(total)


def test_tiny_tokenizer_splits_numbers_into_digits(hf_judge: HFJudge) -> None:
    tok = hf_judge.lm.tokenizer
    ids, text = hf_judge._prompt_ids(PROMPT)
    full = tok(text + "57", add_special_tokens=False)["input_ids"]
    assert full[: len(ids)] == ids
    pieces = tok.convert_ids_to_tokens(full[len(ids) :])
    assert pieces == ["5", "7"]  # the case a one-token reading gets wrong
    assert hf_judge.plan.sequences[57] == [tuple(full[len(ids) :])]


def test_number_probabilities_sum_to_the_valid_mass(hf_judge: HFJudge, computed: Any) -> None:
    probs, p_refusal, top = computed
    assert len(probs) == 101 and all(p >= 0 for p in probs)
    z = math.fsum(probs)
    assert 0 < z <= 1 + 1e-6  # disjoint events
    result = hf_judge.score_one(PROMPT)
    assert result.valid_mass == pytest.approx(z, abs=1e-5)
    assert result.refusal == (p_refusal > z)
    assert len(result.top_logprobs) == 20 and result.top_logprobs == top
    if result.score is not None:
        assert result.score == pytest.approx(sum(n * p for n, p in enumerate(probs)) / z)


@pytest.mark.parametrize("number", [0, 7, 57, 100])
def test_matches_brute_force_token_by_token(hf_judge: HFJudge, computed: Any, number: int) -> None:
    probs, _, _ = computed
    reference = sum(brute_force(hf_judge, PROMPT, seq) for seq in hf_judge.plan.sequences[number])
    assert probs[number] == pytest.approx(reference, rel=1e-4, abs=1e-9)


def test_refusal_probability_matches_brute_force(hf_judge: HFJudge, computed: Any) -> None:
    _, p_refusal, _ = computed
    ids, text = hf_judge._prompt_ids(PROMPT)
    seq = hf_judge.refusal_ids(text, ids)
    assert p_refusal == pytest.approx(brute_force(hf_judge, PROMPT, seq, end=False), rel=1e-3, abs=1e-30)


def test_hf_judge_interface(tiny_llama: Any) -> None:
    judge = make_judge("hf:tiny-random-llama")
    assert judge.name == "hf:tiny-random-llama"
    judge._lm = tiny_llama  # type: ignore[attr-defined]  # reuse the session's model
    (r,) = judge_prompts(judge, [PROMPT])
    assert r.error is None and r.valid_mass is not None and (r.score is None or 0 <= r.score <= 100)


def test_tree_attention_matches_brute_force_on_qwen2(tiny_qwen2: Any) -> None:
    judge = HFJudge(tiny_qwen2)
    probs, p_refusal, _ = judge.number_probs(PROMPT)
    assert judge.name == f"hf:{tiny_qwen2.model_id}"
    for number in (3, 42, 100):
        reference = sum(brute_force(judge, PROMPT, seq) for seq in judge.plan.sequences[number])
        assert probs[number] == pytest.approx(reference, rel=1e-4, abs=1e-12)
    ids, text = judge._prompt_ids(PROMPT)
    refusal = brute_force(judge, PROMPT, judge.refusal_ids(text, ids), end=False)
    assert p_refusal == pytest.approx(refusal, rel=1e-3, abs=1e-30)
