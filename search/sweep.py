"""The sweep: per dataset, Ray Tune + Optuna TPE + ASHA over the regimes' spaces.

Each dataset gets its own Tuner (its own TPE study and ASHA brackets, since the
best settings differ by dataset) and its own MLflow parent run. Everything that
can be checked is checked before the first trial starts, so bad input fails
fast and leaves nothing half-written. A sweep's state file (in the storage
path) lets `--resume` continue an interrupted sweep where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainables.config import RunConfig
from trainables.data import check_dataset_available
from trainables.models import MODEL_NAMES
from trainables.regimes import REGIME_NAMES
from trainables.version import code_version

LATEST_SWEEP = "latest_sweep.json"
SEARCHERS = ("tpe", "random")
SCHEDULERS = ("asha", "fifo")
METRIC = "val_acc"


class SweepError(Exception):
    """Bad input or state that stops a sweep before any trial runs."""


class SweepInterrupted(Exception):
    """The sweep stopped before its trials finished (Ctrl-C); resume it with --resume."""


@dataclass(frozen=True, kw_only=True)
class SweepOptions:
    """Everything a sweep needs; each default works on a 2-CPU machine."""

    datasets: tuple[str, ...] = ("digits", "mnist1d")
    model: str = "small_cnn"
    regimes: tuple[str, ...] = ("conventional", "lerac")
    num_trials: int = 16
    epochs: int = 8
    grace_period: int = 3
    reduction_factor: int = 2
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
    checkpoint_every: int = 1
    fixed: dict[str, Any] = field(default_factory=dict)

    def trial_settings(self, dataset: str) -> dict[str, Any]:
        """The settings every trial of `dataset` shares (the rest is searched)."""
        threads = max(1, int(self.cpus_per_trial))
        return {
            "dataset": dataset,
            "model": self.model,
            "epochs": self.epochs,
            "seed": self.seed,
            "data_seed": self.seed,
            "data_dir": str(Path(self.data_dir).resolve()),
            "cpu_threads": threads,
            **self.fixed,
        }


@dataclass(frozen=True)
class DatasetOutcome:
    """What a dataset's sweep produced, for the summary."""

    dataset: str
    parent_run_id: str
    winner: Any  # search.recording.Winner | None
    end_states: dict[str, int]


# -- validation, before anything is written ---------------------------------------
def validate_options(options: SweepOptions) -> None:
    """Reject bad input with one clear message (SweepError) before any trial starts."""
    for regime in options.regimes:
        if regime not in REGIME_NAMES:
            raise SweepError(f"unknown regime {regime!r}; known regimes: {', '.join(REGIME_NAMES)}")
    if options.model not in MODEL_NAMES:
        raise SweepError(f"unknown model {options.model!r}; known models: {', '.join(MODEL_NAMES)}")
    if not options.datasets or not options.regimes:
        raise SweepError("give at least one dataset and one regime")
    checks = {
        "num_trials": options.num_trials >= 1,
        "epochs": options.epochs >= 1,
        "grace_period": 1 <= options.grace_period <= options.epochs,
        "reduction_factor": options.reduction_factor >= 2,
        "cpus_per_trial": options.cpus_per_trial > 0,
        "gpus_per_trial": options.gpus_per_trial >= 0,
        "max_concurrent": options.max_concurrent >= 1,
        "searcher": options.searcher in SEARCHERS,
        "scheduler": options.scheduler in SCHEDULERS,
        "checkpoint_every": options.checkpoint_every >= 0,
    }
    for name, ok in checks.items():
        if not ok:
            value = getattr(options, name)
            raise SweepError(f"bad value for {name}: {value!r}" + (
                f" (must be between 1 and epochs={options.epochs})" if name == "grace_period" else ""
            ))
    for dataset in options.datasets:
        try:
            check_dataset_available(dataset, data_dir=options.data_dir,
                                    download=bool(options.fixed.get("download", False)))
        except (ValueError, FileNotFoundError) as error:
            raise SweepError(str(error)) from None
        try:
            RunConfig.from_dict({"regime": options.regimes[0], **options.trial_settings(dataset)})
        except ValueError as error:
            raise SweepError(f"bad fixed setting: {error}") from None
    check_tracking_uri(options.tracking_uri)


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


# -- sweep state, for --resume ------------------------------------------------------
def _state_path(storage_path: Path, sweep_id: str) -> Path:
    return storage_path / sweep_id / "sweep_state.json"


def save_state(storage_path: Path, sweep_id: str, options: SweepOptions, finished: list[str]) -> None:
    path = _state_path(storage_path, sweep_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"sweep_id": sweep_id, "options": dataclasses.asdict(options), "finished": finished}
    path.write_text(json.dumps(state, indent=2))
    (storage_path / LATEST_SWEEP).write_text(json.dumps({"sweep_id": sweep_id}))


def load_latest_state(storage_path: Path) -> tuple[str, SweepOptions, list[str]]:
    """The last sweep started under `storage_path`; SweepError if there is none."""
    latest = storage_path / LATEST_SWEEP
    if not latest.is_file():
        raise SweepError(f"nothing to resume: no sweep was started under {storage_path}")
    sweep_id = json.loads(latest.read_text())["sweep_id"]
    state = json.loads(_state_path(storage_path, sweep_id).read_text())
    stored = state["options"]
    options = SweepOptions(**{
        **stored,
        "datasets": tuple(stored["datasets"]),
        "regimes": tuple(stored["regimes"]),
    })
    return sweep_id, options, list(state["finished"])


# -- running ---------------------------------------------------------------------
def startup_trials(options: SweepOptions) -> int:
    """Random trials before TPE takes over: a quarter of the budget, 4 to 10.

    Optuna's default of 10 left only 6 of the default 16 trials to TPE.
    """
    return min(10, max(4, options.num_trials // 4))


def _tuner(options: SweepOptions, dataset: str, experiment_dir: Path, callback: Any, resume: bool):
    """A Tuner for one dataset: OptunaSearch (TPE) + ASHA + reused actors + checkpoints."""
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from search.progress import progress_reporter
    from search.spaces import SearchSpace
    from trainables.trainable import RegimeTrainable

    trainable = tune.with_resources(
        RegimeTrainable, {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial}
    )
    run_config = tune.RunConfig(
        name=experiment_dir.name,
        storage_path=str(experiment_dir.parent),
        callbacks=[callback],
        progress_reporter=progress_reporter(),
        verbose=1,
        failure_config=tune.FailureConfig(max_failures=options.max_failures),
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=1, checkpoint_frequency=options.checkpoint_every, checkpoint_at_end=True
        ),
    )
    if resume and (experiment_dir / "tuner.pkl").exists():
        return tune.Tuner.restore(
            str(experiment_dir), trainable=trainable, resume_unfinished=True, resume_errored=True
        )
    searcher = OptunaSearch(
        space=SearchSpace(
            regimes=options.regimes,
            grace_period=options.grace_period,
            fixed=options.trial_settings(dataset),
        ),
        metric=METRIC,
        mode="max",
        sampler=(
            optuna.samplers.TPESampler(seed=options.seed, n_startup_trials=startup_trials(options))
            if options.searcher == "tpe"
            else optuna.samplers.RandomSampler(seed=options.seed)
        ),
    )
    scheduler = (
        ASHAScheduler(
            time_attr="training_iteration",
            max_t=options.epochs,
            grace_period=options.grace_period,
            reduction_factor=options.reduction_factor,
        )
        if options.scheduler == "asha"
        else FIFOScheduler()
    )
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode="max",
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=options.max_concurrent),
            scheduler=scheduler,
            num_samples=options.num_trials,
            reuse_actors=options.reuse_actors,
            time_budget_s=options.time_budget_s,
        ),
        run_config=run_config,
    )


def was_interrupted(results: Any, options: SweepOptions) -> bool:
    """Whether Tune stopped (Ctrl-C) before the search finished.

    The result grid is read from the experiment state Tune saved when it
    stopped, where trials cut off are still running or pending.
    """
    if results.num_terminated + results.num_errors < len(results):
        return True
    return options.time_budget_s is None and len(results) < options.num_trials


def run_sweep(options: SweepOptions, *, resume: bool = False) -> list[DatasetOutcome]:
    """Run (or, with resume, continue) a sweep; returns each dataset's outcome.

    Raises SweepError for bad input, before any trial or record is created.
    """
    import ray

    from search.recording import MlflowTrialCallback, SweepRecorder

    storage_path = Path(options.storage_path).resolve()
    if resume:
        sweep_id, options, finished = load_latest_state(storage_path)
    else:
        sweep_id, finished = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6], []
    validate_options(options)

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # keep the compact CLIReporter table
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    # Per-epoch checkpoints (for exact resume) make Tune warn on every snapshot.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    started_ray = not ray.is_initialized()
    if started_ray:
        # "local" always starts a fresh runtime; None would join a running `ray start` cluster.
        ray.init(address=options.address or "local", include_dashboard=False, log_to_driver=False)
    try:
        check_cluster_resources(options)
        save_state(storage_path, sweep_id, options, finished)
        recorder = SweepRecorder(
            tracking_uri=options.tracking_uri, experiment=options.experiment, sweep_id=sweep_id
        )
        version = code_version()
        outcomes = []
        for dataset in options.datasets:
            parent = recorder.parent_run(
                dataset=dataset, model=options.model, regimes=options.regimes, code_version=version
            )
            if dataset not in finished:
                callback = MlflowTrialCallback(
                    recorder, parent_run_id=parent, dataset=dataset, epochs=options.epochs
                )
                experiment_dir = storage_path / sweep_id / dataset
                results = _tuner(options, dataset, experiment_dir, callback, resume).fit()
                if was_interrupted(results, options):
                    raise SweepInterrupted(
                        f"the sweep of {dataset} was interrupted; finished trials are kept. "
                        f"Continue it with --resume (storage path {storage_path})"
                    )
                finished.append(dataset)
                save_state(storage_path, sweep_id, options, finished)
                winner = recorder.mark_winner(parent)
            else:
                winner = recorder.find_winner(parent)
            outcomes.append(
                DatasetOutcome(
                    dataset=dataset,
                    parent_run_id=parent,
                    winner=winner,
                    end_states=recorder.end_state_counts(parent),
                )
            )
        return outcomes
    finally:
        if started_ray:
            ray.shutdown()
