"""A vector applied to a model other than the one it was extracted from: allowed, said once.

A vector of the same shape fits a finetune of its model (another id, an adapter folder), which is a
common and useful case; on an unrelated model of the same shape its numbers mean nothing. So the
shape is checked strictly (PersonaVector.check_compatible refuses another width or depth) and a
different model id is one warning line on stderr per (vector, model) and process, whichever command
(screen, steer, train, evaluate, monitor) loads the vector.
"""

from __future__ import annotations

import sys

_WARNED: set[tuple[str, str]] = set()


def same_model(a: str, b: str) -> bool:
    return a.rstrip("/\\") == b.rstrip("/\\")


def warn_other_model(vector_id: str, trait: str, vector_model: str, model: str) -> bool:
    """Print the warning unless it was printed for this vector and model; True when printed."""
    key = (vector_id, model)
    if key in _WARNED or same_model(vector_model, model):
        return False
    _WARNED.add(key)
    print(
        f"pvdata: warning: the {trait} vector {vector_id} was extracted from model {vector_model}, not "
        f"{model}; the shapes match, so it is used (right for a finetune of {vector_model}, meaningless "
        "for an unrelated model)",
        file=sys.stderr,
        flush=True,
    )
    return True
