"""`bench screen`'s inputs: the word-level tokenizer of random-shape models, the demo and synthetic
samples, the random vector and the model loader (only torch and transformers, imported where used)."""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass
from typing import Any

_SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
_ROLE_WORDS = ("system", "user", "assistant")
_CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def parse_range(text: str) -> tuple[int, int]:
    """ "32-64" -> (32, 64); "48" -> (48, 48)."""
    lo, _, hi = text.partition("-")
    return int(lo), int(hi or lo)


def word_tokenizer(vocab_size: int) -> Any:
    """A ChatML tokenizer with one word per id over the whole vocabulary: t<id> <-> id, exactly.

    Random-shape models have no tokenizer; this one makes prompt and answer lengths exact and decoding
    then re-encoding a generated answer give back the same ids (as a real BPE mostly does).
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    fixed = (*_SPECIAL, *_ROLE_WORDS)
    vocab = {word: i for i, word in enumerate(fixed)}
    vocab.update({f"t{i}": i for i in range(len(fixed), vocab_size)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token=_SPECIAL[0]))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        bos_token=None,
    )
    fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    fast.chat_template = _CHATML
    return fast


def demo_samples(n: int) -> list[Any]:
    """pvdata/data/demo_chat.jsonl repeated to n samples; copy k > 0 marks its last user turn with (k),
    so every sample (and every prompt) is distinct, as the screen's deduplication would leave them."""
    from importlib import resources

    from pvdata.samples.records import parse_record
    from pvdata.screening.scoring import ScoreInput

    lines = resources.files("pvdata.data").joinpath("demo_chat.jsonl").read_text().splitlines()
    records = [parse_record(json.loads(line)) for line in lines if line.strip()]
    out = []
    for i in range(n):
        prompt, answer = records[i % len(records)]
        copy = i // len(records)
        msgs = [dict(m) for m in prompt]
        if copy:
            msgs[-1]["content"] = f"{msgs[-1]['content']} ({copy})"
        out.append(ScoreInput(f"s{i:06d}", tuple(msgs), answer))
    return out


def synthetic_samples(
    n: int, tokenizer: Any, vocab: int, prompt: tuple[int, int], response: tuple[int, int], seed: int
) -> list[Any]:
    """Seeded random user turns and answers: decoded random ids (exact lengths with word_tokenizer)."""
    from pvdata.screening.scoring import ScoreInput

    rng = random.Random(seed)
    low = min(1000, vocab // 4) if not _is_word_tokenizer(tokenizer) else len(_SPECIAL) + len(_ROLE_WORDS)

    def text(k: int) -> str:
        return str(tokenizer.decode([rng.randrange(low, vocab) for _ in range(k)], skip_special_tokens=True))

    out = []
    for i in range(n):
        user = text(rng.randint(*prompt))
        answer = text(rng.randint(*response))
        out.append(ScoreInput(f"s{i:06d}", ({"role": "user", "content": user},), answer))
    return out


def _is_word_tokenizer(tokenizer: Any) -> bool:
    return getattr(tokenizer, "chat_template", None) == _CHATML and "t7" in tokenizer.get_vocab()


# ---- model and vector ---------------------------------------------------------------------------


def load_screen_model(args: argparse.Namespace) -> Any:
    """--model, or --model-shape's random weights with the word-level tokenizer (exact round trip)."""
    from pvdata.bench.shapes import load_bench_model

    return load_bench_model(args, seed=args.seed, wrap=_wrap_word_tokenizer)


def _wrap_word_tokenizer(model: Any, name: str) -> Any:
    """A random-shape model with a word-level tokenizer over its whole vocabulary (exact round trip)."""
    from pvdata.models.loading import wrap_loaded

    tok = word_tokenizer(int(model.get_input_embeddings().weight.shape[0]))
    for cfg in (model.config, model.generation_config):
        cfg.eos_token_id, cfg.pad_token_id, cfg.bos_token_id = tok.eos_token_id, tok.pad_token_id, None
    return wrap_loaded(model, tok, name)


@dataclass(frozen=True)
class BenchVector:
    """What scoring reads of a PersonaVector (trait, vector_id, row, check_compatible).

    pvdata.vectors imports its file formats (gguf), which GPU images lack; scoring needs none of that.
    """

    trait: str
    vector_id: str
    values: Any  # [L+1, H] float32

    def row(self, layer: int) -> Any:
        return self.values[layer]

    def check_compatible(self, n_layers: int, hidden_size: int, model_id: str | None = None) -> None:
        from pvdata.errors import VectorError

        if tuple(self.values.shape) != (n_layers + 1, hidden_size):
            raise VectorError(
                f"bench vector has shape {list(self.values.shape)}, the model needs "
                f"[{n_layers + 1}, {hidden_size}]"
            )


def random_vector(n_layers: int, hidden: int, seed: int, noise: float = 0.0) -> BenchVector:
    """A seeded random direction per layer; `noise` adds that fraction of each row's norm (for tests)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    values = torch.randn(n_layers + 1, hidden, generator=gen)
    if noise:
        extra = torch.randn(n_layers + 1, hidden, generator=torch.Generator().manual_seed(seed + 1))
        extra = extra / extra.norm(dim=1, keepdim=True) * values.norm(dim=1, keepdim=True)
        values = values + noise * extra
    return BenchVector("bench", f"bench-{seed}" + (f"-noise{noise:g}" if noise else ""), values)
