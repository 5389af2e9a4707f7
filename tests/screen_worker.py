"""`pvdata screen` in a subprocess, slowed down so a test can kill it midway (tests/test_screen_resume.py).

    python tests/screen_worker.py DELAY_SECONDS SCREEN_ARGS...

Sleeps DELAY_SECONDS after each scored chunk (each chunk is committed before the next starts), then
exits with the CLI's status.
"""

from __future__ import annotations

import sys
import time
from typing import Any


def main(argv: list[str]) -> int:
    import pvdata.screening.scoring as scoring
    from pvdata.cli.main import main as cli

    delay = float(argv[0])
    real = scoring.score_batch

    def slow(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)
        time.sleep(delay)
        return out

    scoring.score_batch = slow  # the pipeline imports it when the stage runs, so it gets this one
    return cli(["screen", *argv[1:]])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
