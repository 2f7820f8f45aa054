"""Each regime's own settings, and the checks that pair them with the shared ones.

Torch-free on purpose: a sweep's driver validates every config it hands out
(`trainables.config.RunConfig`) and builds the search spaces from these fields without
importing torch (about 1.5 s of one core before the first trial); the regimes'
training code is `trainables.regimes`, whose classes name these as their `Settings`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from trainables.config import MAX_BATCH_SIZE, MAX_EPOCHS, MAX_LR
from trainables.curriculum import CURRICULUM_RULES, SHAPES
from trainables.settings import setting

if TYPE_CHECKING:
    from trainables.config import TrainSettings


@dataclass(frozen=True, kw_only=True)
class RegimeSettings:
    """A regime's own settings: none for the conventional regime; each other regime adds its fields."""

    def check_with(self, train: TrainSettings) -> None:
        """Reject settings that are each valid but wrong together with the shared ones
        (ValueError naming a key)."""


@dataclass(frozen=True, kw_only=True)
class LeracSettings(RegimeSettings):
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

    def check_with(self, train: TrainSettings) -> None:
        if self.curriculum_epochs > train.epochs:
            raise ValueError(
                f"setting 'curriculum_epochs' ({self.curriculum_epochs}) must not exceed "
                f"'epochs' ({train.epochs})"
            )
        if self.eta_min >= train.lr:
            raise ValueError(
                f"setting 'eta_min' ({self.eta_min}) must be below the base rate 'lr' ({train.lr})"
            )
        if train.warmup_epochs > 0:
            raise ValueError(
                "setting 'warmup_epochs' must be 0 with regime 'lerac': the curriculum replaces "
                "the warm-up"
            )
        if self.rule == "stepped" and self.updates_per_epoch < 1:
            raise ValueError(
                "setting 'updates_per_epoch' must be >= 1 with rule 'stepped' (the official "
                "code raised rates once, twice or four times per epoch)"
            )


@dataclass(frozen=True, kw_only=True)
class CbsSettings(RegimeSettings):
    # Below 0.01 the 3x3 kernel is the identity (far below, sigma**2 underflows and the kernel is
    # 0/0 = NaN); above 100 it is a box filter within 0.01%.
    cbs_sigma: float = setting(1.0, "initial blur sigma", check=lambda v: 0.01 <= v <= 100, rule="in [0.01, 100]")
    cbs_decay: float = setting(
        0.9, "sigma is multiplied by this every cbs_every epochs",
        check=lambda v: 0 < v <= 1, rule="in (0, 1]",
    )
    cbs_every: int = setting(
        5, "epochs between sigma decays", check=lambda v: 1 <= v <= MAX_EPOCHS, rule=f"in [1, {MAX_EPOCHS}]"
    )

    def check_with(self, train: TrainSettings) -> None:
        """Refused when the config is read, not when the run starts: a sweep must not offer CBS
        on a model it cannot blur. Reading the model's layers imports torch, for CBS alone."""
        from trainables.models import has_3x3_convolutions

        if not has_3x3_convolutions(train.model):
            raise ValueError(
                f"setting 'model': CBS needs a model with 3x3 convolutions; '{train.model}' has none"
            )


@dataclass(frozen=True, kw_only=True)
class LeapSettings(RegimeSettings):
    leap_sigma: float = setting(
        0.5, "std of the Gaussian noise on each element's update scale",
        check=lambda v: 0 <= v <= 5, rule="in [0, 5]",
    )


@dataclass(frozen=True, kw_only=True)
class MultirateSettings(RegimeSettings):
    multirate_m: int = setting(
        5, "m: slow layers step every m iterations; fast layers use rate h/m",
        check=lambda v: 1 <= v <= 1000, rule="in [1, 1000]",
    )
    fast_layers: int = setting(
        1, "how many of the deepest layer groups are fast (1 = the head)",
        check=lambda v: v >= 1, rule=">= 1",
    )


@dataclass(frozen=True, kw_only=True)
class PerInstanceSettings(RegimeSettings):
    instance_lr: float = setting(
        0.1, "typical change of an example's rate logit per visit",
        check=lambda v: 0 < v <= 10, rule="in (0, 10]",  # 10 already multiplies a rate by e**10 in one visit
    )
    meta_batch_size: int = setting(
        128, "size of the held-out batch that drives the rates",
        check=lambda v: 2 <= v <= MAX_BATCH_SIZE, rule=f"in [2, {MAX_BATCH_SIZE}]",
    )

    def check_with(self, train: TrainSettings) -> None:
        if train.compile:
            raise ValueError(
                "setting 'compile' cannot be used with regime 'per_instance': its look-ahead "
                "needs a double backward, which compiled graphs do not support"
            )


REGIME_SETTINGS: dict[str, type[RegimeSettings]] = {
    "conventional": RegimeSettings,
    "lerac": LeracSettings,
    "cbs": CbsSettings,
    "leap": LeapSettings,
    "multirate": MultirateSettings,
    "per_instance": PerInstanceSettings,
}
REGIME_NAMES: tuple[str, ...] = tuple(REGIME_SETTINGS)


def settings_class(regime: str) -> type[RegimeSettings]:
    """The settings of the regime named `regime`; ValueError naming it if unknown."""
    if not isinstance(regime, str):  # e.g. a YAML list, which is not even hashable
        raise ValueError(
            f"setting 'regime' must be one regime name, got {regime!r}; known regimes: {', '.join(REGIME_NAMES)}"
        )
    if regime not in REGIME_SETTINGS:
        raise ValueError(f"unknown regime {regime!r}; known regimes: {', '.join(REGIME_NAMES)}")
    return REGIME_SETTINGS[regime]
