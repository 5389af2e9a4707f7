"""Activation capture (batched, mask-aware) and the per-sample reference it is tested against."""

from pvdata.activations.capture import (
    POOLINGS,
    CaptureResult,
    capture_activations,
    capture_encoded,
)

__all__ = ["POOLINGS", "CaptureResult", "capture_activations", "capture_encoded"]
