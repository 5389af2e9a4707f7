"""`pvdata ... | head`: a reader that closes the pipe early must not cost a traceback or the work.

Python ignores SIGPIPE, so a write to a closed pipe raises BrokenPipeError wherever the command happens
to print, e.g. in the middle of a screen whose later stages have not run yet. Restoring the default
SIGPIPE action instead would kill the process on that write, which is no better for a long command.

So the command's stdout and stderr are wrapped for the duration of `main`: the first write (or flush)
that finds its pipe closed points that stream's file descriptor at the null device and every later
write is dropped, while the command goes on and finishes its work (a screen commits every stage). The
exit status is then 141 (128 + SIGPIPE, what a shell reports for `yes | head`), so a script with
`set -o pipefail` still sees that output was cut; a command that failed keeps its own status.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from collections.abc import Iterator
from typing import Any, TextIO

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE (13)


def _is_broken_pipe(exc: OSError) -> bool:
    return isinstance(exc, BrokenPipeError) or exc.errno == errno.EPIPE


class PipeSafeStream:
    """A text stream that turns into a null sink once its reader has gone away."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.broken = False

    def _silence(self) -> None:
        self.broken = True
        try:  # later writes, and the interpreter's last flush at exit, go nowhere instead of failing
            fd = self._stream.fileno()
        except (OSError, ValueError, AttributeError):
            return
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)

    def write(self, text: str) -> int:
        if self.broken:
            return len(text)
        try:
            return self._stream.write(text)
        except OSError as exc:
            if not _is_broken_pipe(exc):
                raise
            self._silence()
            return len(text)

    def flush(self) -> None:
        if self.broken:
            return
        try:
            self._stream.flush()
        except OSError as exc:
            if not _is_broken_pipe(exc):
                raise
            self._silence()

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def isatty(self) -> bool:
        return not self.broken and self._stream.isatty()

    def __getattr__(self, name: str) -> Any:  # encoding, fileno, buffer, ...: those of the real stream
        return getattr(self._stream, name)


@contextlib.contextmanager
def pipe_safe_output() -> Iterator[tuple[PipeSafeStream, PipeSafeStream]]:
    """sys.stdout and sys.stderr wrapped in PipeSafeStream while the block runs, then restored."""
    out, err = sys.stdout, sys.stderr
    safe_out, safe_err = PipeSafeStream(out), PipeSafeStream(err)
    sys.stdout, sys.stderr = safe_out, safe_err  # type: ignore[assignment]
    try:
        yield safe_out, safe_err
    finally:
        safe_out.flush()
        safe_err.flush()
        sys.stdout, sys.stderr = out, err
