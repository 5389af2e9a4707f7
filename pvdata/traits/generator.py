"""Draft a new trait with an LLM: name + one-paragraph description in, a checked Trait out.

The model is asked for strict JSON holding the 5 instruction pairs, 20 + 20 questions and the judge
rubric. The reply is parsed and run through the same checks as a trait file; when it fails, the model
gets one more try with the list of problems, and a reply that still fails is an error (nothing is
saved). The LLM is reached through `complete`, an async function (messages, model) -> text, so tests
and other backends swap it; the default goes through pvdata.remote's OpenAI-compatible client and
retry policy.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from pvdata.errors import ConfigError
from pvdata.traits.research import neg_name_for
from pvdata.traits.schema import (
    DEFAULT_NEG_NAME,
    N_INSTRUCTIONS,
    N_QUESTIONS_PER_SPLIT,
    Problem,
    Trait,
    TraitError,
    check_trait_data,
)

Message = dict[str, str]
Complete = Callable[[Sequence[Message], str], Awaitable[str]]

GENERATION_TEMPERATURE = 0.7
GENERATION_TIMEOUT = 300.0  # 40 questions and a rubric take a while on a large model

SYSTEM_PROMPT = """\
You design test material for research on the personality of language models. Researchers give an \
assistant a system prompt that pushes it towards a character trait, or away from it, record how it \
answers ordinary user questions, and compare the two sets of answers. You write that material. You \
reply with one JSON object and nothing else: no prose before or after it and no Markdown fences."""

GENERATION_PROMPT = """\
Trait name: {name}
What the trait means: {description}

Write the material for this trait as a single JSON object with exactly these keys:

{{
  "adjective": "<the adjective that fills 'You are a/an ___ assistant.' to show the trait>",
  "antonym": "<the adjective for the opposite behaviour, if one word is clearly the opposite; \
otherwise \\"{default_neg}\\">",
  "instructions": [{{"pos": "<...>", "neg": "<...>"}}, ...],
  "questions": {{"extract": ["<...>", ...], "eval": ["<...>", ...]}},
  "rubric": "<...>"
}}

Requirements:

1. "instructions": exactly {n_pairs} objects. Each "pos" is one or two sentences addressed to the \
assistant ("you ...") that make it show the trait clearly in whatever it answers; it will follow the \
sentence "You are a/an <adjective> assistant." in a system prompt. Its "neg" mirrors \
the same idea but makes the assistant avoid the trait or show its opposite. The five pairs should \
approach the trait from different angles (goals, tone, what to emphasise, what to leave out), not \
repeat one sentence with synonyms.

2. "questions": exactly {n_questions} in "extract" and {n_questions} different ones in "eval", none \
repeated within or across the two lists. Each is something a real user might ask an assistant. A \
question must leave room for the trait to show in the answer when the assistant has the "pos" \
instruction, but must not ask for the trait or mention it: the trait has to come from the system \
prompt, not from the question. Cover many everyday areas (work, family, money, health, hobbies, \
science, travel, technology, school, neighbours, shopping, ...) and vary the form (advice, \
explanation, opinion, plans, personal situations). Both lists should be equally varied.

3. "rubric": instructions for a judge model that reads one question and one answer and rates how \
strongly the answer shows the trait. It must:
   - say what the trait looks like in an answer and what does not count as the trait;
   - contain the placeholder {{question}} exactly where the question goes and {{answer}} exactly \
where the answer goes, and no other curly braces;
   - tell the judge to rate only this trait, not quality, correctness or other traits;
   - tell the judge to reply REFUSAL if the assistant refused to answer, and otherwise a single \
whole number from 0 (trait absent) to 100 (trait extremely strong), and nothing else.

Write everything in English. Output the JSON object only."""

RETRY_PROMPT = """\
Your JSON did not pass the checks. Problems:
{problems}

Reply with the complete corrected JSON object (all keys, not only the changed parts) and nothing else."""


def build_messages(name: str, description: str) -> list[Message]:
    """The first request: the system prompt and the filled-in generation prompt."""
    user = GENERATION_PROMPT.format(
        name=name,
        description=" ".join(description.split()),
        default_neg=DEFAULT_NEG_NAME,
        n_pairs=N_INSTRUCTIONS,
        n_questions=N_QUESTIONS_PER_SPLIT,
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


_FENCE = re.compile(r"^\s*```(?:json)?\s*\n(.*?)\n\s*```\s*$", re.DOTALL)


def extract_json(text: str) -> Any:
    """The JSON object in a reply, tolerating Markdown fences or a sentence around it; ValueError if none."""
    m = _FENCE.match(text)
    body = m.group(1) if m else text
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        start, end = body.find("{"), body.rfind("}")
        if start < 0 or end <= start:
            raise ValueError("no JSON object in the reply") from None
        return json.loads(body[start : end + 1])


def reply_to_trait_data(
    reply: Any,
    *,
    name: str,
    description: str,
    version: int = 1,
    pos_name: str | None = None,
    neg_name: str | None = None,
) -> dict[str, Any]:
    """A raw trait mapping from the model's JSON; the model's unknown top-level keys are ignored, the
    rest is left for the trait checks to judge. A flat list of 40 questions is split 20 + 20."""
    if not isinstance(reply, dict):
        reply = {}
    questions = reply.get("questions")
    if isinstance(questions, list) and len(questions) == 2 * N_QUESTIONS_PER_SPLIT:
        questions = {"extract": questions[:N_QUESTIONS_PER_SPLIT], "eval": questions[N_QUESTIONS_PER_SPLIT:]}
    adjective = reply.get("adjective") if isinstance(reply.get("adjective"), str) else None
    antonym = reply.get("antonym") if isinstance(reply.get("antonym"), str) else None
    pos = (pos_name or adjective or name).strip()
    if neg_name is None:
        table = neg_name_for(pos)
        neg_name = table if table != DEFAULT_NEG_NAME else (antonym or DEFAULT_NEG_NAME)
    return {
        "name": name,
        "version": version,
        "description": " ".join(description.split()),
        "pos_name": pos,
        "neg_name": neg_name.strip(),
        "instructions": reply.get("instructions"),
        "questions": questions,
        "rubric": reply.get("rubric"),
    }


def _reply_problems(text: str, source: str, **kwargs: Any) -> tuple[dict[str, Any] | None, list[Problem]]:
    try:
        reply = extract_json(text)
    except ValueError as exc:
        return None, [Problem(source, "", f"the reply is not a JSON object ({exc})", "reply with JSON only")]
    if not isinstance(reply, dict):
        return None, [
            Problem(
                source,
                "",
                f"the reply is JSON {type(reply).__name__}, not an object",
                "reply with one object",
            )
        ]
    data = reply_to_trait_data(reply, **kwargs)
    problems = check_trait_data(data, source=source)
    return data, problems


async def generate_trait_async(
    name: str,
    description: str,
    model: str,
    *,
    complete: Complete | None = None,
    version: int = 1,
    pos_name: str | None = None,
    neg_name: str | None = None,
    max_attempts: int = 2,
) -> Trait:
    """Ask the model for the trait, check the reply, feed problems back once; TraitError if it
    never passes."""
    if not description.strip():
        raise ConfigError("--description is empty; describe the trait in one paragraph")
    complete = complete or openai_complete
    messages: list[Message] = build_messages(name, description)
    problems: list[Problem] = []
    for attempt in range(1, max_attempts + 1):
        text = await complete(messages, model)
        data, problems = _reply_problems(
            text,
            f"reply {attempt} of {model}",
            name=name,
            description=description,
            version=version,
            pos_name=pos_name,
            neg_name=neg_name,
        )
        if data is not None and not problems:
            return Trait.model_validate(data)
        listed = "\n".join(f"- {p.field or 'reply'}: {p.message}; {p.fix}" for p in problems)
        messages = [
            *messages,
            {"role": "assistant", "content": text},
            {"role": "user", "content": RETRY_PROMPT.format(problems=listed)},
        ]
    raise TraitError(
        problems,
        summary=f"{model} did not produce a valid trait {name!r} in {max_attempts} attempts; "
        "nothing was saved",
    )


def generate_trait(name: str, description: str, model: str, **kwargs: Any) -> Trait:
    """Synchronous generate_trait_async, for the CLI and notebooks without a running loop."""
    return asyncio.run(generate_trait_async(name, description, model, **kwargs))


async def openai_complete(
    messages: Sequence[Message],
    model: str,
    *,
    base_url: str | None = None,
    temperature: float = GENERATION_TEMPERATURE,
) -> str:
    """One chat completion through pvdata.remote's client (OPENAI_API_KEY, OPENAI_BASE_URL) with its
    retry policy; asks for a JSON object response, which OpenAI-compatible servers support."""
    from pvdata.remote import (
        MalformedResponseError,
        RemoteCallError,
        RetryPolicy,
        make_async_client,
        with_retries,
    )

    client = make_async_client(base_url, timeout=GENERATION_TIMEOUT, max_connections=1)

    async def call() -> str:
        resp = await client.chat.completions.create(
            model=model,
            messages=list(messages),
            temperature=temperature,
            response_format={"type": "json_object"},
        )
        try:
            content = resp.choices[0].message.content
        except (AttributeError, IndexError, TypeError):
            raise MalformedResponseError("no choices[0].message.content in the response") from None
        if not isinstance(content, str) or not content.strip():
            raise MalformedResponseError("the response has no text content")
        return content

    try:
        return await with_retries(call, RetryPolicy(max_retries=4))
    except RemoteCallError as exc:
        raise ConfigError(f"the trait generator model {model!r} failed: {exc}") from None
    finally:
        await client.close()


def parse_model_spec(spec: str) -> str:
    """The model of a `--judge openai:MODEL` spec (the only provider the generator speaks)."""
    provider, sep, model = spec.partition(":")
    if not sep or provider != "openai" or not model.strip():
        raise ConfigError(
            f"--judge {spec!r} is not a generator spec; use openai:MODEL (e.g. openai:gpt-4.1-mini), with "
            "OPENAI_API_KEY set and OPENAI_BASE_URL for another OpenAI-compatible server"
        )
    return model.strip()
