"""Optimizers over per-layer parameter groups.

Each layer group becomes one optimizer param group (named after the layer), so
a schedule can give every layer its own rate. With ten or more groups the
per-tensor Python loop of torch's default CPU path would launch one kernel per
tensor and op on a GPU; instead the step is fused on CUDA (one kernel per group,
for the optimizers torch fuses) and `foreach` everywhere else (one
multi-tensor op per group and operation).
"""

from __future__ import annotations

import torch

from trainables.config import TrainSettings
from trainables.layers import LayerGroup

OPTIMIZER_TYPES: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "adamax": torch.optim.Adamax,
}
# Optimizers with a fused CUDA kernel in torch (Adamax has none).
FUSED_ON_CUDA = frozenset({"sgd", "adam", "adamw"})


def step_implementation(optimizer: str, device: torch.device) -> dict[str, bool]:
    """The keyword that picks the fastest exact step: fused on CUDA where torch has it, else foreach."""
    if device.type == "cuda" and optimizer in FUSED_ON_CUDA:
        return {"fused": True}
    return {"foreach": True}


def build_optimizer(train: TrainSettings, groups: list[LayerGroup]) -> torch.optim.Optimizer:
    """The optimizer named by `train.optimizer`, one param group per layer group.

    The implementation (fused or foreach) follows the device the parameters live on.
    """
    if train.optimizer not in OPTIMIZER_TYPES:
        raise ValueError(f"unknown optimizer {train.optimizer!r}")
    param_groups = [{"params": list(group.params), "name": group.name} for group in groups]
    implementation = step_implementation(train.optimizer, groups[0].params[0].device)
    if train.optimizer == "sgd":
        return torch.optim.SGD(
            param_groups,
            lr=train.lr,
            momentum=train.momentum,
            nesterov=train.nesterov,
            weight_decay=train.weight_decay,
            **implementation,
        )
    return OPTIMIZER_TYPES[train.optimizer](
        param_groups, lr=train.lr, weight_decay=train.weight_decay, **implementation
    )
