"""Training regimes for learning-rate curricula (LeRaC and its peers) as plain PyTorch.

Importable and testable without Ray. Every name below is loaded when first asked for:
importing one torch-free module of the package (the catalogs, `trainables.config`,
`trainables.regime_settings`) must not import torch, which a sweep's driver never needs.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "REGIME_NAMES": "trainables.regime_settings",
    "EpochReport": "trainables.training",
    "RegimeTrainable": "trainables.trainable",
    "RunConfig": "trainables.config",
    "TrainSettings": "trainables.config",
    "Trainer": "trainables.training",
    "layer_rate_curves": "trainables.training",
    "regime_class": "trainables.regimes",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'trainables' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
