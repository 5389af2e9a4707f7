"""Trait definitions: the versioned YAML files in traits/, their checks, system prompts and lineage.

    >>> trait = load_trait("evil")
    >>> system_prompt(trait, "pos", 0)          # 'You are an evil assistant. ...'
    >>> trait.trait_version                      # 'evil@v1+1a2b3c4d'
    >>> validate_trait("traits/evil.yaml")      # [] or a list of Problem(source, field, message, fix)

See docs/TRAITS.md. Importing this package imports neither openai nor torch.
"""

from pvdata.traits.prompts import article, render_system_prompt, system_prompt
from pvdata.traits.research import (
    ANTONYMS,
    convert_research_pair,
    find_research_files,
    import_research_dir,
    neg_name_for,
    to_research_files,
)
from pvdata.traits.schema import (
    DEFAULT_NEG_NAME,
    N_INSTRUCTIONS,
    N_QUESTIONS_PER_SPLIT,
    SPLITS,
    InstructionPair,
    Problem,
    Trait,
    TraitError,
    TraitQuestions,
    check_trait_data,
    normalize,
    parse_trait,
)
from pvdata.traits.store import (
    BUNDLED_DIR,
    TRAITS_PATH_ENV,
    content_hash,
    dump_trait,
    find_trait_files,
    list_traits,
    load_trait,
    resolve_trait_path,
    save_trait,
    trait_dirs,
    validate_trait,
)

__all__ = [
    "ANTONYMS",
    "BUNDLED_DIR",
    "DEFAULT_NEG_NAME",
    "N_INSTRUCTIONS",
    "N_QUESTIONS_PER_SPLIT",
    "SPLITS",
    "TRAITS_PATH_ENV",
    "InstructionPair",
    "Problem",
    "Trait",
    "TraitError",
    "TraitQuestions",
    "article",
    "check_trait_data",
    "content_hash",
    "convert_research_pair",
    "dump_trait",
    "find_research_files",
    "find_trait_files",
    "import_research_dir",
    "list_traits",
    "load_trait",
    "neg_name_for",
    "normalize",
    "parse_trait",
    "render_system_prompt",
    "resolve_trait_path",
    "save_trait",
    "system_prompt",
    "to_research_files",
    "trait_dirs",
    "validate_trait",
]
