"""What a person watching a sweep sees while it runs.

Ray's `CLIReporter` prints its trial table for the whole sweep (one Tuner, so
every dataset's trials are in it); `LiveReporter` adds, above the table, one
compact line per dataset (search and confirmation trials done, running and
pending; the best validation accuracy each regime has reached so far), the
elapsed time with an estimate of the time left, and why trials wait when they
wait. It drops Ray's "Current best trial" line (a trial's latest value, not
its best, across datasets that cannot be compared) and its "Result logdir"
line (Ray's temporary session folder, not where the sweep is stored).

The pure functions below take `TrialView`s, so they are tested without Ray.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray.tune import CLIReporter

from search import schema
from search.balanced_search import SWEEP_KEY
from search.options import SweepOptions

REPORT_EVERY_S = 10.0  # seconds between two status blocks (and always at the end)
RAY_TUNE_LOGGER = "ray.tune.tune"
RAY_RESUME_HINT = "Resume experiment with:"  # Ray's own `Tuner.restore(...)` hint


@dataclass(frozen=True, kw_only=True)
class TrialView:
    """What the progress lines need to know of one Tune trial."""

    dataset: str
    regime: str
    stage: str
    status: str  # Tune's: PENDING, RUNNING, PAUSED, TERMINATED, ERROR
    epochs_done: int
    best_val: float | None  # the highest val_acc it has reported so far

    @property
    def ended(self) -> bool:
        return self.status in ("TERMINATED", "ERROR")


def trial_view(trial: Any) -> TrialView:
    """A Tune `Trial` as the progress lines see it."""
    config = trial.config
    result = trial.last_result or {}
    best = (trial.metric_analysis.get(schema.VAL_ACC) or {}).get("max")
    return TrialView(
        dataset=str(config.get("dataset")),
        regime=str(config.get("regime")),
        stage=(config.get(SWEEP_KEY) or {}).get("stage", schema.SEARCH),
        status=str(trial.status),
        epochs_done=int(result.get("epoch", 0) or 0),
        best_val=None if best is None else float(best),
    )


# -- the lines ----------------------------------------------------------------------------
def _counts(trials: Sequence[TrialView], total: int, label: str) -> str:
    done = sum(trial.ended for trial in trials)
    running = sum(trial.status == "RUNNING" for trial in trials)
    pending = sum(trial.status in ("PENDING", "PAUSED") for trial in trials)
    text = f"{label} {done}/{total} done"
    if running:
        text += f", {running} running"
    if pending:
        text += f", {pending} pending"
    return text


def confirmations_owed(options: SweepOptions) -> int:
    """Confirmation runs per (dataset, regime) when its search completes at least top_k trials."""
    return options.top_k * options.confirm_seeds


def planned_trials(options: SweepOptions) -> int:
    """Every trial the sweep owes: per dataset and regime its search and confirmation runs."""
    return len(options.datasets) * len(options.regimes) * (options.num_trials + confirmations_owed(options))


def dataset_line(dataset: str, trials: Sequence[TrialView], options: SweepOptions, width: int) -> str:
    """`digits   search 7/20 done, 2 running · confirm 0/10 · best val so far: lerac 97.2%, ...`"""
    mine = [trial for trial in trials if trial.dataset == dataset]
    search = [trial for trial in mine if trial.stage == schema.SEARCH]
    confirm = [trial for trial in mine if trial.stage == schema.CONFIRM]
    regimes = options.regimes
    parts = [_counts(search, options.num_trials * len(regimes), "search"),
             _counts(confirm, confirmations_owed(options) * len(regimes), "confirm")]
    best = []
    for regime in regimes:
        values = [t.best_val for t in search if t.regime == regime and t.best_val is not None]
        best.append(f"{regime} {100 * max(values):.1f}%" if values else f"{regime} -")
    parts.append("best val so far: " + ", ".join(best))
    waiting = confirmations_waiting(mine, options)
    if waiting:
        parts.append(waiting)
    return f"{dataset:<{width}} " + " · ".join(parts)


def confirmations_waiting(trials: Sequence[TrialView], options: SweepOptions) -> str | None:
    """A regime whose search trials are all handed out but not all ended: its confirmation
    runs cannot start before its best config is known."""
    waiting = []
    for regime in options.regimes:
        search = [t for t in trials if t.regime == regime and t.stage == schema.SEARCH]
        confirm = [t for t in trials if t.regime == regime and t.stage == schema.CONFIRM]
        running = sum(not t.ended for t in search)
        if len(search) >= options.num_trials and running and not confirm:
            waiting.append(f"{regime} after {running} more search trial{'s' if running > 1 else ''}")
    return ("confirmation starts: " + ", ".join(waiting)) if waiting else None


def epochs_owed(trials: Sequence[TrialView], options: SweepOptions) -> tuple[int, int]:
    """(trial-epochs done, trial-epochs the sweep owes in all) counted as if no further trial
    stops early: ended trials owe what they trained, the others the full budget."""
    done = sum(trial.epochs_done for trial in trials)
    owed = sum(trial.epochs_done if trial.ended else options.epochs for trial in trials)
    owed += max(0, planned_trials(options) - len(trials)) * options.epochs
    return done, owed


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def time_line(trials: Sequence[TrialView], options: SweepOptions, elapsed: float, done_at_start: int,
              finished: bool) -> str:
    """Elapsed time, trial-epochs done of those owed, and the time left at the rate so far."""
    done, owed = epochs_owed(trials, options)
    text = f"elapsed {duration(elapsed)}, {done}/{owed} trial-epochs"
    trained = done - done_at_start
    if finished:
        return text + ", finished"
    if trained <= 0 or elapsed <= 0:
        return text + ", time left: estimated after the first epochs"
    left = (owed - done) * elapsed / trained
    return text + f", about {duration(left)} left (at most: trials stopped early shorten it)"


def _trials(n: int) -> str:
    return f"{n} trial{'s' if n != 1 else ''}"


def waiting_line(trials: Sequence[TrialView], options: SweepOptions, total: Mapping[str, float],
                 free: Mapping[str, float]) -> str | None:
    """Why trials wait, when some do: no GPU node, no free slot, worker processes starting,
    or the --max-concurrent limit. Pending trials whose actors are starting already hold their
    resources, so the cluster's held resources tell them apart from trials with no slot."""
    pending = sum(trial.status == "PENDING" for trial in trials)
    running = sum(trial.status == "RUNNING" for trial in trials)
    cpus, gpus = options.cpus_per_trial, options.gpus_per_trial
    asks = f"each trial asks {cpus:g} CPU" + (f" and {gpus:g} GPU" if gpus else "")
    if pending and not total:
        return f"waiting: {_trials(pending)} pending"
    if pending and gpus > total.get("GPU", 0):
        return (f"waiting: {_trials(pending)} for a GPU node ({asks}; the cluster has "
                f"{total.get('GPU', 0):g} GPUs now; an autoscaling cluster starts GPU workers on demand)")
    if pending:
        held = {kind: total.get(kind, 0) - free.get(kind, 0) for kind in ("CPU", "GPU")}
        starting = int((held["CPU"] - running * cpus + 1e-9) // cpus)
        if gpus:
            starting = min(starting, int((held["GPU"] - running * gpus + 1e-9) // gpus))
        starting = max(0, min(pending, starting))
        parts = [f"{_trials(starting)} starting (worker processes launching)"] if starting else []
        if pending > starting:
            usage = f"{held['CPU']:g}/{total.get('CPU', 0):g} CPUs"
            if total.get("GPU"):
                usage += f", {held['GPU']:g}/{total['GPU']:g} GPUs"
            parts.append(f"{_trials(pending - starting)} for a free slot ({usage} in use; {asks})")
        return "waiting: " + "; ".join(parts)
    if running >= options.max_concurrent and len(trials) < planned_trials(options):
        return (f"queued: {_trials(planned_trials(options) - len(trials))} not started yet "
                f"({options.max_concurrent} at a time: --max-concurrent)")
    return None


def status_lines(trials: Iterable[TrialView], options: SweepOptions, *, elapsed: float, done_at_start: int,
                 finished: bool, total: Mapping[str, float], free: Mapping[str, float],
                 sweep_dir: Path) -> list[str]:
    """The product's block above Ray's table."""
    trials = list(trials)
    width = max(len(dataset) for dataset in options.datasets)
    lines = [f"Sweep {sweep_dir.name}: " + time_line(trials, options, elapsed, done_at_start, finished)]
    lines += [dataset_line(dataset, trials, options, width) for dataset in options.datasets]
    waiting = None if finished else waiting_line(trials, options, total, free)
    if waiting:
        lines.append(waiting)
    lines.append(f"Storage: {sweep_dir}")
    return lines


# -- Ray's reporter, with the product's lines ---------------------------------------------
class LiveReporter(CLIReporter):
    """Ray's trial table for the whole sweep, under the product's status lines."""

    def __init__(self, *, options: SweepOptions, sweep_dir: Path, **kwargs: Any):
        super().__init__(max_report_frequency=REPORT_EVERY_S, **kwargs)
        self.options = options
        self.sweep_dir = sweep_dir
        self._started: float | None = None
        self._done_at_start: int | None = None

    def _current_best_trial(self, trials: list) -> tuple[None, None]:
        """No "Current best trial" line: the per-regime best is in the dataset lines."""
        return None, None

    def _progress_str(self, trials: list, done: bool, *sys_info: str, fmt: str = "psql",
                      delim: str = "\n") -> str:
        views = [trial_view(trial) for trial in trials]
        if self._started is None:  # counted from this process's start: a resumed sweep too
            self._started = time.monotonic()
            self._done_at_start = sum(view.epochs_done for view in views)
        total, free = _resources()
        ours = status_lines(views, self.options, elapsed=time.monotonic() - self._started,
                            done_at_start=self._done_at_start or 0, finished=done, total=total,
                            free=free, sweep_dir=self.sweep_dir)
        ray_lines = super()._progress_str(trials, done, *sys_info, fmt=fmt, delim=delim).split(delim)
        ray_lines = [line for line in ray_lines if not line.startswith("Result logdir:")]
        return delim.join(ray_lines[:2] + ours + ray_lines[2:])


def _resources() -> tuple[dict[str, float], dict[str, float]]:
    """The cluster's resources and those free now (empty when Ray cannot say)."""
    import ray

    try:
        return ray.cluster_resources(), ray.available_resources()
    except Exception:  # the status must never stop a sweep
        return {}, {}


def progress_reporter(options: SweepOptions, sweep_dir: Path) -> LiveReporter:
    """The live display of a sweep: the product's lines and Ray's table with the key columns.

    Regime-specific settings are left out of the table: they are conditional,
    absent from other regimes' configs.
    """
    hide_ray_resume_hint()
    return LiveReporter(
        options=options,
        sweep_dir=sweep_dir,
        metric_columns={"training_iteration": "epoch", "train_loss": "loss", "val_acc": "val acc",
                        "train_seconds": "train s"},
        parameter_columns={"dataset": "dataset", "regime": "regime", f"{SWEEP_KEY}/stage": "stage",
                           "lr": "lr", "batch_size": "batch"},
        max_progress_rows=12,
        sort_by_metric=True,
        print_intermediate_tables=True,
    )


# -- one resume instruction -----------------------------------------------------------------
class _DropRayResumeHint(logging.Filter):
    """Ray logs `Resume experiment with: Tuner.restore(...)` on an interruption; the product
    says how to resume its own way (`--resume`), so Ray's hint would only mislead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return RAY_RESUME_HINT not in record.getMessage()


def hide_ray_resume_hint() -> None:
    logger = logging.getLogger(RAY_TUNE_LOGGER)
    if not any(isinstance(f, _DropRayResumeHint) for f in logger.filters):
        logger.addFilter(_DropRayResumeHint())
