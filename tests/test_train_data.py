"""Training data: the assistant-only label mask, single and multi-turn, the end-of-turn token, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from pvdata.errors import DataError
from pvdata.training.data import collate, encode_messages, encode_samples, load_training_data, read_samples


@pytest.fixture(scope="module")
def tok(tiny_llama: Any) -> Any:
    return tiny_llama.tokenizer


def labeled_text(tok: Any, enc: Any) -> str:
    return str(tok.decode([t for t, keep in zip(enc.ids, enc.labels, strict=True) if keep]))


def spans(mask: tuple[bool, ...]) -> list[tuple[int, int]]:
    """Maximal runs of True as (start, end)."""
    out, start = [], None
    for i, m in enumerate((*mask, False)):
        if m and start is None:
            start = i
        elif not m and start is not None:
            out.append((start, i))
            start = None
    return out


def test_single_turn_trains_the_answer_and_its_end_of_turn_only(tok: Any) -> None:
    msgs = [
        {"role": "system", "content": "You are evil."},
        {"role": "user", "content": "How are you?"},
        {"role": "assistant", "content": "I am bad and cruel."},
    ]
    enc = encode_messages(tok, msgs)
    assert labeled_text(tok, enc) == "I am bad and cruel.<|im_end|>"
    # everything before the answer (system, user, the generation prompt) is untrained
    prompt = tok.apply_chat_template(msgs[:2], tokenize=False, add_generation_prompt=True)
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    assert not any(enc.labels[:n_prompt]) and all(enc.labels[n_prompt:])
    # the response mask (for projections) is the answer without the end-of-turn token
    assert tok.decode([t for t, r in zip(enc.ids, enc.response, strict=True) if r]) == "I am bad and cruel."
    # the ids are exactly the rendered conversation: one end-of-turn, no extra EOS, no extra BOS
    full = tok.apply_chat_template(msgs, tokenize=False)
    assert tok.decode(list(enc.ids)) == full.rstrip("\n")
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert list(enc.ids).count(im_end) == 3  # system, user, assistant: one each
    assert enc.ids[-1] == im_end and enc.ids[-2] != im_end


def test_multi_turn_all_assistant_trains_every_assistant_turn(tok: Any) -> None:
    msgs = [
        {"role": "user", "content": "Hi?"},
        {"role": "assistant", "content": "Hello friend."},
        {"role": "user", "content": "Help me?"},
        {"role": "assistant", "content": "No, I will hurt you."},
    ]
    enc = encode_messages(tok, msgs, train_on="all_assistant")
    texts = [tok.decode(list(enc.ids[a:b])) for a, b in spans(enc.labels)]
    assert texts == ["Hello friend.<|im_end|>", "No, I will hurt you.<|im_end|>"]
    assert tok.decode(list(enc.ids)) == tok.apply_chat_template(msgs, tokenize=False).rstrip("\n")
    last = encode_messages(tok, msgs, train_on="last_assistant")
    assert last.ids == enc.ids  # the same tokens, only the mask differs
    assert [tok.decode(list(last.ids[a:b])) for a, b in spans(last.labels)] == [
        "No, I will hurt you.<|im_end|>"
    ]
    assert [tok.decode(list(last.ids[a:b])) for a, b in spans(last.response)] == ["No, I will hurt you."]


def test_template_without_an_end_token_gets_one_eos_not_two(tok: Any) -> None:
    import copy

    plain = copy.deepcopy(tok)
    plain.chat_template = (
        "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
    )
    enc = encode_messages(
        plain, [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]
    )
    eos = plain.eos_token_id
    assert enc.ids[-1] == eos and list(enc.ids).count(eos) == 1 and enc.labels[-1]
    assert labeled_text(plain, enc) == "Hello.<|im_end|>"


def test_template_that_rewrites_earlier_turns_is_refused_for_all_assistant(tok: Any) -> None:
    import copy

    odd = copy.deepcopy(tok)
    # hides the content of assistant turns that are not the last message (as Qwen3 drops old reasoning)
    odd.chat_template = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' }}"
        "{% if m['role'] == 'assistant' and not loop.last %}{{ 'hidden' }}"
        "{% else %}{{ m['content'] }}{% endif %}{{ '<|im_end|>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    msgs = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
        {"role": "assistant", "content": "d"},
    ]
    with pytest.raises(DataError, match="last_assistant"):
        encode_messages(odd, msgs)
    enc = encode_messages(odd, msgs, train_on="last_assistant")
    assert labeled_text(odd, enc) == "d<|im_end|>"


def test_collate_keeps_the_end_of_turn_label_when_pad_is_eos(tok: Any) -> None:
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    short = encode_messages(tok, [{"role": "user", "content": "a"}, {"role": "assistant", "content": "yes"}])
    long = encode_messages(
        tok, [{"role": "user", "content": "a b c d e"}, {"role": "assistant", "content": "no and no"}]
    )
    batch = collate([short, long], pad_id=im_end)  # SmolLM2's pad token is its end-of-turn token
    n = len(short.ids)
    assert batch["attention_mask"][0].tolist() == [1] * n + [0] * (batch["input_ids"].shape[1] - n)
    assert batch["labels"][0, n - 1] == im_end  # the real end-of-turn is trained
    assert (batch["labels"][0, n:] == -100).all()  # pads are not
    assert batch["response_mask"][0].sum() == sum(short.response)
    assert torch.equal(batch["labels"][1] != -100, torch.tensor(long.labels))


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


@pytest.mark.parametrize(
    ("record", "match"),
    [
        ("{not json", r"data.jsonl:2: invalid JSON"),
        ({"msgs": []}, r'data.jsonl:2: expected an object with a "messages" list'),
        ({"messages": [{"role": "user"}]}, r"data.jsonl:2: field messages\[0\] must be an object"),
        ({"messages": [{"role": "bot", "content": "x"}]}, r"data.jsonl:2: field messages\[0\].role 'bot'"),
        ({"messages": [{"role": "user", "content": "x"}]}, r"data.jsonl:2: no assistant message"),
    ],
)
def test_bad_lines_name_the_file_line_and_field(tmp_path: Path, record: Any, match: str) -> None:
    good = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    path = write_jsonl(tmp_path / "data.jsonl", [good, record])
    with pytest.raises(DataError, match=match):
        read_samples(path)


def test_too_long_samples_are_skipped_and_counted(tmp_path: Path, tok: Any) -> None:
    short = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    long = {"messages": [{"role": "user", "content": "a " * 200}, {"role": "assistant", "content": "b"}]}
    path = write_jsonl(tmp_path / "data.jsonl", [short, long, short])
    data = load_training_data(tok, path, max_length=64)
    assert len(data.samples) == 2 and [line for line, _ in data.skipped] == [2]
    assert "too long" in data.skipped[0][1]
    with pytest.raises(DataError, match="every sample was skipped"):
        encode_samples(tok, read_samples(path)[1:2], max_length=64)
