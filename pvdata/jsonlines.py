"""Strict JSON Lines: one object per non-blank line, where the first bad line stops the read.

Prompts files and training data are read this way (the screen, which must report every bad record,
has its own lenient reader in `pvdata.samples.readers`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from pvdata.errors import DataError


def json_lines(lines: Iterable[str], source: object) -> Iterator[tuple[str, int, Any]]:
    """(`source:line`, line number, parsed value) of each non-blank line; bad JSON is a DataError there."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from None
        yield where, number, obj
