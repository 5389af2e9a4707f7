"""`bench screen`'s reference: the research code's per-sample loops (eval/cal_projection.py's
projection, `model.generate` one sample at a time), which pvdata's scores must equal."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pvdata.bench.screen_data import BenchVector


def unit_row(vector: BenchVector, layer: int) -> Any:
    """The layer's row as a float64 unit vector, the direction the research code projects onto."""
    row = vector.row(layer).double()
    return row / row.norm()


def reference_projections(
    lm: Any, prompt_ids: list[int], answer_ids: list[int], unit: Any, layer: int, grad: bool
) -> tuple[float, float]:
    """(proj, prompt_last_proj) of one text from one forward with every hidden state (autograd on when
    `grad`, as the research code); layer L is block L's output, as in pvdata."""
    from pvdata.activations.reference import reference_sample

    pooled = reference_sample(lm.model, prompt_ids, answer_ids, [layer], grad=grad, blocks=lm.layers.blocks)
    h = pooled["response_avg"][layer].double()
    last = pooled["prompt_last"][layer].double()
    return float(h @ unit), float(last @ unit)


def reference_approx(
    lm: Any, samples: Sequence[Any], vector: BenchVector, layer: int, grad: bool, passes: int = 2
) -> tuple[list[dict[str, float]], int]:
    """Per sample: chat template, tokenise, one forward; raw and prompt_last_approx scores, and tokens.

    `passes=2` is what the research code costs: its script computes one projection type per invocation
    (proj, then prompt_last_proj), so the approximation reads the file and runs every forward twice; the
    first pass gives proj, the second prompt_last_proj. `passes=1` reads both from one forward."""
    from pvdata.chat import encode_answer, encode_prompt

    tok, unit = lm.tokenizer, unit_row(vector, layer)
    projs: list[float] = []
    lasts: list[float] = []
    tokens = 0
    for p in range(passes):
        for s in samples:
            prompt_ids = encode_prompt(tok, s.prompt)
            answer_ids = encode_answer(tok, s.answer)
            proj, last = reference_projections(lm, prompt_ids, answer_ids, unit, layer, grad)
            if p == 0:
                projs.append(proj)
                tokens += len(prompt_ids) + len(answer_ids)
            if p == passes - 1:
                lasts.append(last)
    out = [
        {"raw": proj, "prompt_last_approx": proj - last, "proj": proj, "prompt_last_proj": last}
        for proj, last in zip(projs, lasts, strict=True)
    ]
    return out, tokens


@dataclass
class RefExact:
    scores: list[dict[str, Any]]
    base_texts: list[str]
    prompt_tokens: int
    generated_tokens: int
    scored_tokens: int


def reference_exact(
    lm: Any, samples: Sequence[Any], vector: BenchVector, layer: int, max_new_tokens: int, grad: bool
) -> RefExact:
    """Per sample: greedy `model.generate` of the base answer (batch of one), decode, then one forward
    per text (training answer, base answer); exact = proj(train) - proj(base)."""
    from pvdata.bench.generate import research_generate
    from pvdata.chat import encode_answer, encode_prompt
    from pvdata.generation.hf import stop_token_ids

    tok, unit = lm.tokenizer, unit_row(vector, layer)
    stops = stop_token_ids(tok, getattr(lm.model, "generation_config", None))
    res = RefExact([], [], 0, 0, 0)
    for s in samples:
        prompt_ids = encode_prompt(tok, s.prompt)
        [(body, stopped)] = research_generate(lm, [prompt_ids], max_new_tokens, stops, 1)
        base_text = str(tok.decode(body, skip_special_tokens=True))
        answer_ids = encode_answer(tok, s.answer)
        train, _ = reference_projections(lm, prompt_ids, answer_ids, unit, layer, grad)
        base_ids = encode_answer(tok, base_text)
        base = reference_projections(lm, prompt_ids, base_ids, unit, layer, grad)[0] if base_ids else None
        res.scores.append(
            {"raw": train, "exact": None if base is None else train - base, "proj": train, "proj_base": base}
        )
        res.base_texts.append(base_text)
        res.prompt_tokens += len(prompt_ids)
        res.generated_tokens += len(body) + int(stopped)
        res.scored_tokens += 2 * len(prompt_ids) + len(answer_ids) + len(base_ids)
    return res
