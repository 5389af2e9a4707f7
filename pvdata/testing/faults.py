"""Fault injection for tests: a process kills itself (SIGKILL) when it reaches a named point.

Distributed workers run in processes a test cannot monkeypatch, so the trigger is a file named by the
environment variable PVDATA_FAULT_FILE (set before the workers start; a local Ray cluster passes the
driver's environment on). The file holds `POINT N [once|always] [DELAY]`: the process that reaches POINT
for the N-th time kills itself, DELAY seconds later (default 0: the work before it has time to be
collected). `once` (the default): only the first process to get there, which renames the file to
`<file>.fired-<pid>` so no other process fires; `always`: every process, each leaving a
`<file>.fired-<pid>` marker. Without the variable, or without the file, `kill_point` does nothing but
count (one dictionary update).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

ENV = "PVDATA_FAULT_FILE"
_counts: dict[str, int] = {}


def arm(path: str | os.PathLike[str], point: str, n: int, mode: str = "once", delay: float = 0.0) -> Path:
    """Write the trigger file (tests)."""
    if mode not in ("once", "always"):
        raise ValueError(f"mode {mode!r}: valid modes are once, always")
    target = Path(path)
    target.write_text(f"{point} {int(n)} {mode} {float(delay)}\n")
    return target


def fired(path: str | os.PathLike[str]) -> list[Path]:
    """The markers of the processes that killed themselves."""
    target = Path(path)
    return sorted(target.parent.glob(f"{target.name}.fired-*"))


def kill_point(point: str) -> None:
    """Kill this process here if the trigger file says so (see the module doc)."""
    path = os.environ.get(ENV)
    if not path:
        return
    _counts[point] = _counts.get(point, 0) + 1
    try:
        parts = Path(path).read_text().split()
    except OSError:
        return
    if len(parts) < 2 or parts[0] != point or not parts[1].isdigit() or _counts[point] != int(parts[1]):
        return
    marker = f"{path}.fired-{os.getpid()}"
    if (parts[2] if len(parts) > 2 else "once") == "once":
        try:
            os.rename(path, marker)  # atomic: exactly one process claims a `once` trigger
        except OSError:
            return
    else:
        Path(marker).touch()
    if len(parts) > 3:
        time.sleep(float(parts[3]))
    os.kill(os.getpid(), signal.SIGKILL)
