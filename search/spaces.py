"""Search spaces: one function per regime, each searched by its own Optuna study.

Define-by-run (Optuna's ask interface): a space function suggests a regime's
settings on an `optuna.Trial`. The regime itself is never a parameter: each
(dataset, regime) pair has its own study and the same budget, so no regime is
starved because another led early (REGIMES.md, "Comparing regimes fairly").

Ranges hold the original authors' defaults where the epoch budget allows
(LeRaC: b = 0.1, eta_min 1e-6..1e-8, exp rise, the stepped official rule; CBS:
sigma 1, x0.9 every 5 epochs). Anything that is behind by design early on (a
LeRaC rise, a warm-up) ends before ASHA's first rung, so rungs never judge a
curriculum while it is still rising; conventional training searches a linear
warm-up over the same range as LeRaC's k, its natural competitor.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna

from trainables.curriculum import CURRICULUM_RULES, SHAPES


@dataclass(frozen=True, kw_only=True)
class Budget:
    """What bounds a space: the model searched, the epochs of a trial, ASHA's first rung, and
    whether trials run on a GPU (where larger batches are offered)."""

    epochs: int
    grace_period: int
    model: str = "small_cnn"
    gpu: bool = False

    @property
    def rise_epochs(self) -> tuple[float, float]:
        """The range of a curriculum or warm-up length: it must end before the first rung."""
        longest = min(self.grace_period, self.epochs) - 0.5
        return (min(0.5, longest), max(0.5, longest))


TRANSFORMERS = ("bert", "cvt13", "septr")
RECURRENT = ("lstm",)
REFERENCE_BATCH = 128  # on a GPU the rate is searched for this batch and scaled linearly


def shared_space(trial: optuna.Trial, budget: Budget) -> dict[str, Any]:
    """Optimizer, base rate, weight decay and batch size, by model family.

    Convolutional networks: SGD with momentum, as their authors trained them.
    Transformers: AdamW or Adamax (the LeRaC paper's choices for BERT and
    CvT), rates for training from scratch. LSTMs: Adam or AdamW. On a GPU the
    CNNs also get larger batches, with the rate searched for a batch of 128
    and scaled linearly (Goyal et al. 2017). Returns settings derived from the
    suggestions (the scaled `lr`).
    """
    if budget.model in TRANSFORMERS:
        optimizer = trial.suggest_categorical("optimizer", ["adamw", "adamax"])
        low, high = (5e-4, 5e-3) if budget.model == "cvt13" else (1e-4, 3e-3)
        trial.suggest_float("lr", low, high, log=True)
        # Adamax adds decay to the gradient (coupled): it must stay far smaller than AdamW's.
        trial.suggest_float("weight_decay", *((1e-4, 0.1) if optimizer == "adamw" else (1e-7, 1e-4)), log=True)
        trial.suggest_categorical("batch_size", [64, 128] if budget.model == "cvt13" else [16, 32, 64])
        return {}
    if budget.model in RECURRENT:
        trial.suggest_categorical("optimizer", ["adam", "adamw"])
        trial.suggest_float("lr", 3e-4, 1e-2, log=True)
        trial.suggest_float("weight_decay", 1e-6, 1e-3, log=True)
        trial.suggest_categorical("batch_size", [32, 64, 128])
        return {}
    trial.suggest_float("weight_decay", 1e-5, 1e-3, log=True)
    if not budget.gpu:
        trial.suggest_float("lr", 1e-3, 0.3, log=True)
        trial.suggest_categorical("batch_size", [32, 64, 128])
        return {}
    batch = trial.suggest_categorical("batch_size", [128, 256, 512])
    base = trial.suggest_float("lr_per_128", 1e-3, 0.3, log=True)
    return {"lr": min(10.0, base * batch / REFERENCE_BATCH)}


def conventional_space(trial: optuna.Trial, budget: Budget) -> None:
    """The baseline with its strongest rival to a curriculum: an optional linear warm-up."""
    if trial.suggest_categorical("warmup", [False, True]):
        trial.suggest_float("warmup_epochs", *budget.rise_epochs)


def lerac_space(trial: optuna.Trial, budget: Budget) -> None:
    """k (ending before the first rung), decay base b, floor, and the rise: Eq. 9 or stepped.

    On BERT also which layers take part: all, or the official variant's pooler and classifier.
    """
    trial.suggest_float("curriculum_epochs", *budget.rise_epochs)
    if budget.model == "bert":
        trial.suggest_categorical("curriculum_layers", [0, 2])
    trial.suggest_float("decay_base", 0.01, 0.9, log=True)
    trial.suggest_float("eta_min", 1e-8, 1e-4, log=True)
    if trial.suggest_categorical("rule", list(CURRICULUM_RULES)) == "eq9":
        trial.suggest_categorical("shape", list(SHAPES))
    else:
        trial.suggest_categorical("updates_per_epoch", [1, 2, 4])


def cbs_space(trial: optuna.Trial, budget: Budget) -> None:
    """Initial blur and its annealing (sigma 1, x0.9 every 5 epochs in the paper)."""
    trial.suggest_float("cbs_sigma", 0.5, 2.0)
    trial.suggest_float("cbs_decay", 0.7, 1.0)
    trial.suggest_int("cbs_every", 1, max(1, min(budget.epochs, 10)))


def leap_space(trial: optuna.Trial, budget: Budget) -> None:
    """Noise scale of the per-element update perturbation."""
    trial.suggest_float("leap_sigma", 0.05, 1.0, log=True)


def multirate_space(trial: optuna.Trial, budget: Budget) -> None:
    """Time-scale ratio m and how many of the deepest layers are fast."""
    trial.suggest_int("multirate_m", 2, 10)
    trial.suggest_int("fast_layers", 1, 2)


def per_instance_space(trial: optuna.Trial, budget: Budget) -> None:
    """Step size of the per-example rates and the held-out batch size."""
    trial.suggest_float("instance_lr", 0.01, 1.0, log=True)
    trial.suggest_categorical("meta_batch_size", [64, 128, 256])


REGIME_SPACES: dict[str, Callable[[optuna.Trial, Budget], None]] = {
    "conventional": conventional_space,
    "lerac": lerac_space,
    "cbs": cbs_space,
    "leap": leap_space,
    "multirate": multirate_space,
    "per_instance": per_instance_space,
}

# Search-only parameters: they shape the space (a switch) or stand for a derived setting
# (the rate per 128 examples), but are not training settings themselves.
SEARCH_ONLY = frozenset({"warmup", "lr_per_128"})


@dataclass(frozen=True, kw_only=True)
class SearchSpace:
    """The define-by-run space of one (dataset, regime) pair.

    Picklable (Tune saves the searcher for resume). `__call__` suggests the
    free settings on an Optuna trial and returns the complete flat run config:
    the fixed settings, then the suggested ones.
    """

    regime: str
    budget: Budget
    fixed: Mapping[str, Any] = field(default_factory=dict)

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        # A fixed warm-up length leaves nothing to switch on or off.
        switches = {"warmup": True} if "warmup_epochs" in self.fixed else {}
        sampler = _SkipFixed(trial, {**self.fixed, **switches})
        derived = shared_space(sampler, self.budget)  # type: ignore[arg-type]
        REGIME_SPACES[self.regime](sampler, self.budget)  # type: ignore[arg-type]
        suggested = {key: value for key, value in sampler.values.items() if key not in SEARCH_ONLY}
        return {**suggested, **derived, **self.fixed}


class _SkipFixed:
    """Forwards suggestions to the trial, except for settings the user fixed.

    A fixed setting is not searched: its value is returned instead, so the
    regime's space still sees it and the study holds only free parameters.
    Remembers every value it handed out.
    """

    def __init__(self, trial: optuna.Trial, fixed: Mapping[str, Any]):
        self._trial = trial
        self._fixed = fixed
        self.values: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        suggest = getattr(self._trial, name)
        if not name.startswith("suggest_"):
            return suggest

        def suggest_unless_fixed(param: str, *args: Any, **kwargs: Any) -> Any:
            value = self._fixed[param] if param in self._fixed else suggest(param, *args, **kwargs)
            self.values[param] = value
            return value

        return suggest_unless_fixed


def describe_space(space: SearchSpace, *, samples: int = 64) -> dict[str, str]:
    """Each searched parameter and its range, in words, for the record of a sweep.

    Conditional parameters appear only on some branches, so the space is
    walked with a throwaway random study until every branch has shown up.
    """
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    ranges: dict[str, str] = {}
    for _ in range(samples):
        trial = study.ask()
        space(trial)
        for name, distribution in trial.distributions.items():
            ranges.setdefault(name, _describe(distribution))
        study.tell(trial, 0.0)
    return dict(sorted(ranges.items()))


def _describe(distribution: optuna.distributions.BaseDistribution) -> str:
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return "one of " + ", ".join(map(str, distribution.choices))
    low, high = distribution.low, distribution.high  # type: ignore[attr-defined]
    kind = "log-uniform" if distribution.log else "uniform"  # type: ignore[attr-defined]
    integer = isinstance(distribution, optuna.distributions.IntDistribution)
    return f"{'integer ' if integer else ''}{kind} in [{low:g}, {high:g}]"
