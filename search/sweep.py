"""The sweep: one Ray Tune run over every (dataset, regime) pair, then a verdict per dataset.

One Tuner serves the whole sweep, so workers stay warm and datasets overlap:
`BalancedSearch` gives every pair its own Optuna study and the same budget and
queues each pair's confirmation runs as soon as its search ends;
`GroupedAsha` stops trials only against their own pair's rungs. When Tune is
done, each dataset's confirmation runs decide the verdict (`analysis.verdict`)
and MLflow gets it on the dataset's parent run. Everything that can be
checked is checked before anything is written (`search.checks`).
"""

from __future__ import annotations

import os
import platform
import time
import uuid
from importlib.metadata import version
from pathlib import Path
from typing import Any

import optuna

from search import schema
from search.balanced_search import (
    JOURNAL_FILE,
    BalancedSearch,
    Confirmation,
    Group,
    SamplerSettings,
)
from search.checks import SweepError, check_cluster_resources, validate_options
from search.options import METRIC, SweepOptions
from search.spaces import Budget, SearchSpace, describe_space
from search.state import load_latest_state, save_state
from search.verdicts import DatasetOutcome, TrialOutcome, dataset_outcomes
from search.warm_start import WarmStart, load_warm_start
from trainables.version import code_version

__all__ = ["SweepError", "SweepInterrupted", "SweepOptions", "run_sweep"]


class SweepInterrupted(Exception):
    """The sweep stopped before its trials finished (Ctrl-C); resume it with --resume."""


def startup_trials(options: SweepOptions) -> int:
    """Random trials before TPE takes over in each study: a third of the budget, 3 to 10."""
    return min(10, max(3, options.num_trials // 3))


def groups(options: SweepOptions) -> list[Group]:
    """Every (dataset, regime) pair, datasets outermost, in the order the user gave."""
    budget = Budget(epochs=options.epochs, grace_period=options.grace_period)
    return [
        Group(dataset=dataset, regime=regime,
              space=SearchSpace(regime=regime, budget=budget, fixed=options.trial_settings(dataset, regime)))
        for dataset in options.datasets for regime in options.regimes
    ]


def protocol(options: SweepOptions) -> dict[str, Any]:
    """The sweep's own settings, on every parent run: what a reader needs to judge the verdict."""
    budget = Budget(epochs=options.epochs, grace_period=options.grace_period)
    return {
        "regimes": list(options.regimes),
        "trials_per_regime": options.num_trials,
        "epochs_per_trial": options.epochs,
        "search_seed": options.seed,
        "searcher": options.searcher,
        "sampler": ("TPE per (dataset, regime): multivariate, group, constant liar, "
                    f"{startup_trials(options)} random start-up trials" if options.searcher == "tpe"
                    else "random per (dataset, regime)"),
        "scheduler": options.scheduler,
        "rungs": options.rungs(),
        "grace_period": options.grace_period,
        "reduction_factor": options.reduction_factor,
        "early_stopping": "ASHA per (dataset, regime); stopped trials reach Optuna as pruned",
        "time_budget_s": options.time_budget_s,
        "confirm_seeds": options.confirmation_seeds(),
        "confirm_top_k": options.top_k,
        "verdict_test": ("paired two-sided t-test on test accuracy over the fresh seeds against the "
                         "leader, Holm-corrected, alpha 0.05; McNemar's exact test per seed pair"),
        "fixed": dict(options.fixed),
        "cpus_per_trial": options.cpus_per_trial,
        "gpus_per_trial": options.gpus_per_trial,
        "max_concurrent": options.max_concurrent,
        "versions": {package: version(package) for package in ("torch", "ray", "optuna", "mlflow")}
        | {"python": platform.python_version()},
        "search_ranges": {regime: describe_space(SearchSpace(regime=regime, budget=budget,
                                                             fixed=options.fixed_for(regime)))
                          for regime in options.regimes},
    }


def build_tuner(options: SweepOptions, sweep_dir: Path, callback: Any, *, resume: bool,
                warm: WarmStart | None = None) -> Any:
    """One Tuner for the whole sweep (restored from `sweep_dir` when resuming; `warm` seeds a new one)."""
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter

    from search.grouped_scheduler import GroupedAsha
    from search.progress import progress_reporter
    from trainables.trainable import RegimeTrainable

    trainable = tune.with_resources(
        RegimeTrainable, {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial}
    )
    if resume and (sweep_dir / "tuner.pkl").exists():
        return tune.Tuner.restore(str(sweep_dir), trainable=trainable, resume_unfinished=True,
                                  resume_errored=True)
    pairs = groups(options)
    rungs = options.rungs()
    every = list(range(options.checkpoint_every, options.epochs, options.checkpoint_every)) \
        if options.checkpoint_every else []
    searcher = BalancedSearch(
        groups=pairs,
        trials_per_group=options.num_trials,
        epochs=options.epochs,
        sampler=SamplerSettings(kind=options.searcher, seed=options.seed,
                                startup_trials=startup_trials(options)),
        confirmation=Confirmation(seeds=tuple(options.confirmation_seeds()), top_k=options.top_k,
                                  checkpoint_epochs=tuple(every)),
        study_prefix=sweep_dir.name,
        journal=sweep_dir / JOURNAL_FILE,
        search_test_epochs=rungs,
        search_checkpoint_epochs=sorted(set(rungs) | set(every)),
        time_budget_s=options.time_budget_s,
        warm_start=warm.trials if warm else None,
    )
    scheduler = (
        GroupedAsha(metric=METRIC, mode="max", max_t=options.epochs,
                    grace_period=options.grace_period, reduction_factor=options.reduction_factor)
        if options.scheduler == "asha" else FIFOScheduler()
    )
    total = len(pairs) * (options.num_trials + options.top_k * options.confirm_seeds)
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            metric=METRIC, mode="max",
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=options.max_concurrent),
            scheduler=scheduler, num_samples=total, reuse_actors=options.reuse_actors,
        ),
        run_config=tune.RunConfig(
            name=sweep_dir.name,
            storage_path=str(sweep_dir.parent),
            callbacks=[callback],
            progress_reporter=progress_reporter(),
            verbose=1,
            failure_config=tune.FailureConfig(max_failures=options.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1, checkpoint_frequency=0,
                                                    checkpoint_at_end=True),
        ),
    )


def trial_outcomes(results: Any) -> list[TrialOutcome]:
    """Every trial of a finished Tune run, as the verdict reads it."""
    return [
        TrialOutcome(trial_id=result.metrics.get("trial_id") or Path(result.path).name,
                     config=result.config, result=result.metrics, errored=result.error is not None)
        for result in results
    ]


def unfinished_work(outcomes: list[TrialOutcome], options: SweepOptions) -> str | None:
    """What an interrupted run left undone, or None when every trial the sweep owes has ended.

    Counted from the trials themselves: Tune marks the trials it cut off at an
    interruption as terminated, so their status cannot tell.
    """
    for dataset in options.datasets:
        for regime in options.regimes:
            mine = [o for o in outcomes if o.config.get("dataset") == dataset and o.config.get("regime") == regime]
            search = [o for o in mine if o.stage == schema.SEARCH]
            if options.time_budget_s is None and len(search) < options.num_trials:
                return f"{dataset}/{regime} ran {len(search)} of {options.num_trials} search trials"
            completed = sum(o.state(options.epochs) == schema.COMPLETED for o in search)
            owed = min(options.top_k, completed) * options.confirm_seeds
            confirmed = sum(o.stage == schema.CONFIRM and (o.errored or o.state(options.epochs) != schema.STOPPED_EARLY)
                            for o in mine)
            if confirmed < owed:
                return f"{dataset}/{regime} finished {confirmed} of {owed} confirmation runs"
    return None


def run_sweep(options: SweepOptions, *, resume: bool = False) -> list[DatasetOutcome]:
    """Run (or, with resume, continue) a sweep; returns each dataset's outcome and verdict.

    Raises SweepError for bad input, before any trial or record is created, and
    SweepInterrupted when stopped before the end (nothing finished is lost).
    """
    import ray

    from search.recording import MlflowTrialCallback, SweepRecorder

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # a line per study and trial otherwise
    storage_path = Path(options.storage_path).resolve()
    if resume:
        sweep_id, options = load_latest_state(storage_path)
    else:
        sweep_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    validate_options(options)
    warm = (load_warm_start(storage_path, options.warm_start, groups(options))
            if options.warm_start and not resume else None)

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # keep the compact CLIReporter table
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    started_ray = not ray.is_initialized()
    if started_ray:
        # "local" always starts a fresh runtime; None would join a running `ray start` cluster.
        ray.init(address=options.address or "local", include_dashboard=False, log_to_driver=False)
    try:
        check_cluster_resources(options)
        save_state(storage_path, sweep_id, options)
        recorder = SweepRecorder(tracking_uri=options.tracking_uri, experiment=options.experiment,
                                 sweep_id=sweep_id)
        version_now, record = code_version(), protocol(options) | (warm.protocol() if warm else {})
        parents = {
            dataset: recorder.parent_run(dataset=dataset, model=options.model, regimes=options.regimes,
                                         code_version=version_now, protocol=record)
            for dataset in options.datasets
        }
        callback = MlflowTrialCallback(recorder, parents=parents, epochs=options.epochs)
        trials = trial_outcomes(build_tuner(options, storage_path / sweep_id, callback, resume=resume, warm=warm).fit())
        undone = unfinished_work(trials, options)
        if undone is not None:
            raise SweepInterrupted(
                f"sweep {sweep_id} was interrupted ({undone}); finished trials are kept. "
                f"Continue it with --resume (storage path {storage_path})"
            )
        outcomes = dataset_outcomes(trials, datasets=options.datasets,
                                    regimes=options.regimes, parents=parents, epochs=options.epochs)
        for outcome in outcomes:
            recorder.record_verdict(outcome, code_version=version_now)
        return outcomes
    finally:
        if started_ray:
            ray.shutdown()

