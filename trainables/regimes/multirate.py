"""Multirate training: fast and slow parameter groups on two time scales.

The deepest `fast_layers` groups are fast: they step every iteration with rate
h/m. The rest are slow: they step once every m iterations with rate h, keeping
their own momentum. Between slow steps no gradient flows into the slow layers,
which is where the method's speed-up comes from.
"""

from __future__ import annotations

import torch

from trainables.regime_settings import MultirateSettings
from trainables.regimes.base import Regime, RegimeContext
from trainables.schedules import LayerRateSchedule


class Multirate(Regime):
    name = "multirate"
    Settings = MultirateSettings

    def __init__(self, settings: MultirateSettings, context: RegimeContext):
        if settings.fast_layers >= len(context.groups):
            raise ValueError(
                f"setting 'fast_layers' ({settings.fast_layers}) must be below the number of "
                f"layer groups ({len(context.groups)}), so that some layers are slow"
            )
        super().__init__(settings, context)
        slow_groups = context.groups[: len(context.groups) - settings.fast_layers]
        self.slow_params = [p for group in slow_groups for p in group.params]

    def rate_schedule(self) -> LayerRateSchedule:
        schedule = super().rate_schedule()
        num_slow = schedule.num_layers - self.settings.fast_layers
        fast_scale = 1.0 / self.settings.multirate_m
        return LayerRateSchedule(
            num_layers=schedule.num_layers,
            ordinary=schedule.ordinary,
            multipliers=(1.0,) * num_slow + (fast_scale,) * self.settings.fast_layers,
        )

    def train_step(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        slow_step = self.scheduler.step_count % self.settings.multirate_m == 0
        for param in self.slow_params:
            param.requires_grad_(slow_step)
        try:
            return super().train_step(x, y, index)
        finally:
            for param in self.slow_params:
                param.requires_grad_(True)
