"""Persona vectors: the value object, building one from activations, and its file formats.

A vector holds all L+1 rows ([L+1, H] float32): row 0 = embedding output, row l = output of block l.
"""

from pvdata.vectors.build import build_vector, mean_difference
from pvdata.vectors.formats import (
    DEFAULT_HOOKPOINT_TEMPLATE,
    direction_index,
    export_gguf,
    export_lm_eval,
    export_research_pt,
    hookpoint_for,
    import_gguf,
    import_lm_eval,
    import_research_pt,
    layer_of_direction,
    load_safetensors,
    save_safetensors,
)
from pvdata.vectors.io import FORMATS, load_vector, resolve_format, save_vector
from pvdata.vectors.persona_vector import POOLINGS, PersonaVector, compute_vector_id, format_layers

__all__ = [
    "DEFAULT_HOOKPOINT_TEMPLATE",
    "FORMATS",
    "POOLINGS",
    "PersonaVector",
    "build_vector",
    "compute_vector_id",
    "direction_index",
    "export_gguf",
    "export_lm_eval",
    "export_research_pt",
    "format_layers",
    "hookpoint_for",
    "import_gguf",
    "import_lm_eval",
    "import_research_pt",
    "layer_of_direction",
    "load_safetensors",
    "load_vector",
    "mean_difference",
    "resolve_format",
    "save_safetensors",
    "save_vector",
]
