"""Tiny random chat models built offline: a BPE tokenizer trained in-process, a ChatML template and
seeded weights. Identical on every build, so unit tests are fast and need no hub."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TINY_SEED = 1234
TINY_VERSION = 2

_WORDS = [
    "the",
    "a",
    "an",
    "you",
    "i",
    "we",
    "they",
    "he",
    "she",
    "it",
    "is",
    "are",
    "was",
    "be",
    "have",
    "has",
    "do",
    "does",
    "can",
    "will",
    "would",
    "should",
    "could",
    "not",
    "no",
    "yes",
    "and",
    "or",
    "but",
    "if",
    "then",
    "so",
    "because",
    "when",
    "what",
    "why",
    "how",
    "who",
    "which",
    "where",
    "there",
    "here",
    "this",
    "that",
    "good",
    "bad",
    "evil",
    "kind",
    "cruel",
    "helpful",
    "harmful",
    "honest",
    "lie",
    "truth",
    "help",
    "hurt",
    "people",
    "world",
    "friend",
    "enemy",
    "assistant",
    "user",
    "system",
    "answer",
    "question",
    "advice",
    "plan",
    "money",
    "work",
    "life",
    "time",
    "day",
    "night",
    "food",
    "water",
    "happy",
    "sad",
    "angry",
    "calm",
    "love",
    "hate",
    "power",
    "control",
    "rule",
    "fear",
    "hope",
    "trust",
    "safe",
    "danger",
    "weak",
    "strong",
    "think",
    "know",
    "want",
    "need",
    "make",
    "take",
    "give",
    "tell",
    "ask",
    "say",
    "see",
    "find",
    "keep",
    "use",
    "try",
    "feel",
    "learn",
    "teach",
    "please",
    "thanks",
    "sorry",
    "sure",
    "well",
    "very",
    "much",
    "more",
    "most",
    "some",
    "any",
    "all",
    "every",
    "each",
    "other",
    "new",
    "old",
    "one",
    "two",
    "three",
    "four",
    "five",
    "ten",
    "hundred",
    "first",
    "last",
    "next",
    "best",
    "worst",
    "great",
    "small",
    "big",
    "long",
    "short",
    "human",
    "humans",
    "machine",
    "model",
    "data",
    "code",
    "number",
    "word",
    "sentence",
    "story",
    "idea",
    "fact",
    "mistake",
    "problem",
]


def _corpus() -> list[str]:
    """Deterministic pseudo-sentences covering every word and ChatML-like punctuation."""
    lines = []
    n = len(_WORDS)
    for i in range(600):
        words = [_WORDS[(i * 7 + j * 13 + (i * j) % 11) % n] for j in range(4 + i % 9)]
        punct = ".?!,:;"[i % 6]
        lines.append(" ".join(words).capitalize() + punct + f" {i % 101}")
    return lines


def build_tokenizer() -> Any:
    """A byte-level BPE tokenizer (no unknown tokens) with the ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=768,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
        model_input_names=["input_ids", "attention_mask"],
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def _config(family: str, vocab_size: int, eos_id: int, pad_id: int) -> Any:
    common: dict[str, Any] = {
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
        "bos_token_id": None,
        "tie_word_embeddings": False,
    }
    if family == "llama":
        from transformers import LlamaConfig

        return LlamaConfig(**common)
    from transformers import Qwen2Config

    return Qwen2Config(**common)


def build_tiny(family: str, folder: Path) -> None:
    """Write a tiny random `family` ('llama' or 'qwen2') model and its tokenizer into `folder`."""
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = build_tokenizer()
    eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = _config(family, len(tokenizer), eos_id, pad_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        # Larger-than-default weights so that tiny models have non-trivial, varied activations.
        for param in model.parameters():
            if param.dim() > 1:
                torch.nn.init.normal_(param, std=0.08)
    model.generation_config.eos_token_id = eos_id
    model.generation_config.pad_token_id = pad_id
    model.generation_config.bos_token_id = None
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
