"""The screen's last stage: thresholds and decisions over the scores, and the summary a user reads.

Kept apart from the stages that load a model (pvdata.pipelines.screen) so the decision logic, the
`summary.json` content and the printed summary can be read on their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pvdata.errors import DataError
from pvdata.pipelines.progress import Log

SNIPPET = 80


def note_resume(run: Any, log: Log) -> None:
    if run.status_before == "resumed":
        log(f"      {run.message}")


@dataclass
class GroupSummary:
    """One (trait, layer, method): its threshold and what it flagged."""

    trait: str
    vector_id: str
    layer: int
    method: str
    threshold: float | None
    basis: str
    n_scored: int
    n_unscored: int
    n_flagged: int
    n_flagged_records: int
    mean_score: float | None
    mean_score_records: float | None
    mean_proj_diff: float | None
    top: list[dict[str, Any]]
    # the dataset-level projection difference (difference methods only): the mean over the training set's
    # records as the paper takes it (a duplicated sample counts once per copy), and over distinct samples
    projection_difference: float | None = None
    projection_difference_distinct: float | None = None
    n_base_cut: int = 0  # scored samples whose base answer(s) hit --max-new-tokens


def decision_stage(
    wh: Any,
    plan: Any,
    rows: list[dict[str, Any]],
    ref_rows: list[dict[str, Any]] | None,
    stage_runs: dict[str, str],
    force: bool,
    log: Log,
) -> tuple[str, list[GroupSummary], set[str], set[str], str]:
    """One threshold per (trait, layer, method) over the scores, every row in one commit."""
    from pvdata.screening.thresholds import decide

    cfg, data = plan.cfg, plan.dataset
    config = {
        "stage": "screen.decisions",
        "dataset_id": data.dataset_id,
        "reference_id": plan.reference.dataset_id if plan.reference else None,
        "runs": stage_runs,
        "vectors": {t: v.vector_id for t, v in plan.vectors.items()},
        "layers": plan.layers,
        "methods": list(plan.methods),
        "threshold": plan.spec.to_json(),
    }
    groups: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["trait"], row["layer"], row["method"]), []).append(row)
    ref_groups: dict[tuple[str, int, str], list[float]] = {}
    for row in ref_rows or []:
        if row["score"] is not None:
            ref_groups.setdefault((row["trait"], row["layer"], row["method"]), []).append(row["score"])
    out_rows: list[dict[str, Any]] = []
    summaries: list[GroupSummary] = []
    flagged: set[str] = set()
    scored: set[str] = set()
    for (trait, layer, method), group in groups.items():
        reference = None
        if plan.reference is not None:
            reference = ref_groups.get((trait, layer, method), [])
            if not reference and plan.spec.kind == "percentile":
                raise DataError(
                    f"--reference {plan.reference.source}: no reference sample could be scored for {trait} "
                    f"layer {layer} {method}, so there is no percentile to compare with"
                )
        label = f"{trait} L{layer} {method}"
        result = decide(
            [r["score"] for r in group],
            plan.spec,
            reference=reference,
            label=label,
            errors=[r["error"] for r in group],
        )
        for row, d in zip(group, result.decisions, strict=True):
            sample = data.sample(row["sample_id"])
            out_rows.append(
                {
                    "dataset_id": data.dataset_id,
                    "sample_id": row["sample_id"],
                    "vector_id": row["vector_id"],
                    "trait": trait,
                    "layer": layer,
                    "method": method,
                    "proj_train": row["proj_train"],
                    "proj_base": row["proj_base"],
                    "score": row["score"],
                    "percentile": d.percentile,
                    "flagged": d.flagged,
                    "reason": with_notes(
                        _with_turn(_with_cut(d.reason, row, cfg.max_new_tokens), row), sample.notes
                    ),
                    "threshold": d.threshold,
                    "base_generation_id": row["base_generation_id"],
                    "n_copies": sample.n_copies,
                }
            )
            if d.flagged:
                flagged.add(row["sample_id"])
            if row["score"] is not None:
                scored.add(row["sample_id"])
        summaries.append(_group_summary(data, trait, group, layer, method, result))
    unscored = {s.sample_id for s in data.samples} - scored
    parents = list(dict.fromkeys(stage_runs.values()))
    with wh.run("screen", config, parent_run_ids=parents, model_id=cfg.model, force=force) as run:
        note_resume(run, log)
        if run.skipped:
            log(f"[4/5] decisions: {run.message}")
        else:
            if not run.done_ids("screenings", "sample_id"):  # a kill after the commit: keep that one
                run.writer("screenings").write(out_rows)  # one write call: one file, one commit
            run.stats.update(
                {
                    "counts": data.counts(),
                    "flagged_samples": len(flagged),
                    "unscored_samples": len(unscored),
                    "groups": [{k: v for k, v in asdict(g).items() if k != "top"} for g in summaries],
                }
            )
            log(
                f"[4/5] decisions: {len(out_rows)} screenings rows, {len(flagged)} samples flagged "
                f"-> {run.run_id}"
            )
        return str(run.run_id), summaries, flagged, unscored, run.message


def _with_turn(reason: str | None, row: dict[str, Any]) -> str | None:
    """The decision's reason, saying which assistant turn scored highest when it is not the last."""
    from pvdata.screening.turns import turn_note

    note = turn_note(row)
    return f"{reason}; {note}" if note and reason else reason


def with_notes(reason: str | None, notes: Sequence[str]) -> str | None:
    """The decision's reason, then what reading the sample left out (tool calls, tool results...)."""
    if not notes:
        return reason
    read = "input: " + "; ".join(notes)
    return f"{reason}; {read}" if reason else read


def _with_cut(reason: str | None, row: dict[str, Any], max_new_tokens: int) -> str | None:
    """The decision's reason, saying when the base answer compared with was cut at the token budget."""
    cut = row.get("base_cut", 0)
    if not cut or reason is None:
        return reason
    which = "base answer was" if cut == 1 else f"{cut} base answers were"
    return f"{reason}; the {which} cut at --max-new-tokens {max_new_tokens} (finish_reason length)"


def _mean(values: Sequence[float], weights: Sequence[int] | None = None) -> float | None:
    if not values:
        return None
    w = weights or [1] * len(values)
    return float(sum(v * k for v, k in zip(values, w, strict=True)) / sum(w))


def _group_summary(
    data: Any, trait: str, group: list[dict[str, Any]], layer: int, method: str, result: Any
) -> GroupSummary:
    scored = [(r, d) for r, d in zip(group, result.decisions, strict=True) if r["score"] is not None]
    scores = [r["score"] for r, _ in scored]
    copies = [data.sample(r["sample_id"]).n_copies for r, _ in scored]
    diffs = [r["proj_train"] - r["proj_base"] for r, _ in scored if r["proj_base"] is not None]
    flagged = sorted(((r, d) for r, d in scored if d.flagged), key=lambda rd: -rd[0]["score"])
    top = []
    for r, d in flagged[:5]:
        sample = data.sample(r["sample_id"])
        top.append(
            {
                "sample_id": r["sample_id"],
                "line": sample.lines[0],
                "score": r["score"],
                "percentile": d.percentile,
                "answer": _snippet(sample.answer),
            }
        )
    return GroupSummary(
        trait=trait,
        vector_id=group[0]["vector_id"],
        layer=layer,
        method=method,
        threshold=result.threshold,
        basis=result.basis,
        n_scored=len(scored),
        n_unscored=len(group) - len(scored),
        n_flagged=result.n_flagged,
        n_flagged_records=sum(data.sample(r["sample_id"]).n_copies for r, d in scored if d.flagged),
        mean_score=_mean(scores),
        mean_score_records=_mean(scores, copies),
        mean_proj_diff=_mean(diffs),
        top=top,
        projection_difference=None if method == "raw" else _mean(scores, copies),
        projection_difference_distinct=None if method == "raw" else _mean(scores),
        n_base_cut=sum(1 for r, _ in scored if r.get("base_cut")),
    )


def _snippet(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= SNIPPET else flat[: SNIPPET - 3] + "..."


def build_summary(
    plan: Any, run_id: str, stage_runs: dict[str, str], groups: list[GroupSummary], n_unscored: int
) -> dict[str, Any]:
    cfg = plan.cfg
    traits: dict[str, Any] = {}
    for g in groups:
        entry = traits.setdefault(
            g.trait,
            {
                "vector_id": g.vector_id,
                "layers": plan.layers[g.trait],
                "layer_choice": plan.layer_why[g.trait],
                "results": [],
            },
        )
        entry["results"].append({k: v for k, v in asdict(g).items() if k not in ("trait", "vector_id")})
    for entry in traits.values():
        # the dataset-level projection difference (ALGORITHMS.md section 7) at the trait's first layer,
        # from the first difference method screened (exact, else the approximation): the mean Delta over
        # the training set's records (duplicates count), and over distinct samples beside it. Every
        # (layer, method) has both in its result.
        diffs = [r for r in entry["results"] if r["method"] != "raw"]
        first = diffs[0] if diffs else {}
        entry["mean_projection_difference"] = first.get("projection_difference")
        entry["mean_projection_difference_distinct"] = first.get("projection_difference_distinct")
        entry["difference_method"] = first.get("method")
        entry["difference_layer"] = first.get("layer")
    return {
        "screen_run_id": run_id,
        "dataset": {
            "source": plan.dataset.source,
            "format": plan.dataset.format,
            "dataset_id": plan.dataset.dataset_id,
        },
        "reference": None
        if plan.reference is None
        else {
            "source": plan.reference.source,
            "dataset_id": plan.reference.dataset_id,
            **plan.reference.counts(),
        },
        "model": cfg.model,
        "methods": list(plan.methods),
        "threshold": plan.spec.to_json(),
        "records": {**plan.dataset.counts(), "unscored_samples": n_unscored},
        "traits": traits,
        "run_ids": {**stage_runs, "screen": run_id},
    }


def summary_lines(result: Any, cfg: Any) -> list[str]:
    """The closing summary: counts, per trait and layer the threshold, flags, mean score and top flags."""

    def num(x: float | None) -> str:
        return "n/a" if x is None else f"{x:+.4g}"

    c = result.counts
    lines = [f"screen run {result.run_id}: {cfg.dataset}, model {cfg.model}"]
    if result.message:
        lines.append(f"  {result.message}")
    unscored = result.records.get("unscreened", 0) - c["invalid"]
    lines.append(
        f"  samples: {c['records']} records -> {c['distinct']} distinct, {c['duplicates']} duplicates, "
        f"{c['invalid']} invalid" + (f", {unscored} could not be scored" if unscored else "")
    )
    if result.reference_counts is not None:
        r = result.reference_counts
        lines.append(f"  reference {cfg.reference}: {r['distinct']} distinct samples")
    for trait in dict.fromkeys(g.trait for g in result.groups):
        groups = [g for g in result.groups if g.trait == trait]
        lines.append(f"  {trait} (vector {groups[0].vector_id}; layer: {result.layer_why.get(trait, '')}):")
        for g in groups:
            threshold = "none" if g.threshold is None else f"{g.threshold:.4g}"
            lines.append(
                f"    {g.method} L{g.layer}: threshold {threshold} ({g.basis}); flagged {g.n_flagged} of "
                f"{g.n_scored} samples ({g.n_flagged_records} record{'' if g.n_flagged_records == 1 else 's'}"
                f"); mean score {num(g.mean_score)}"
                + (f"; {g.n_base_cut} base answers cut at --max-new-tokens" if g.n_base_cut else "")
            )
            for t in g.top:
                lines.append(f"      {t['score']:+9.4g}  line {t['line']:<6} {t['answer']!r}")
    out = result.outputs
    rec = result.records
    lines.append(
        f"  files in {out.out_dir}: {out.flagged.name} ({rec['flagged']} records), {out.kept.name} "
        f"({rec['kept']}), {out.unscreened.name} ({rec['unscreened']}), {out.summary.name}"
    )
    run = result.run_id
    lines += [
        "next:",
        f'  pvdata sql "SELECT s.line, c.trait, c.layer, c.score, c.reason FROM screenings c JOIN samples s '
        f"USING (sample_id, dataset_id) WHERE c.run_id = '{run}' AND c.flagged ORDER BY c.score DESC\"",
        "  pvdata sql --query-name screening_summary",
        f"  pvdata runs show {run}",
    ]
    return lines
