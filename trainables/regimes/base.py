"""The interface every training regime implements, and the ordinary training step.

A regime decides how the optimizer steps (LEAP, multirate, per-instance rates),
which rate each layer gets at each step (LeRaC) and what the model computes
(CBS). The `Trainer` owns data, model and loop and calls only this interface,
so a new regime is one module with one subclass, and its settings one dataclass in
`trainables.regime_settings` (where the sweep's driver reads them without torch).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from trainables.config import TrainSettings
from trainables.data import Dataset
from trainables.layers import LayerGroup
from trainables.optim import build_optimizer
from trainables.regime_settings import RegimeSettings
from trainables.schedules import LayerRateSchedule, OrdinarySchedule, RateScheduler


@dataclass(frozen=True, kw_only=True)
class RegimeContext:
    """What a regime is built from: the run's settings, model, layers and data."""

    train: TrainSettings
    model: nn.Module
    groups: list[LayerGroup]
    data: Dataset
    steps_per_epoch: int
    device: torch.device
    autocast: Callable[[], contextlib.AbstractContextManager]


class Regime:
    """Conventional training; subclasses override the parts their regime changes."""

    name: ClassVar[str] = "conventional"
    Settings: ClassVar[type[RegimeSettings]] = RegimeSettings  # its `trainables.regime_settings` entry

    def __init__(self, settings: Any, context: RegimeContext):
        self.settings = settings
        self.context = context
        self.model = context.model
        self.optimizer = build_optimizer(context.train, context.groups)
        self.scheduler = RateScheduler(self.optimizer, self.rate_schedule())

    # -- rates -------------------------------------------------------------
    def epochs_to_steps(self, epochs: float) -> int:
        """A length in (fractional) epochs as optimizer steps: 0 stays 0, anything else >= 1."""
        return max(1, round(epochs * self.context.steps_per_epoch)) if epochs > 0 else 0

    def ordinary_schedule(self, *, start_step: int, warmup_steps: int) -> OrdinarySchedule:
        train = self.context.train
        steps = self.context.steps_per_epoch
        return OrdinarySchedule(
            kind=train.schedule,
            eta0=train.lr,
            total_steps=train.epochs * steps,
            start_step=start_step,
            warmup_steps=warmup_steps,
            milestone_steps=tuple(epoch * steps for epoch in train.milestone_epochs()),
            gamma=train.gamma,
            min_lr=train.min_lr,
        )

    def rate_schedule(self) -> LayerRateSchedule:
        """Conventional: every layer on the ordinary schedule, after its warm-up if any."""
        warmup = self.epochs_to_steps(self.context.train.warmup_epochs)
        return LayerRateSchedule(
            num_layers=len(self.context.groups),
            ordinary=self.ordinary_schedule(start_step=warmup, warmup_steps=warmup),
        )

    def layer_rates(self) -> dict[str, float]:
        """Each layer's current rate, by layer name."""
        names = [group.name for group in self.context.groups]
        return dict(zip(names, self.scheduler.current_rates(), strict=True))

    # -- training ----------------------------------------------------------
    def start_epoch(self, epoch: int) -> None:
        """Hook for regimes that change with the epoch (CBS anneals its blur)."""

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with self.context.autocast():
            logits = self.model(x)
        return F.cross_entropy(logits.float(), y)

    def optimizer_step(self) -> None:
        self.optimizer.step()

    def train_step(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """One optimizer step on a batch; returns the detached batch loss."""
        self.scheduler.apply()
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(x, y)
        loss.backward()
        self.optimizer_step()
        self.scheduler.advance()
        return loss.detach()

    # -- checkpoints -------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        """Regime-specific state beyond optimizer and scheduler."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what `extra_state` returned."""

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "extra": self.extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.load_extra_state(state["extra"])
