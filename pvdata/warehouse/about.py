"""What a run was about (its trait and dataset), read from the run configs and stats in the runs table.

Configs identify data by content (a dataset_id or a sha256) and name the trait in several shapes, so the
answer is gathered from the fields the pipelines write: `trait`, `traits`, `trait_version` ('evil@v1+..'),
the keys of a per-trait `vectors`/`layers` map, a judge's `metric`, a steering or monitor trait; for the
dataset `source` (screen imports), `dataset`, `data` (train stats), `file` (vector imports), or a
`dataset_id` named by the import run that read it. A stage that records neither (e.g. extract's
activations) inherits them from its parent runs, so every stage of one command shows the same answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any


@dataclass(frozen=True)
class About:
    trait: str | None = None
    dataset: str | None = None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _traits(cfg: Mapping[str, Any]) -> list[str]:
    if _text(cfg.get("trait")):
        return [cfg["trait"]]
    if isinstance(cfg.get("traits"), list):
        return [t for t in cfg["traits"] if _text(t)]
    if _text(cfg.get("trait_version")):
        return [cfg["trait_version"].split("@", 1)[0]]
    for key in ("vectors", "layers"):
        if isinstance(cfg.get(key), dict) and cfg[key]:
            return [str(k) for k in cfg[key]]
    for key in ("steering", "monitor", "config"):
        inner = cfg.get(key)
        if isinstance(inner, dict):
            found = _traits(inner)
            if found:
                return found
    if _text(cfg.get("metric")):
        return [cfg["metric"]]
    return []


def _dataset(cfg: Mapping[str, Any], names: Mapping[str, str]) -> str | None:
    for key in ("source", "dataset", "data", "file"):
        if _text(cfg.get(key)):
            return PurePath(cfg[key]).name or cfg[key]
    inner = cfg.get("config")
    if isinstance(inner, dict):
        found = _dataset(inner, names)
        if found:
            return found
    dataset_id = cfg.get("dataset_id")
    return names.get(dataset_id) if isinstance(dataset_id, str) else None


def _load(text: Any) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def runs_about(rows: Iterable[Mapping[str, Any]]) -> dict[str, About]:
    """run_id -> About, for rows with run_id, config and stats (JSON text) and parent_run_ids."""
    rows = list(rows)
    configs = {r["run_id"]: _load(r.get("config")) for r in rows}
    stats = {r["run_id"]: _load(r.get("stats")) for r in rows}
    parents = {r["run_id"]: list(r.get("parent_run_ids") or []) for r in rows}
    names: dict[str, str] = {}  # dataset_id -> file name, from the runs that read the file
    for cfg in configs.values():
        source, dataset_id = _text(cfg.get("source")), cfg.get("dataset_id")
        if source and isinstance(dataset_id, str):
            names.setdefault(dataset_id, PurePath(source).name or source)
    own: dict[str, About] = {}
    for run_id, cfg in configs.items():
        traits = _traits(cfg)
        own[run_id] = About(
            ",".join(dict.fromkeys(traits)) or None,
            _dataset(cfg, names) or _dataset(stats[run_id], names),
        )
    done: dict[str, About] = {}

    def resolve(run_id: str, seen: frozenset[str]) -> About:
        if run_id in done:
            return done[run_id]
        mine = own.get(run_id, About())
        trait, dataset = mine.trait, mine.dataset
        for parent in parents.get(run_id, []):
            if trait and dataset:
                break
            if parent in seen or parent not in own:
                continue
            up = resolve(parent, seen | {run_id})
            trait, dataset = trait or up.trait, dataset or up.dataset
        done[run_id] = About(trait, dataset)
        return done[run_id]

    return {run_id: resolve(run_id, frozenset()) for run_id in configs}
