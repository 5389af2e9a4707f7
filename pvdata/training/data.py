"""Training data: `messages` JSONL (or ShareGPT / Alpaca / JSON arrays) in, token ids with an
assistant-only label mask out.

Each assistant turn is tokenised the way the model meets it at inference: the chat-templated prompt
up to and including the generation prompt (no special tokens added again), then the answer tokenised
on its own, then the template's own end-of-turn token(s). The end-of-turn token is trained (the model
must learn to stop) and is never doubled: it comes from the template's rendering, and an EOS is only
appended for a template that renders none.

Multi-turn: with `train_on="all_assistant"` (the default, as responses-only masking in common SFT
tooling does) every assistant turn is trained, each conditioned on the whole conversation before it;
with "last_assistant" only the final one is, and earlier ones are context. System and user turns and
the template's markup are never trained.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pvdata.errors import DataError

ROLES = ("system", "user", "assistant")
# ShareGPT, Alpaca, prompt/answer (or completion) pairs, preference pairs
OTHER_FORMAT_FIELDS = ("conversations", "instruction", "prompt", "answer", "chosen")


@dataclass(frozen=True)
class Sample:
    """One conversation from the file, with its 1-based line number for error messages."""

    messages: tuple[Mapping[str, str], ...]
    line: int


@dataclass(frozen=True)
class EncodedSample:
    """Token ids; `labels[t]` says token t is trained; `response[t]` marks answer tokens (no end-of-turn)
    of the trained turns, the positions the per-step projection averages over (ALGORITHMS.md section 7)."""

    ids: tuple[int, ...]
    labels: tuple[bool, ...]
    response: tuple[bool, ...]
    line: int = 0

    @property
    def n_trained(self) -> int:
        return sum(self.labels)


@dataclass
class TrainingData:
    """Encoded samples of one file plus those skipped with a reason (counted, never silently lost)."""

    path: str
    sha256: str
    samples: list[EncodedSample]
    skipped: list[tuple[int, str]] = field(default_factory=list)

    @property
    def n_tokens(self) -> int:
        return sum(len(s.ids) for s in self.samples)


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_samples(path: str | Path) -> list[Sample]:
    """Parse a JSONL file (or a `.json` array; either may be gzip, bzip2 or xz compressed) of chats;
    errors name file, line and field.

    A record is {"messages": [{"role", "content"}, ...]}, or any text-only record format the screen
    reads (ShareGPT `conversations`, Alpaca `instruction`/`input`/`output`, `prompt`/`answer`).
    """
    from pvdata.jsonlines import json_lines
    from pvdata.samples.compression import data_suffix, read_text
    from pvdata.samples.readers import is_json_array, json_array_items

    p = Path(path)
    if not p.is_file():
        raise DataError(f"training data {p} does not exist")
    out: list[Sample] = []
    if data_suffix(p) == ".json" and is_json_array(p):
        for n, obj in json_array_items(p):
            out.append(Sample(_chat(obj, f"{p}:{n}"), n))
    else:
        # Universal newlines, as a text-mode file reads them; .gz/.bz2/.xz files are read decompressed.
        for where, n, obj in json_lines(io.StringIO(read_text(p), newline=None), p):
            out.append(Sample(_chat(obj, where), n))
    if not out:
        raise DataError(f"training data {p} holds no samples (one JSON object per line expected)")
    return out


def _chat(obj: Any, where: str) -> tuple[Mapping[str, str], ...]:
    """A `messages` record as it is (every turn trains); another record format through the screen's
    parsers, refused when converting it would leave something out (tool calls, non-text parts)."""
    if not isinstance(obj, dict) or not any(k in obj for k in OTHER_FORMAT_FIELDS):
        return _check_messages(obj, where)
    from pvdata.samples.dataset import canonical_messages
    from pvdata.samples.formats import is_preference, parse_chat
    from pvdata.samples.records import RecordError

    if is_preference(obj):
        raise DataError(
            f"{where}: a preference record (chosen/rejected); pvdata train is supervised finetuning on "
            "chats: give the chosen chats as messages (screen the pairs with pvdata screen --method "
            "preference)"
        )
    try:
        prompt, answer, notes = parse_chat(obj)
    except RecordError as exc:
        raise DataError(f"{where}: {exc}") from None
    if notes:
        raise DataError(
            f"{where}: pvdata trains text chats only, and this record would lose: {'; '.join(notes)}"
        )
    return tuple(canonical_messages(prompt, answer))


def _check_messages(obj: Any, where: str) -> tuple[Mapping[str, str], ...]:
    if not isinstance(obj, dict) or "messages" not in obj:
        raise DataError(f'{where}: expected an object with a "messages" list, e.g. {{"messages": [...]}}')
    messages = obj["messages"]
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: field messages must be a non-empty list of {{role, content}} objects")
    for i, m in enumerate(messages):
        if (
            not isinstance(m, dict)
            or not isinstance(m.get("role"), str)
            or not isinstance(m.get("content"), str)
        ):
            raise DataError(f"{where}: field messages[{i}] must be an object with string role and content")
        if m["role"] not in ROLES:
            raise DataError(
                f"{where}: field messages[{i}].role {m['role']!r} is not one of {', '.join(ROLES)}"
            )
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError(f"{where}: no assistant message: nothing to train on")
    if messages[0]["role"] == "assistant":
        raise DataError(f"{where}: field messages[0] is an assistant turn with no prompt before it")
    return tuple({"role": m["role"], "content": m["content"]} for m in messages)


def _tok(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def _render(tokenizer: Any, messages: Sequence[Mapping[str, str]], generation_prompt: bool) -> str:
    from pvdata.chat import render_prompt

    if generation_prompt:
        return render_prompt(tokenizer, messages)
    return str(tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=False))


def end_of_turn(tokenizer: Any, tail: str) -> tuple[list[int], str]:
    """The end-of-turn ids the template puts after an answer, and the text they cover.

    `tail` is what the template renders after the answer text (e.g. "<|im_end|>\\n"): its tokens up to
    and including the first special token. A template that renders no special token gets the EOS.
    """
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    ids = _tok(tokenizer, tail)
    for k, tid in enumerate(ids):
        if tid in special:
            text = tokenizer.convert_ids_to_tokens(tid)
            at = tail.find(text) if isinstance(text, str) else -1
            if at < 0:
                raise DataError(
                    f"cannot place the end-of-turn token {text!r} in the template's text {tail!r}"
                )
            return ids[: k + 1], tail[: at + len(text)]
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise DataError(
            "the chat template renders no end-of-turn token after an answer and the tokenizer has no EOS: "
            "the model could never learn to stop"
        )
    return [int(eos)], ""


def encode_messages(
    tokenizer: Any,
    messages: Sequence[Mapping[str, str]],
    *,
    train_on: str = "all_assistant",
    line: int = 0,
    where: str = "conversation",
) -> EncodedSample:
    """Token ids and masks of one conversation (see the module doc for what is trained)."""
    from pvdata.chat import encode_answer

    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if not turns or turns[0] == 0:
        raise DataError(f"{where}: needs a prompt message before an assistant message")
    if train_on == "last_assistant":
        turns = turns[-1:]  # earlier turns are rendered inside its prompt, as the template shows them
    ids: list[int] = []
    labels: list[bool] = []
    response: list[bool] = []
    consumed = ""  # the rendered text the ids so far stand for
    for i in turns:
        prompt = _render(tokenizer, messages[:i], True)
        if not prompt.startswith(consumed):
            raise DataError(
                f"{where}: the chat template renders turn {i} differently once later turns follow (it is "
                "not prefix-stable), so earlier assistant turns cannot be trained; use "
                "train_on: last_assistant"
            )
        content = messages[i]["content"]
        head = prompt + content
        full = _render(tokenizer, messages[: i + 1], False)
        if not full.startswith(head):
            raise DataError(
                f"{where}: the chat template rewrites assistant turn {i} (rendered text does not start with "
                "the prompt followed by the answer); pvdata cannot place the label mask"
            )
        end_ids, end_text = end_of_turn(tokenizer, full[len(head) :])
        segment = _tok(tokenizer, prompt[len(consumed) :])
        answer = encode_answer(tokenizer, content)
        ids += segment + answer + end_ids
        labels += [False] * len(segment) + [True] * (len(answer) + len(end_ids))
        response += [False] * len(segment) + [True] * len(answer) + [False] * len(end_ids)
        consumed = head + end_text
    return EncodedSample(tuple(ids), tuple(labels), tuple(response), line)


def encode_samples(
    tokenizer: Any,
    samples: Iterable[Sample],
    *,
    path: str = "",
    sha256: str = "",
    train_on: str = "all_assistant",
    max_length: int = 2048,
) -> TrainingData:
    """Encode every sample; too-long samples and samples with nothing to train are skipped with a reason."""
    out: list[EncodedSample] = []
    skipped: list[tuple[int, str]] = []
    for s in samples:
        where = f"{path or 'training data'}:{s.line}"
        enc = encode_messages(tokenizer, s.messages, train_on=train_on, line=s.line, where=where)
        if len(enc.ids) > max_length:
            skipped.append((s.line, f"too long: {len(enc.ids)} tokens > max_length {max_length}"))
        elif enc.n_trained == 0:
            skipped.append((s.line, "no trained tokens"))
        else:
            out.append(enc)
    if not out:
        reasons = "; ".join(f"line {n}: {r}" for n, r in skipped[:3])
        raise DataError(f"training data {path or '(given)'}: every sample was skipped ({reasons})")
    return TrainingData(path, sha256, out, skipped)


def load_training_data(
    tokenizer: Any, path: str | Path, *, train_on: str = "all_assistant", max_length: int = 2048
) -> TrainingData:
    return encode_samples(
        tokenizer,
        read_samples(path),
        path=str(path),
        sha256=file_sha256(path),
        train_on=train_on,
        max_length=max_length,
    )


def collate(samples: Sequence[EncodedSample], pad_id: int, device: Any = None) -> dict[str, Any]:
    """Right-padded tensors: input_ids, attention_mask, labels (-100 where untrained), response_mask."""
    import torch

    width = max(len(s.ids) for s in samples)
    b = len(samples)
    ids = torch.full((b, width), pad_id, dtype=torch.long)
    attention = torch.zeros((b, width), dtype=torch.long)
    labels = torch.full((b, width), -100, dtype=torch.long)
    response = torch.zeros((b, width), dtype=torch.float32)
    for row, s in enumerate(samples):
        n = len(s.ids)
        t = torch.tensor(s.ids, dtype=torch.long)
        ids[row, :n] = t
        attention[row, :n] = 1
        mask = torch.tensor(s.labels, dtype=torch.bool)
        labels[row, :n] = torch.where(mask, t, torch.full_like(t, -100))
        response[row, :n] = torch.tensor(s.response, dtype=torch.float32)
    batch = {"input_ids": ids, "attention_mask": attention, "labels": labels, "response_mask": response}
    if device is not None:
        batch = {k: v.to(device) for k, v in batch.items()}
    return batch
