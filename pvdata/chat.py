"""Chat rendering and tokenisation with an exact prompt/answer boundary.

The prompt is rendered with the chat template (generation prompt added) and tokenised WITHOUT adding
special tokens again (the research code's double-BOS defect); the answer is tokenised on its own and the
ids are concatenated, so the boundary between prompt and answer is exact.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pvdata.errors import DataError, ModelError

Message = Mapping[str, str]


@dataclass(frozen=True)
class Conversation:
    """Prompt messages (everything before the answer) and the assistant answer to teacher-force."""

    messages: tuple[Message, ...]
    answer: str

    @classmethod
    def from_pair(cls, question: str, answer: str, system: str | None = None) -> Conversation:
        msgs: list[Message] = [{"role": "system", "content": system}] if system else []
        msgs.append({"role": "user", "content": question})
        return cls(tuple(msgs), answer)


def render_prompt(tokenizer: Any, messages: Sequence[Message]) -> str:
    """The chat-templated prompt text, ending with the assistant generation prompt."""
    if not getattr(tokenizer, "chat_template", None):
        raise ModelError(
            f"the tokenizer of this model ({type(tokenizer).__name__}) has no chat template; "
            "pvdata needs a chat model (an -Instruct/-Chat checkpoint) or a tokenizer with chat_template set"
        )
    return str(tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True))


def encode_prompt(tokenizer: Any, messages: Sequence[Message]) -> list[int]:
    ids = tokenizer(render_prompt(tokenizer, messages), add_special_tokens=False)["input_ids"]
    return list(ids)


def encode_answer(tokenizer: Any, answer: str) -> list[int]:
    return list(tokenizer(answer, add_special_tokens=False)["input_ids"]) if answer else []


def encode_conversation(tokenizer: Any, conv: Conversation) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids) with no special tokens added beyond what the template renders."""
    if not conv.messages:
        raise DataError("a conversation needs at least one prompt message before the answer")
    return encode_prompt(tokenizer, conv.messages), encode_answer(tokenizer, conv.answer)
