"""Which vector row steers a layer: incremental only for add, never a row the vector was not built at."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from pvdata.errors import ConfigError
from pvdata.steering import SteeringSpec, apply_spec
from pvdata.steering.spec import steering_row
from pvdata.training.config import build_config
from pvdata.vectors import PersonaVector


def built_at(lm: Any, layers: tuple[int, ...]) -> PersonaVector:
    values = torch.zeros(lm.n_layers + 1, lm.hidden_size)
    gen = torch.Generator().manual_seed(0)
    for layer in layers:
        values[layer] = torch.randn(lm.hidden_size, generator=gen)
    return PersonaVector(trait="evil", model_id=lm.model_id, values=values, layers=layers)


def test_ablate_with_incremental_is_refused_everywhere() -> None:
    with pytest.raises(ConfigError, match=r"incremental steering is for mode 'add'.*CAFT"):
        SteeringSpec(mode="ablate", layers=(2,), incremental=True)
    with pytest.raises(ConfigError, match="incremental steering is for mode 'add'"):
        SteeringSpec.from_json({"mode": "ablate", "layers": [2], "incremental": True})
    with pytest.raises(ConfigError, match="incremental steering is for mode 'add'"):
        build_config(None, {"--steer/--ablate": ("ablate", "evil"), "--incremental": True})


def test_rows_are_the_vector_or_its_increment() -> None:
    values = torch.arange(12.0).reshape(4, 3)
    plain = SteeringSpec(layers=(2,))
    inc = SteeringSpec(layers=(2,), incremental=True)
    assert torch.equal(steering_row(values, 2, plain), values[2])
    assert torch.equal(steering_row(values, 2, inc), values[2] - values[1])
    assert torch.equal(steering_row(values, 2, SteeringSpec(mode="ablate", layers=(2,))), values[2])


def test_unbuilt_rows_are_an_error_naming_the_layers(tiny_llama: Any) -> None:
    top = tiny_llama.n_layers
    vec = built_at(tiny_llama, (top - 1, top))
    # incremental at the lower built layer needs the row below it, which was never computed
    wanted = rf"layer {top - 1} needs vector rows {top - 2}, {top - 1} .*{top - 2}"
    with pytest.raises(ConfigError, match=wanted):
        apply_spec(tiny_llama, vec, SteeringSpec(layers=(top - 1,), incremental=True))
    with pytest.raises(ConfigError, match=r"steering at layer 1 needs vector rows 1 but row\(s\) 1"):
        apply_spec(tiny_llama, vec, SteeringSpec(layers=(1,)))
    # built rows steer: both layers plain, and the top layer incrementally
    apply_spec(tiny_llama, vec, SteeringSpec(layers=(top - 1, top))).remove()
    apply_spec(tiny_llama, vec, SteeringSpec(layers=(top,), incremental=True)).remove()
