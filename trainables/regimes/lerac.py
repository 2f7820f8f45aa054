"""LeRaC: a data-free curriculum over the layers' learning rates.

Layers near the input start at eta0, deeper ones lower (eta0 * b**j, floored),
and all rise toward eta0 during the first k steps; then the ordinary schedule
takes over, with no warm-up (the curriculum replaces it). Two rules for the
rise (docs/regimes.md): the paper's Eq. 9 (`eq9`, every layer reaches eta0 at
k along `shape`) and the official code's (`stepped`, each layer's rate x 1/b per
update until it reaches eta0). Only rates change, so LeRaC costs nothing extra
per step.
"""

from __future__ import annotations

from trainables.curriculum import lowered_initial_rates
from trainables.regime_settings import LeracSettings
from trainables.regimes.base import Regime
from trainables.schedules import Curriculum, LayerRateSchedule


class Lerac(Regime):
    name = "lerac"
    Settings = LeracSettings

    def initial_rates(self) -> list[float]:
        """eta0 * b**j floored at eta_min (only the deepest `curriculum_layers` groups lowered,
        when set); the head at eta0 * head_scale when that is set."""
        settings, eta0 = self.settings, self.context.train.lr
        rates = lowered_initial_rates(len(self.context.groups), eta0, settings.decay_base,
                                      settings.eta_min, lowered=settings.curriculum_layers)
        if settings.head_scale is not None:
            rates[-1] = eta0 * settings.head_scale
        return rates

    def rate_schedule(self) -> LayerRateSchedule:
        settings = self.settings
        k_steps = self.epochs_to_steps(settings.curriculum_epochs)
        per_epoch = self.context.steps_per_epoch
        update_steps = (
            max(1, round(per_epoch / settings.updates_per_epoch)) if settings.updates_per_epoch else 1
        )
        return LayerRateSchedule(
            num_layers=len(self.context.groups),
            ordinary=self.ordinary_schedule(start_step=k_steps, warmup_steps=0),
            curriculum=Curriculum(
                initial=tuple(self.initial_rates()),
                k_steps=k_steps,
                shape=settings.shape,
                rule=settings.rule,
                update_steps=update_steps,
                factor=1.0 / settings.decay_base,
            ),
        )
