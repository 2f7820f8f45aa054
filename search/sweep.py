"""The sweep: one Ray Tune run over every (dataset, regime) pair, then a verdict per dataset.

One Tuner serves the whole sweep, so workers stay warm and datasets overlap:
`BalancedSearch` gives every pair its own Optuna study and the same budget and
queues each pair's confirmation runs as soon as its search ends;
`GroupedAsha` stops trials only against their own pair's rungs. When Tune is
done, each dataset's confirmation runs decide the verdict (`analysis.verdict`)
and MLflow gets it on the dataset's parent run.

Faults end in one line. Everything that can be checked is checked before
anything is written (`search.checks`, `search.disk`), and nothing is written
under the storage path before the tracking store has taken the parent runs.
While running, `SweepMonitor` stops the sweep resumably when a disk fills or
the store fails for too long; Ctrl-C and SIGTERM stop it resumably too. A
resume verifies Tune's saved state against its seal (`search.integrity`)
before Tune unpickles any of it, and makes MLflow agree with what Tune
restored; a state that cannot be restored is refused with the way out:
`--resume --restart`, the same sweep id from scratch, MLflow records kept.
"""

from __future__ import annotations

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
from search.disk import check_free_space, watched_folders
from search.integrity import Seal, StateRefused, load_key
from search.local_runtime import EarlyStart
from search.mlflow_view import publish_view
from search.next_steps import absolute_uri
from search.options import METRIC, SweepOptions
from search.spaces import SearchSpace, describe_space
from search.state import load_state, save_state, saved_trial_count, set_aside
from search.sweep_file import attach_sweep_file
from search.tune_environment import set_sweep_environment
from search.verdicts import DatasetOutcome, TrialOutcome, dataset_outcomes
from search.warm_start import WarmStart, load_warm_start
from search.writer import StoreFailed, bound_http_retries, one_line
from trainables.version import code_version

__all__ = ["SweepError", "SweepInterrupted", "SweepOptions", "SweepStopped", "run_sweep"]

TUNER_FILE = "tuner.pkl"
# Options about where a sweep runs rather than what it computes: a resume applies them
# when they are given (in the Python API: set explicitly on the options passed in).
RUNTIME_OPTIONS = ("address", "min_free_mb", "tracking_timeout_s")


class SweepInterrupted(Exception):
    """The sweep stopped before its trials finished (Ctrl-C, SIGTERM); resume it with --resume."""


class SweepStopped(SweepInterrupted):
    """The sweep stopped itself on a fault that can pass (a full disk, a failing tracking
    store); finished trials are kept and --resume continues it once the fault is fixed."""


def resume_command(storage_path: Path, sweep_id: str, *, restart: bool = False) -> str:
    """The command that continues (or, with restart, starts again) a sweep."""
    flags = "--resume --restart" if restart else "--resume"
    return f"python search/lerac_sweep.py {flags} --storage-path {storage_path} --sweep-id {sweep_id}"


def absolute(options: SweepOptions) -> SweepOptions:
    """Paths made absolute, so a resume from another folder finds the same data and store."""
    return options.model_copy(update={"storage_path": str(Path(options.storage_path).resolve()),
                                      "data_dir": str(Path(options.data_dir).resolve()),
                                      "tracking_uri": absolute_uri(options.tracking_uri)})


def resumed_options(options: SweepOptions, sweep_id: str | None) -> tuple[str, SweepOptions]:
    """The stored options of the sweep to resume, with the runtime options set in `options`."""
    sweep_id, stored = load_state(Path(options.storage_path).resolve(), sweep_id)
    runtime = {name: getattr(options, name) for name in RUNTIME_OPTIONS if name in options.model_fields_set}
    return sweep_id, stored.model_copy(update=runtime)


def startup_trials(options: SweepOptions) -> int:
    """Random trials before TPE takes over in each study: a third of the budget, 3 to 10."""
    return min(10, max(3, options.num_trials // 3))


def groups(options: SweepOptions) -> list[Group]:
    """Every (dataset, regime) pair, datasets outermost, in the order the user gave."""
    budget = options.budget()
    return [
        Group(dataset=dataset, regime=regime,
              space=SearchSpace(regime=regime, budget=budget, fixed=options.trial_settings(dataset, regime)))
        for dataset in options.datasets for regime in options.regimes
    ]


def protocol(options: SweepOptions) -> dict[str, Any]:
    """The sweep's own settings, on every parent run: what a reader needs to judge the verdict."""
    budget = options.budget()
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


def build_tuner(options: SweepOptions, sweep_dir: Path, monitor: Any, *, resume: bool,
                warm: WarmStart | None = None) -> Any:
    """One Tuner for the whole sweep (restored from `sweep_dir` when resuming; `warm` seeds a new one)."""
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter

    from search.grouped_scheduler import GroupedAsha
    from search.live import progress_reporter
    from trainables.trainable import RegimeTrainable

    trainable = tune.with_resources(
        RegimeTrainable, {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial}
    )
    if resume:
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
            callbacks=[monitor, JsonLoggerCallback()],
            progress_reporter=progress_reporter(options, sweep_dir),
            verbose=1,
            failure_config=tune.FailureConfig(max_failures=options.max_failures),
            # The Trainable asks for its own checkpoints, at rungs and on its last result
            # (`trainables.trial_plan`); Tune's checkpoint_at_end would only repeat that, and
            # it turns off result buffering (see `_run`).
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1, checkpoint_frequency=0,
                                                    checkpoint_at_end=False),
        ),
    )


def trial_outcomes(trials: list[Any]) -> list[TrialOutcome]:
    """Every trial of a Tune run, as the verdict reads it: Tune's own trial objects (a
    trial cut off before its first result has no `result.json`, so Tune's result grid
    would not even know its config)."""
    return [TrialOutcome(trial_id=trial.trial_id, config=trial.config, result=trial.last_result or {},
                         errored=trial.status == "ERROR")
            for trial in trials]


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


def run_sweep(options: SweepOptions, *, resume: bool = False, sweep_id: str | None = None,
              restart: bool = False, early: EarlyStart | None = None) -> list[DatasetOutcome]:
    """Run (or, with resume, continue) a sweep; returns each dataset's outcome and verdict.

    With resume, the sweep `sweep_id` (default: the one started last) under
    `options.storage_path` continues with its own options (`RUNTIME_OPTIONS`
    set on `options` apply); with restart too, it starts again from scratch
    under the same id. Raises SweepError for bad input or a state that cannot
    be resumed, before any trial or record is created; SweepInterrupted when
    stopped before the end (nothing finished is lost); SweepStopped when a
    fault stopped it. `early`, a local runtime started while the caller imported this
    module (`search.launch`), is used (and stopped) instead of starting another.
    """
    if restart and not resume:
        raise SweepError("--restart starts an interrupted sweep again: use it with --resume")
    if sweep_id is not None and not resume:
        raise SweepError("--sweep-id names a sweep to resume: use it with --resume")
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # a line per study and trial otherwise
    if resume:
        sweep_id, options = resumed_options(options, sweep_id)
    else:
        sweep_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    options = absolute(options)
    storage_path = Path(options.storage_path)
    validate_options(options)
    check_free_space(options)
    sweep_dir = storage_path / sweep_id
    try:
        key = load_key(storage_path)
        fresh = not resume or restart or not (sweep_dir / TUNER_FILE).exists()
        seal = None if fresh else Seal.verify(sweep_dir=sweep_dir, sweep_id=sweep_id, key=key)
        restored = None if fresh else saved_trial_count(sweep_dir)
    except StateRefused as refused:
        raise SweepError(f"cannot resume sweep {sweep_id}: {refused}. Start it again from scratch "
                         f"under the same id (its MLflow records are kept): "
                         f"{resume_command(storage_path, sweep_id, restart=True)}") from None
    warm = (load_warm_start(storage_path, options.warm_start, groups(options))
            if options.warm_start and fresh else None)
    return _run(options, sweep_id=sweep_id, key=key, seal=seal, restored=restored,
                resumed=resume, start_over=resume and fresh, warm=warm, early=early)


def _run(options: SweepOptions, *, sweep_id: str, key: bytes, seal: Seal | None, restored: int | None,
         resumed: bool, start_over: bool, warm: WarmStart | None,
         early: EarlyStart | None) -> list[DatasetOutcome]:
    """The sweep once its options and saved state are known to be good."""
    import ray

    from search.local_runtime import (
        import_ray_start_modules,
        start_local_runtime,
        stop_local_runtime,
    )
    from search.monitor import (
        StopSweep,
        SweepMonitor,
        caused_by_full_disk,
        quiet_faults,
        sigterm_as_ctrl_c,
    )
    from search.recording import SweepRecorder
    from search.tracking_store import PreparedStore

    storage_path = Path(options.storage_path)
    sweep_dir = storage_path / sweep_id
    hint = f"continue it with: {resume_command(storage_path, sweep_id)}"
    bound_http_retries()
    set_sweep_environment()
    if early is not None and options.address is not None:
        raise ValueError("a runtime started early is local: it cannot serve a sweep on a cluster")
    import_ray_start_modules()  # before the store's thread: no module imported by both at once
    prepared = PreparedStore.start(options.tracking_uri)  # a new store's tables, beside Ray's start
    started_ray = early is not None or not ray.is_initialized()
    recorder = monitor = None
    try:
        if early is not None:
            early.wait()
        elif started_ray and options.address is None:
            start_local_runtime()
        elif started_ray:
            ray.init(address=options.address, include_dashboard=False, log_to_driver=False)
        with sigterm_as_ctrl_c(on_interrupt=lambda: _interrupted_early(sweep_id, monitor, hint)):
            check_cluster_resources(options)
            try:
                recorder = SweepRecorder(tracking_uri=options.tracking_uri, experiment=options.experiment,
                                         sweep_id=sweep_id, warn=_warn, patience_s=options.tracking_timeout_s,
                                         prepared=prepared)
                version_now, record = code_version(), protocol(options) | (warm.protocol() if warm else {})
                parents = {
                    dataset: recorder.parent_run(dataset=dataset, model=options.model, regimes=options.regimes,
                                                 code_version=version_now, protocol=record)
                    for dataset in options.datasets
                }
                publish_view(recorder.client, recorder.experiment_id, sweep_id)  # columns for the UI link
                for parent in parents.values():
                    attach_sweep_file(recorder.client, parent, options)
            except Exception as error:  # the store is known to work before anything is written
                raise SweepError(f"MLflow tracking store {options.tracking_uri} failed: {one_line(error)}; "
                                 "nothing was written") from None
            if start_over and sweep_dir.exists():
                set_aside(storage_path, sweep_id)
            if not resumed or start_over:
                save_state(storage_path, sweep_id, options)
            monitor = SweepMonitor(
                sweep_id=sweep_id, recorder=recorder, parents=parents, epochs=options.epochs,
                watched=watched_folders(options), min_free_bytes=int(options.min_free_mb * 2**20),
                seal=seal or Seal(sweep_dir=sweep_dir, sweep_id=sweep_id, key=key),
                restored_trials=0 if start_over else restored,
            )
            try:
                tuner = build_tuner(options, sweep_dir, monitor, resume=seal is not None, warm=warm)
            except Exception as error:
                raise SweepError(f"cannot resume sweep {sweep_id}: Ray Tune cannot restore its saved "
                                 f"state ({one_line(error)}). Start it again from scratch under the same "
                                 f"id (its MLflow records are kept): "
                                 f"{resume_command(storage_path, sweep_id, restart=True)}") from None
            if seal is None:
                monitor.seal.add(sweep_dir, [TUNER_FILE])
            ended = False
            with quiet_faults(monitor):
                try:
                    tuner.fit()
                    ended = True
                except KeyboardInterrupt:
                    monitor.interrupted = True  # a second Ctrl-C: Tune skipped its last save
                except StopSweep:
                    pass
                except Exception as error:
                    if monitor.stop_reason is None and not caused_by_full_disk(error):
                        raise
                    monitor.stop_reason = monitor.stop_reason or f"the storage path {storage_path} is full"
            try:
                recorder.flush()
            except StoreFailed as failed:
                monitor.stop_reason = monitor.stop_reason or str(failed)
            if monitor.stop_reason is not None:
                raise SweepStopped(f"sweep {sweep_id}: {monitor.stop_reason}; finished trials are "
                                   f"kept. When that is fixed, {hint}")
            if not ended:
                raise SweepInterrupted(f"sweep {sweep_id} was interrupted; finished trials are kept; {hint}")
            trials = trial_outcomes(monitor.trials)
            undone = unfinished_work(trials, options)
            if undone is not None:
                if monitor.interrupted:
                    raise SweepInterrupted(f"sweep {sweep_id} was interrupted ({undone}); finished trials "
                                           f"are kept; {hint}")
                raise SweepError(f"sweep {sweep_id} ended with work undone ({undone}) although nothing "
                                 f"stopped it: its saved state is inconsistent. Start it again from scratch "
                                 f"under the same id (its MLflow records are kept): "
                                 f"{resume_command(storage_path, sweep_id, restart=True)}")
            outcomes = dataset_outcomes(trials, datasets=options.datasets,
                                        regimes=options.regimes, parents=parents, epochs=options.epochs)
            try:
                for outcome in outcomes:
                    recorder.record_verdict(outcome, code_version=version_now)
            except StoreFailed as failed:
                raise SweepStopped(f"sweep {sweep_id}: {failed} before its verdicts were recorded; "
                                   f"every trial is kept. When that is fixed, {hint}") from None
            return outcomes
    finally:
        if monitor is not None:
            monitor.close()
        if recorder is not None:
            recorder.writer.close()
        if prepared is not None:
            prepared.discard()
        if early is not None:
            early.stop()
        elif started_ray:
            stop_local_runtime()


def _interrupted_early(sweep_id: str, monitor: Any, hint: str) -> SweepInterrupted:
    """Ctrl-C or SIGTERM outside Tune's loop (which handles its own)."""
    if monitor is None:
        return SweepInterrupted(f"sweep {sweep_id} was interrupted before it started; nothing was saved")
    return SweepInterrupted(f"sweep {sweep_id} was interrupted; finished trials are kept; {hint}")


def _warn(message: str) -> None:
    import sys

    print(f"warning: {message}", file=sys.stderr, flush=True)
