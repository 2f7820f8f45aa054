"""Search spaces: one function per regime, conditional on the regime choice.

Define-by-run for Optuna (through Ray Tune's `OptunaSearch`): the regime is a
categorical choice and each regime's own settings are suggested only when it is
chosen. Ranges come from REGIMES.md (the original authors' defaults sit inside
them). Curricula are bounded by the ASHA grace period: a LeRaC trial is behind
by design until epoch k, so k must end before the first rung judges it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna

from trainables.curriculum import SHAPES


def shared_space(trial: optuna.Trial) -> None:
    """Settings every regime shares: base rate, weight decay, batch size."""
    trial.suggest_float("lr", 1e-3, 0.3, log=True)
    trial.suggest_float("weight_decay", 1e-5, 1e-3, log=True)
    trial.suggest_categorical("batch_size", [32, 64, 128])


def conventional_space(trial: optuna.Trial, *, grace_period: int) -> None:
    """The baseline has no settings of its own."""


def lerac_space(trial: optuna.Trial, *, grace_period: int) -> None:
    """k (ending before the first ASHA rung), decay base b, rise shape, floor."""
    trial.suggest_float("curriculum_epochs", 0.5, max(0.5, grace_period - 0.5))
    trial.suggest_float("decay_base", 0.01, 0.9, log=True)
    trial.suggest_categorical("shape", list(SHAPES))
    trial.suggest_float("eta_min", 1e-8, 1e-4, log=True)


def cbs_space(trial: optuna.Trial, *, grace_period: int) -> None:
    """Initial blur and its annealing (sigma 1, x0.9 every 5 epochs in the paper)."""
    trial.suggest_float("cbs_sigma", 0.5, 2.0)
    trial.suggest_float("cbs_decay", 0.7, 1.0)
    trial.suggest_int("cbs_every", 1, max(1, grace_period))


def leap_space(trial: optuna.Trial, *, grace_period: int) -> None:
    """Noise scale of the per-element update perturbation."""
    trial.suggest_float("leap_sigma", 0.05, 1.0, log=True)


def multirate_space(trial: optuna.Trial, *, grace_period: int) -> None:
    """Time-scale ratio m and how many of the deepest layers are fast."""
    trial.suggest_int("multirate_m", 2, 10)
    trial.suggest_int("fast_layers", 1, 2)


def per_instance_space(trial: optuna.Trial, *, grace_period: int) -> None:
    """Step size of the per-example rates and the held-out batch size."""
    trial.suggest_float("instance_lr", 0.01, 1.0, log=True)
    trial.suggest_categorical("meta_batch_size", [64, 128, 256])


REGIME_SPACES: dict[str, Callable[..., None]] = {
    "conventional": conventional_space,
    "lerac": lerac_space,
    "cbs": cbs_space,
    "leap": leap_space,
    "multirate": multirate_space,
    "per_instance": per_instance_space,
}


@dataclass(frozen=True)
class SearchSpace:
    """The define-by-run space of one dataset's sweep.

    A picklable callable (Tune saves the searcher, space included, for resume).
    Returns the fixed settings, which Tune merges into each trial's config.
    """

    regimes: tuple[str, ...]
    grace_period: int
    fixed: Mapping[str, Any] = field(default_factory=dict)

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        sampler = _SkipFixed(trial, self.fixed)
        regime = sampler.suggest_categorical("regime", list(self.regimes))
        shared_space(sampler)  # type: ignore[arg-type]
        REGIME_SPACES[regime](sampler, grace_period=self.grace_period)
        return dict(self.fixed)


class _SkipFixed:
    """Forwards suggestions to the trial, except for settings the user fixed.

    A fixed setting is not searched: its value is returned instead, so the
    regime's space still sees it and Optuna's study holds only free parameters.
    """

    def __init__(self, trial: optuna.Trial, fixed: Mapping[str, Any]):
        self._trial = trial
        self._fixed = fixed

    def __getattr__(self, name: str) -> Any:
        suggest = getattr(self._trial, name)
        if not name.startswith("suggest_"):
            return suggest

        def suggest_unless_fixed(param: str, *args: Any, **kwargs: Any) -> Any:
            return self._fixed[param] if param in self._fixed else suggest(param, *args, **kwargs)

        return suggest_unless_fixed
