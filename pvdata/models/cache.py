"""A process-safe cache of converted or generated model folders (under PVDATA_CACHE)."""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

COMPLETE_MARKER = ".pvdata-complete"


def cache_root() -> Path:
    """PVDATA_CACHE, else ~/.cache/pvdata."""
    return Path(os.environ.get("PVDATA_CACHE", "~/.cache/pvdata")).expanduser()


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock; released when the holder exits or dies (so no stale locks)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def materialize(name: str, build: Callable[[Path], None]) -> Path:
    """Return the cached folder `name`, building it once.

    The folder is built in a temporary sibling and renamed into place under a lock, so two processes
    converting at the same moment never see or leave a half-written folder.
    """
    root = cache_root() / "models"
    final = root / name
    if (final / COMPLETE_MARKER).exists():
        return final
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(root / f".{name}.lock"):
        if (final / COMPLETE_MARKER).exists():
            return final
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}.tmp-"))
        try:
            build(tmp)
            (tmp / COMPLETE_MARKER).write_text("ok\n")
            if final.exists():  # an incomplete leftover of a process killed before this lock existed
                shutil.rmtree(final)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final
