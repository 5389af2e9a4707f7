"""Record formats beyond plain `messages`: ShareGPT, Alpaca, OpenAI tool calls and content parts.

Every format becomes the same (prompt messages, answer) as `records.parse_record`, plus notes saying
what the conversion left out (tool calls, tool results, non-text parts), so nothing is dropped silently:
the screen puts the notes into each sample's reason. The format is told from each record's fields
(`messages` / `conversations` / `instruction` / prompt+answer); `--format NAME` forces one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pvdata.errors import ConfigError, DataError
from pvdata.samples.records import (
    ROLES,
    Columns,
    Message,
    RecordError,
    Turn,
    as_list,
    parse_messages,
    parse_record,
    split_chat,
    text_field,
)

# "preference" records are parsed by pvdata.samples.preference (they carry a second answer)
SCHEMAS: tuple[str, ...] = ("messages", "sharegpt", "alpaca", "pair", "preference")
Chat = tuple[tuple[Message, ...], str, tuple[str, ...]]
DEFAULT_COLUMNS = Columns()

SHAREGPT_FIELD = "conversations"
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
}
SHAREGPT_TOOLS = ("function_call", "observation", "tool", "function")  # skipped, with a note
TEXT_PARTS = ("text", "input_text", "output_text")
ALPACA_INPUT = "input"
ALPACA_HISTORY = "history"
# fields of the Alpaca format: a pair record holding one of them must not lose it silently
ALPACA_FIELDS = ("instruction", ALPACA_INPUT)


def alpaca_columns(columns: Columns) -> tuple[str, str]:
    """(instruction, output) column names: Alpaca's own unless --prompt-column/--answer-column say else."""
    prompt = "instruction" if columns.prompt == Columns.prompt else columns.prompt
    answer = "output" if columns.answer == Columns.answer else columns.answer
    return prompt, answer


def detect_schema(obj: Mapping[str, Any], columns: Columns) -> str:
    """The record format from the fields present (the first that fits: preference, messages, ShareGPT,
    Alpaca)."""
    if obj.get("chosen") is not None and obj.get("rejected") is not None:
        return "preference"
    if obj.get(columns.messages) is not None:
        if obj.get(SHAREGPT_FIELD) is not None:
            raise RecordError(
                f"holds both '{columns.messages}' and '{SHAREGPT_FIELD}': give one chat per record, or "
                "pass --format messages|sharegpt to pick one"
            )
        return "messages"
    if obj.get(SHAREGPT_FIELD) is not None:
        return "sharegpt"
    pair = columns.prompt in obj and columns.answer in obj and columns.prompt != "instruction"
    if "instruction" in obj and columns.prompt in (Columns.prompt, "instruction") and not pair:
        return "alpaca"
    return "pair"


def parse_chat(obj: Any, columns: Columns = DEFAULT_COLUMNS, schema: str | None = None) -> Chat:
    """(prompt messages, answer, notes) of one decoded record, in `schema` or the one its fields show."""
    if not isinstance(obj, Mapping):
        raise RecordError(
            f"expected a JSON object with '{columns.messages}', '{SHAREGPT_FIELD}', 'instruction' + 'output' "
            f"or '{columns.prompt}' + '{columns.answer}', got {type(obj).__name__}"
        )
    schema = schema or detect_schema(obj, columns)
    if schema == "preference":
        raise RecordError(
            "is a preference record (chosen/rejected), which holds two answers: read it with "
            "pvdata.samples.preference.parse_sample"
        )
    if schema == "messages":
        if obj.get(columns.messages) is None:
            raise RecordError("is missing (--format messages)", columns.messages)
        if columns.prompt in obj or columns.answer in obj:
            raise RecordError(
                f"give either '{columns.messages}' or '{columns.prompt}'/'{columns.answer}', not both"
            )
        return parse_openai(obj[columns.messages], columns.messages)
    if schema == "sharegpt":
        return parse_sharegpt(obj)
    if schema == "alpaca":
        return parse_alpaca(obj, columns)
    _check_pair_fields(obj, columns)
    prompt, answer = parse_record(obj, columns)
    return prompt, answer, ()


def _check_pair_fields(obj: Mapping[str, Any], columns: Columns) -> None:
    """A prompt/answer record must not hold Alpaca text its columns leave out (a silent drop)."""
    used = (columns.prompt, columns.answer, columns.system, columns.messages)
    for name in ALPACA_FIELDS:
        value = obj.get(name)
        if name not in used and isinstance(value, str) and value.strip():
            raise RecordError(
                f"holds text that --prompt-column {columns.prompt} / --answer-column {columns.answer} leave "
                "out: pass --format alpaca (the user turn is instruction, a blank line, then input), or "
                "remove the field",
                name,
            )


class _Turns:
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
    out = _Turns()
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


def parse_sharegpt(obj: Mapping[str, Any], field: str = SHAREGPT_FIELD) -> Chat:
    """ShareGPT: `conversations` of {from, value} with from human | gpt | system (user and assistant too;
    function_call and observation turns are skipped with a note), an optional `system` field first."""
    if obj.get(field) is None:
        raise RecordError("is missing (ShareGPT records hold a list of {from, value} turns)", field)
    items = as_list(obj[field], field, "{from, value} objects")
    out = _Turns()
    system = obj.get("system")
    if system is not None and not (isinstance(system, str) and not system.strip()):
        out.add(Turn("system", "system", text_field(system, "system")))
    for k, msg in enumerate(items):
        at = f"{field}[{k}]"
        if not isinstance(msg, Mapping):
            raise RecordError(f"must be an object with 'from' and 'value', got {type(msg).__name__}", at)
        keys = ("from", "value") if "from" in msg or "role" not in msg else ("role", "content")
        who = msg.get(keys[0])
        if who in SHAREGPT_TOOLS:
            out.skip(f"{at} ({who}) skipped")
            continue
        role = SHAREGPT_ROLES.get(who) if isinstance(who, str) else None
        if role is None:
            raise RecordError(
                f"is {who!r}: valid values are {', '.join(SHAREGPT_ROLES)} ({', '.join(SHAREGPT_TOOLS)} "
                "turns are skipped)",
                f"{at}.{keys[0]}",
            )
        out.add(Turn(at, role, text_field(msg.get(keys[1]), f"{at}.{keys[1]}")))
    if obj.get("tools"):
        out.notes.append("tools: the tool descriptions are not part of the screened prompt")
    return out.chat(field)


def parse_alpaca(obj: Mapping[str, Any], columns: Columns = DEFAULT_COLUMNS) -> Chat:
    """Alpaca: `instruction`, optional `input`, `output` (and optional `system`, `history` of
    [instruction, output] pairs). The user turn is the instruction, a blank line, then the input."""
    prompt_col, answer_col = alpaca_columns(columns)
    instruction = text_field(obj.get(prompt_col), prompt_col)
    extra = obj.get(ALPACA_INPUT) if prompt_col != ALPACA_INPUT else None
    if extra is not None and not isinstance(extra, str):
        raise RecordError(f"must be a string (or empty), got {type(extra).__name__}", ALPACA_INPUT)
    user = f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction
    out = _Turns()
    system = obj.get(columns.system)
    if system is not None and not (isinstance(system, str) and not system.strip()):
        out.add(Turn(columns.system, "system", text_field(system, columns.system)))
    history = obj.get(ALPACA_HISTORY)
    if history is not None and history != [] and history != "":
        for i, pair in enumerate(as_list(history, ALPACA_HISTORY, "[instruction, output] pairs")):
            at = f"{ALPACA_HISTORY}[{i}]"
            if not isinstance(pair, Sequence) or isinstance(pair, str) or len(pair) != 2:
                raise RecordError("must be an [instruction, output] pair of strings", at)
            out.add(Turn(f"{at}[0]", "user", text_field(pair[0], f"{at}[0]")))
            out.add(Turn(f"{at}[1]", "assistant", text_field(pair[1], f"{at}[1]")))
    out.add(Turn(prompt_col, "user", user))
    out.add(Turn(answer_col, "assistant", text_field(obj.get(answer_col), answer_col)))
    return out.chat(prompt_col)


def split_format(fmt: str | None, containers: Sequence[str]) -> tuple[str | None, str | None]:
    """--format: a container (jsonl, json, csv...), a record format (sharegpt, alpaca...) or both,
    comma separated (e.g. json,sharegpt)."""
    container = schema = None
    for part in (p.strip() for p in (fmt or "").split(",") if p.strip()):
        if part in containers and container is None:
            container = part
        elif part in SCHEMAS and schema is None:
            schema = part
        else:
            raise ConfigError(
                f"--format {fmt!r} is not valid: give a file format ({', '.join(containers)}), a record "
                f"format ({', '.join(SCHEMAS)}) or one of each, comma separated"
            )
    return container, schema


def check_columns(where: str, names: Sequence[str], columns: Columns, schema: str | None) -> None:
    """A table (CSV, Parquet, HF) must have the columns of some record format before any row is read."""
    have = set(names)
    prompt, answer = alpaca_columns(columns)
    fits = {
        "messages": columns.messages in have,
        "sharegpt": SHAREGPT_FIELD in have,
        "alpaca": prompt in have and answer in have,
        "pair": columns.prompt in have and columns.answer in have,
        "preference": "chosen" in have and "rejected" in have,
    }
    if (schema is None and any(fits.values())) or (schema is not None and fits[schema]):
        return
    wanted = {
        "messages": f"'{columns.messages}' column",
        "sharegpt": f"'{SHAREGPT_FIELD}' column",
        "alpaca": f"'{prompt}' + '{answer}' columns",
        "pair": f"'{columns.prompt}' + '{columns.answer}' columns",
        "preference": "'chosen' + 'rejected' columns",
    }
    need = wanted[schema] if schema else " or ".join(wanted.values())
    raise DataError(
        f"{where}: no {need}; its columns are: {', '.join(names) or 'none'} (name them with "
        "--prompt-column/--answer-column/--messages-column, or pick a record format with --format)"
    )
