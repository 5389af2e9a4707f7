"""The `hf:<model>` judge: exact probabilities of the whole numbers 0..100 under a local model.

Reading one token's top-20 only works for tokenizers that have a token per number (OpenAI's); Llama,
Qwen and SmolLM2 tokenizers split "57" into "5", "7". This judge computes, for each n in 0..100,

    P(n) = sum over token sequences t_1..t_k that spell n with digit-only tokens of
           P(t_1..t_k | prompt) * P(next token does not start with a digit | prompt, t_1..t_k)

- "Digit-only tokens" are vocabulary entries whose raw token string is all ASCII digits; every way to
  split n's canonical numeral ("57", no leading zeros) into such tokens counts ("5"+"7" and "57" when
  both exist), so no tokenizer's choice of segmentation is missed.
- The end condition makes the events disjoint: the answer's number is n exactly, not the start of
  "570". A next token that does not start with an ASCII digit (end of turn, a space, ".", a letter)
  ends the number. So sum_n P(n) <= 1, and the valid mass Z = sum_n P(n).
- The answer must start with the number right after the chat template's generation prompt; a leading
  space or newline token is off-format (it lowers Z, as any other off-format answer does).

Score: None when Z < 0.25, else sum_n n * P(n) / Z (pvdata.judge.score.aggregate_number_probs).
Refusal: P(the answer starts with the canonical tokens of "REFUSAL") > Z.
top_logprobs: the first token's top-20 (decoded text, logprob), for inspection.

Cost per prompt: ONE forward pass. The candidate token sequences form a trie (101 nodes for tokenizers
that split digits: "0".."9", "10".."99", "100"); its nodes and the REFUSAL chain are appended after the
prompt and read with tree attention: a custom 4-D attention mask lets each node see the whole prompt
and its own ancestors only, at position prompt_length + depth - 1. The logits at a node are then
exactly the model's next-token distribution after prompt + that node's path, for every node at once.
(Copying the prompt's KV cache into one row per path instead costs ~100x more memory traffic.)
"""

from __future__ import annotations

import asyncio
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pvdata.judge.base import OnResult, collect
from pvdata.judge.score import MAX_SCORE, REFUSAL_WORD, JudgeResult, TopLogprobs, aggregate_number_probs

_DIGITS = re.compile(r"[0-9]+", re.ASCII)


def numeral_segmentations(numeral: str, digit_tokens: dict[str, int]) -> list[tuple[int, ...]]:
    """Every split of a numeral into tokens of digit_tokens (text -> id), as id tuples."""
    out: list[tuple[int, ...]] = []

    def walk(pos: int, acc: tuple[int, ...]) -> None:
        if pos == len(numeral):
            out.append(acc)
            return
        for end in range(pos + 1, len(numeral) + 1):
            tid = digit_tokens.get(numeral[pos:end])
            if tid is not None:
                walk(end, (*acc, tid))

    walk(0, ())
    return out


@dataclass(frozen=True)
class NumberPlan:
    """The candidate sequences of every number as a trie, ready to append after any prompt."""

    sequences: list[list[tuple[int, ...]]]  # per number 0..100: the token sequences that spell it
    nodes: list[tuple[int, int]]  # (token id, parent node or -1), parents before children
    node_of: dict[tuple[int, ...], int]  # token path -> its node
    digit_start: list[bool]  # per vocabulary id: raw token text starts with an ASCII digit


def build_plan(tokenizer: Any, vocab_size: int) -> NumberPlan:
    vocab: dict[str, int] = tokenizer.get_vocab()
    digit_tokens = {t: i for t, i in vocab.items() if _DIGITS.fullmatch(t) and i < vocab_size}
    digit_start = [False] * vocab_size
    for text, tid in vocab.items():
        if tid < vocab_size and text[:1].isascii() and text[:1].isdigit():
            digit_start[tid] = True
    sequences = [numeral_segmentations(str(n), digit_tokens) for n in range(MAX_SCORE + 1)]
    paths = sorted({s[:k] for seqs in sequences for s in seqs for k in range(1, len(s) + 1)}, key=len)
    nodes: list[tuple[int, int]] = []
    node_of: dict[tuple[int, ...], int] = {}
    for path in paths:
        node_of[path] = len(nodes)
        nodes.append((path[-1], node_of[path[:-1]] if len(path) > 1 else -1))
    return NumberPlan(sequences, nodes, node_of, digit_start)


def tree_inputs(
    prompt_ids: Sequence[int], nodes: Sequence[tuple[int, int]]
) -> tuple[list[int], list[int], list[list[int]]]:
    """(input ids, position ids, visible columns per tree node) for prompt + trie with tree attention."""
    n_prompt = len(prompt_ids)
    ids = list(prompt_ids) + [t for t, _ in nodes]
    depth: list[int] = []
    visible: list[list[int]] = []
    for i, (_, parent) in enumerate(nodes):
        depth.append(1 if parent < 0 else depth[parent] + 1)
        visible.append([n_prompt + i, *(visible[parent] if parent >= 0 else [])])
    positions = list(range(n_prompt)) + [n_prompt + d - 1 for d in depth]
    return ids, positions, visible


class HFJudge:
    """Local judge on a transformers causal LM (any pvdata model alias, folder or hub id)."""

    cacheable = True
    batch_hint = 1000

    def __init__(self, model: Any, *, device: str = "auto", dtype: str = "auto") -> None:
        self._lm: Any = None
        if isinstance(model, str):
            self.model_name = model
        else:  # a LoadedModel
            self._lm = model
            self.model_name = str(model.model_id)
        self.name = f"hf:{self.model_name}"
        self.device = device
        self.dtype = dtype
        self._plan: NumberPlan | None = None
        self._refusal_ids: dict[int, tuple[int, ...]] = {}
        self.stats: Counter[str] = Counter()

    @property
    def lm(self) -> Any:
        if self._lm is None:
            from pvdata.models import load_model

            self._lm = load_model(self.model_name, device=self.device, dtype=self.dtype)
        return self._lm

    @property
    def plan(self) -> NumberPlan:
        if self._plan is None:
            vocab_size = int(self.lm.model.get_output_embeddings().weight.shape[0])
            self._plan = build_plan(self.lm.tokenizer, vocab_size)
        return self._plan

    async def score_many(self, prompts: Sequence[str]) -> list[JudgeResult]:
        return await collect(self.score_each, prompts)

    async def score_each(self, prompts: Sequence[str], on_result: OnResult) -> None:
        """One prompt after another in a worker thread; on_result is called from that thread."""
        await asyncio.to_thread(self._score_each_sync, list(prompts), on_result)

    def _score_each_sync(self, prompts: Sequence[str], on_result: OnResult) -> None:
        from pvdata.errors import PvdataError

        for i, prompt in enumerate(prompts):
            self.stats["requests"] += 1
            try:
                result = self.score_one(prompt)
            except PvdataError:
                raise
            except Exception as exc:  # e.g. a prompt longer than the model's context: one error row
                self.stats["errors"] += 1
                result = JudgeResult.failed(f"{type(exc).__name__}: {str(exc)[:200]}")
            on_result(i, result)

    def score_one(self, prompt: str) -> JudgeResult:
        probs, p_refusal, top = self.number_probs(prompt)
        z = math.fsum(probs)
        return aggregate_number_probs(probs, refusal=p_refusal > z, top_logprobs=top)

    def _prompt_ids(self, prompt: str) -> tuple[list[int], str]:
        from pvdata.chat import render_prompt

        text = render_prompt(self.lm.tokenizer, [{"role": "user", "content": prompt}])
        ids = list(self.lm.tokenizer(text, add_special_tokens=False)["input_ids"])
        return ids, text

    def refusal_ids(self, prompt_text: str, prompt_ids: list[int]) -> tuple[int, ...]:
        """REFUSAL's tokens as the tokenizer writes them right after the prompt."""
        tok = self.lm.tokenizer
        full = list(tok(prompt_text + REFUSAL_WORD, add_special_tokens=False)["input_ids"])
        if full[: len(prompt_ids)] == prompt_ids and len(full) > len(prompt_ids):
            return tuple(full[len(prompt_ids) :])
        return tuple(tok(REFUSAL_WORD, add_special_tokens=False)["input_ids"])

    def number_probs(self, prompt: str) -> tuple[list[float], float, TopLogprobs]:
        """(P(n) for n in 0..100, P(REFUSAL...), first-token top-20) for one rendered judge prompt."""
        import torch

        lm, plan = self.lm, self.plan
        model, tok = lm.model, lm.tokenizer
        attn = getattr(model.config, "_attn_implementation", None) or "eager"
        if "flash" in attn:
            from pvdata.errors import ModelError

            raise ModelError(
                f"the hf judge needs eager or sdpa attention (custom tree masks); this model uses {attn}"
            )
        prompt_ids, text = self._prompt_ids(prompt)
        refusal = self.refusal_ids(text, prompt_ids)
        base = len(plan.nodes)
        nodes = [*plan.nodes, *((t, base + k - 1 if k else -1) for k, t in enumerate(refusal))]
        ids, positions, visible = tree_inputs(prompt_ids, nodes)
        n_prompt, total = len(prompt_ids), len(ids)
        device = next(model.parameters()).device
        dtype = next(model.parameters()).dtype
        allowed = torch.ones(total, total, dtype=torch.bool).tril()
        allowed[n_prompt:, n_prompt:] = False
        for i, cols in enumerate(visible):
            allowed[n_prompt + i, cols] = True
        mask = torch.zeros(total, total, dtype=dtype)
        mask.masked_fill_(~allowed, torch.finfo(dtype).min)
        with torch.inference_mode():
            out = model(
                input_ids=torch.tensor([ids], device=device),
                position_ids=torch.tensor([positions], device=device),
                attention_mask=mask[None, None].to(device),
                use_cache=False,
            )
            logits = out.logits[0, n_prompt - 1 :].float()  # the prompt's last position, then every node
            logp = torch.log_softmax(logits, dim=-1)  # row 0: after the prompt; row 1 + i: after node i
            vocab = logp.shape[-1]
            flags = plan.digit_start[:vocab] + [False] * (vocab - len(plan.digit_start))
            non_digit = ~torch.tensor(flags, device=logp.device)
            # log P(next token does not start with a digit) after each node
            end_lp = torch.logsumexp(logp[1:, non_digit], dim=-1).double().cpu().tolist()
            tokens = torch.tensor([t for t, _ in nodes], device=logp.device)
            rows = torch.tensor([p + 1 for _, p in nodes], device=logp.device)
            tok_lp = logp[rows, tokens].double().cpu().tolist()  # log P(node token | parent path)
            values, indices = torch.topk(logp[0], k=min(20, vocab))
        cum: list[float] = []
        for i, (_, parent) in enumerate(nodes):
            cum.append(tok_lp[i] + (cum[parent] if parent >= 0 else 0.0))
        probs = [
            math.fsum(math.exp(cum[plan.node_of[seq]] + end_lp[plan.node_of[seq]]) for seq in seqs)
            for seqs in plan.sequences
        ]
        p_refusal = math.exp(cum[-1]) if refusal else 0.0
        top = [
            (tok.decode([int(i)]), float(v)) for v, i in zip(values.tolist(), indices.tolist(), strict=True)
        ]
        return probs, p_refusal, top
