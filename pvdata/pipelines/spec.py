"""Pipeline files (pipelines/*.yaml): a list of steps, each one pvdata command's config, checked whole
before any model loads.

    name: evil-smollm2
    steps:
      - extract: {trait: evil, model: smollm2-135m, judge: none, questions: 10}
      - evaluate: {trait: evil, model: smollm2-135m, vector: $extract, layers: [15], coefs: [0, 4]}

A step's `vector: $ID` names the vector an earlier step produced (ID = that step's `id`, by default its
kind); `adapter: $ID` names the adapter an earlier train step saved. Every step is an ordinary warehouse
job with a deterministic run id, so running a file again resumes where it stopped and skips what already
succeeded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pvdata.errors import ConfigError, PvdataError
from pvdata.pipelines.field_checks import Refs, check_adapter, check_model, check_vector

TOP_KEYS = ("name", "description", "warehouse", "steps")


@dataclass(frozen=True)
class StepKind:
    """What a step kind needs: its config class, a model-free check, and what it yields.

    `refs` are the dotted config fields that may hold `$ID` references (lists are resolved item by item);
    `build`, when set, replaces the dataclass builder (pydantic configs such as training's).
    """

    name: str
    config: Callable[..., Any]
    check: Callable[[Any, Refs], None]  # (config, {id: what that earlier step makes})
    makes: str | None = None  # "vector" | "adapter"
    refs: tuple[str, ...] = ("vector",)
    build: Callable[[dict[str, Any], str], Any] | None = None


@dataclass
class Step:
    id: str
    kind: str
    config: Any
    line: int


@dataclass
class PipelineSpec:
    name: str
    path: str
    steps: list[Step]
    description: str = ""
    warehouse: str | None = None
    models: list[str] = field(default_factory=list)


def _check_questions(trait: Any, split: str, n: int) -> None:
    available = len(trait.split_questions(split))  # type: ignore[arg-type]
    if not 1 <= n <= available:
        raise ConfigError(f"questions {n}: trait {trait.name} has 1..{available} {split} questions")


def _check_extract(cfg: Any, vectors: Refs) -> None:
    from pvdata.activations.capture import POOLINGS
    from pvdata.traits import load_trait

    trait = load_trait(cfg.trait)
    check_model(cfg.model)
    _check_questions(trait, "extract", cfg.questions)
    if not 1 <= cfg.instructions <= len(trait.instructions):
        raise ConfigError(f"instructions {cfg.instructions}: valid 1..{len(trait.instructions)}")
    if cfg.n_per_question < 1 or cfg.max_new_tokens < 1:
        raise ConfigError("n_per_question and max_new_tokens must be >= 1")
    bad = [p for p in cfg.poolings if p not in POOLINGS]
    if bad:
        raise ConfigError(f"poolings {bad} are not valid; valid: {', '.join(POOLINGS)}")
    cfg.resolved_filter()


def _check_evaluate(cfg: Any, vectors: Refs) -> None:
    from pvdata.traits import load_trait

    trait = load_trait(cfg.trait)
    check_model(cfg.model)
    _check_questions(trait, "eval", cfg.questions)
    check_vector(cfg.vector, vectors)
    check_adapter(cfg.adapter, vectors)
    if cfg.vector and not cfg.layers:
        raise ConfigError("a steering sweep (vector) needs layers, e.g. layers: [12, 15, 18]")
    if cfg.positions not in ("response", "prompt", "all"):
        raise ConfigError(f"positions {cfg.positions!r}: valid response, prompt, all")


def _check_monitor(cfg: Any, vectors: Refs) -> None:
    from pvdata.pipelines.monitor import custom_ladder
    from pvdata.traits import load_trait

    trait = load_trait(cfg.trait)
    check_model(cfg.model)
    _check_questions(trait, "eval", cfg.questions)
    check_vector(cfg.vector, vectors)
    if cfg.ladder is not None:
        custom_ladder(cfg.ladder)


@dataclass
class ScreenStep:
    """A screen step: `pvdata screen`'s config plus its --out folder."""

    config: Any
    out: str | None = None

    @property
    def model(self) -> str:
        return str(self.config.model)


def _build_screen(body: dict[str, Any], where: str) -> ScreenStep:
    from pvdata.pipelines.screen import ScreenConfig

    body = dict(body)
    out = body.pop("out", None)
    for key in ("traits", "vectors", "layers", "methods"):  # a single value reads as a one-item list
        if key in body and not isinstance(body[key], list):
            body[key] = [body[key]]
    kind = StepKind("screen", ScreenConfig, _check_screen)
    return ScreenStep(_build_config(kind, body, where), None if out is None else str(out))


def _check_screen(step: Any, refs: Refs) -> None:
    cfg = step.config
    check_model(cfg.model)
    for ref in cfg.vectors:
        check_vector(ref, refs, "vectors item")
    cfg.check()
    if not Path(cfg.dataset).expanduser().exists():
        raise ConfigError(f"dataset {cfg.dataset} not found: give a .jsonl, .csv or .parquet file or folder")
    if cfg.reference is not None and not Path(cfg.reference).expanduser().exists():
        raise ConfigError(f"reference {cfg.reference} not found")


def _build_train(body: dict[str, Any], where: str) -> Any:
    """`config: training/X.yaml` as the base, the step's own fields on top (nested sections merged)."""
    from pydantic import ValidationError

    from pvdata.training.config import TrainConfig, format_validation_error, read_config_file

    body = dict(body)
    file = body.pop("config", None)
    data = read_config_file(file) if file is not None else {}
    for key, value in body.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    try:
        cfg = TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {format_validation_error(exc, lambda _f: 'train')}") from None
    cfg.require_inputs("train")
    return cfg


def _check_train(cfg: Any, refs: Refs) -> None:
    from pvdata.traits import load_trait

    check_model(cfg.model)
    if not Path(cfg.data).expanduser().is_file():
        raise ConfigError(f'data {cfg.data} does not exist (a JSONL of {{"messages": [...]}})')
    if cfg.eval_data is not None and not Path(cfg.eval_data).expanduser().is_file():
        raise ConfigError(f"eval_data {cfg.eval_data} does not exist")
    if cfg.steering is not None:
        load_trait(cfg.steering.trait)
        check_vector(cfg.steering.vector, refs, "steering.vector")
    if cfg.monitor.trait is not None:
        load_trait(cfg.monitor.trait)
    check_vector(cfg.monitor.vector, refs, "monitor.vector")


def step_kinds() -> dict[str, StepKind]:
    """The commands a pipeline file can run (imported lazily: the configs are plain dataclasses)."""
    from pvdata.experiments import step as experiment_step
    from pvdata.experiments.step import ExperimentStep
    from pvdata.pipelines.evaluate import EvaluateConfig
    from pvdata.pipelines.extract import ExtractConfig
    from pvdata.pipelines.monitor import MonitorConfig
    from pvdata.pipelines.screen import ScreenConfig
    from pvdata.training.config import TrainConfig

    kinds = [
        StepKind("extract", ExtractConfig, _check_extract, makes="vector", refs=()),
        StepKind("evaluate", EvaluateConfig, _check_evaluate, refs=("vector", "adapter")),
        StepKind("monitor", MonitorConfig, _check_monitor),
        StepKind("screen", ScreenConfig, _check_screen, refs=("config.vectors",), build=_build_screen),
        StepKind(
            "train",
            TrainConfig,
            _check_train,
            makes="adapter",
            refs=("steering.vector", "monitor.vector"),
            build=_build_train,
        ),
        StepKind(
            "experiment",
            ExperimentStep,
            experiment_step.check,
            refs=("config.common.vector_args",),
            build=experiment_step.build,
        ),
    ]
    return {k.name: k for k in kinds}


def resolve_refs(config: Any, fields: tuple[str, ...], made: dict[str, str]) -> Any:
    """A copy of `config` with every `$ID` in the dotted `fields` replaced by what step ID made."""

    def value(v: Any) -> Any:
        if isinstance(v, str) and v.startswith("$"):
            return made[v[1:]]
        if isinstance(v, list):
            return [value(x) for x in v]
        return v

    def replace(obj: Any, path: list[str]) -> Any:
        if obj is None:
            return None
        head, rest = path[0], path[1:]
        new = value(getattr(obj, head)) if not rest else replace(getattr(obj, head), rest)
        if dataclasses.is_dataclass(obj):
            return dataclasses.replace(obj, **{head: new})  # type: ignore[type-var]
        return obj.model_copy(update={head: new})  # pydantic

    for dotted in fields:
        config = replace(config, dotted.split("."))
    return config


def _step_lines(text: str) -> list[int]:
    """1-based line of each item under `steps:` (for error messages), best effort."""
    import yaml

    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return []
    if not isinstance(root, yaml.MappingNode):
        return []
    for key, value in root.value:
        if getattr(key, "value", None) == "steps" and isinstance(value, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return []


def _build_config(kind: StepKind, body: dict[str, Any], where: str) -> Any:
    from pydantic import TypeAdapter, ValidationError

    fields = {f.name: f for f in dataclasses.fields(kind.config)}  # type: ignore[arg-type]
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}; valid: {', '.join(fields)}")
    required = [
        n
        for n, f in fields.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
    ]
    missing = [n for n in required if n not in body]
    if missing:
        raise ConfigError(f"{where}: missing required field(s) {', '.join(missing)}")
    try:
        return TypeAdapter(kind.config).validate_python(body, strict=False)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']} (got {e.get('input')!r})" for e in exc.errors()
        )
        raise ConfigError(f"{where}: {problems}") from None


def load_pipeline(path: str | Path) -> PipelineSpec:
    """Parse and check a pipeline file; every problem names the file, the step's line and the field."""
    import yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"pipeline file {p} does not exist (examples: pipelines/*.yaml)") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping with keys {', '.join(TOP_KEYS)}")
    unknown = sorted(set(data) - set(TOP_KEYS))
    if unknown:
        raise ConfigError(f"{p}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(TOP_KEYS)}")
    steps_data = data.get("steps")
    if not isinstance(steps_data, list) or not steps_data:
        raise ConfigError(f"{p}: `steps` must be a non-empty list of {{kind: {{...config}}}} items")
    lines = _step_lines(text)
    kinds = step_kinds()
    steps: list[Step] = []
    refs: Refs = {}
    for i, item in enumerate(steps_data):
        line = lines[i] if i < len(lines) else 0
        where = f"{p}:{line}: steps[{i}]"
        if not isinstance(item, dict) or len(item) != 1:
            raise ConfigError(
                f"{where}: each step is one mapping {{kind: config}}; kinds: {', '.join(kinds)}"
            )
        ((kind_name, body),) = item.items()
        if kind_name not in kinds:
            raise ConfigError(f"{where}: unknown step kind {kind_name!r}; valid: {', '.join(kinds)}")
        body = dict(body or {})
        step_id = str(body.pop("id", kind_name))
        where = f"{where} ({kind_name})"
        if any(s.id == step_id for s in steps):
            raise ConfigError(f"{where}: step id {step_id!r} is used twice; give each step a unique `id`")
        kind = kinds[kind_name]
        try:
            config = kind.build(body, where) if kind.build else _build_config(kind, body, where)
            kind.check(config, refs)
        except PvdataError as exc:
            msg = str(exc)
            raise ConfigError(msg if msg.startswith(where) else f"{where}: {msg}") from None
        if kind.makes:
            refs[step_id] = kind.makes
        steps.append(Step(step_id, kind_name, config, line))
    models = sorted({getattr(s.config, "model", "") for s in steps} - {""})
    return PipelineSpec(
        name=str(data.get("name") or p.stem),
        path=str(p),
        steps=steps,
        description=str(data.get("description") or ""),
        warehouse=data.get("warehouse"),
        models=models,
    )
