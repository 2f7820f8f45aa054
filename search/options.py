"""What a sweep is asked to do: `SweepOptions`, validated, and the settings each trial gets.

A pydantic model, so the Python API validates exactly like the CLI: a wrong
type, an unknown name or an impossible combination fails at construction with
an error naming the field (`pydantic.ValidationError`, a `ValueError`). Checks
that need the outside world (data on disk, the tracking server, the cluster)
are in `search.checks`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from search.spaces import Budget
from search.store_uri import SQLITE_PREFIX
from trainables.config import TRAIN_KEYS
from trainables.dataset_catalog import DATASET_NAMES
from trainables.model_catalog import MODEL_NAMES
from trainables.regime_settings import REGIME_NAMES, REGIME_SETTINGS

SEARCHERS = ("tpe", "random")
SCHEDULERS = ("asha", "fifo")
METRIC = "val_acc"
COMPILE_FROM_EPOCHS = 20


def regime_keys(regime: str) -> frozenset[str]:
    """The settings a run of `regime` accepts: the shared ones and the regime's own."""
    return TRAIN_KEYS | frozenset(REGIME_SETTINGS[regime].__dataclass_fields__)


def _names(value: Any) -> Any:
    """A single name is a list of one (`datasets="digits"`), never a list of letters."""
    return (value,) if isinstance(value, str) else value


class SweepOptions(BaseModel):
    """Everything a sweep needs; each default works on a 2-CPU machine.

    The budget is per (dataset, regime): every regime gets `num_trials` search
    trials of `epochs` epochs, then its best `top_k` configs are retrained on
    `confirm_seeds` fresh seeds for the verdict.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)

    datasets: tuple[str, ...] = Field(("digits", "mnist1d"), min_length=1)
    model: str = "small_cnn"
    regimes: tuple[str, ...] = Field(("conventional", "lerac"), min_length=1)
    num_trials: int = Field(10, ge=1, description="search trials per dataset and regime")
    epochs: int = Field(8, ge=1)
    grace_period: int = Field(3, ge=1)
    reduction_factor: int = Field(2, ge=2)
    confirm_seeds: int = Field(5, ge=2, description="a paired test across seeds needs at least 2")
    top_k: int = Field(1, ge=1)
    cpus_per_trial: float = Field(1.0, gt=0)
    gpus_per_trial: float = Field(0.0, ge=0)
    max_concurrent: int = Field(2, ge=1)
    address: str | None = None
    storage_path: str = "ray_results"
    tracking_uri: str = "sqlite:///mlflow.db"
    experiment: str = Field("lerac-sweep", min_length=1)
    seed: int = Field(0, ge=0, lt=2**62)
    time_budget_s: float | None = Field(None, gt=0)
    data_dir: str = "data"
    max_failures: int = Field(2, ge=0)
    wait_for_gpus: bool = False
    searcher: Literal["tpe", "random"] = "tpe"
    scheduler: Literal["asha", "fifo"] = "asha"
    reuse_actors: bool = True
    checkpoint_every: int = Field(0, ge=0)
    warm_start: str | None = Field(None, min_length=1, description="an earlier sweep's id: its studies seed this one's")
    fixed: dict[str, Any] = Field(default_factory=dict)
    # Where the sweep runs, not what it computes: a resume may change these.
    min_free_mb: float = Field(500.0, ge=0, description="free space the storage path and a sqlite "
                               "store's folder must keep; below it the sweep stops (resumably)")
    tracking_timeout_s: float = Field(120.0, gt=0, description="how long a failing MLflow store is "
                                      "waited for before the sweep stops (resumably)")

    _names = field_validator("datasets", "regimes", mode="before")(_names)

    @field_validator("datasets")
    @classmethod
    def _known_datasets(cls, datasets: tuple[str, ...]) -> tuple[str, ...]:
        for dataset in datasets:
            if dataset not in DATASET_NAMES:
                raise ValueError(f"unknown dataset {dataset!r}; known datasets: {', '.join(DATASET_NAMES)}")
        return datasets

    @field_validator("regimes")
    @classmethod
    def _known_regimes(cls, regimes: tuple[str, ...]) -> tuple[str, ...]:
        for regime in regimes:
            if regime not in REGIME_NAMES:
                raise ValueError(f"unknown regime {regime!r}; known regimes: {', '.join(REGIME_NAMES)}")
        if len(set(regimes)) != len(regimes):
            raise ValueError(f"a regime is named twice in {', '.join(regimes)}")
        return regimes

    @field_validator("model")
    @classmethod
    def _known_model(cls, model: str) -> str:
        if model not in MODEL_NAMES:
            raise ValueError(f"unknown model {model!r}; known models: {', '.join(MODEL_NAMES)}")
        return model

    @field_validator("tracking_uri")
    @classmethod
    def _supported_uri(cls, uri: str) -> str:
        if not uri.startswith((SQLITE_PREFIX, "http://", "https://")):
            raise ValueError(f"unsupported MLflow tracking URI {uri!r}: use sqlite:///FILE or http(s)://HOST:PORT")
        return uri

    @model_validator(mode="after")
    def _consistent(self) -> SweepOptions:
        if self.grace_period > self.epochs:
            raise ValueError(f"grace_period ({self.grace_period}) must be between 1 and epochs ({self.epochs})")
        if self.top_k > self.num_trials:
            raise ValueError(f"top_k ({self.top_k}) must not exceed the trials per regime ({self.num_trials})")
        for key in self.fixed:
            self._check_fixed(key)
        return self

    def _check_fixed(self, key: str) -> None:
        """Every fixed key must reach at least one compared regime."""
        regime, dot, name = key.rpartition(".")
        if dot:
            if regime not in self.regimes:
                raise ValueError(f"--set {key}: regime {regime!r} is not compared in this sweep "
                                 f"(regimes: {', '.join(self.regimes)})")
            if name not in regime_keys(regime):
                raise ValueError(f"--set {key}: unknown setting {name!r} for regime {regime!r}; known "
                                 f"settings: {', '.join(sorted(regime_keys(regime)))}")
        elif not any(key in regime_keys(regime) for regime in self.regimes):
            own = sorted({name for regime in self.regimes for name in REGIME_SETTINGS[regime].__dataclass_fields__})
            raise ValueError(f"--set {key}: unknown setting; known settings: shared "
                             f"{', '.join(sorted(TRAIN_KEYS))}; per regime {', '.join(own) or 'none'}")

    # -- what trials get ---------------------------------------------------------------
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

    def budget(self) -> Budget:
        """What bounds every regime's search space in this sweep."""
        return Budget(epochs=self.epochs, grace_period=self.grace_period, model=self.model,
                      gpu=self.gpus_per_trial > 0)

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
            # On a GPU a long run repays its compile, and workers reuse the compiled code
            # (per-instance rates need a double backward, which compiled graphs lack).
            "compile": (self.gpus_per_trial > 0 and self.epochs >= COMPILE_FROM_EPOCHS
                        and regime != "per_instance"),
        }
        return {**settings, **self.fixed_for(regime)}


def first_error(error: Exception) -> str:
    """One line for a pydantic validation error: the field and what is wrong with it."""
    errors = getattr(error, "errors", None)
    if not callable(errors):
        return str(error)
    first = errors()[0]
    field = ".".join(str(part) for part in first.get("loc", ()))
    if first.get("type") == "extra_forbidden":
        return f"unknown option {field!r}"
    message = str(first.get("msg", error)).removeprefix("Value error, ")
    return f"bad value for {field}: {message}" if field else message
