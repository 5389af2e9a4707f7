"""The training config: LoRA, optimisation, steering and monitoring, validated strictly.

A YAML file (training/*.yaml) gives the base; command-line flags override single fields. Defaults are
the paper's (ALGORITHMS.md section 8): rsLoRA r 32 alpha 64 dropout 0 on the seven projections, lr 1e-5,
linear schedule with 5 warmup steps, batch 2 x grad-accum 8, one epoch, weight decay 0.01, seeded.
Every error names where the bad value came from (the file, or the flag) and the field, so a typo in a
config never silently trains something else. Imports pydantic and yaml only (no torch).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pvdata.errors import ConfigError
from pvdata.training.errors import TrainingError

__all__ = ["TrainConfig", "TrainingError", "build_config", "read_config_file"]

from pvdata.training import paper


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LoraSettings(_Strict):
    """The adapter: rsLoRA scales by alpha / sqrt(r) instead of alpha / r."""

    r: int = Field(default=paper.LORA_R, ge=1)
    alpha: int = Field(default=paper.LORA_ALPHA, ge=1)
    dropout: float = Field(default=paper.LORA_DROPOUT, ge=0.0, lt=1.0)
    rslora: bool = paper.RSLORA
    target_modules: list[str] = Field(default_factory=lambda: list(paper.TARGET_MODULES), min_length=1)


class OptimSettings(_Strict):
    """AdamW with a linear (or constant) schedule after `warmup_steps` of linear warmup.

    One step is one optimizer update = `grad_accum` micro-batches of `batch_size` samples. `max_steps`,
    when set, replaces `epochs` (the data is cycled in a new seeded order each epoch).
    """

    lr: float = Field(default=paper.LR, gt=0)
    schedule: Literal["linear", "constant"] = "linear"
    warmup_steps: int = Field(default=paper.WARMUP_STEPS, ge=0)
    batch_size: int = Field(default=paper.BATCH_SIZE, ge=1)
    grad_accum: int = Field(default=paper.GRAD_ACCUM, ge=1)
    epochs: int = Field(default=paper.EPOCHS, ge=1)
    max_steps: int | None = Field(default=None, ge=1)
    weight_decay: float = Field(default=paper.WEIGHT_DECAY, ge=0)
    max_grad_norm: float | None = Field(default=paper.MAX_GRAD_NORM, gt=0)
    adam_betas: tuple[float, float] = paper.ADAM_BETAS
    adam_eps: float = Field(default=paper.ADAM_EPS, gt=0)
    seed: int = 0


class SteeringSettings(_Strict):
    """Preventative steering during training only: add coef * v[l] (or ablate v_hat) at every position."""

    mode: Literal["add", "ablate"] = "add"
    trait: str = Field(min_length=1)
    vector: str | None = None  # file or warehouse id (prefix); default: the trait's latest vector
    coef: float | None = None  # required for add; ablation takes none
    layers: list[int] | Literal["all"] | None = None  # default: the middle layer
    incremental: bool = False
    positions: Literal["all", "prompt", "response"] = "all"

    @model_validator(mode="after")
    def _coef_fits_mode(self) -> SteeringSettings:
        if self.mode == "add" and self.coef is None:
            raise ValueError(
                "steering mode 'add' needs a coef (paper: 1.5-4 with all-layer incremental vectors; research "
                "code: 5.0 at one layer)"
            )
        if self.mode == "ablate" and self.coef not in (None, 1.0):
            raise ValueError("ablation projects the direction out and takes no coef; remove coef")
        if self.mode == "ablate" and self.incremental:
            from pvdata.steering.spec import INCREMENTAL_ABLATE  # loads torch: only on this error

            raise ValueError(INCREMENTAL_ABLATE)
        if isinstance(self.layers, list):
            if not self.layers:
                raise ValueError("layers is empty: give layer numbers 1..L or 'all'")
            if any(x < 1 for x in self.layers):
                raise ValueError("layers are 1..L (layer 0, the embedding output, cannot be steered)")
            if len(set(self.layers)) != len(self.layers):
                raise ValueError("layers repeat a layer")
        return self


class MonitorSettings(_Strict):
    """Which vector the per-step projection and the finetuning shift use.

    trait: default the steered trait (set it to monitor an unsteered run). layer: default the steered
    layer when exactly one is steered, else the middle layer (L // 2).
    """

    trait: str | None = None
    vector: str | None = None
    layer: int | None = Field(default=None, ge=1)
    shift_questions: int = Field(default=20, ge=1)  # eval questions of the trait for the finetuning shift


class CheckpointSettings(_Strict):
    every: int = Field(default=50, ge=1)  # optimizer steps between checkpoints
    keep: int = Field(default=2, ge=1)  # newest checkpoints kept on disk


class TrainConfig(_Strict):
    """Everything `pvdata train` needs; see docs/TRAINING.md for each field."""

    model: str | None = None
    data: str | None = None
    eval_data: str | None = None
    out: str | None = None  # default: <warehouse>/adapters/<run_id>
    dtype: str = "auto"
    device: str = "auto"
    layers_path: str | None = None
    max_length: int = Field(default=2048, ge=8)  # longer samples are skipped and counted, never truncated
    train_on: Literal["all_assistant", "last_assistant"] = "all_assistant"
    gradient_checkpointing: bool = False
    eval_every: int | None = Field(default=None, ge=1)  # steps between eval-loss rows (always at the end)
    lora: LoraSettings = Field(default_factory=lambda: LoraSettings())
    optim: OptimSettings = Field(default_factory=lambda: OptimSettings())
    steering: SteeringSettings | None = None
    monitor: MonitorSettings = Field(default_factory=lambda: MonitorSettings())
    checkpoints: CheckpointSettings = Field(default_factory=lambda: CheckpointSettings())

    @field_validator("eval_every")
    @classmethod
    def _eval_every_needs_eval_data(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and not info.data.get("eval_data"):
            raise ValueError("eval_every is set but there is no eval_data to evaluate (give --eval-data)")
        return value

    @property
    def monitor_trait(self) -> str | None:
        return self.monitor.trait or (self.steering.trait if self.steering else None)

    def require_inputs(self, source: str = "the config") -> None:
        """model and data may come from the file or the flags, but one of them must give each."""
        for name in ("model", "data"):
            if not getattr(self, name):
                raise ConfigError(f"{source}: no {name}: give --{name} or set `{name}:` in the config file")


# flag name -> dotted field, for error messages that name the flag a bad value came from
FLAG_FIELDS: dict[str, str] = {
    "--model": "model",
    "--data": "data",
    "--eval-data": "eval_data",
    "--out": "out",
    "--dtype": "dtype",
    "--device": "device",
    "--layers-path": "layers_path",
    "--max-length": "max_length",
    "--eval-every": "eval_every",
    "--epochs": "optim.epochs",
    "--max-steps": "optim.max_steps",
    "--lr": "optim.lr",
    "--seed": "optim.seed",
    "--batch-size": "optim.batch_size",
    "--grad-accum": "optim.grad_accum",
    "--warmup-steps": "optim.warmup_steps",
    "--steer/--ablate": "steering.mode",
    "--coef": "steering.coef",
    "--layers": "steering.layers",
    "--incremental": "steering.incremental",
    "--vector": "steering.vector",
    "--monitor": "monitor.trait",
    "--monitor-vector": "monitor.vector",
    "--monitor-layer": "monitor.layer",
    "--save-every": "checkpoints.every",
}


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model class that holds the field at `loc` (for listing its valid fields)."""
    model: type[BaseModel] = TrainConfig
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        ann = field.annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        nested = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if nested is None:
            return None
        model = nested
    return model


def format_validation_error(exc: ValidationError, source_of: Any) -> str:
    """One clause per bad field: where it came from (file or flag), the field, what is wrong.

    Union branches (e.g. `layers: list[int] | 'all'`) are folded into one clause per field.
    """
    grouped: dict[str, tuple[str, list[str], Any]] = {}
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"] if isinstance(p, int) or str(p).isidentifier())
        dotted = ".".join(loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            owner = _model_at(loc)
            valid = ", ".join(owner.model_fields) if owner else "see docs/TRAINING.md"
            grouped[dotted] = (f"unknown field {dotted!r}; valid fields here: {valid}", [], None)
            continue
        msg = str(err["msg"]).removeprefix("Value error, ")
        head, msgs, given = grouped.setdefault(dotted, (f"field {dotted}", [], err.get("input")))
        if msg not in msgs:
            msgs.append(msg)
    lines = []
    for dotted, (head, msgs, given) in grouped.items():
        shown = "" if given is None or isinstance(given, dict) else f" (given {given!r})"
        text = head + (": " + " or ".join(msgs) + shown if msgs else "")
        lines.append(f"{source_of(dotted)}: {text}")
    return "; ".join(lines)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML training config; a parse error names the file and line."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"training config {p} does not exist (examples: training/*.yaml)")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}:{at} is not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a training config is a mapping of fields, got a {type(data).__name__}")
    return data


def build_config(
    file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> TrainConfig:
    """File values, then flag overrides (flag name -> value, None meaning not given), validated.

    The file is validated on its own first, so its errors name the file; then the merged config, whose
    errors name the flag when a flag set that field.
    """
    data: dict[str, Any] = read_config_file(file) if file is not None else {}
    label = str(file) if file is not None else "the defaults"
    try:
        TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"training config {format_validation_error(exc, lambda _f: label)}") from None
    flag_of: dict[str, str] = {}
    given = dict(overrides or {})
    ordered = sorted(given.items(), key=lambda kv: kv[0] != "--steer/--ablate")  # steering first
    for flag, value in ordered:
        if value is None:
            continue
        if flag not in FLAG_FIELDS:
            raise ConfigError(f"unknown training flag {flag}; known: {', '.join(FLAG_FIELDS)}")
        dotted = FLAG_FIELDS[flag]
        if flag == "--steer/--ablate":
            mode, trait = value
            section = data.get("steering")
            steering: dict[str, Any] = section if isinstance(section, dict) else {}
            data["steering"] = {**steering, "mode": mode, "trait": trait}
            flag_of["steering"] = flag
            if mode == "ablate" and "coef" in data["steering"] and given.get("--coef") is None:
                data["steering"].pop("coef")  # a file's add-coef does not apply to an ablation
            continue
        if dotted.startswith("steering.") and not isinstance(data.get("steering"), dict):
            raise ConfigError(
                f"{flag} needs steering: give --steer TRAIT or --ablate TRAIT (or a steering section in "
                "the config file)"
            )
        _set_dotted(data, dotted, value)
        flag_of[dotted] = flag

    def source_of(dotted: str) -> str:
        for key, flag in flag_of.items():
            if dotted == key or dotted.startswith(key + "."):
                return flag
        return label

    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"training config {format_validation_error(exc, source_of)}") from None
