"""Optimizers: one param group per layer; fused on CUDA, foreach elsewhere."""

from __future__ import annotations

import pytest
import torch

from trainables.config import RunConfig
from trainables.layers import layer_groups
from trainables.models import build_model
from trainables.optim import build_optimizer, step_implementation


@pytest.mark.parametrize(
    ("optimizer", "device", "expected"),
    [
        ("sgd", "cuda", {"fused": True}),
        ("adam", "cuda", {"fused": True}),
        ("adamw", "cuda", {"fused": True}),
        ("adamax", "cuda", {"foreach": True}),  # torch has no fused Adamax
        ("sgd", "cpu", {"foreach": True}),
        ("adam", "cpu", {"foreach": True}),
    ],
)
def test_step_implementation_follows_the_device(optimizer, device, expected):
    assert step_implementation(optimizer, torch.device(device)) == expected


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "adamax"])
def test_one_named_group_per_layer_and_foreach_on_the_cpu(name):
    model = build_model("small_cnn", num_classes=10, in_channels=1)
    groups = layer_groups(model)
    optimizer = build_optimizer(RunConfig.from_dict({"optimizer": name}).train, groups)
    assert [g["name"] for g in optimizer.param_groups] == [g.name for g in groups]
    assert all(g["foreach"] for g in optimizer.param_groups)
