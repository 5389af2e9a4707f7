"""A `pvdata train` run in a subprocess that parks after a given step until the test kills it (kill -9).

    python tests/train_kill_worker.py SPEC_JSON

SPEC_JSON: {"flags": {flag: value}, "warehouse": DIR, "pause_at": STEP, "marker": FILE}. After optimizer
step `pause_at` (its checkpoint, if one is due, already written) the worker writes FILE and sleeps, so
the test's SIGKILL lands at a known point with nothing cleaned up.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main() -> int:
    spec = json.loads(sys.argv[1])
    from pvdata.training.config import build_config
    from pvdata.training.pipeline import run_train

    cfg = build_config(None, spec["flags"])

    def after_step(step: int) -> None:
        if step == spec["pause_at"]:
            Path(spec["marker"]).write_text(str(step))
            time.sleep(600)

    run_train(cfg, spec["warehouse"], after_step=after_step, progress=False, log=lambda _m: None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
