"""Training regimes for learning-rate curricula (LeRaC and its peers) as plain PyTorch.

Importable and testable without Ray; `trainables.RegimeTrainable` (the Ray Tune
Trainable) is loaded only when asked for.
"""

from __future__ import annotations

from typing import Any

from trainables.config import RunConfig, TrainSettings
from trainables.regimes import REGIME_NAMES, regime_class
from trainables.training import EpochReport, Trainer, layer_rate_curves

__all__ = [
    "REGIME_NAMES",
    "EpochReport",
    "RegimeTrainable",
    "RunConfig",
    "TrainSettings",
    "Trainer",
    "layer_rate_curves",
    "regime_class",
]


def __getattr__(name: str) -> Any:
    if name == "RegimeTrainable":
        from trainables.trainable import RegimeTrainable

        return RegimeTrainable
    raise AttributeError(f"module 'trainables' has no attribute {name!r}")
