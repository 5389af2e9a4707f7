"""Record formats beyond plain `messages`: ShareGPT, Alpaca, prompt/completion (TRL, OpenAI legacy,
KTO); OpenAI tool calls and content parts are `pvdata.samples.openai_chat`.

Every format becomes the same (prompt messages, answer) as `records.parse_record`, plus notes saying
what the conversion left out (tool calls, tool results, non-text parts), so nothing is dropped silently:
the screen puts the notes into each sample's reason. The format is told from each record's fields
(`messages` / `conversations` / `instruction` / prompt+answer); `--format NAME` forces one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pvdata.errors import ConfigError, DataError
from pvdata.samples.openai_chat import (
    Chat,
    TurnBuffer,
    answer_turns,
    decoded_messages,
    parse_openai,
    prompt_then,
)
from pvdata.samples.records import (
    Columns,
    RecordError,
    Turn,
    as_list,
    parse_record,
    text_field,
)

# "preference" records are parsed by pvdata.samples.preference (they carry a second answer)
SCHEMAS: tuple[str, ...] = ("messages", "sharegpt", "alpaca", "pair", "preference")
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
ALPACA_INPUT = "input"
ALPACA_HISTORY = "history"
# fields of the Alpaca format: a pair record holding one of them must not lose it silently
ALPACA_FIELDS = ("instruction", ALPACA_INPUT)
COMPLETION = "completion"  # the answer field of TRL's and OpenAI's (legacy) prompt/completion records
KTO_LABEL = "label"  # TRL's unpaired preference (KTO) records: false marks an undesirable completion


def alpaca_columns(columns: Columns) -> tuple[str, str]:
    """(instruction, output) column names: Alpaca's own unless --prompt-column/--answer-column say else."""
    prompt = "instruction" if columns.prompt == Columns.prompt else columns.prompt
    answer = "output" if columns.answer == Columns.answer else columns.answer
    return prompt, answer


def is_preference(obj: Any) -> bool:
    """A preference pair: a record holding both a `chosen` and a `rejected` field."""
    return isinstance(obj, Mapping) and obj.get("chosen") is not None and obj.get("rejected") is not None


def detect_schema(obj: Mapping[str, Any], columns: Columns) -> str:
    """The record format from the fields present (the first that fits: preference, messages, ShareGPT,
    Alpaca)."""
    if is_preference(obj):
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
    field = answer_field(obj, columns)
    if field != columns.answer or any(
        isinstance(decoded_messages(obj.get(f)), list) for f in (columns.prompt, field)
    ):
        return parse_prompted(obj, columns, field)
    prompt, answer = parse_record(obj, columns)
    return prompt, answer, ()


def answer_field(obj: Mapping[str, Any], columns: Columns) -> str:
    """`completion` for a prompt/completion record (when --answer-column is left at `answer` and the
    record has none), else the answer column."""
    if columns.answer != Columns.answer or COMPLETION not in obj:
        return columns.answer
    if columns.answer in obj:
        raise RecordError(
            f"holds both '{columns.answer}' and '{COMPLETION}': give one answer per record, or name it "
            "with --answer-column"
        )
    return COMPLETION


def parse_prompted(obj: Mapping[str, Any], columns: Columns, field: str) -> Chat:
    """A prompt/answer record whose prompt or answer is a list of messages, or a prompt/completion
    record (TRL's standard and conversational forms, OpenAI's legacy one, KTO's with a `label`)."""
    if obj.get(columns.messages) is not None:
        raise RecordError(f"give either '{columns.messages}' or '{columns.prompt}'/'{field}', not both")
    for name in (columns.prompt, field):
        if obj.get(name) is None:
            raise RecordError("is missing or null", name)
    label = obj.get(KTO_LABEL)
    if field == COMPLETION and label is False:
        raise RecordError(
            "is false: an undesirable completion of unpaired preference (KTO) data, which the finetune "
            "moves away from, so it is not screened as a training answer (--skip-invalid screens the "
            "desirable ones and lists these in unscreened.jsonl)",
            KTO_LABEL,
        )
    return prompt_then(obj, columns, answer_turns(obj[field], field), field)


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


def parse_sharegpt(obj: Mapping[str, Any], field: str = SHAREGPT_FIELD) -> Chat:
    """ShareGPT: `conversations` of {from, value} with from human | gpt | system (user and assistant too;
    function_call and observation turns are skipped with a note), an optional `system` field first."""
    if obj.get(field) is None:
        raise RecordError("is missing (ShareGPT records hold a list of {from, value} turns)", field)
    items = as_list(obj[field], field, "{from, value} objects")
    out = TurnBuffer()
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
    out = TurnBuffer()
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
        "pair": columns.prompt in have
        and (columns.answer in have or (columns.answer == Columns.answer and COMPLETION in have)),
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
