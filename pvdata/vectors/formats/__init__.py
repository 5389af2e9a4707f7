"""Vector file formats, one module each; :mod:`pvdata.vectors.io` picks among them."""

from pvdata.vectors.formats.llamacpp import direction_index, export_gguf, import_gguf, layer_of_direction
from pvdata.vectors.formats.lm_eval import (
    DEFAULT_HOOKPOINT_TEMPLATE,
    export_lm_eval,
    hookpoint_for,
    import_lm_eval,
)
from pvdata.vectors.formats.native import load_safetensors, save_safetensors
from pvdata.vectors.formats.research import export_research_pt, import_research_pt

__all__ = [
    "DEFAULT_HOOKPOINT_TEMPLATE",
    "direction_index",
    "export_gguf",
    "export_lm_eval",
    "export_research_pt",
    "hookpoint_for",
    "import_gguf",
    "import_lm_eval",
    "import_research_pt",
    "layer_of_direction",
    "load_safetensors",
    "save_safetensors",
]
