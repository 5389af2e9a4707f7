"""`pvdata experiment filter`: the user's real decision. On a contaminated set, drop the top share of
samples by each screening method (and the same counts at random), finetune on each remainder with the
same budget, and compare each shift with the unfiltered set's and with a clean set's.

"Removed" is the share of the contamination's effect a filter takes away: (shift_unfiltered - shift) /
(shift_unfiltered - shift_clean), where clean is the same prompts answered normally; the shift relative to
the base model is reported beside it, since finetuning on clean data moves the model too.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pvdata.experiments import sets as sets_mod
from pvdata.experiments.shift_prediction import point, pool_of, write_results
from pvdata.experiments.steps import (
    METHODS,
    Common,
    Log,
    check_train_config,
    finetune,
    load_screen_model,
    resolve_vectors,
    screen_pool,
    stderr,
)

DEFAULT_DROPS = (0.1, 0.25, 0.5)


@dataclass
class FilterConfig:
    common: Common
    trait: str
    contamination: float = 0.5
    drops: list[float] = field(default_factory=lambda: list(DEFAULT_DROPS))
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    random_seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    trait_data: str | None = None
    normal_data: str | None = None


@dataclass
class FilterPlan:
    cfg: FilterConfig
    pairs: sets_mod.PairedSet
    config: dict[str, Any]
    out: Path


def plan(cfg: FilterConfig, warehouse: str, out: str | None = None) -> FilterPlan:
    """Every check before any model loads or any file is written."""
    from pvdata.errors import ConfigError
    from pvdata.training.data import file_sha256
    from pvdata.traits import load_trait
    from pvdata.warehouse import Warehouse
    from pvdata.warehouse.ids import config_hash

    load_trait(cfg.trait)
    sets_mod.check_fractions([cfg.contamination], what="--contamination")
    sets_mod.check_fractions(cfg.drops, what="--drop")
    if any(d >= 1.0 for d in cfg.drops):
        raise ConfigError("--drop: dropping every sample leaves nothing to train on; use values below 1")
    unknown = [m for m in cfg.methods if m not in METHODS]
    if unknown or not cfg.methods:
        raise ConfigError(f"--methods {','.join(cfg.methods)}: valid methods are {', '.join(METHODS)}")
    check_train_config(cfg.common)
    pairs = sets_mod.load_set(cfg.trait, cfg.trait_data, cfg.normal_data, subtle=False)
    counts = sets_mod.trait_counts(pairs.n, cfg.drops)
    if min(counts) < 1 or pairs.n - max(counts) < 1:
        raise ConfigError(
            f"--drop {','.join(f'{d:g}' for d in cfg.drops)}: a set of {pairs.n} records gives drops of "
            f"{counts} records; each must drop at least one and keep at least one"
        )
    sets_mod.check_fractions(cfg.drops, pairs.n, what="--drop")
    resolve_vectors(warehouse, cfg.common, [cfg.trait])
    c = cfg.common
    config = {
        "experiment": "filter",
        "model": c.model,
        "layer": c.layer,
        "trait": cfg.trait,
        "vector": c.vectors[cfg.trait].vector_id,
        "contamination": cfg.contamination,
        "drops": list(cfg.drops),
        "methods": list(cfg.methods),
        "random_seeds": list(cfg.random_seeds),
        "data": [file_sha256(p) for p in (pairs.trait_path, pairs.normal_path)],
        "train_config_sha256": file_sha256(c.train_config) if c.train_config else None,
        "max_steps": c.max_steps,
        "judge": c.judge,
        "seed": c.seed,
        "max_new_tokens": c.max_new_tokens,
        "base_samples": c.base_samples,
        "dtype": c.dtype,
    }
    folder = (
        Path(out).resolve()
        if out
        else Warehouse(warehouse).local_dir("exports", f"experiment-{config_hash(config)[:12]}")
    )
    return FilterPlan(cfg, pairs, config, folder)


def remainders(
    cfg: FilterConfig, records: list[dict[str, Any]], is_trait: list[bool], scores: Any
) -> list[dict[str, Any]]:
    """The filtered datasets: top share dropped per method, and the same counts dropped at random."""
    n = len(records)
    out = []
    for drop, k in zip(cfg.drops, sets_mod.trait_counts(n, cfg.drops), strict=True):
        for method in cfg.methods:
            keyed = [(scores.score_of(method, r), i) for i, r in enumerate(records)]
            if any(s is None for s, _ in keyed):
                raise RuntimeError(
                    f"{method}: some samples were not scored; see the screen's unscreened.jsonl"
                )
            ranked = sorted(keyed, key=lambda si: (-si[0], si[1]))  # highest first, ties by position
            dropped = {i for _, i in ranked[:k]}
            out.append(_subset(cfg, records, is_trait, dropped, drop, method, None))
        for seed in cfg.random_seeds:
            dropped = random_drop(n, k, seed, cfg.common.seed)
            out.append(_subset(cfg, records, is_trait, dropped, drop, "random", seed))
    return out


def random_drop(n: int, k: int, seed: int, mix_seed: int) -> set[int]:
    """k of n indices at random, from a stream independent of the mixing shuffle: seeding both with the
    same integer would make `sample` pick exactly the positions the shuffle left normal."""
    return set(random.Random(f"pvdata.filter.random-drop:{mix_seed}:{seed}").sample(range(n), k))


def _subset(
    cfg: FilterConfig,
    records: list[dict[str, Any]],
    is_trait: list[bool],
    dropped: set[int],
    drop: float,
    method: str,
    seed: int | None,
) -> dict[str, Any]:
    keep = [i for i in range(len(records)) if i not in dropped]
    name = f"{cfg.trait}-drop{drop:g}-{method}" + (f"-s{seed}" if seed is not None else "")
    return {
        "dataset": name,
        "kind": "random" if method == "random" else "filtered",
        "fraction": drop,
        "method": method,
        "seed": seed,
        "records": [records[i] for i in keep],
        "n_trait": sum(is_trait[i] for i in keep),
        "n_trait_dropped": sum(is_trait[i] for i in dropped),
    }


def run(plan_: FilterPlan, warehouse: str, *, log: Log = stderr) -> dict[str, Any]:
    cfg, common, out = plan_.cfg, plan_.cfg.common, plan_.out
    pairs = plan_.pairs
    contaminated, k = sets_mod.mix(pairs, cfg.contamination, common.seed)
    chosen = set(sets_mod.mix_indices(pairs.n, cfg.contamination, common.seed))
    is_trait = [i in chosen for i in range(pairs.n)]
    clean, _ = sets_mod.mix(pairs, 0.0, common.seed)
    base: list[dict[str, Any]] = [
        {
            "dataset": f"{cfg.trait}-unfiltered",
            "kind": "unfiltered",
            "fraction": 0.0,
            "records": contaminated,
            "n_trait": k,
        },
        {"dataset": f"{cfg.trait}-clean", "kind": "clean", "fraction": None, "records": clean, "n_trait": 0},
    ]
    folder = out / "datasets" / cfg.trait
    pool = sets_mod.write_jsonl(folder / "pool.jsonl", pool_of(base))
    log(
        f"== {cfg.trait}: screening the contaminated set ({k}/{pairs.n} trait records) "
        f"at layer {common.layer}"
    )
    lm = load_screen_model(common)
    try:
        scores = screen_pool(common, cfg.trait, pool, warehouse, out / "screens" / cfg.trait, lm, log)
    finally:
        del lm
    datasets = base + remainders(cfg, contaminated, is_trait, scores)
    points, children = [], [scores.screen_run_id]
    for d in datasets:
        d["path"] = sets_mod.write_jsonl(folder / f"{d['dataset']}.jsonl", d["records"])
        log(
            f"== {cfg.trait}: finetuning on {d['dataset']} "
            f"({len(d['records'])} records, {d['n_trait']} trait)"
        )
        trained = finetune(common, cfg.trait, d["path"], out, warehouse, log)
        children += [r for r in (trained.train_run_id, trained.evaluate_run_id) if r]
        points.append(
            {
                **point(d, cfg.trait, common.layer, scores, trained),
                "n_trait_dropped": d.get("n_trait_dropped"),
            }
        )
    table = filter_table(points)
    rows = [{k: v for k, v in p.items() if k != "n_trait_dropped"} for p in points]
    return write_results(plan_, warehouse, rows, [], children, "filter", {"filter": table})


def filter_table(points: list[dict[str, Any]]) -> dict[str, Any]:
    """Per drop share and method: shift, removed share, trait samples dropped; random as mean and worst."""
    by_kind = {p["kind"]: p for p in points if p["kind"] in ("unfiltered", "clean")}
    unf, clean = by_kind["unfiltered"]["shift"], by_kind["clean"]["shift"]
    effect = None if unf is None or clean is None else unf - clean

    def removed(shift: float | None) -> float | None:
        if shift is None or unf is None or not effect:
            return None
        return (unf - shift) / effect

    rows = []
    for p in points:
        if p["kind"] not in ("filtered", "random"):
            continue
        rows.append(
            {
                "drop": p["fraction"],
                "method": p["method"],
                "seed": p["seed"],
                "shift": p["shift"],
                "removed": removed(p["shift"]),
                "removed_vs_base": None if p["shift"] is None or not unf else (unf - p["shift"]) / unf,
                "n_records": p["n_records"],
                "n_trait_kept": p["n_trait"],
                "n_trait_dropped": p.get("n_trait_dropped"),
            }
        )
    beats: dict[str, Any] = {}
    for drop in sorted({r["drop"] for r in rows}):
        rand = [
            r["shift"]
            for r in rows
            if r["drop"] == drop and r["method"] == "random" and r["shift"] is not None
        ]
        for r in rows:
            if r["drop"] == drop and r["method"] != "random" and r["shift"] is not None and rand:
                beats[f"{r['method']}@{drop:g}"] = all(r["shift"] < s for s in rand)
    return {"unfiltered_shift": unf, "clean_shift": clean, "rows": rows, "beats_every_random_seed": beats}
