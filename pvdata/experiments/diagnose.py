"""Is the extraction or the model the limit when a vector fails to separate trait from normal answers?

A data vector is the mean difference of the model's own response_avg activations over half of a paired
set's trait vs normal answers; its AUROC on the other half (held out from it) says whether the model's
activations at a layer carry the trait/normal distinction at all. If the data vector separates held-out
pairs and the extracted vector does not, the extraction (questions, instructions, filter, rollouts) is
the limit; if neither does, the model (or the data) is. The cosine between the two says how far the
extracted direction is from the one the data needs.
"""

from __future__ import annotations

import random
from typing import Any

from pvdata.metrics import auroc


def _conversations(records: Any, idx: list[int]) -> list[Any]:
    from pvdata.chat import Conversation

    out = []
    for i in idx:
        msgs = records[i]["messages"]
        out.append(Conversation(tuple(dict(m) for m in msgs[:-1]), str(msgs[-1]["content"])))
    return out


def diagnose(lm: Any, pairs: Any, vector: Any, layers: list[int], *, seed: int = 0) -> dict[str, Any]:
    """Per layer: AUROC of the extracted vector and of a data vector (fit on one half, scored on the
    other, both ways), on the held-out halves, and their cosine."""
    from pvdata.activations import capture_activations

    order = list(range(pairs.n))
    random.Random(seed).shuffle(order)
    halves = [sorted(order[: pairs.n // 2]), sorted(order[pairs.n // 2 :])]
    every = sorted(order)
    acts = {
        side: capture_activations(
            lm, _conversations(records, every), layers=layers, poolings=["response_avg"]
        )
        for side, records in (("trait", pairs.trait_records), ("normal", pairs.normal_records))
    }
    bad = [e for a in acts.values() for e in a.errors if e is not None]
    if bad:
        from pvdata.errors import DataError

        raise DataError(f"{len(bad)} answer(s) could not be captured: {bad[0]}")
    out: dict[str, Any] = {"n_pairs": pairs.n, "layers": {}}
    for layer in layers:
        pos = acts["trait"].get("response_avg", layer).double()
        neg = acts["normal"].get("response_avg", layer).double()
        unit = vector.unit(layer).double()
        extracted, data, cosines = [], [], []
        for fit, test in (halves, halves[::-1]):
            direction = pos[fit].mean(0) - neg[fit].mean(0)
            direction = direction / direction.norm()
            cosines.append(float(direction @ unit))
            extracted.append(auroc((pos[test] @ unit).tolist(), (neg[test] @ unit).tolist()))
            data.append(auroc((pos[test] @ direction).tolist(), (neg[test] @ direction).tolist()))
        out["layers"][str(layer)] = {
            "extracted_auroc": sum(extracted) / 2,
            "data_vector_auroc": sum(data) / 2,
            "cosine": sum(cosines) / 2,
        }
    return out
