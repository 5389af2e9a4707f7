"""Model aliases, offline builds, the process-safe cache and layer discovery."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import pytest
import torch

from pvdata.errors import ModelError
from pvdata.models import KNOWN_LAYER_PATHS, find_layers, load_model
from pvdata.models.cache import COMPLETE_MARKER, materialize


def test_unknown_alias_lists_the_aliases():
    with pytest.raises(ModelError) as err:
        load_model("smollm-9000")
    message = str(err.value)
    for alias in ("smollm2-135m", "tiny-random-llama", "tiny-random-qwen2"):
        assert alias in message


def test_tiny_models_are_identical_every_build(tmp_path, monkeypatch):
    from pvdata.models.tiny import build_tiny

    build_tiny("llama", tmp_path / "a")
    build_tiny("llama", tmp_path / "b")
    for name in ("tokenizer.json", "config.json"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (
        tmp_path / "b" / "model.safetensors"
    ).read_bytes()


def test_tiny_model_has_chat_template_and_generates(tiny_qwen2):
    tok = tiny_qwen2.tokenizer
    text = tok.apply_chat_template(
        [{"role": "user", "content": "hello"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
    ids = tok(text, add_special_tokens=False, return_tensors="pt")
    out = tiny_qwen2.model.generate(**ids, max_new_tokens=3, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] > ids["input_ids"].shape[1]


def _slow_build(folder: Path) -> None:
    (folder / "part1").write_text("a")
    time.sleep(0.5)
    (folder / "part2").write_text("b")


def _materialize_in_child(cache: str, queue: mp.Queue) -> None:
    import os

    os.environ["PVDATA_CACHE"] = cache
    queue.put(str(materialize("slow-model", _slow_build)))


def test_concurrent_conversion_never_corrupts_the_cache(tmp_path):
    ctx = mp.get_context("spawn")
    queue: mp.Queue = ctx.Queue()
    procs = [ctx.Process(target=_materialize_in_child, args=(str(tmp_path), queue)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    results = {queue.get(timeout=5) for _ in procs}
    assert len(results) == 1
    final = Path(results.pop())
    assert sorted(x.name for x in final.iterdir()) == sorted([COMPLETE_MARKER, "part1", "part2"])
    leftovers = [x.name for x in (tmp_path / "models").iterdir() if ".tmp-" in x.name]
    assert leftovers == []


def test_failed_build_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("PVDATA_CACHE", str(tmp_path))

    def broken(folder: Path) -> None:
        (folder / "half").write_text("x")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        materialize("broken", broken)
    assert [x.name for x in (tmp_path / "models").iterdir() if not x.name.endswith(".lock")] == []


def _tiny_config(family: str):
    import transformers as tf

    small = {"vocab_size": 64, "num_hidden_layers": 3}
    configs = {
        "llama": tf.LlamaConfig(hidden_size=16, intermediate_size=32, num_attention_heads=2, **small),
        "mistral": tf.MistralConfig(
            hidden_size=16, intermediate_size=32, num_attention_heads=2, num_key_value_heads=1, **small
        ),
        "qwen2": tf.Qwen2Config(
            hidden_size=16, intermediate_size=32, num_attention_heads=2, num_key_value_heads=2, **small
        ),
        "qwen3": tf.Qwen3Config(
            hidden_size=16,
            intermediate_size=32,
            num_attention_heads=2,
            head_dim=8,
            num_key_value_heads=2,
            **small,
        ),
        "gemma": tf.GemmaConfig(
            hidden_size=16,
            intermediate_size=32,
            num_attention_heads=2,
            head_dim=8,
            num_key_value_heads=1,
            **small,
        ),
        "gemma2": tf.Gemma2Config(
            hidden_size=16,
            intermediate_size=32,
            num_attention_heads=2,
            head_dim=8,
            num_key_value_heads=1,
            **small,
        ),
        "phi": tf.PhiConfig(hidden_size=16, intermediate_size=32, num_attention_heads=2, **small),
        "phi3": tf.Phi3Config(
            hidden_size=16,
            intermediate_size=32,
            num_attention_heads=2,
            pad_token_id=0,
            num_key_value_heads=2,
            **small,
        ),
        "gpt2": tf.GPT2Config(n_embd=16, n_head=2, n_layer=3, vocab_size=64),
        "gpt_neox": tf.GPTNeoXConfig(hidden_size=16, intermediate_size=32, num_attention_heads=2, **small),
    }
    return configs[family]


@pytest.mark.parametrize(
    ("family", "path"),
    [
        ("llama", "model.layers"),
        ("mistral", "model.layers"),
        ("qwen2", "model.layers"),
        ("qwen3", "model.layers"),
        ("gemma", "model.layers"),
        ("gemma2", "model.layers"),
        ("phi", "model.layers"),
        ("phi3", "model.layers"),
        ("gpt2", "transformer.h"),
        ("gpt_neox", "gpt_neox.layers"),
    ],
)
def test_layer_discovery_per_family(family, path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(_tiny_config(family))
    info = find_layers(model)
    assert info.path == path
    assert info.n_layers == 3
    # the blocks really are the ones the forward runs: a hook on the last block fires once
    calls = []
    handle = info.blocks[2].register_forward_hook(lambda *a: calls.append(1))
    model(input_ids=torch.tensor([[1, 2, 3]]))
    handle.remove()
    assert calls == [1]


def test_layer_discovery_through_peft(tiny_llama):
    import copy

    from peft import LoraConfig, get_peft_model

    wrapped = get_peft_model(copy.deepcopy(tiny_llama.model), LoraConfig(r=2, target_modules=["q_proj"]))
    info = find_layers(wrapped)
    assert info.n_layers == 4 and info.path == "model.layers"


def test_unknown_architecture_names_class_and_override():
    class Odd(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stack = torch.nn.Sequential(torch.nn.Linear(2, 2))
            self.trunk = torch.nn.ModuleList([torch.nn.Linear(2, 2)])

    with pytest.raises(ModelError) as err:
        find_layers(Odd())
    assert "Odd" in str(err.value) and "--layers-path" in str(err.value)
    for path in KNOWN_LAYER_PATHS[:2]:
        assert path in str(err.value)
    assert find_layers(Odd(), "trunk").n_layers == 1


def test_layer_out_of_range_names_the_valid_range(tiny_llama):
    with pytest.raises(ModelError, match=r"valid layers are 0\.\.4"):
        tiny_llama.layers.check_layer(5)
    with pytest.raises(ModelError, match=r"valid layers are 1\.\.4"):
        tiny_llama.layers.check_layer(0, allow_embedding=False)


def test_adapter_folder_loads_on_its_base(tiny_llama, tmp_path):
    import copy

    from peft import LoraConfig, get_peft_model

    wrapped = get_peft_model(copy.deepcopy(tiny_llama.model), LoraConfig(r=2, target_modules=["q_proj"]))
    wrapped.save_pretrained(tmp_path / "adapter")
    import json

    cfg_path = tmp_path / "adapter" / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = "tiny-random-llama"
    cfg_path.write_text(json.dumps(cfg))
    lm = load_model(str(tmp_path / "adapter"), device="cpu")
    assert lm.adapter == str(tmp_path / "adapter")
    assert type(lm.model).__name__.startswith("Peft")
    assert lm.n_layers == 4
