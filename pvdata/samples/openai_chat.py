"""OpenAI chats (content parts, tool calls, tool results) -> (prompt, answer, notes), and the other
record formats' way of putting a prompt before an answer.

Every format that ends up as OpenAI-style turns goes through `parse_openai`, so the rules (what is
skipped, what is noted, where the answer is) are the same for messages, preference sides and
prompt/completion records.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pvdata.samples.records import (
    ROLES,
    Columns,
    Message,
    RecordError,
    Turn,
    as_list,
    parse_messages,
    split_chat,
    text_field,
)

Chat = tuple[tuple[Message, ...], str, tuple[str, ...]]
TEXT_PARTS = ("text", "input_text", "output_text")


class TurnBuffer:
    """Turns kept so far; an assistant turn that follows a skipped tool exchange joins the assistant
    text before it (one answer to the user, split only by tool calls)."""

    def __init__(self) -> None:
        self.turns: list[Turn] = []
        self.notes: list[str] = []
        self.skipped_since = False
        self.calls = 0

    def skip(self, note: str) -> None:
        self.notes.append(note)
        self.skipped_since = True

    def add(self, turn: Turn) -> None:
        last = self.turns[-1] if self.turns else None
        if last is not None and last.role == turn.role == "assistant" and self.skipped_since:
            self.turns[-1] = Turn(turn.at, "assistant", last.content + "\n\n" + turn.content)
            self.notes.append(f"{last.at} and {turn.at} screened as one answer")
        else:
            self.turns.append(turn)
        self.skipped_since = False

    def chat(self, field: str) -> Chat:
        prompt, answer = split_chat(self.turns, field)
        return prompt, answer, tuple(self.notes)


def _uses_extensions(items: Sequence[Any]) -> bool:
    for msg in items:
        if not isinstance(msg, Mapping):
            return False
        if msg.get("role") not in ROLES or not isinstance(msg.get("content"), str):
            return True
        if msg.get("tool_calls") or msg.get("function_call"):
            return True
    return False


def parse_openai(value: Any, field: str = "messages") -> Chat:
    """An OpenAI chat: plain {role, content} turns, or with content parts, tool calls and tool results.

    Text parts are joined with a newline; other parts (images, audio) are left out with a note. An
    assistant turn with tool calls and no text, and every tool result, is skipped with a note; the
    screened answer is the last assistant turn with text.
    """
    items = as_list(value, field, "{role, content} objects")
    if not _uses_extensions(items):
        prompt, answer = parse_messages(items, field)
        return prompt, answer, ()
    out = TurnBuffer()
    for k, msg in enumerate(items):
        at = f"{field}[{k}]"
        if not isinstance(msg, Mapping):
            raise RecordError(f"must be an object with 'role' and 'content', got {type(msg).__name__}", at)
        role = "system" if msg.get("role") == "developer" else msg.get("role")
        if role in ("tool", "function"):
            if not out.calls:
                raise RecordError(
                    f"is {role!r}: valid roles are {', '.join(ROLES)} (a tool turn must answer an assistant "
                    "turn's tool_calls)",
                    f"{at}.role",
                )
            out.skip(f"{at} ({role} result) skipped")
            continue
        if role not in ROLES:
            raise RecordError(f"is {role!r}: valid roles are {', '.join(ROLES)}, tool", f"{at}.role")
        text, left_out = content_text(msg.get("content"), f"{at}.content")
        calls = msg.get("tool_calls") or msg.get("function_call")
        if calls and role == "assistant":
            out.calls += 1
            n = len(calls) if isinstance(calls, list) else 1
            if text is None:
                out.skip(f"{at} (assistant tool call, no text) skipped")
                continue
            out.notes.append(f"{at}: its text is screened, its {n} tool call(s) are not")
        elif calls:
            raise RecordError(f"only assistant turns may make tool calls, this is a {role} turn", at)
        if text is None:
            content = msg.get("content")
            if isinstance(content, list):
                raise RecordError('has no text part: give at least one {"type": "text", "text": ...}', at)
            text_field(content, f"{at}.content")  # raises: missing, not a string or empty
        out.notes.extend(left_out)
        out.add(Turn(at, str(role), str(text)))
    return out.chat(field)


def content_text(content: Any, at: str) -> tuple[str | None, list[str]]:
    """The text of a message's content (a string or a list of parts) and notes on parts left out."""
    if content is None:
        return None, []
    if isinstance(content, str):
        return (content if content.strip() else None), []
    if not isinstance(content, list):
        raise RecordError(f"must be a string or a list of parts, got {type(content).__name__}", at)
    texts: list[str] = []
    notes: list[str] = []
    for j, part in enumerate(content):
        where = f"{at}[{j}]"
        if not isinstance(part, Mapping) or not isinstance(part.get("type"), str):
            raise RecordError(
                'must be a part object with a "type" (e.g. {"type": "text", "text": ...})', where
            )
        if part["type"] in TEXT_PARTS:
            texts.append(text_field(part.get("text"), f"{where}.text"))
        else:
            notes.append(f"{where} ({part['type']} part) left out")
    joined = "\n".join(texts)
    return (joined if joined.strip() else None), notes


def decoded_messages(value: Any) -> Any:
    """A CSV cell or string column may hold a list of messages as JSON text; any other text (an answer
    that merely starts with `[`) is the text itself."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            decoded = json.loads(value)
        except json.JSONDecodeError:
            return value
        if isinstance(decoded, list) and decoded and all(isinstance(m, Mapping) for m in decoded):
            return decoded
    return value


def prompt_then(obj: Mapping[str, Any], columns: Columns, answer: list[Any], field: str) -> Chat:
    """The record's prompt (text with an optional system field, or a list of messages) followed by the
    answer's turns, as one chat: what a preference side or a completion continues."""
    prompt = decoded_messages(obj[columns.prompt])
    if isinstance(prompt, str):
        turns: list[Any] = []
        system = obj.get(columns.system)
        if system is not None and not (isinstance(system, str) and not system.strip()):
            turns.append({"role": "system", "content": text_field(system, columns.system)})
        turns.append({"role": "user", "content": text_field(prompt, columns.prompt)})
    elif isinstance(prompt, Sequence) and not isinstance(prompt, bytes) and prompt:
        turns = list(prompt)
    else:
        raise RecordError("must be the prompt text, or a non-empty list of messages", columns.prompt)
    return parse_openai(turns + answer, f"{columns.prompt}+{field}")


def answer_turns(value: Any, field: str) -> list[Any]:
    """An answer given as text, or as a non-empty list of (assistant, tool) messages."""
    value = decoded_messages(value)
    if isinstance(value, str):
        return [{"role": "assistant", "content": text_field(value, field)}]
    if isinstance(value, Sequence) and not isinstance(value, bytes) and value:
        return list(value)
    raise RecordError("must be the answer text, or a non-empty list of messages", field)
