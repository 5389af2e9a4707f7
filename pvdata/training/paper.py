"""The paper's finetuning defaults (ALGORITHMS.md section 8), in one place for the config and the loop."""

from __future__ import annotations

TARGET_MODULES: tuple[str, ...] = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)
LORA_R = 32
LORA_ALPHA = 64
LORA_DROPOUT = 0.0
RSLORA = True
LR = 1e-5
SCHEDULE = "linear"
WARMUP_STEPS = 5
BATCH_SIZE = 2
GRAD_ACCUM = 8
EPOCHS = 1
WEIGHT_DECAY = 0.01
MAX_GRAD_NORM = 1.0  # the transformers Trainer default the research code ran with
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
