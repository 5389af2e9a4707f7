"""File helpers shared by the vector formats: atomic writes and readable errors naming the file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pvdata.errors import VectorError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` and move it into place only if the write succeeded.

    A crash mid-write then leaves the old file (or none), never a truncated vector that loads later.
    """
    target = Path(path)
    if target.is_dir():
        raise VectorError(f"{target}: is a directory; give a file name for the vector")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def existing_file(path: str | os.PathLike[str]) -> Path:
    """The path, after checking it names a readable file (so errors name it, not a library)."""
    p = Path(path)
    if not p.exists():
        raise VectorError(f"{p}: no such vector file")
    if not p.is_file():
        raise VectorError(f"{p}: not a file")
    return p
