"""Everything that can be checked before a sweep starts, so bad input fails fast.

Each check raises `SweepError` with one line that names the bad value; nothing
is written before they all pass.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import optuna

from search.options import SweepOptions
from search.spaces import SearchSpace
from trainables.config import RunConfig
from trainables.data import check_dataset_available


class SweepError(Exception):
    """Bad input or state that stops a sweep before any trial runs."""


def validate_options(options: SweepOptions) -> None:
    """Reject what the options alone cannot know is wrong: data missing on disk, a fixed
    setting that clashes with the searched ones, an unreachable tracking store."""
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
    budget = options.budget()
    return SearchSpace(regime=regime, budget=budget, fixed=options.trial_settings(dataset, regime))(study.ask())


def check_tracking_uri(uri: str) -> None:
    """An MLflow store that cannot be reached fails now, not after an hour of trials."""
    if uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).resolve().parent
        if not folder.is_dir():
            raise SweepError(f"MLflow tracking URI {uri}: folder {folder} does not exist")
        try:  # MLflow retries a store it cannot open for about two minutes: ask the folder now
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as error:
            raise SweepError(f"MLflow tracking URI {uri}: cannot write in {folder} "
                             f"({error.strerror or error})") from None
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
