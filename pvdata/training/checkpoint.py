"""Checkpoints that survive kill -9: adapter + optimizer + scheduler + RNG + step, written atomically.

A checkpoint is a folder OUT/checkpoints/step-NNNNNN/ with the adapter (a normal PEFT folder, usable on
its own), trainer_state.pt (optimizer, scheduler, RNG states; read back with weights_only=True) and
state.json (step, the run it belongs to). It is written under a temporary name, every file fsynced,
then renamed into place, so a folder named step-* is always complete; a kill mid-write leaves only a
`.tmp-` folder, which the next start deletes. The newest `keep` checkpoints stay on disk.

Imports torch, safetensors and peft only (no pvdata warehouse), so the benchmark can use it too.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

from pvdata.training.errors import TrainingError

STATE_FILE = "state.json"
TRAINER_FILE = "trainer_state.pt"
ADAPTER_DIR = "adapter"
_NAME = re.compile(r"^step-(\d{6,})$")


def _fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_adapter_atomic(model: Any, dest: Path, *, base_model: str | None = None) -> Path:
    """model.save_pretrained into `dest`, replacing any earlier folder there in one rename.

    `base_model` replaces base_model_name_or_path in adapter_config.json (an alias such as smollm2-135m
    instead of its cache folder), so `--model DEST` finds the base on any machine.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(str(tmp))
    if base_model is not None:
        config_path = tmp / "adapter_config.json"
        config = json.loads(config_path.read_text())
        config["base_model_name_or_path"] = base_model
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    _fsync_tree(tmp)
    old = dest.parent / f".{dest.name}.old-{os.getpid()}"
    if dest.exists():
        os.rename(dest, old)
    os.rename(tmp, dest)
    _fsync_dir(dest.parent)
    if old.exists():
        shutil.rmtree(old)
    return dest


def checkpoints_dir(out: Path) -> Path:
    return out / "checkpoints"


def list_checkpoints(out: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (step, folder), oldest first."""
    folder = checkpoints_dir(out)
    if not folder.is_dir():
        return []
    found = []
    for child in folder.iterdir():
        m = _NAME.match(child.name)
        if m and (child / STATE_FILE).is_file():
            found.append((int(m.group(1)), child))
    return sorted(found)


def remove_partial(out: Path) -> int:
    """Delete temporary folders a killed process left behind; returns how many."""
    folder = checkpoints_dir(out)
    removed = 0
    for parent in (folder, out):
        if not parent.is_dir():
            continue
        for child in parent.iterdir():
            if child.name.startswith(".") and (".tmp-" in child.name or ".old-" in child.name):
                shutil.rmtree(child, ignore_errors=True)
                removed += 1
    return removed


def save_checkpoint(
    out: Path,
    *,
    step: int,
    model: Any,
    optimizer: Any,
    scheduler: Any,
    run_key: str,
    keep: int = 2,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write checkpoint `step` atomically and prune all but the newest `keep`."""
    import torch

    folder = checkpoints_dir(out)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step-{step:06d}"
    tmp = folder / f".step-{step:06d}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    model.save_pretrained(str(tmp / ADAPTER_DIR))
    rng: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(
        {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng},
        tmp / TRAINER_FILE,
    )
    state = {
        "step": step,
        "run_key": run_key,
        "python_random": _jsonable(random.getstate()),
        **(extra or {}),
    }
    (tmp / STATE_FILE).write_text(json.dumps(state, indent=1, sort_keys=True))
    _fsync_tree(tmp)
    if final.exists():  # the same step again (a resumed run that re-saved): replace it
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(folder)
    for _, old in list_checkpoints(out)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, tuple | list):
        return [_jsonable(x) for x in obj]
    return obj


def _tuples(obj: Any) -> Any:
    if isinstance(obj, list):
        return tuple(_tuples(x) for x in obj)
    return obj


def read_state(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((path / STATE_FILE).read_text())
    return data


def load_checkpoint(path: Path, *, model: Any, optimizer: Any, scheduler: Any, run_key: str) -> int:
    """Restore adapter weights, optimizer, scheduler and RNG from `path`; returns its step."""
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = read_state(path)
    if state.get("run_key") != run_key:
        raise TrainingError(
            f"checkpoint {path} belongs to another training run ({state.get('run_key')}; another training "
            f"config, or a --force run): this run is {run_key}. Pass another --out, or delete {path.parent} "
            "to start over"
        )
    weights = path / ADAPTER_DIR / "adapter_model.safetensors"
    if not weights.is_file():
        raise TrainingError(f"checkpoint {path} has no {weights.name}; delete it to resume from an older one")
    device = next(model.parameters()).device
    result = set_peft_model_state_dict(model, load_file(str(weights), device=str(device)))
    unexpected = getattr(result, "unexpected_keys", None) or []
    if unexpected:
        raise TrainingError(f"checkpoint {path} holds weights this model does not have: {unexpected[:3]}")
    trainer = torch.load(path / TRAINER_FILE, map_location=device, weights_only=True)
    optimizer.load_state_dict(trainer["optimizer"])
    scheduler.load_state_dict(trainer["scheduler"])
    torch.set_rng_state(trainer["rng"]["torch"].cpu())
    if "cuda" in trainer["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in trainer["rng"]["cuda"]])
    if "python_random" in state:
        random.setstate(_tuples(state["python_random"]))
    return int(state["step"])
