"""Pipeline files (pipelines/*.yaml): a list of steps, each one pvdata command's config, checked whole
before any model loads.

    name: evil-smollm2
    steps:
      - extract: {trait: evil, model: smollm2-135m, judge: none, questions: 10}
      - evaluate: {trait: evil, model: smollm2-135m, vector: $extract, layers: [15], coefs: [0, 4]}

A step's `vector: $ID` names the vector an earlier step produced (ID = that step's `id`, by default its
kind). Every step is an ordinary warehouse job with a deterministic run id, so running a file again
resumes where it stopped and skips what already succeeded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pvdata.errors import ConfigError, PvdataError

TOP_KEYS = ("name", "description", "warehouse", "steps")


@dataclass(frozen=True)
class StepKind:
    """What a step kind needs: its config class, a model-free check, and whether it yields a vector."""

    name: str
    config: Callable[..., Any]
    check: Callable[[Any, dict[str, str]], None]  # (config, {id: kind of earlier vector steps})
    makes_vector: bool = False


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


def _check_model(name: str) -> None:
    from pvdata.models.loading import ALIASES

    if not name:
        raise ConfigError("model is empty")
    if name in ALIASES or Path(name).expanduser().is_dir():
        return
    if "/" in name and not name.startswith((".", "/", "~")):
        return  # a hub id: loaded only when the step runs
    raise ConfigError(
        f"model {name!r} is not an alias ({', '.join(ALIASES)}), a local folder, or a hub id like org/name"
    )


def _check_questions(trait: Any, split: str, n: int) -> None:
    available = len(trait.split_questions(split))  # type: ignore[arg-type]
    if not 1 <= n <= available:
        raise ConfigError(f"questions {n}: trait {trait.name} has 1..{available} {split} questions")


def _check_vector(ref: str | None, vectors: dict[str, str]) -> None:
    if ref is None:
        return
    if ref.startswith("$"):
        if ref[1:] not in vectors:
            known = ", ".join(f"${k}" for k in vectors) or "none (no extract step before this one)"
            raise ConfigError(f"vector {ref} names no earlier step that makes a vector; valid: {known}")
        return
    # a file that exists, or a warehouse vector id (checked when the step runs)
    if ref.endswith((".safetensors", ".pt", ".gguf")) and not Path(ref).is_file():
        raise ConfigError(f"vector file {ref} does not exist")


def _check_extract(cfg: Any, vectors: dict[str, str]) -> None:
    from pvdata.activations.capture import POOLINGS
    from pvdata.traits import load_trait

    trait = load_trait(cfg.trait)
    _check_model(cfg.model)
    _check_questions(trait, "extract", cfg.questions)
    if not 1 <= cfg.instructions <= len(trait.instructions):
        raise ConfigError(f"instructions {cfg.instructions}: valid 1..{len(trait.instructions)}")
    if cfg.n_per_question < 1 or cfg.max_new_tokens < 1:
        raise ConfigError("n_per_question and max_new_tokens must be >= 1")
    bad = [p for p in cfg.poolings if p not in POOLINGS]
    if bad:
        raise ConfigError(f"poolings {bad} are not valid; valid: {', '.join(POOLINGS)}")
    cfg.resolved_filter()


def _check_evaluate(cfg: Any, vectors: dict[str, str]) -> None:
    from pvdata.traits import load_trait

    trait = load_trait(cfg.trait)
    _check_model(cfg.model)
    _check_questions(trait, "eval", cfg.questions)
    _check_vector(cfg.vector, vectors)
    if cfg.vector and not cfg.layers:
        raise ConfigError("a steering sweep (vector) needs layers, e.g. layers: [12, 15, 18]")
    if cfg.positions not in ("response", "prompt", "all"):
        raise ConfigError(f"positions {cfg.positions!r}: valid response, prompt, all")


def _check_monitor(cfg: Any, vectors: dict[str, str]) -> None:
    from pvdata.pipelines.monitor import custom_ladder
    from pvdata.traits import load_trait

    trait = load_trait(cfg.trait)
    _check_model(cfg.model)
    _check_questions(trait, "eval", cfg.questions)
    _check_vector(cfg.vector, vectors)
    if cfg.ladder is not None:
        custom_ladder(cfg.ladder)


def step_kinds() -> dict[str, StepKind]:
    """The commands a pipeline file can run (imported lazily: the configs are plain dataclasses)."""
    from pvdata.pipelines.evaluate import EvaluateConfig
    from pvdata.pipelines.extract import ExtractConfig
    from pvdata.pipelines.monitor import MonitorConfig

    kinds = [
        StepKind("extract", ExtractConfig, _check_extract, makes_vector=True),
        StepKind("evaluate", EvaluateConfig, _check_evaluate),
        StepKind("monitor", MonitorConfig, _check_monitor),
    ]
    return {k.name: k for k in kinds}


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
    vectors: dict[str, str] = {}
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
        config = _build_config(kind, body, where)
        try:
            kind.check(config, vectors)
        except PvdataError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if kind.makes_vector:
            vectors[step_id] = kind_name
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
