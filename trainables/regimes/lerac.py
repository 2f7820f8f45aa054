"""LeRaC: a data-free curriculum over the layers' learning rates.

Layers near the input start at eta0, deeper ones lower (eta0 * b**j, floored),
and all rise to eta0 during the first k steps; then the ordinary schedule takes
over, with no warm-up (the curriculum replaces it). Only rates change, so LeRaC
costs nothing extra per step.
"""

from __future__ import annotations

from dataclasses import dataclass

from trainables.config import TrainSettings
from trainables.curriculum import SHAPES, lowered_initial_rates
from trainables.regimes.base import Regime
from trainables.schedules import Curriculum, LayerRateSchedule
from trainables.settings import setting


@dataclass(frozen=True, kw_only=True)
class LeracSettings:
    curriculum_epochs: float = setting(
        3.0, "k, the curriculum length in epochs (converted to steps)",
        check=lambda v: v > 0, rule="> 0",
    )
    decay_base: float = setting(
        0.1, "b: layer j starts at eta0 * b**j", check=lambda v: 0 < v <= 1, rule="in (0, 1]"
    )
    eta_min: float = setting(1e-6, "floor of the initial rates", check=lambda v: v >= 0, rule=">= 0")
    shape: str = setting("exp", "shape of the rise to eta0", choices=SHAPES)
    update_every: int = setting(
        1, "steps between rate updates during the rise (1 = every iteration)",
        check=lambda v: v >= 1, rule=">= 1",
    )
    curriculum_layers: int = setting(
        0, "how many of the deepest layer groups start low and rise (0 = all; 2 on bert = "
        "pooler and classifier, the official BERT variant)", check=lambda v: v >= 0, rule=">= 0",
    )


class Lerac(Regime):
    name = "lerac"
    Settings = LeracSettings

    @classmethod
    def check_compatible(cls, train: TrainSettings, settings: LeracSettings) -> None:
        if settings.curriculum_epochs > train.epochs:
            raise ValueError(
                f"setting 'curriculum_epochs' ({settings.curriculum_epochs}) must not exceed "
                f"'epochs' ({train.epochs})"
            )
        if settings.eta_min >= train.lr:
            raise ValueError(
                f"setting 'eta_min' ({settings.eta_min}) must be below the base rate 'lr' ({train.lr})"
            )

    def curriculum_steps(self) -> int:
        return max(1, round(self.settings.curriculum_epochs * self.context.steps_per_epoch))

    def rate_schedule(self) -> LayerRateSchedule:
        k_steps = self.curriculum_steps()
        num_layers = len(self.context.groups)
        initial = lowered_initial_rates(
            num_layers, self.context.train.lr, self.settings.decay_base, self.settings.eta_min,
            lowered=self.settings.curriculum_layers,
        )
        return LayerRateSchedule(
            num_layers=num_layers,
            ordinary=self.ordinary_schedule(start_step=k_steps, warmup_steps=0),
            curriculum=Curriculum(
                initial=tuple(initial),
                k_steps=k_steps,
                shape=self.settings.shape,
                update_every=self.settings.update_every,
            ),
        )
