"""What a sweep is asked to do: `SweepOptions`, and the settings each trial gets from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainables.config import TRAIN_KEYS
from trainables.regimes import REGIMES

SEARCHERS = ("tpe", "random")
SCHEDULERS = ("asha", "fifo")
METRIC = "val_acc"


def regime_keys(regime: str) -> frozenset[str]:
    """The settings a run of `regime` accepts: the shared ones and the regime's own."""
    return TRAIN_KEYS | frozenset(REGIMES[regime].Settings.__dataclass_fields__)


@dataclass(frozen=True, kw_only=True)
class SweepOptions:
    """Everything a sweep needs; each default works on a 2-CPU machine.

    The budget is per (dataset, regime): every regime gets `num_trials` search
    trials of `epochs` epochs, then its best `top_k` configs are retrained on
    `confirm_seeds` fresh seeds for the verdict.
    """

    datasets: tuple[str, ...] = ("digits", "mnist1d")
    model: str = "small_cnn"
    regimes: tuple[str, ...] = ("conventional", "lerac")
    num_trials: int = 10
    epochs: int = 8
    grace_period: int = 3
    reduction_factor: int = 2
    confirm_seeds: int = 5
    top_k: int = 1
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int = 2
    address: str | None = None
    storage_path: str = "ray_results"
    tracking_uri: str = "sqlite:///mlflow.db"
    experiment: str = "lerac-sweep"
    seed: int = 0
    time_budget_s: float | None = None
    data_dir: str = "data"
    max_failures: int = 2
    wait_for_gpus: bool = False
    searcher: str = "tpe"
    scheduler: str = "asha"
    reuse_actors: bool = True
    checkpoint_every: int = 0
    fixed: dict[str, Any] = field(default_factory=dict)

    def fixed_for(self, regime: str) -> dict[str, Any]:
        """The fixed settings that apply to `regime`.

        `KEY` applies to every regime that has that setting (`decay_base` only
        to LeRaC); `REGIME.KEY` only to that regime, and wins over `KEY`.
        """
        own = regime_keys(regime)
        shared = {key: value for key, value in self.fixed.items() if "." not in key and key in own}
        prefix = f"{regime}."
        scoped = {key.removeprefix(prefix): value for key, value in self.fixed.items()
                  if key.startswith(prefix)}
        return {**shared, **scoped}

    def confirmation_seeds(self) -> list[int]:
        """Seeds the search never used: the search trains every trial with `seed`."""
        return [self.seed + 1 + i for i in range(self.confirm_seeds)]

    def rungs(self) -> list[int]:
        """The epochs at which ASHA compares trials (Ray's rule: grace * rf**k below epochs)."""
        if self.scheduler != "asha":
            return []
        rungs, epoch = [], self.grace_period
        while epoch < self.epochs:
            rungs.append(epoch)
            epoch *= self.reduction_factor
        return rungs

    def trial_settings(self, dataset: str, regime: str) -> dict[str, Any]:
        """The settings every trial of (`dataset`, `regime`) shares; the rest is searched."""
        settings = {
            "regime": regime,
            "dataset": dataset,
            "model": self.model,
            "epochs": self.epochs,
            "seed": self.seed,
            "data_seed": self.seed,
            "data_dir": str(Path(self.data_dir).resolve()),
            "cpu_threads": max(1, int(self.cpus_per_trial)),
        }
        return {**settings, **self.fixed_for(regime)}
