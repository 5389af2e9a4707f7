"""System prompts for extraction rollouts (ALGORITHMS.md §3), built in one place so every stage and
every recorded `system_prompt` column spell them identically."""

from __future__ import annotations

from pvdata.errors import ConfigError
from pvdata.traits.schema import POLARITIES, Trait

VOWELS = frozenset("aeiou")


def article(word: str) -> str:
    """ "an" when the word starts with a vowel letter (a, e, i, o, u; any case), else "a".

    The rule is by letter, not by sound, exactly as the specification states, so prompts match the
    research code's: "honest" gets "a" and "useful" gets "an".
    """
    return "an" if word[:1].lower() in VOWELS else "a"


def render_system_prompt(name: str, instruction: str) -> str:
    """'You are {a|an} {name} assistant. {instruction}'."""
    return f"You are {article(name)} {name} assistant. {instruction}"


def system_prompt(trait: Trait, polarity: str, instruction_index: int) -> str:
    """The system prompt of one extraction rollout: pos uses pos_name and the pair's pos instruction,
    neg uses neg_name and its neg instruction."""
    if polarity not in POLARITIES:
        raise ConfigError(f"polarity {polarity!r} is not valid; use one of: {', '.join(POLARITIES)}")
    n = len(trait.instructions)
    if isinstance(instruction_index, bool) or not 0 <= instruction_index < n:
        raise ConfigError(
            f"instruction index {instruction_index!r} is out of range for trait {trait.name!r}; "
            f"valid: 0..{n - 1}"
        )
    pair = trait.instructions[instruction_index]
    if polarity == "pos":
        return render_system_prompt(trait.pos_name, pair.pos)
    return render_system_prompt(trait.neg_name, pair.neg)
