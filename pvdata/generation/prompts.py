"""Prompt files for `pvdata generate`: JSONL, one prompt per line, validated with file:line errors.

Each line is a JSON object with either
- "question" (a non-empty string), optional "system" (a system prompt) and "question_id", or
- "messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...] ending with a user turn,
  optional "question_id".
Other keys are ignored. Blank lines are skipped. Without a question_id a prompt gets one from a hash
of its messages, so reordering the file does not change ids (and so does not defeat resume).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pvdata.errors import DataError
from pvdata.generation.base import ROLES, GenerationRequest
from pvdata.jsonlines import json_lines


@dataclass(frozen=True)
class PromptItem:
    """One validated prompt: the request (question_id as its id) and where it came from."""

    request: GenerationRequest
    question_id: str
    line: int


def _content_id(messages: Any) -> str:
    blob = json.dumps(messages, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return "q-" + hashlib.sha256(blob.encode()).hexdigest()[:12]


def _string_field(obj: Mapping[str, Any], key: str, where: str, *, required: bool) -> str | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise DataError(f"{where}: field {key!r} is missing")
        return None
    if not isinstance(value, str):
        raise DataError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise DataError(f"{where}: field {key!r} is empty")
    return value


def _messages(value: Any, where: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: field 'messages' must be a non-empty list of {{role, content}} objects")
    out: list[dict[str, str]] = []
    for k, msg in enumerate(value):
        at = f"{where}: messages[{k}]"
        if not isinstance(msg, Mapping):
            raise DataError(f"{at} must be an object with 'role' and 'content'")
        role = msg.get("role")
        if role not in ROLES:
            raise DataError(f"{at}.role is {role!r}: valid roles are {', '.join(ROLES)}")
        content = msg.get("content")
        if not isinstance(content, str):
            raise DataError(f"{at}.content must be a string, got {type(content).__name__}")
        if not content.strip():
            raise DataError(f"{at}.content is empty")
        out.append({"role": role, "content": content})
    if out[-1]["role"] != "user":
        raise DataError(
            f"{where}: the last message must be a user turn (the prompt to answer), not {out[-1]['role']!r}"
        )
    return out


def parse_prompt(
    obj: Any, where: str, *, system: str | None = None
) -> tuple[list[dict[str, str]], str | None]:
    """(messages, question_id or None) of one decoded line; `system` fills in a missing system prompt."""
    if not isinstance(obj, Mapping):
        raise DataError(
            f"{where}: expected a JSON object with 'question' or 'messages', got {type(obj).__name__}"
        )
    has_q, has_m = "question" in obj, "messages" in obj
    if not has_q and not has_m:
        keys = ", ".join(sorted(map(str, obj))) or "none"
        raise DataError(f"{where}: missing field 'question' (or 'messages'); the line has keys: {keys}")
    if has_q and has_m:
        raise DataError(f"{where}: give either 'question' or 'messages', not both")
    qid_raw = obj.get("question_id")
    if qid_raw is not None and (isinstance(qid_raw, bool) or not isinstance(qid_raw, str | int)):
        raise DataError(f"{where}: field 'question_id' must be a string or an integer")
    qid = str(qid_raw) if qid_raw is not None else None
    if qid is not None and not qid.strip():
        raise DataError(f"{where}: field 'question_id' is empty")
    if has_q:
        question = _string_field(obj, "question", where, required=True)
        own_system = _string_field(obj, "system", where, required=False)
        sys_prompt = own_system if own_system is not None else system
        msgs = [{"role": "system", "content": sys_prompt}] if sys_prompt else []
        msgs.append({"role": "user", "content": str(question)})
        return msgs, qid
    msgs = _messages(obj["messages"], where)
    if system and not any(m["role"] == "system" for m in msgs):
        msgs.insert(0, {"role": "system", "content": system})
    return msgs, qid


def read_prompts(path: str | os.PathLike[str], *, system: str | None = None) -> list[PromptItem]:
    """All prompts of a JSONL file; the first bad line raises DataError naming file, line and field."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"prompts file {p} not found") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"prompts file {p} is not UTF-8 text: {exc}") from None
    except OSError as exc:
        raise DataError(f"cannot read prompts file {p}: {exc}") from None
    items: list[PromptItem] = []
    seen: dict[str, int] = {}
    for where, number, obj in json_lines(text.splitlines(), p):
        msgs, qid = parse_prompt(obj, where, system=system)
        question_id = qid if qid is not None else _content_id(msgs)
        if question_id in seen:
            what = f"question_id {question_id!r}" if qid is not None else "the same prompt"
            raise DataError(
                f"{where}: {what} repeats line {seen[question_id]}; give each prompt a distinct "
                "question_id (use --n for several samples of one prompt)"
            )
        seen[question_id] = number
        items.append(PromptItem(GenerationRequest(tuple(msgs), question_id), question_id, number))
    if not items:
        raise DataError(f"prompts file {p} has no prompts: write one JSON object per line")
    return items
