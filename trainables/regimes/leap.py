"""LEAP: learning-rate perturbation toward flat minima.

After the optimizer computes each parameter element's update, the update is
scaled by (1 + eps), eps ~ N(0, sigma^2) drawn afresh every step and element:
a per-element noisy learning rate that works on top of any schedule.

The step costs a handful of multi-tensor ops: the parameters before the step
and the noise live in two flat buffers allocated once (per-parameter views
into them), and the noise of all elements is one draw per step, not one
`randn` per parameter tensor (62 launches for ResNet-18).
"""

from __future__ import annotations

from typing import Any

import torch

from trainables.regime_settings import LeapSettings
from trainables.regimes.base import Regime, RegimeContext


class Leap(Regime):
    name = "leap"
    Settings = LeapSettings

    def __init__(self, settings: LeapSettings, context: RegimeContext):
        super().__init__(settings, context)
        self.params = [p for group in context.groups for p in group.params]
        dtypes = {p.dtype for p in self.params}
        if len(dtypes) != 1:
            raise ValueError(f"LEAP needs parameters of one dtype; the model has {sorted(map(str, dtypes))}")
        total = sum(p.numel() for p in self.params)
        flat = torch.empty(2, total, dtype=self.params[0].dtype, device=context.device)
        self.noise_flat, previous_flat = flat[0], flat[1]
        self.noise_views = _views_like(self.noise_flat, self.params)
        self.previous = _views_like(previous_flat, self.params)
        self.noise = torch.Generator(device=context.device)
        self.noise.manual_seed(context.train.seed + 1)

    @torch.no_grad()
    def optimizer_step(self) -> None:
        torch._foreach_copy_(self.previous, self.params)
        self.optimizer.step()
        # previous := before - after = -update; params := after + update * eps.
        torch._foreach_sub_(self.previous, self.params)
        self.noise_flat.normal_(0.0, self.settings.leap_sigma, generator=self.noise)
        torch._foreach_addcmul_(self.params, self.previous, self.noise_views, value=-1.0)

    def extra_state(self) -> dict[str, Any]:
        return {"noise": self.noise.get_state()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.noise.set_state(state["noise"])


def _views_like(flat: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    """Views into consecutive slices of `flat` with each parameter's shape and strides.

    Matching strides (channels_last conv weights on a GPU) keep the foreach ops
    on torch's fast multi-tensor path. Parameters are dense, so each view
    covers exactly its slice.
    """
    sizes = [p.numel() for p in params]
    return [
        piece.as_strided(p.shape, p.stride())
        for piece, p in zip(flat.split(sizes), params, strict=True)
    ]
