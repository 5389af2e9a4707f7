"""One training record -> (prompt messages, answer): the validation every input format shares.

A record is either a chat (`messages`: system, user and assistant turns) or a prompt/answer pair. The
answer is the LAST assistant turn and the prompt is everything before it, so a multi-turn chat is
screened on the turn a finetune would learn last, conditioned on the whole conversation before it.
Every problem is a `RecordError` naming the field and what is valid; the reader adds file and line.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

ROLES: tuple[str, ...] = ("system", "user", "assistant")

Message = dict[str, str]


class RecordError(ValueError):
    """A record that cannot be screened; `field` is where the problem is (None for the whole record)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.message = message

    def __str__(self) -> str:
        return f"field {self.field}: {self.message}" if self.field else self.message


@dataclass(frozen=True)
class Columns:
    """Which keys of a prompt/answer record hold what (CSV, Parquet and HF datasets name them freely)."""

    prompt: str = "prompt"
    answer: str = "answer"
    system: str = "system"
    messages: str = "messages"


def text_field(value: Any, field: str) -> str:
    """A non-empty string, else a RecordError naming the field."""
    if value is None:
        raise RecordError("is missing or null; give a non-empty string", field)
    if not isinstance(value, str):
        raise RecordError(f"must be a string, got {type(value).__name__}", field)
    if not value.strip():
        raise RecordError("is empty; give the text of the turn", field)
    return value


def as_list(value: Any, field: str, of: str) -> Sequence[Any]:
    """A non-empty list; CSV cells and string columns hold it as JSON text."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise RecordError(f"is not a JSON list of {of} ({exc.msg})", field) from None
    if isinstance(value, Mapping) or not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
        raise RecordError(f"must be a list of {of}", field)
    if not value:
        raise RecordError("is an empty list; give at least a user and an assistant turn", field)
    return value


def parse_messages(value: Any, field: str = "messages") -> tuple[tuple[Message, ...], str]:
    """(prompt messages, answer) of a chat; the answer is the last assistant turn.

    Valid: a non-empty list of {role, content} with role system | user | assistant, non-empty string
    content, a system turn only first, at least one assistant turn, a user turn right before the last
    assistant turn, and nothing after it (the answer must end the chat).
    """
    value = as_list(value, field, "{role, content} objects")
    turns: list[Turn] = []
    for k, msg in enumerate(value):
        at = f"{field}[{k}]"
        if not isinstance(msg, Mapping):
            raise RecordError(f"must be an object with 'role' and 'content', got {type(msg).__name__}", at)
        role = msg.get("role")
        if role not in ROLES:
            raise RecordError(f"is {role!r}: valid roles are {', '.join(ROLES)}", f"{at}.role")
        turns.append(Turn(at, str(role), text_field(msg.get("content"), f"{at}.content")))
    return split_chat(turns, field)


@dataclass(frozen=True)
class Turn:
    """One checked turn of a chat; `at` names where it came from (messages[2], conversations[0]...)."""

    at: str
    role: str
    content: str


def split_chat(turns: Sequence[Turn], field: str) -> tuple[tuple[Message, ...], str]:
    """(prompt messages, answer) of checked turns, with the chat rules of `parse_messages`; errors name
    each turn by its own `at`, so a format that drops or renames turns still points at the input."""
    if not turns:
        raise RecordError("holds no turns; give at least a user and an assistant turn", field)
    for k, turn in enumerate(turns):
        if turn.role == "system" and k != 0:
            raise RecordError("a system turn may only come first", f"{turn.at}.role")
    last = max((k for k, t in enumerate(turns) if t.role == "assistant"), default=None)
    if last is None:
        raise RecordError("has no assistant turn: the answer to screen is the last assistant message", field)
    if last != len(turns) - 1:
        raise RecordError(
            f"has a {turns[-1].role} turn after the last assistant turn: the answer must end the chat",
            turns[-1].at,
        )
    if last == 0 or turns[last - 1].role != "user":
        before = "nothing" if last == 0 else f"a {turns[last - 1].role} turn"
        raise RecordError(
            f"the last assistant turn follows {before}: it must answer a user turn", turns[last].at
        )
    prompt = tuple({"role": t.role, "content": t.content} for t in turns[:last])
    return prompt, turns[last].content


def parse_record(obj: Any, columns: Columns = Columns()) -> tuple[tuple[Message, ...], str]:
    """(prompt messages, answer) of one decoded record: a chat or a prompt/answer pair."""
    if not isinstance(obj, Mapping):
        raise RecordError(
            f"expected a JSON object with '{columns.messages}' or '{columns.prompt}' and "
            f"'{columns.answer}', got {type(obj).__name__}"
        )
    has_messages = obj.get(columns.messages) is not None
    has_pair = columns.prompt in obj or columns.answer in obj
    if has_messages and has_pair:
        raise RecordError(
            f"give either '{columns.messages}' or '{columns.prompt}'/'{columns.answer}', not both"
        )
    if has_messages:
        return parse_messages(obj[columns.messages], columns.messages)
    if not has_pair:
        keys = ", ".join(sorted(map(str, obj))) or "none"
        raise RecordError(
            f"missing field '{columns.messages}' (or '{columns.prompt}' and '{columns.answer}'); "
            f"the record has keys: {keys}"
        )
    prompt = text_field(obj.get(columns.prompt), columns.prompt)
    answer = text_field(obj.get(columns.answer), columns.answer)
    system = obj.get(columns.system)
    msgs: list[Message] = []
    if system is not None and not (isinstance(system, str) and not system.strip()):
        msgs.append({"role": "system", "content": text_field(system, columns.system)})
    msgs.append({"role": "user", "content": prompt})
    return tuple(msgs), answer
