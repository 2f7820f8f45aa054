"""Everything that can be checked before a sweep starts, so bad input fails fast.

Each check raises `SweepError` with one line that names the bad value; nothing
is written before they all pass.
"""

from __future__ import annotations

from pathlib import Path

import optuna

from search.options import SCHEDULERS, SEARCHERS, SweepOptions, regime_keys
from search.spaces import Budget, SearchSpace
from trainables.config import TRAIN_KEYS, RunConfig
from trainables.data import check_dataset_available
from trainables.models import MODEL_NAMES
from trainables.regimes import REGIME_NAMES, REGIMES


class SweepError(Exception):
    """Bad input or state that stops a sweep before any trial runs."""


def validate_options(options: SweepOptions) -> None:
    """Reject bad input with one clear message before any trial starts."""
    for regime in options.regimes:
        if regime not in REGIME_NAMES:
            raise SweepError(f"unknown regime {regime!r}; known regimes: {', '.join(REGIME_NAMES)}")
    if len(set(options.regimes)) != len(options.regimes):
        raise SweepError(f"a regime is named twice in {', '.join(options.regimes)}")
    if options.model not in MODEL_NAMES:
        raise SweepError(f"unknown model {options.model!r}; known models: {', '.join(MODEL_NAMES)}")
    if not options.datasets or not options.regimes:
        raise SweepError("give at least one dataset and one regime")
    checks = {
        "num_trials": options.num_trials >= 1,
        "epochs": options.epochs >= 1,
        "grace_period": 1 <= options.grace_period <= options.epochs,
        "reduction_factor": options.reduction_factor >= 2,
        "confirm_seeds": options.confirm_seeds >= 2,
        "top_k": 1 <= options.top_k <= options.num_trials,
        "cpus_per_trial": options.cpus_per_trial > 0,
        "gpus_per_trial": options.gpus_per_trial >= 0,
        "max_concurrent": options.max_concurrent >= 1,
        "searcher": options.searcher in SEARCHERS,
        "scheduler": options.scheduler in SCHEDULERS,
        "checkpoint_every": options.checkpoint_every >= 0,
    }
    rules = {"grace_period": f" (must be between 1 and epochs={options.epochs})",
             "confirm_seeds": " (a paired test across seeds needs at least 2)",
             "top_k": f" (must be between 1 and the trials per regime, {options.num_trials})"}
    for name, ok in checks.items():
        if not ok:
            raise SweepError(f"bad value for {name}: {getattr(options, name)!r}{rules.get(name, '')}")
    check_fixed_settings(options)
    for dataset in options.datasets:
        try:
            check_dataset_available(dataset, data_dir=options.data_dir,
                                    download=bool(options.fixed.get("download", False)))
        except (ValueError, FileNotFoundError) as error:
            raise SweepError(str(error)) from None
        for regime in options.regimes:
            try:
                RunConfig.from_dict(sample_config(options, dataset, regime))
            except ValueError as error:
                raise SweepError(f"bad fixed setting for {regime}: {error}") from None
    check_tracking_uri(options.tracking_uri)


def sample_config(options: SweepOptions, dataset: str, regime: str) -> dict:
    """One config the search could hand out: the fixed settings with the rest drawn."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    budget = Budget(epochs=options.epochs, grace_period=options.grace_period)
    return SearchSpace(regime=regime, budget=budget, fixed=options.trial_settings(dataset, regime))(study.ask())


def check_fixed_settings(options: SweepOptions) -> None:
    """Every `--set` key must reach at least one compared regime."""
    for key in options.fixed:
        regime, dot, name = key.rpartition(".")
        if dot:
            if regime not in options.regimes:
                raise SweepError(f"--set {key}: regime {regime!r} is not compared in this sweep "
                                 f"(regimes: {', '.join(options.regimes)})")
            if name not in regime_keys(regime):
                raise SweepError(f"--set {key}: unknown setting {name!r} for regime {regime!r}; known "
                                 f"settings: {', '.join(sorted(regime_keys(regime)))}")
        elif not any(key in regime_keys(regime) for regime in options.regimes):
            own = sorted({name for regime in options.regimes for name in REGIMES[regime].Settings.__dataclass_fields__})
            raise SweepError(f"--set {key}: unknown setting; known settings: shared "
                             f"{', '.join(sorted(TRAIN_KEYS))}; per regime {', '.join(own) or 'none'}")


def check_tracking_uri(uri: str) -> None:
    """An MLflow store that cannot be reached fails now, not after an hour of trials."""
    if uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).resolve().parent
        if not folder.is_dir():
            raise SweepError(f"MLflow tracking URI {uri}: folder {folder} does not exist")
        return
    if uri.startswith(("http://", "https://")):
        import requests

        try:
            requests.get(uri.rstrip("/") + "/health", timeout=5).raise_for_status()
        except requests.RequestException as error:
            raise SweepError(f"MLflow tracking server {uri} cannot be reached: {error}") from None
        return
    raise SweepError(f"unsupported MLflow tracking URI {uri!r}: use sqlite:///FILE or http(s)://HOST:PORT")


def check_cluster_resources(options: SweepOptions) -> None:
    """Trials that no node can ever host would wait forever: refuse them."""
    import ray

    resources = ray.cluster_resources()
    if options.cpus_per_trial > resources.get("CPU", 0):
        raise SweepError(
            f"each trial asks for {options.cpus_per_trial} CPUs but the Ray cluster has "
            f"{resources.get('CPU', 0):g} in all"
        )
    gpus = resources.get("GPU", 0)
    if options.gpus_per_trial > gpus and not options.wait_for_gpus:
        raise SweepError(
            f"each trial asks for {options.gpus_per_trial} GPUs but the Ray cluster has {gpus:g}; "
            "use --gpus-per-trial 0, or --wait-for-gpus on an autoscaling cluster whose GPU "
            "workers start on demand"
        )
