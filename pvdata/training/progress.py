"""A progress line on stderr: step, loss, rate and time left.

On a terminal the line is redrawn in place; otherwise (logs, CI) one line is printed at most every
`interval` seconds and at the last step, so a log file stays readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def format_seconds(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):  # NaN or unknown
        return "?"
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


class ProgressBar:
    """Call `update(step, loss, lr)` after each optimizer step; `close()` ends the line."""

    def __init__(
        self,
        total: int,
        *,
        start: int = 0,
        stream: TextIO | None = None,
        interval: float = 5.0,
        label: str = "train",
    ) -> None:
        self.total = total
        self.start_step = start
        self.stream = stream or sys.stderr
        self.interval = interval
        self.label = label
        self.t0 = time.monotonic()
        self.last_print = 0.0
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.drawn = False

    def line(self, step: int, loss: float | None, lr: float | None, now: float) -> str:
        done = step - self.start_step
        elapsed = now - self.t0
        per_step = elapsed / done if done > 0 else float("nan")
        left = per_step * (self.total - step) if done > 0 else float("nan")
        width = 20
        filled = int(width * step / self.total) if self.total else width
        bar = "#" * filled + "." * (width - filled)
        loss_s = "?" if loss is None else f"{loss:.4f}"
        lr_s = "?" if lr is None else f"{lr:.2e}"
        rate = "?" if done <= 0 else f"{per_step:.2f}s/step"
        return (
            f"{self.label} [{bar}] step {step}/{self.total}  loss {loss_s}  lr {lr_s}  {rate}  "
            f"elapsed {format_seconds(elapsed)}  left {format_seconds(left)}"
        )

    def update(self, step: int, loss: float | None, lr: float | None) -> None:
        now = time.monotonic()
        last = step >= self.total
        if self.tty:
            self.stream.write("\r" + self.line(step, loss, lr, now) + "\x1b[K")
            self.drawn = True
            if last:
                self.stream.write("\n")
                self.drawn = False
            self.stream.flush()
        elif last or now - self.last_print >= self.interval or step == self.start_step + 1:
            self.last_print = now
            print(self.line(step, loss, lr, now), file=self.stream, flush=True)

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False
