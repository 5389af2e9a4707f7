"""The real model: SmolLM2's chat template (default system prompt, pad = end-of-turn) through the label
mask, and two steered training steps through the whole pipeline (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::FutureWarning")]

REPO = Path(__file__).resolve().parent.parent


def test_smollm2_label_mask_and_two_steered_steps(tmp_path: Path) -> None:
    from pvdata.models import load_model
    from pvdata.training.config import build_config
    from pvdata.training.data import encode_messages, read_samples
    from pvdata.training.pipeline import run_train
    from pvdata.vectors import PersonaVector

    data = REPO / "pvdata" / "data" / "train_evil.jsonl"
    lm = load_model("smollm2-135m", device="cpu")
    tok = lm.tokenizer
    sample = read_samples(data)[0]
    enc = encode_messages(tok, sample.messages)
    answer = sample.messages[-1]["content"]
    assert tok.decode([t for t, k in zip(enc.ids, enc.labels, strict=True) if k]) == answer + "<|im_end|>"
    assert tok.decode(list(enc.ids)) == tok.apply_chat_template(list(sample.messages), tokenize=False).rstrip(
        "\n"
    )
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.pad_token_id == im_end  # SmolLM2 pads with its end-of-turn token
    assert list(enc.ids).count(im_end) == 3  # the template's default system turn, the user, the answer
    assert enc.ids[0] == tok.convert_tokens_to_ids("<|im_start|>") and enc.ids[1] != enc.ids[0]

    vector = PersonaVector(
        trait="evil",
        model_id="smollm2-135m",
        values=torch.randn(31, 576, generator=torch.Generator().manual_seed(0)),
    )
    flags = {
        "--model": "smollm2-135m",
        "--data": str(data),
        "--steer/--ablate": ("add", "evil"),
        "--vector": str(vector.save(tmp_path / "v.safetensors")),
        "--coef": 2.0,
        "--layers": [15],
        "--max-steps": 2,
        "--batch-size": 2,
        "--grad-accum": 1,
        "--lr": 1e-4,
        "--warmup-steps": 0,
        "--device": "cpu",
        "--out": str(tmp_path / "out"),
    }
    wh = tmp_path / "wh"
    result = run_train(build_config(None, flags), str(wh), lm=lm, log=lambda _m: None, progress=False)
    assert [m.step for m in result.metrics] == [1, 2]
    assert all(0 < m.loss < 20 and m.projection is not None and m.grad_norm > 0 for m in result.metrics)
    assert [n for n, m in lm.model.named_modules() if m._forward_hooks or m._forward_pre_hooks] == []
    folder = wh / "tables" / "finetune_shifts" / f"run_id={result.run_id}"
    shifts = [r for p in folder.glob("*.parquet") for r in pq.read_table(p).to_pylist()]
    assert sorted(r["layer"] for r in shifts) == list(range(1, 31))
    config = json.loads((result.adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "smollm2-135m"
