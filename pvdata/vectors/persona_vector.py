"""The persona vector: one [L+1, H] float32 tensor plus the metadata needed to trust and reuse it.

Row l pairs with layer l (row 0 = embedding output, row l = output of block l, 1-indexed), so a vector
file is self-describing and never needs an offset table. Vectors are immutable values: arithmetic
returns a new vector whose provenance records the operation, so a combined or scaled vector can still
be traced back to the runs it came from.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from pvdata.errors import VectorError

if TYPE_CHECKING:
    from pathlib import Path

POOLINGS: tuple[str, ...] = ("prompt_avg", "response_avg", "prompt_last")
# "mixed": a combination of vectors with different poolings; "unknown": imported without that fact.
_ALL_POOLINGS: tuple[str, ...] = (*POOLINGS, "mixed", "unknown")

VECTOR_ID_LENGTH = 16


def format_layers(layers: Iterable[int]) -> str:
    """Compact human form of a layer list: contiguous runs as a..b, so long lists stay readable."""
    items = sorted(set(layers))
    if not items:
        return "none"
    runs: list[str] = []
    start = prev = items[0]
    for x in [*items[1:], None]:
        if x is not None and x == prev + 1:
            prev = x
            continue
        runs.append(str(start) if start == prev else f"{start}..{prev}")
        if x is not None:
            start = prev = x
    return ", ".join(runs)


def compute_vector_id(values: torch.Tensor, trait: str, model_id: str, pooling: str, method: str) -> str:
    """Short content hash: the same numbers and meaning give the same id on every machine."""
    h = hashlib.sha256()
    h.update(b"pvdata.persona_vector.v1\0")
    h.update(json.dumps(list(values.shape)).encode())
    # Little-endian float32 bytes explicitly, so the id does not depend on the host byte order.
    h.update(values.detach().cpu().contiguous().numpy().astype("<f4", copy=False).tobytes())
    for part in (trait, model_id, pooling, method):
        h.update(b"\0" + part.encode("utf-8"))
    return h.hexdigest()[:VECTOR_ID_LENGTH]


def _json_copy(provenance: Mapping[str, Any], what: str) -> dict[str, Any]:
    """A detached JSON-normal copy, so provenance survives every file format unchanged."""
    try:
        copied = json.loads(json.dumps(dict(provenance), sort_keys=True))
    except (TypeError, ValueError) as exc:
        raise VectorError(
            f"{what}: provenance must be JSON-serialisable (strings, numbers, lists, dicts): {exc}"
        ) from exc
    return copied  # type: ignore[no-any-return]


def _as_scalar(k: Any) -> float | None:
    """A Python float for a real scalar (int, float, numpy scalar, one-element tensor), else None."""
    if isinstance(k, bool):
        return None
    if isinstance(k, torch.Tensor):
        return float(k.item()) if k.numel() == 1 else None
    if isinstance(k, numbers.Real):
        return float(k)
    return None


# build.py and the file formats construct PersonaVectors, so this module imports neither: they hand over
# the functions behind from_activations, save and load when they are imported. pvdata.vectors imports
# both, and importing this module always runs that package first, so the methods always find them.
_build: Callable[..., PersonaVector] | None = None
_save: Callable[..., Path] | None = None
_load: Callable[..., PersonaVector] | None = None


def provide_builder(build: Callable[..., PersonaVector]) -> None:
    """Set the function behind :meth:`PersonaVector.from_activations` (pvdata.vectors.build does)."""
    global _build
    _build = build


def provide_files(save: Callable[..., Path], load: Callable[..., PersonaVector]) -> None:
    """Set the functions behind :meth:`PersonaVector.save` and ``.load`` (pvdata.vectors.io does)."""
    global _save, _load
    _save, _load = save, load


_F = TypeVar("_F", bound=Callable[..., Any])


def _provided(fn: _F | None, what: str, module: str) -> _F:
    if fn is None:
        raise VectorError(
            f"PersonaVector.{what} needs {module}, which is not imported: import pvdata.vectors"
        )
    return fn


@dataclass(frozen=True, eq=False)
class PersonaVector:
    """A persona vector for one trait and model: values[l] is the direction at layer l.

    ``layers`` lists the rows that were computed; every other row is exactly zero. Leave it empty to
    infer it from the non-zero rows. ``vector_id`` is derived from the values and the identity fields
    (trait, model, pooling, method), never set by hand, so two files with the same id hold the same
    vector.
    """

    trait: str
    model_id: str
    values: torch.Tensor
    pooling: str = "response_avg"
    method: str = "mean_diff"
    n_pos: int = 0
    n_neg: int = 0
    layers: tuple[int, ...] = ()
    trait_version: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)
    vector_id: str = field(init=False)

    def __post_init__(self) -> None:
        values = self.values
        if not isinstance(values, torch.Tensor):
            raise VectorError(
                f"vector values must be a torch.Tensor of shape [L+1, H], got {type(values).__name__}"
            )
        if values.ndim != 2:
            raise VectorError(
                f"vector values have shape {list(values.shape)}: expected [L+1, H] "
                "(one row per layer, row 0 = embedding output)"
            )
        if values.dtype != torch.float32:
            raise VectorError(
                f"vector values are {values.dtype}: pvdata vectors are float32; convert with .float()"
            )
        rows, width = values.shape
        if rows < 2 or width < 1:
            raise VectorError(
                f"vector values have shape {list(values.shape)}: need at least 2 rows (embedding + one "
                "block) and a non-zero width"
            )
        # A private CPU copy: the caller's tensor may live on a GPU or be mutated later. Made outside
        # inference mode, so a vector built under torch.inference_mode() still works with autograd
        # (preventative steering trains through the steered activations).
        with torch.inference_mode(False):
            values = values.detach().to("cpu", copy=True).contiguous()
        if not bool(torch.isfinite(values).all()):
            bad = sorted({int(r) for r in (~torch.isfinite(values)).nonzero()[:, 0].tolist()})
            raise VectorError(
                f"vector for trait {self.trait!r} has NaN or inf values in rows {format_layers(bad)}; "
                "check the activations it was built from"
            )
        for name in ("trait", "model_id", "method", "trait_version"):
            if not isinstance(getattr(self, name), str):
                raise VectorError(f"vector {name} must be a string, got {getattr(self, name)!r}")
        if not self.trait:
            raise VectorError("vector trait must be a non-empty string (use 'unknown' for imports)")
        if not self.model_id:
            raise VectorError("vector model_id must be a non-empty string (use 'unknown' for imports)")
        if self.pooling not in _ALL_POOLINGS:
            raise VectorError(
                f"unknown pooling {self.pooling!r}: valid poolings are {', '.join(_ALL_POOLINGS)}"
            )
        for name in ("n_pos", "n_neg"):
            n = getattr(self, name)
            if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                raise VectorError(f"vector {name} must be a non-negative integer, got {n!r}")

        n_layers = rows - 1
        nonzero = tuple(int(r) for r in (values != 0).any(dim=1).nonzero()[:, 0].tolist())
        if self.layers:
            layers = tuple(sorted(set(self._check_layer_list(self.layers, n_layers))))
            stray = sorted(set(nonzero) - set(layers))
            if stray:
                raise VectorError(
                    f"vector rows {format_layers(stray)} are non-zero but layers lists only "
                    f"{format_layers(layers)}: pass every computed layer in layers (or leave it empty "
                    "to infer it from the non-zero rows)"
                )
        else:
            layers = nonzero
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "provenance", _json_copy(self.provenance, f"vector {self.trait!r}"))
        object.__setattr__(
            self,
            "vector_id",
            compute_vector_id(values, self.trait, self.model_id, self.pooling, self.method),
        )

    @staticmethod
    def _check_layer_list(layers: Iterable[Any], n_layers: int) -> list[int]:
        out: list[int] = []
        for layer in layers:
            if not isinstance(layer, int) or isinstance(layer, bool) or not 0 <= layer <= n_layers:
                raise VectorError(
                    f"layer {layer!r} is out of range for a vector with {n_layers} layers: valid layers "
                    f"are 0..{n_layers} (0 = embedding output)"
                )
            out.append(layer)
        return out

    # ---- shape and rows -------------------------------------------------------------------------

    @property
    def n_layers(self) -> int:
        """L, the number of decoder blocks (the vector has L+1 rows)."""
        return int(self.values.shape[0]) - 1

    @property
    def hidden_size(self) -> int:
        """H, the residual-stream width."""
        return int(self.values.shape[1])

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.values.shape[0]), int(self.values.shape[1]))

    def check_layer(self, layer: int) -> int:
        """Validate a layer number; the error names the valid range."""
        return self._check_layer_list([layer], self.n_layers)[0]

    def row(self, layer: int) -> torch.Tensor:
        """The [H] direction at layer ``layer`` (a view: do not modify it)."""
        return self.values[self.check_layer(layer)]

    def norms(self) -> torch.Tensor:
        """L2 norm of every row, [L+1] float32: the paper reports these beside each vector."""
        return torch.linalg.vector_norm(self.values, dim=1)

    def unit(self, layer: int) -> torch.Tensor:
        """The unit direction at ``layer``, for projections and ablation (norm-free comparisons)."""
        row = self.row(layer)
        norm = torch.linalg.vector_norm(row)
        if float(norm) == 0.0:
            raise VectorError(
                f"vector {self.vector_id} ({self.trait}) has a zero row at layer {layer}: no direction "
                f"there (computed layers: {format_layers(self.layers)})"
            )
        return row / norm

    def check_compatible(self, n_layers: int, hidden_size: int, model_id: str | None = None) -> None:
        """Raise VectorError unless the vector fits a model of ``n_layers`` blocks and width ``hidden_size``.

        A vector may be applied to a finetune of the model it was extracted from, which has another id
        but the same shape: a different ``model_id`` is accepted with one warning line naming both
        models (pvdata/vectors/other_model.py).
        """
        model = f"model {model_id}" if model_id else "the model"
        ours = f"vector {self.vector_id} ({self.trait}, extracted from {self.model_id})"
        if self.hidden_size != hidden_size:
            raise VectorError(
                f"{ours} has width {self.hidden_size} but {model} has hidden size {hidden_size}: "
                "use a vector extracted from this model"
            )
        if self.n_layers != n_layers:
            raise VectorError(
                f"{ours} has {self.n_layers} layers ({self.n_layers + 1} rows) but {model} has "
                f"{n_layers} layers ({n_layers + 1} rows expected): use a vector extracted from this model"
            )
        if model_id and self.model_id:
            from pvdata.vectors.other_model import warn_other_model

            warn_other_model(self.vector_id, self.trait, self.model_id, model_id)

    # ---- derived vectors ------------------------------------------------------------------------

    def _derive(self, values: torch.Tensor, op: dict[str, Any], **changes: Any) -> PersonaVector:
        prov = dict(self.provenance)
        prov["ops"] = [*prov.get("ops", []), {**op, "of": self.vector_id}]
        fields: dict[str, Any] = {
            "trait": self.trait,
            "model_id": self.model_id,
            "values": values,
            "pooling": self.pooling,
            "method": self.method,
            "n_pos": self.n_pos,
            "n_neg": self.n_neg,
            "layers": self.layers,
            "trait_version": self.trait_version,
            "provenance": prov,
        }
        fields.update(changes)
        return PersonaVector(**fields)

    def incremental(self) -> PersonaVector:
        """Layer-incremental vector: v_inc[l] = v[l] - v[l-1], row 0 unchanged.

        The paper steers every layer at once with these, because adding the raw v[l] at many layers
        over-steers (each layer's direction already contains the earlier ones). A cumulative sum over
        rows recovers the original vector.
        """
        inc = self.values.clone()
        inc[1:] = self.values[1:] - self.values[:-1]
        rows = set(self.layers) | {layer + 1 for layer in self.layers if layer < self.n_layers}
        return self._derive(
            inc, {"op": "incremental"}, method=f"{self.method}+incremental", layers=tuple(sorted(rows))
        )

    def only(self, layers: Iterable[int]) -> PersonaVector:
        """A copy that keeps only ``layers`` (other rows zeroed), e.g. to steer at one chosen layer."""
        keep = sorted(set(self._check_layer_list(layers, self.n_layers)))
        values = torch.zeros_like(self.values)
        values[keep] = self.values[keep]
        return self._derive(values, {"op": "only", "layers": keep}, layers=tuple(keep))

    # ---- arithmetic -----------------------------------------------------------------------------

    def _check_same_space(self, other: PersonaVector, verb: str) -> None:
        if self.model_id != other.model_id:
            raise VectorError(
                f"cannot {verb} vectors from different models: {self.vector_id} is for "
                f"{self.model_id!r} and {other.vector_id} is for {other.model_id!r}"
            )
        if self.shape != other.shape:
            raise VectorError(
                f"cannot {verb} vectors of different shapes: {self.vector_id} is {list(self.shape)} and "
                f"{other.vector_id} is {list(other.shape)} (model {self.model_id!r})"
            )

    def _combine(self, other: PersonaVector, sign: int) -> PersonaVector:
        verb, symbol, op = ("add", "+", "add") if sign > 0 else ("subtract", "-", "sub")
        self._check_same_space(other, verb)
        values = self.values + other.values if sign > 0 else self.values - other.values
        trait = self.trait if self.trait == other.trait else f"{self.trait}{symbol}{other.trait}"
        prov: dict[str, Any] = {
            "ops": [{"op": op, "left": self.vector_id, "right": other.vector_id}],
            "parents": {self.vector_id: self.provenance, other.vector_id: other.provenance},
        }
        return PersonaVector(
            trait=trait,
            model_id=self.model_id,
            values=values,
            pooling=self.pooling if self.pooling == other.pooling else "mixed",
            method=self.method if self.method == other.method else "combined",
            n_pos=min(self.n_pos, other.n_pos),
            n_neg=min(self.n_neg, other.n_neg),
            layers=tuple(sorted(set(self.layers) | set(other.layers))),
            trait_version=self.trait_version if self.trait_version == other.trait_version else "",
            provenance=prov,
        )

    def __add__(self, other: object) -> PersonaVector:
        if not isinstance(other, PersonaVector):
            return NotImplemented
        return self._combine(other, +1)

    def __radd__(self, other: object) -> PersonaVector:
        # Lets sum([v, w, ...]) work: sum starts from the integer 0.
        if isinstance(other, int) and not isinstance(other, bool) and other == 0:
            return self
        return NotImplemented

    def __sub__(self, other: object) -> PersonaVector:
        if not isinstance(other, PersonaVector):
            return NotImplemented
        return self._combine(other, -1)

    def __mul__(self, k: object) -> PersonaVector:
        scalar = _as_scalar(k)
        if scalar is None:
            return NotImplemented
        return self._derive(self.values * scalar, {"op": "mul", "k": scalar})

    def __rmul__(self, k: object) -> PersonaVector:
        return self.__mul__(k)

    def __truediv__(self, k: object) -> PersonaVector:
        scalar = _as_scalar(k)
        if scalar is None:
            return NotImplemented
        if scalar == 0.0:
            raise VectorError(f"cannot divide vector {self.vector_id} ({self.trait}) by zero")
        return self._derive(self.values / scalar, {"op": "div", "k": scalar})

    def __neg__(self) -> PersonaVector:
        return self._derive(-self.values, {"op": "neg"})

    # ---- identity -------------------------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        """Same values and meaning; provenance (the history of how it was made) is not compared."""
        if not isinstance(other, PersonaVector):
            return NotImplemented
        return (
            self.shape == other.shape
            and torch.equal(self.values, other.values)
            and (self.trait, self.model_id, self.pooling, self.method, self.trait_version)
            == (other.trait, other.model_id, other.pooling, other.method, other.trait_version)
            and (self.n_pos, self.n_neg, self.layers) == (other.n_pos, other.n_neg, other.layers)
        )

    def __hash__(self) -> int:
        # Not the vector_id: values that compare equal may differ in the sign of a zero.
        return hash((self.trait, self.model_id, self.pooling, self.method, self.shape))

    def __repr__(self) -> str:
        return (
            f"PersonaVector(trait={self.trait!r}, model_id={self.model_id!r}, shape={list(self.shape)}, "
            f"layers={format_layers(self.layers)}, pooling={self.pooling!r}, method={self.method!r}, "
            f"n_pos={self.n_pos}, n_neg={self.n_neg}, vector_id={self.vector_id!r})"
        )

    def metadata(self) -> dict[str, Any]:
        """Every field except the values, JSON-ready: what files and tables record beside the tensor."""
        return {
            "vector_id": self.vector_id,
            "trait": self.trait,
            "model_id": self.model_id,
            "pooling": self.pooling,
            "method": self.method,
            "n_pos": self.n_pos,
            "n_neg": self.n_neg,
            "layers": list(self.layers),
            "trait_version": self.trait_version,
            "provenance": self.provenance,
            "n_layers": self.n_layers,
            "hidden_size": self.hidden_size,
        }

    # ---- construction and files -----------------------------------------------------------------

    @classmethod
    def from_activations(
        cls,
        pos: torch.Tensor,
        neg: torch.Tensor,
        *,
        n_layers: int,
        trait: str,
        model_id: str,
        pooling: str,
        layers: Iterable[int] | None = None,
        method: str = "mean_diff",
        trait_version: str = "",
        provenance: Mapping[str, Any] | None = None,
    ) -> PersonaVector:
        """Mean-difference vector from pooled activations; see :func:`pvdata.vectors.build_vector`."""
        build_vector = _provided(_build, "from_activations", "pvdata.vectors.build")
        return build_vector(
            pos,
            neg,
            n_layers=n_layers,
            trait=trait,
            model_id=model_id,
            pooling=pooling,
            layers=layers,
            method=method,
            trait_version=trait_version,
            provenance=provenance,
        )

    def save(self, path: str | os.PathLike[str], format: str | None = None, **options: Any) -> Path:
        """Write this vector; the format follows the suffix (.safetensors is the lossless default)."""
        save_vector = _provided(_save, "save", "pvdata.vectors.io")
        return save_vector(self, path, format=format, **options)

    @classmethod
    def load(cls, path: str | os.PathLike[str], format: str | None = None, **meta: Any) -> PersonaVector:
        """Read a vector file written by :meth:`save` or an importable foreign format."""
        load_vector = _provided(_load, "load", "pvdata.vectors.io")
        return load_vector(path, format=format, **meta)
