"""LoRA finetuning with preventative steering, per-step projections and the finetuning shift.

    >>> from pvdata.training import build_config, run_train
    >>> cfg = build_config("training/smollm2-cpu.yaml", {"--steer/--ablate": ("add", "evil"), "--coef": 4.0})
    >>> result = run_train(cfg, "warehouse")      # adapter in result.adapter, rows in train_metrics

See docs/TRAINING.md. Names are imported lazily: the config needs only pydantic and yaml, the loop only
torch, transformers and peft (so `python -m pvdata.bench train` runs without the rest).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "EncodedSample",
    "LoopSettings",
    "LoraParams",
    "LoraTrainer",
    "MonitorSetup",
    "ShiftRow",
    "SteeringSetup",
    "StepMetrics",
    "TrainConfig",
    "TrainResult",
    "TrainingError",
    "build_config",
    "encode_messages",
    "finetuning_shift",
    "load_training_data",
    "peft_finetuning_shift",
    "prepare_lora",
    "run_train",
]

_LAZY = {
    "TrainConfig": "pvdata.training.config",
    "build_config": "pvdata.training.config",
    "TrainingError": "pvdata.training.errors",
    "EncodedSample": "pvdata.training.data",
    "encode_messages": "pvdata.training.data",
    "load_training_data": "pvdata.training.data",
    "LoopSettings": "pvdata.training.loop",
    "LoraParams": "pvdata.training.loop",
    "LoraTrainer": "pvdata.training.loop",
    "MonitorSetup": "pvdata.training.loop",
    "SteeringSetup": "pvdata.training.loop",
    "StepMetrics": "pvdata.training.loop",
    "prepare_lora": "pvdata.training.loop",
    "ShiftRow": "pvdata.training.shift",
    "finetuning_shift": "pvdata.training.shift",
    "peft_finetuning_shift": "pvdata.training.shift",
    "TrainResult": "pvdata.training.pipeline",
    "run_train": "pvdata.training.pipeline",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pvdata.training' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
