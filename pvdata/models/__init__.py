"""Models: aliases, offline builds, loading, and the layer convention."""

from pvdata.models.layers import KNOWN_LAYER_PATHS, LayerInfo, find_layers, hidden_size, unwrap_peft
from pvdata.models.loading import ALIASES, LoadedModel, load_model, resolve_model_source, wrap_loaded

__all__ = [
    "ALIASES",
    "KNOWN_LAYER_PATHS",
    "LayerInfo",
    "LoadedModel",
    "find_layers",
    "hidden_size",
    "load_model",
    "resolve_model_source",
    "unwrap_peft",
    "wrap_loaded",
]
