"""`pvdata experiment shift-prediction`: does the pre-finetune projection difference of a dataset predict
the finetuning shift it causes (paper section 4)?

Per trait: datasets mixing trait and normal answers at the given fractions (plus the subtle set) are
screened before finetuning (one screen of their union, see steps.py), each is LoRA-finetuned with one
fixed budget, and Pearson / Spearman r between the dataset-level projection difference and the shift are
reported with bootstrap 95% intervals, per trait and over all datasets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pvdata.experiments import sets as sets_mod
from pvdata.experiments.separation import separation
from pvdata.experiments.stats import correlation_row
from pvdata.experiments.steps import (
    Common,
    Log,
    check_train_config,
    finetune,
    load_screen_model,
    resolve_vectors,
    screen_pool,
    stderr,
)

DEFAULT_FRACTIONS = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)
X_COLUMNS = ("projection_difference_exact", "projection_difference_approx", "raw_projection")


@dataclass
class ShiftPredictionConfig:
    common: Common
    traits: list[str]
    fractions: list[float] = field(default_factory=lambda: list(DEFAULT_FRACTIONS))
    subtle: bool = True
    trait_data: str | None = None
    normal_data: str | None = None
    subtle_data: str | None = None


@dataclass
class Plan:
    cfg: ShiftPredictionConfig
    sets: dict[str, sets_mod.PairedSet]
    config: dict[str, Any]
    out: Path


def experiment_config(cfg: ShiftPredictionConfig, sets: dict[str, sets_mod.PairedSet]) -> dict[str, Any]:
    """What determines the results: its hash names the default output folder."""
    from pvdata.training.data import file_sha256

    c = cfg.common
    return {
        "experiment": "shift_prediction",
        "model": c.model,
        "layer": c.layer,
        "traits": list(cfg.traits),
        "vectors": {t: c.vectors[t].vector_id for t in cfg.traits},
        "fractions": list(cfg.fractions),
        "subtle": cfg.subtle,
        "data": {
            t: [file_sha256(p) for p in (s.trait_path, s.normal_path, s.subtle_path) if p]
            for t, s in sets.items()
        },
        "train_config_sha256": file_sha256(c.train_config) if c.train_config else None,
        "max_steps": c.max_steps,
        "judge": c.judge,
        "seed": c.seed,
        "max_new_tokens": c.max_new_tokens,
        "base_samples": c.base_samples,
        "screen_layers": sorted(set(c.screen_layers)),
        "dtype": c.dtype,
    }


def plan(cfg: ShiftPredictionConfig, warehouse: str, out: str | None = None) -> Plan:
    """Every check before any model loads or any file is written (exit 2 on a bad flag)."""
    from pvdata.errors import ConfigError
    from pvdata.traits import load_trait
    from pvdata.warehouse import Warehouse
    from pvdata.warehouse.ids import config_hash

    if not cfg.traits:
        raise ConfigError("give --trait T (repeatable)")
    if len(set(cfg.traits)) != len(cfg.traits):
        raise ConfigError(f"--trait {','.join(cfg.traits)} repeats a trait")
    if cfg.trait_data is not None and len(cfg.traits) != 1:
        raise ConfigError("--trait-data / --normal-data describe one trait: give exactly one --trait")
    sets_mod.check_fractions(cfg.fractions)
    for trait in cfg.traits:
        load_trait(trait)  # an unknown trait lists the known ones
    check_train_config(cfg.common)
    sets = {}
    for trait in cfg.traits:
        pairs = sets_mod.load_set(trait, cfg.trait_data, cfg.normal_data, cfg.subtle_data, subtle=cfg.subtle)
        sets_mod.check_fractions(cfg.fractions, pairs.n)
        sets[trait] = pairs
    resolve_vectors(warehouse, cfg.common, cfg.traits)
    config = experiment_config(cfg, sets)
    folder = (
        Path(out).resolve()
        if out
        else Warehouse(warehouse).local_dir("exports", f"experiment-{config_hash(config)[:12]}")
    )
    return Plan(cfg, sets, config, folder)


def datasets_of(cfg: ShiftPredictionConfig, pairs: sets_mod.PairedSet) -> list[dict[str, Any]]:
    """name, kind, fraction, records and n_trait of every dataset of one trait."""
    out = []
    for f in cfg.fractions:
        records, k = sets_mod.mix(pairs, f, cfg.common.seed)
        out.append(
            {
                "dataset": f"{pairs.trait}-f{f:g}",
                "kind": "mix",
                "fraction": f,
                "records": records,
                "n_trait": k,
            }
        )
    if cfg.subtle and pairs.subtle_records is not None:
        out.append(
            {
                "dataset": f"{pairs.trait}-subtle",
                "kind": "subtle",
                "fraction": None,
                "records": list(pairs.subtle_records),
                "n_trait": pairs.n,
            }
        )
    return out


def pool_of(datasets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every distinct record of the datasets, in first-seen order."""
    seen: dict[str, dict[str, Any]] = {}
    for d in datasets:
        for r in d["records"]:
            seen.setdefault(json.dumps(r, sort_keys=True), r)
    return list(seen.values())


def run(plan_: Plan, warehouse: str, *, log: Log = stderr) -> dict[str, Any]:
    """Run (or resume) the experiment; returns summary.json's content."""

    cfg, common, out = plan_.cfg, plan_.cfg.common, plan_.out
    points: list[dict[str, Any]] = []
    children: list[str] = []
    separations: dict[str, Any] = {}
    lm = None
    try:
        for trait in cfg.traits:
            datasets = datasets_of(cfg, plan_.sets[trait])
            folder = out / "datasets" / trait
            for d in datasets:
                d["path"] = sets_mod.write_jsonl(folder / f"{d['dataset']}.jsonl", d["records"])
            pool = sets_mod.write_jsonl(folder / "pool.jsonl", pool_of(datasets))
            log(
                f"== {trait}: screening {pool} (the union of {len(datasets)} datasets) "
                f"at layer {common.layer}"
            )
            if lm is None:
                lm = load_screen_model(common)
            scores = screen_pool(common, trait, pool, warehouse, out / "screens" / trait, lm, log)
            children.append(scores.screen_run_id)
            separations[trait] = separation(plan_.sets[trait], scores)
            for d in datasets:
                log(
                    f"== {trait}: finetuning on {d['dataset']} "
                    f"({d['n_trait']}/{len(d['records'])} trait records)"
                )
                trained = finetune(common, trait, d["path"], out, warehouse, log)
                children += [r for r in (trained.train_run_id, trained.evaluate_run_id) if r]
                points.append(point(d, trait, common.layer, scores, trained))
    finally:
        del lm
    stats = correlations(points, common)
    extra = {"separation": separations}
    summary = write_results(plan_, warehouse, points, stats, children, "shift_prediction", extra)
    return summary


def point(d: dict[str, Any], trait: str, layer: int, scores: Any, trained: Any) -> dict[str, Any]:
    from pvdata.samples.readers import content_hash

    return {
        "experiment": "",
        "trait": trait,
        "dataset": d["dataset"],
        "dataset_id": content_hash(Path(d["path"])),
        "kind": d["kind"],
        "fraction": d["fraction"],
        "method": d.get("method"),
        "seed": d.get("seed"),
        "n_records": len(d["records"]),
        "n_trait": d["n_trait"],
        "layer": layer,
        "vector_id": scores.vector_id,
        "projection_difference_exact": scores.mean("exact", d["records"]),
        "projection_difference_approx": scores.mean("prompt_last_approx", d["records"]),
        "raw_projection": scores.mean("raw", d["records"]),
        "shift": trained.shift,
        "judged_score": trained.judged_score,
        "screen_run_id": scores.screen_run_id,
        "train_run_id": trained.train_run_id,
        "evaluate_run_id": trained.evaluate_run_id,
    }


def correlations(points: list[dict[str, Any]], common: Common) -> list[dict[str, Any]]:
    """r of each screening mean against the shift (and the judged score), per trait and over all."""
    rows = []
    groups = {t: [p for p in points if p["trait"] == t] for t in dict.fromkeys(p["trait"] for p in points)}
    if len(groups) > 1:
        groups["all"] = points
    for trait, pts in groups.items():
        for y in ("shift", "judged_score"):
            for x in X_COLUMNS:
                pairs = [(p[x], p[y]) for p in pts if p[x] is not None and p[y] is not None]
                if y == "judged_score" and not pairs:
                    continue
                xs, ys = [a for a, _ in pairs], [b for _, b in pairs]
                row = correlation_row(xs, ys, n_boot=common.bootstrap, seed=common.seed)
                rows.append({"trait": trait, "x": x, "y": y, **row})
    return rows


def write_results(
    plan_: Any,
    warehouse: str,
    points: list[dict[str, Any]],
    stats: list[dict[str, Any]],
    children: list[str],
    experiment: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The experiment run (its rows name every child run), then summary.json in the output folder."""
    from pvdata.warehouse import Warehouse

    wh = Warehouse(warehouse)
    parents = sorted(set(children))
    model = plan_.cfg.common.model
    with wh.run("experiment", plan_.config, parent_run_ids=parents, model_id=model) as run:
        if not run.skipped:  # the same children give the same rows: a finished run is kept as it is
            run.writer("experiment_points").write([{**p, "experiment": experiment} for p in points])
            run.writer("experiment_stats").write([{**s, "experiment": experiment} for s in stats])
            run.stats.update({"out": str(plan_.out), "n_datasets": len(points)})
        run_id = run.run_id
    summary = summary_json(run_id, experiment, points, stats, extra)
    sets_mod_path = plan_.out / "summary.json"
    sets_mod_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = sets_mod_path.with_name("summary.json.tmp")
    tmp.write_text(json.dumps(summary, indent=1, default=_json_default) + "\n")
    tmp.replace(sets_mod_path)
    return summary


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(type(value).__name__)


def summary_json(
    run_id: str,
    experiment: str,
    points: list[dict[str, Any]],
    stats: list[dict[str, Any]],
    extra: dict[str, Any] | None,
) -> dict[str, Any]:
    """Per trait and "all": r of the exact projection difference vs the shift, then every dataset."""
    out: dict[str, Any] = {"experiment": experiment, "run_id": run_id, "correlations": {}}
    for s in stats:
        if s["x"] == "projection_difference_exact" and s["y"] == "shift":
            out[s["trait"]] = {
                "pearson": s["pearson"],
                "spearman": s["spearman"],
                "spearman_ci95": [s["spearman_ci_lo"], s["spearman_ci_hi"]],
                "pearson_ci95": [s["pearson_ci_lo"], s["pearson_ci_hi"]],
                "n_datasets": s["n_datasets"],
            }
        out["correlations"].setdefault(s["trait"], []).append(s)
    keys = (
        "dataset",
        "trait",
        "kind",
        "fraction",
        "method",
        "seed",
        "n_records",
        "n_trait",
        "projection_difference_exact",
        "projection_difference_approx",
        "raw_projection",
        "shift",
        "judged_score",
        "train_run_id",
    )
    out["datasets"] = [{k: p.get(k) for k in keys} for p in points]
    if extra:
        out.update(extra)
    return out


__all__ = ["ShiftPredictionConfig", "plan", "run"]
