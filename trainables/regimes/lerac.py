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

from dataclasses import dataclass

from trainables.config import MAX_EPOCHS, MAX_LR, TrainSettings
from trainables.curriculum import SHAPES, lowered_initial_rates
from trainables.regimes.base import Regime
from trainables.schedules import CURRICULUM_RULES, Curriculum, LayerRateSchedule
from trainables.settings import setting


@dataclass(frozen=True, kw_only=True)
class LeracSettings:
    curriculum_epochs: float = setting(
        3.0, "k, the curriculum length in epochs (converted to steps)",
        check=lambda v: 0 < v <= MAX_EPOCHS, rule=f"in (0, {MAX_EPOCHS}]",
    )
    decay_base: float = setting(
        0.1, "b: layer j starts at eta0 * b**j", check=lambda v: 0 < v <= 1, rule="in (0, 1]"
    )
    eta_min: float = setting(1e-6, "floor of the initial rates", check=lambda v: 0 <= v <= MAX_LR,
                             rule=f"in [0, {MAX_LR:g}]")
    shape: str = setting("exp", "shape of the eq9 rise to eta0 (ignored by the stepped rule)",
                         choices=SHAPES)
    rule: str = setting(
        "eq9", "eq9: all layers reach eta0 together at k (the paper); stepped: each layer's "
        "rate x 1/b per update until it reaches eta0, deep layers last (the official code)",
        choices=CURRICULUM_RULES,
    )
    updates_per_epoch: int = setting(
        0, "rate updates per epoch during the rise (0 = every iteration; the official code used "
        "1, 2 or 4)", check=lambda v: 0 <= v <= 10_000, rule="in [0, 10000]",
    )
    head_scale: float | None = setting(
        None, "the classifier starts at eta0 * head_scale instead of eta0 * b**j (the official "
        "code's clf_lr, e.g. 1e-3 on CIFAR-10); none = the b**j rule",
        check=lambda v: 0 < v <= 1, rule="in (0, 1]",
    )
    curriculum_layers: int = setting(
        0, "how many of the deepest layer groups start low and rise (0 = all; 2 on bert = "
        "pooler and classifier, the official BERT variant)", check=lambda v: 0 <= v <= 10_000,
        rule="in [0, 10000]",
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
        if train.warmup_epochs > 0:
            raise ValueError(
                "setting 'warmup_epochs' must be 0 with regime 'lerac': the curriculum replaces "
                "the warm-up"
            )
        if settings.rule == "stepped" and settings.updates_per_epoch < 1:
            raise ValueError(
                "setting 'updates_per_epoch' must be >= 1 with rule 'stepped' (the official "
                "code raised rates once, twice or four times per epoch)"
            )

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
