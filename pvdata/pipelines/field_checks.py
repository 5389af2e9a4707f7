"""Checks of single config fields that need no warehouse or model: a model name, a `$ID` reference to an
earlier step's vector or adapter, a vector file. Shared by pipeline files and `pvdata experiment` steps,
which sit on both sides of the step table (so they live here, below both)."""

from __future__ import annotations

from pathlib import Path

from pvdata.errors import ConfigError

Refs = dict[str, str]  # step id -> "vector" | "adapter": what an earlier step makes


def check_model(name: str) -> None:
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


def check_ref(ref: str, refs: Refs, what: str, field_name: str) -> bool:
    """True when `ref` is a `$ID` reference (checked against earlier steps), False for a literal value."""
    if not ref.startswith("$"):
        return False
    if refs.get(ref[1:]) != what:
        known = ", ".join(f"${k}" for k, v in refs.items() if v == what)
        maker = "an extract step" if what == "vector" else "a train step"
        article = "a" if what == "vector" else "an"
        raise ConfigError(
            f"{field_name} {ref} names no earlier step that makes {article} {what}; "
            f"valid: {known or f'none ({maker} must come before this one)'}"
        )
    return True


def check_vector(ref: str | None, vectors: Refs, field_name: str = "vector") -> None:
    if ref is None or check_ref(ref, vectors, "vector", field_name):
        return
    # a file that exists, or a warehouse vector id (checked when the step runs)
    if ref.endswith((".safetensors", ".pt", ".gguf")) and not Path(ref).is_file():
        raise ConfigError(f"vector file {ref} does not exist")


def check_adapter(ref: str | None, refs: Refs) -> None:
    if ref is None or check_ref(ref, refs, "adapter", "adapter"):
        return
    if not Path(ref).expanduser().is_dir():
        raise ConfigError(f"adapter {ref} is not a folder (a saved PEFT adapter, or $ID of a train step)")
