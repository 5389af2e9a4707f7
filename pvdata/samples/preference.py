"""Preference records (DPO, RLHF reward data): one prompt, a `chosen` and a `rejected` answer.

A preference finetune pushes the model towards the chosen answer and away from the rejected one, so a
pair is screened on both: the chosen answer as an ordinary sample (its own projection, or its
difference from the model's base answer), and the `preference` method's chosen-minus-rejected
difference (`pvdata.screening.scoring`). Every common layout becomes the same (prompt, chosen, notes,
rejected):

- `prompt` text + `chosen` / `rejected` text (TRL's standard form; `--prompt-column question` and an
  optional `system` field read Orca-style pairs);
- `prompt` as a list of messages, the sides as text or as lists of assistant messages (TRL's
  conversational form);
- `chosen` / `rejected` as whole chats with no prompt field, or with one the chats repeat
  (UltraFeedback): the shared turns before the last assistant turn are the prompt;
- `chosen` / `rejected` as Human:/Assistant: transcripts (Anthropic HH-RLHF).

Both sides must have the same prompt: a pair whose sides answer different conversations is invalid.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from pvdata.samples.formats import DEFAULT_COLUMNS, is_preference, parse_chat
from pvdata.samples.openai_chat import Chat, answer_turns, decoded_messages, parse_openai, prompt_then
from pvdata.samples.records import Columns, Message, RecordError

PREFERENCE = "preference"
CHOSEN, REJECTED = "chosen", "rejected"
SIDES = (CHOSEN, REJECTED)
PROMPT_ROLES = ("system", "developer", "user")  # a side holding one is a whole chat, not a continuation
TRANSCRIPT_ROLES = {"Human": "user", "Assistant": "assistant"}
_TRANSCRIPT_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):")

# (prompt messages, answer, notes, rejected answer or None): what every reader yields per valid record
ParsedSample = tuple[tuple[Message, ...], str, tuple[str, ...], str | None]


def parse_sample(obj: Any, columns: Columns, schema: str | None = None) -> ParsedSample:
    """One decoded record in `schema` (or the one its fields show), preference records included."""
    if schema == PREFERENCE or (schema is None and is_preference(obj)):  # before parse_chat refuses it
        return parse_preference(obj, columns)
    prompt, answer, notes = parse_chat(obj, columns, schema)
    return prompt, answer, notes, None


def parse_preference(obj: Any, columns: Columns = DEFAULT_COLUMNS) -> ParsedSample:
    """(prompt, chosen answer, notes, rejected answer) of a preference record; see the module doc."""
    if not isinstance(obj, Mapping):
        raise RecordError(
            f"expected a JSON object with '{CHOSEN}' and '{REJECTED}', got {type(obj).__name__}"
        )
    for side in SIDES:
        if obj.get(side) is None:
            raise RecordError(f"is missing (a preference record has '{CHOSEN}' and '{REJECTED}')", side)
    chats = {side: _side_chat(obj, side, columns) for side in SIDES}
    (prompt, chosen, chosen_notes), (other, rejected, rejected_notes) = chats[CHOSEN], chats[REJECTED]
    if prompt != other:
        raise RecordError(
            f"'{CHOSEN}' and '{REJECTED}' continue different conversations "
            f"({_first_difference(prompt, other)}): a preference pair answers one prompt"
        )
    notes = tuple(f"{CHOSEN}: {n}" for n in chosen_notes) + tuple(f"{REJECTED}: {n}" for n in rejected_notes)
    return prompt, chosen, notes, rejected


def _side_chat(obj: Mapping[str, Any], side: str, columns: Columns) -> Chat:
    """The whole chat one side stands for: its prompt (from `prompt`, or from the side itself) and answer."""
    value = decoded_messages(obj[side])
    if obj.get(columns.prompt) is None and isinstance(value, str):
        return _transcript(value, side, columns)
    turns = answer_turns(value, side)
    whole = any(isinstance(m, Mapping) and m.get("role") in PROMPT_ROLES for m in turns)
    if whole or obj.get(columns.prompt) is None:
        return parse_openai(turns, side)  # a whole chat; a `prompt` field beside it only repeats its turns
    return prompt_then(obj, columns, turns, side)


def _transcript(text: str, side: str, columns: Columns) -> Chat:
    """A Human:/Assistant: transcript (HH-RLHF) as a chat; its last turn must be the Assistant's."""
    parts = _TRANSCRIPT_TURN.split(text.lstrip("\n"))
    if len(parts) < 3 or parts[0].strip():
        raise RecordError(
            f"is text with no '{columns.prompt}' field beside it: give a prompt field, or the whole "
            "conversation (a list of messages, or a transcript of '\\n\\nHuman: ...' and "
            "'\\n\\nAssistant: ...' turns)",
            side,
        )
    turns = [
        {"role": TRANSCRIPT_ROLES[role], "content": content.strip()}
        for role, content in zip(parts[1::2], parts[2::2], strict=True)
    ]
    return parse_openai(turns, side)


def _first_difference(a: Sequence[Message], b: Sequence[Message]) -> str:
    for k, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"prompt turn {k} differs"
    return f"the prompts have {len(a)} and {len(b)} turns"
