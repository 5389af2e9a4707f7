"""The `experiment` step of pipeline files: `pvdata experiment`'s flags as fields, checked without a
warehouse or model (the vectors may come from an earlier step's `$ID`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pvdata.errors import ConfigError
from pvdata.pipelines.field_checks import check_model, check_vector

KINDS = ("shift_prediction", "filter")


@dataclass
class ExperimentStep:
    experiment: str  # shift_prediction | filter
    config: Any  # ShiftPredictionConfig | FilterConfig
    out: str | None = None

    @property
    def model(self) -> str:
        return str(self.config.common.model)

    @property
    def vectors(self) -> list[str]:
        return list(self.config.common.vector_args)


def build(body: dict[str, Any], where: str) -> ExperimentStep:
    from pydantic import TypeAdapter, ValidationError

    from pvdata.experiments.filtering import FilterConfig
    from pvdata.experiments.shift_prediction import ShiftPredictionConfig
    from pvdata.experiments.steps import Common

    body = dict(body)
    kind = body.pop("experiment", None)
    if kind not in KINDS:
        raise ConfigError(f"{where}: experiment must be one of {', '.join(KINDS)} (got {kind!r})")
    out = body.pop("out", None)
    if "vectors" in body:
        body["vector_args"] = body.pop("vectors")
    for key in ("traits", "vector_args", "fractions", "drops", "methods", "random_seeds", "train_seeds"):
        if key in body and not isinstance(body[key], list):
            body[key] = [body[key]]
    outer = FilterConfig if kind == "filter" else ShiftPredictionConfig
    common_fields = {f.name for f in dataclasses.fields(Common)} - {"vectors", "vector_specs"}
    outer_fields = {f.name for f in dataclasses.fields(outer)} - {"common"}
    unknown = sorted(set(body) - common_fields - outer_fields)
    if unknown:
        valid = sorted(common_fields | outer_fields | {"vectors", "out"})
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    common = {k: v for k, v in body.items() if k in common_fields}
    rest = {k: v for k, v in body.items() if k in outer_fields}
    try:
        cfg = TypeAdapter(outer).validate_python(
            {**rest, "common": TypeAdapter(Common).validate_python(common)}
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{where}: {problems}") from None
    return ExperimentStep(kind, cfg, None if out is None else str(out))


def check(step: ExperimentStep, refs: dict[str, str]) -> None:
    """Everything that needs no warehouse: traits, fractions, the training config, `$ID` references."""
    from pvdata.experiments import sets
    from pvdata.experiments.steps import check_train_config
    from pvdata.traits import load_trait

    cfg = step.config
    traits = cfg.traits if step.experiment == "shift_prediction" else [cfg.trait]
    for trait in traits:
        load_trait(trait)
    if step.experiment == "shift_prediction":
        for trait in traits:  # the data pair line by line and fits the fractions
            pairs = sets.load_set(trait, cfg.trait_data, cfg.normal_data, cfg.subtle_data, subtle=cfg.subtle)
            sets.check_fractions(cfg.fractions, pairs.n)
    else:
        sets.check_fractions([cfg.contamination], what="contamination")
        pairs = sets.load_set(cfg.trait, cfg.trait_data, cfg.normal_data, subtle=False)
        sets.check_fractions(cfg.drops, pairs.n, what="drops")
    if cfg.common.train_config is not None and not Path(cfg.common.train_config).is_file():
        raise ConfigError(f"train_config {cfg.common.train_config} does not exist")
    check_train_config(cfg.common)
    check_model(cfg.common.model)
    for ref in cfg.common.vector_args:
        check_vector(ref, refs, "vectors item")


def run(step: ExperimentStep, warehouse: str, log: Any) -> list[str]:
    from pvdata.experiments import filtering, shift_prediction

    module = filtering if step.experiment == "filter" else shift_prediction
    plan = module.plan(step.config, warehouse, step.out)  # type: ignore[attr-defined]
    summary = module.run(plan, warehouse, log=log)  # type: ignore[attr-defined]
    from pvdata.experiments.report import summary_lines

    return summary_lines(summary, plan.out)
