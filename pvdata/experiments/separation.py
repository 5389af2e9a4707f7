"""How well each screening method separates a set's trait answers from its normal answers, and why the
exact method can separate worse than the raw projection.

The sets pair a trait and a normal answer to every prompt, and both share the prompt's one base answer,
so within a prompt exact and raw rank the two answers the same way (the base term cancels). Across
prompts, exact subtracts each prompt's base-answer projection: if that varies more than it tracks the
training answers' own offsets, it adds noise. The table reports the AUROC per method and layer, the
within-prompt win rate (identical for raw and exact by construction), the spread of the base answers'
projections next to that of the normal answers, and how much each score follows answer length.
"""

from __future__ import annotations

import statistics
from typing import Any

from pvdata.experiments.stats import pearson
from pvdata.metrics import auroc


def _words(record: dict[str, Any]) -> int:
    return len(str(record["messages"][-1]["content"]).split())


def separation(pairs: Any, scores: Any) -> dict[str, Any]:
    """AUROC (trait vs normal, subtle vs normal) per method and layer, plus the noise analysis at the
    experiment's layer."""
    out: dict[str, Any] = {"auroc": {}, "subtle_auroc": {}, "within_prompt_win_rate": {}, "r_length": {}}
    for (method, layer), _ in sorted(scores.scores.items()):
        pos = [scores.score_of(method, r, layer) for r in pairs.trait_records]
        neg = [scores.score_of(method, r, layer) for r in pairs.normal_records]
        if any(v is None for v in pos + neg):
            continue
        out["auroc"].setdefault(method, {})[str(layer)] = auroc(pos, neg)
        if pairs.subtle_records is not None:
            sub = [scores.score_of(method, r, layer) for r in pairs.subtle_records]
            if all(v is not None for v in sub):
                out["subtle_auroc"].setdefault(method, {})[str(layer)] = auroc(sub, neg)
        if layer != scores.layer:
            continue
        wins = [1.0 if p > n else 0.5 if p == n else 0.0 for p, n in zip(pos, neg, strict=True)]
        out["within_prompt_win_rate"][method] = sum(wins) / len(wins)
        records = list(pairs.trait_records) + list(pairs.normal_records)
        values = pos + neg
        out["r_length"][method] = pearson([_words(r) for r in records], values)
    base = scores.proj_base.get(scores.layer, {})
    base_values = [
        base[sid]
        for sid in (_sid(r) for r in pairs.normal_records)
        if sid in base  # one base answer per prompt: the normal record's row carries it
    ]
    raw_normal = [scores.score_of("raw", r) for r in pairs.normal_records]
    raw_trait = [scores.score_of("raw", r) for r in pairs.trait_records]
    if len(base_values) > 1 and all(v is not None for v in raw_normal + raw_trait):
        normal = [v for v in raw_normal if v is not None]
        gap = [t - n for t, n in zip(raw_trait, raw_normal, strict=True) if t is not None and n is not None]
        out["sd_proj_base"] = statistics.stdev(base_values)
        out["sd_raw_normal"] = statistics.stdev(normal)
        out["mean_trait_minus_normal"] = statistics.fmean(gap)
        out["r_base_vs_raw_normal"] = (
            pearson(base_values, normal) if len(base_values) == len(normal) else None
        )
    return out


def _sid(record: dict[str, Any]) -> str:
    from pvdata.samples.dataset import sample_id_of
    from pvdata.samples.records import parse_record

    prompt, answer = parse_record(record)
    return sample_id_of(prompt, answer)
