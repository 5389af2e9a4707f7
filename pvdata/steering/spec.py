"""What a steering run does, as a validated value: the single record stored in generations.steering.

Kept free of torch so configs and the CLI can validate a spec without loading a model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pvdata.errors import ConfigError

Mode = Literal["add", "ablate"]
Positions = Literal["all", "prompt", "response"]

MODES: tuple[str, ...] = ("add", "ablate")

INCREMENTAL_ABLATE = (
    "incremental steering is for mode 'add': ablation projects v_hat[l] = v[l]/|v[l]| out at each "
    "steered layer (CAFT), and the direction of v[l] - v[l-1] is not the trait's; drop incremental"
)
POSITIONS: tuple[str, ...] = ("all", "prompt", "response")


def _check_choice(kind: str, value: object, valid: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in valid:
        raise ConfigError(f"unknown steering {kind} {value!r}: valid {kind}s are {', '.join(valid)}")
    return value


def normalize_layers(layers: int | Sequence[int]) -> tuple[int, ...]:
    """One layer or several, as a tuple; only types, sign and duplicates are checked here (no model)."""
    items: tuple[Any, ...] = (layers,) if isinstance(layers, int) else tuple(layers)
    if not items:
        raise ConfigError("steering needs at least one layer; got an empty list")
    for layer in items:
        if not isinstance(layer, int) or isinstance(layer, bool) or layer < 1:
            raise ConfigError(
                f"steering layer {layer!r} is not a positive integer: layers are 1..L "
                "(layer l = output of block l; layer 0, the embedding output, cannot be steered)"
            )
    dupes = sorted({x for x in items if items.count(x) > 1})
    if dupes:
        raise ConfigError(f"steering layers repeat {dupes}: give each layer once (per-layer coef instead)")
    return items


def _check_coef(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"steering coef {value!r} is not a finite number")
    return float(value)


def normalize_coef(coef: float | Sequence[float], n_layers: int) -> float | tuple[float, ...]:
    """A float for every layer, or one float per steered layer (same order as `layers`)."""
    if isinstance(coef, int | float) and not isinstance(coef, bool):
        return _check_coef(coef)
    if isinstance(coef, str) or not isinstance(coef, Sequence):
        raise ConfigError(f"steering coef {coef!r} must be a number or one number per steered layer")
    values = tuple(_check_coef(c) for c in coef)
    if len(values) != n_layers:
        raise ConfigError(
            f"per-layer steering coef has {len(values)} values but {n_layers} layers are steered: "
            "give one coef per layer, in the order of the layers"
        )
    return values


@dataclass(frozen=True)
class SteeringSpec:
    """A steering intervention independent of any model (layer ranges are checked when applied).

    mode "add": h_l <- h_l + coef_l * v[l]. mode "ablate": h_l <- h_l - (h_l . v_hat) v_hat; coef has
    no meaning there and must stay 1.0, so a config that asks for a scaled ablation fails loudly.
    incremental: use v[l] - v[l-1] instead of v[l] (both modes), for all-layer steering.
    """

    mode: Mode = "add"
    layers: tuple[int, ...] = ()
    coef: float | tuple[float, ...] = 1.0
    positions: Positions = "all"
    incremental: bool = False
    vector_id: str | None = None

    def __post_init__(self) -> None:
        _check_choice("mode", self.mode, MODES)
        _check_choice("positions", self.positions, POSITIONS)
        layers = normalize_layers(self.layers)
        object.__setattr__(self, "layers", layers)
        coef = normalize_coef(self.coef, len(layers))
        object.__setattr__(self, "coef", coef)
        if self.mode == "ablate" and any(c != 1.0 for c in self.coefs):
            raise ConfigError(
                f"steering coef {self.coef!r} given with mode 'ablate': ablation projects the direction "
                "out and takes no coefficient; leave coef at 1.0 or use mode 'add'"
            )
        if not isinstance(self.incremental, bool):
            raise ConfigError(f"steering incremental must be true or false, got {self.incremental!r}")
        if self.incremental and self.mode == "ablate":
            raise ConfigError(INCREMENTAL_ABLATE)
        if self.vector_id is not None and not isinstance(self.vector_id, str):
            raise ConfigError(f"steering vector_id must be a string or null, got {self.vector_id!r}")

    @property
    def coefs(self) -> tuple[float, ...]:
        """The coefficient of each steered layer, aligned with `layers`."""
        if isinstance(self.coef, tuple):
            return self.coef
        return (self.coef,) * len(self.layers)

    def coef_for(self, layer: int) -> float:
        return self.coefs[self.layers.index(layer)]

    def to_json(self) -> dict[str, Any]:
        """The dict stored in generations.steering (plain JSON types only)."""
        return {
            "mode": self.mode,
            "vector_id": self.vector_id,
            "layers": list(self.layers),
            "coef": list(self.coef) if isinstance(self.coef, tuple) else self.coef,
            "positions": self.positions,
            "incremental": self.incremental,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SteeringSpec:
        """Inverse of to_json; unknown keys are an error so typos do not silently change a run."""
        known = {"mode", "vector_id", "layers", "coef", "positions", "incremental"}
        extra = sorted(set(data) - known)
        if extra:
            raise ConfigError(f"unknown steering keys {extra}: valid keys are {', '.join(sorted(known))}")
        if "layers" not in data:
            raise ConfigError("steering spec has no 'layers'")
        coef = data.get("coef", 1.0)
        return cls(
            mode=data.get("mode", "add"),
            layers=normalize_layers(data["layers"]),
            coef=tuple(coef) if isinstance(coef, list) else coef,
            positions=data.get("positions", "all"),
            incremental=data.get("incremental", False),
            vector_id=data.get("vector_id"),
        )


def steering_row(values: Any, layer: int, spec: SteeringSpec, built: Sequence[int] = ()) -> Any:
    """The row that steers `layer`: v[l], or v[l] - v[l-1] when incremental (mode add only).

    `built` lists the rows the vector was computed at (empty: every row counts as built). A row that was
    never built is all zeros, so steering with it would silently do nothing (or, incremental, add the
    whole of v[l] or -v[l-1]): that is an error naming the layers instead.
    """
    need = (layer - 1, layer) if spec.incremental else (layer,)
    missing = [x for x in need if built and x not in built]
    if missing:
        what = "incremental steering at layer" if spec.incremental else "steering at layer"
        raise ConfigError(
            f"{what} {layer} needs vector rows {', '.join(map(str, need))} but row(s) "
            f"{', '.join(map(str, missing))} were not built (built: {_span(built)}): steer layers the "
            "vector covers, or extract it at every layer"
        )
    return values[layer] - values[layer - 1] if spec.incremental else values[layer]


def _span(layers: Sequence[int]) -> str:
    from pvdata.vectors.persona_vector import format_layers

    return format_layers(layers)
