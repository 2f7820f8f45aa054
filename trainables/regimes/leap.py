"""LEAP: learning-rate perturbation toward flat minima.

After the optimizer computes each parameter element's update, the update is
scaled by (1 + eps), eps ~ N(0, sigma^2) drawn afresh every step and element:
a per-element noisy learning rate that works on top of any schedule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from trainables.regimes.base import Regime, RegimeContext
from trainables.settings import setting


@dataclass(frozen=True, kw_only=True)
class LeapSettings:
    leap_sigma: float = setting(
        0.5, "std of the Gaussian noise on each element's update scale",
        check=lambda v: 0 <= v <= 5, rule="in [0, 5]",
    )


class Leap(Regime):
    name = "leap"
    Settings = LeapSettings

    def __init__(self, settings: LeapSettings, context: RegimeContext):
        super().__init__(settings, context)
        self.params = [p for group in context.groups for p in group.params]
        self.noise = torch.Generator(device=context.device)
        self.noise.manual_seed(context.train.seed + 1)

    @torch.no_grad()
    def optimizer_step(self) -> None:
        before = torch._foreach_mul(self.params, 1.0)
        self.optimizer.step()
        updates = torch._foreach_sub(self.params, before)
        noise = [
            torch.randn(p.shape, generator=self.noise, device=p.device, dtype=p.dtype)
            for p in self.params
        ]
        torch._foreach_mul_(noise, self.settings.leap_sigma)
        torch._foreach_mul_(updates, noise)
        torch._foreach_add_(self.params, updates)

    def extra_state(self) -> dict[str, Any]:
        return {"noise": self.noise.get_state()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.noise.set_state(state["noise"])
