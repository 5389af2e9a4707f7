"""The log callback the pipeline stages take, and the rate/ETA lines they write to it."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable

Log = Callable[[str], None]


def stderr_log(message: str) -> None:
    """The default log: stderr, flushed, so progress shows live and stdout stays for results."""
    print(message, file=sys.stderr, flush=True)


def rate_progress(log: Log, what: str, every_s: float = 2.0) -> Callable[[int, int], None]:
    """A `progress(done, total)` callback that logs `what: done/total rate ~ETA` at most every `every_s`
    seconds (and always at the end), so long stages show they are alive without flooding the log."""
    start = time.monotonic()
    last = [-math.inf]  # the first report is always written

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - last[0] < every_s:
            return
        last[0] = now
        rate = done / max(now - start, 1e-9)
        left = (total - done) / rate if rate > 0 else math.nan
        log(f"      {what}: {done}/{total}  {rate:.2f}/s  ~{left:.0f}s left")

    return report
