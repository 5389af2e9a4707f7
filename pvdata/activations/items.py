"""What a capture works on: (source_id, prompt text, answer) items and their tokenisation.

Kept apart from the capture stage (pvdata.pipelines.capture_stage, which writes to the warehouse) so
that the executors, which run the capture, need nothing from the pipelines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CaptureItem:
    source_id: str
    prompt_text: str  # the chat-templated prompt exactly as the model saw it
    answer: str


def encode_items(tokenizer: Any, items: Sequence[CaptureItem]) -> list[tuple[list[int], list[int]]]:
    """Prompt text and answer tokenised separately, no special tokens added (exact boundary)."""
    out = []
    for item in items:
        prompt = list(tokenizer(item.prompt_text, add_special_tokens=False)["input_ids"])
        answer = list(tokenizer(item.answer, add_special_tokens=False)["input_ids"]) if item.answer else []
        out.append((prompt, answer))
    return out
