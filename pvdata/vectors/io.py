"""One entry point for every vector file format: pick by explicit name or by the file suffix.

| format        | suffix        | direction      | keeps metadata |
|---------------|---------------|----------------|----------------|
| safetensors   | .safetensors  | save and load  | all fields     |
| research      | .pt, .pth     | save and load  | none (bare [L+1, H] tensor of the research code) |
| gguf          | .gguf         | save and load  | llama.cpp control vector; pvdata keys ride along |
| lm-eval       | (explicit)    | save and load  | lm-evaluation-harness ``steered`` file (.pt) |
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pvdata.errors import VectorError
from pvdata.vectors.formats.llamacpp import export_gguf, import_gguf
from pvdata.vectors.formats.lm_eval import export_lm_eval, import_lm_eval
from pvdata.vectors.formats.native import load_safetensors, save_safetensors
from pvdata.vectors.formats.research import export_research_pt, import_research_pt
from pvdata.vectors.persona_vector import PersonaVector, provide_files

FORMATS: tuple[str, ...] = ("safetensors", "research", "gguf", "lm-eval")
_ALIASES = {
    "st": "safetensors",
    "pt": "research",
    "torch": "research",
    "lm_eval": "lm-eval",
    "lmeval": "lm-eval",
}
_SUFFIXES = {".safetensors": "safetensors", ".pt": "research", ".pth": "research", ".gguf": "gguf"}

_SAVERS: dict[str, Callable[..., Path]] = {
    "safetensors": save_safetensors,
    "research": export_research_pt,
    "gguf": export_gguf,
    "lm-eval": export_lm_eval,
}
_LOADERS: dict[str, Callable[..., PersonaVector]] = {
    "safetensors": load_safetensors,
    "research": import_research_pt,
    "gguf": import_gguf,
    "lm-eval": import_lm_eval,
}


def _formats_help() -> str:
    suffixes = ", ".join(f"{s} ({f})" for s, f in _SUFFIXES.items())
    return f"formats: {', '.join(FORMATS)}; by suffix: {suffixes}; lm-eval only by name (format='lm-eval')"


def resolve_format(path: str | os.PathLike[str], format: str | None = None) -> str:
    """The canonical format name for an explicit ``format`` or, if None, for the path's suffix."""
    if format is not None:
        name = _ALIASES.get(format.lower(), format.lower())
        if name not in FORMATS:
            raise VectorError(f"unknown vector format {format!r}: {_formats_help()}")
        return name
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIXES:
        raise VectorError(
            f"cannot tell the vector format of {Path(path).name!r} from its suffix: {_formats_help()}"
        )
    return _SUFFIXES[suffix]


def _check_options(fn: Callable[..., Any], options: dict[str, Any], fmt: str, verb: str) -> None:
    accepted = [
        name
        for name, param in inspect.signature(fn).parameters.items()
        if param.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise VectorError(
            f"{verb} format {fmt!r} does not take {', '.join(unknown)}; it accepts: "
            f"{', '.join(accepted) or 'no options'}"
        )


def save_vector(
    vector: PersonaVector, path: str | os.PathLike[str], format: str | None = None, **options: Any
) -> Path:
    """Write ``vector`` to ``path``; ``options`` go to the format (e.g. coef=, layers= for gguf/lm-eval)."""
    fmt = resolve_format(path, format)
    saver = _SAVERS[fmt]
    _check_options(saver, options, fmt, "saving to")
    return saver(vector, path, **options)


def load_vector(path: str | os.PathLike[str], format: str | None = None, **meta: Any) -> PersonaVector:
    """Read a vector file; ``meta`` fills what the format lacks (trait=, model_id=, n_layers=, ...)."""
    fmt = resolve_format(path, format)
    loader = _LOADERS[fmt]
    _check_options(loader, meta, fmt, "loading from")
    return loader(path, **meta)


provide_files(save_vector, load_vector)
