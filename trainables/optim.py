"""Optimizers over per-layer parameter groups.

Each layer group becomes one optimizer param group (named after the layer), so
a schedule can give every layer its own rate.
"""

from __future__ import annotations

import torch

from trainables.config import TrainSettings
from trainables.layers import LayerGroup


def build_optimizer(train: TrainSettings, groups: list[LayerGroup]) -> torch.optim.Optimizer:
    """The optimizer named by `train.optimizer`, one param group per layer group."""
    param_groups = [{"params": list(group.params), "name": group.name} for group in groups]
    if train.optimizer == "sgd":
        return torch.optim.SGD(
            param_groups,
            lr=train.lr,
            momentum=train.momentum,
            nesterov=train.nesterov,
            weight_decay=train.weight_decay,
        )
    optimizer_types = {
        "adam": torch.optim.Adam,
        "adamw": torch.optim.AdamW,
        "adamax": torch.optim.Adamax,
    }
    if train.optimizer not in optimizer_types:
        raise ValueError(f"unknown optimizer {train.optimizer!r}")
    return optimizer_types[train.optimizer](
        param_groups, lr=train.lr, weight_decay=train.weight_decay
    )
