"""Activation steering: add or ablate a persona vector at chosen layers and positions.

Layer l = output of block l (a forward hook on blocks[l-1]); see `pvdata.steering.hooks` for the exact
position semantics. Imports torch, so it is loaded lazily by `pvdata`.
"""

from pvdata.steering.hooks import SteeringHandle, ablate, ablate_direction, apply_spec, apply_steering, steer
from pvdata.steering.spec import MODES, POSITIONS, SteeringSpec

__all__ = [
    "MODES",
    "POSITIONS",
    "SteeringHandle",
    "SteeringSpec",
    "ablate",
    "ablate_direction",
    "apply_spec",
    "apply_steering",
    "steer",
]
