"""The driver's watch over a running sweep: its records, its disks, its tracking store, its seal.

One Ray Tune callback in the driver process. It hands every trial event to
the recorder (which writes to MLflow on its own thread), watches free space
where the sweep writes and the health of the tracking store, and stops the
sweep the way Ctrl-C does (Tune's own SIGUSR1 handler: trials keep their
checkpoints and the state stays resumable) when either fails, with the reason
kept for one line. When a sweep resumes, its first step makes MLflow agree
with the trials Tune restored (`SweepRecorder.reconcile`). Each time Tune
saves its state, the new files are sealed (`search.integrity`).

Tune pickles its callbacks into `tuner.pkl`; a monitor pickles as a reference
to the live monitor of its sweep in this process, so a resumed sweep uses the
fresh one (its recorder, disks and seal) and `tuner.pkl` holds no state.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.experiment import Trial

from search import schema
from search.balanced_search import end_state
from search.disk import free_bytes
from search.integrity import Seal, sealed_names
from search.recording import SweepRecorder, TrialRecord, read_history

CHECK_EVERY_S = 1.0
_LIVE: dict[str, SweepMonitor] = {}


class StopSweep(Exception):
    """Raised from a callback to stop a sweep that Tune runs outside the main thread."""


def live_monitor(sweep_id: str) -> SweepMonitor:
    """The monitor of `sweep_id` in this process (what an unpickled monitor stands for)."""
    try:
        return _LIVE[sweep_id]
    except KeyError:
        raise RuntimeError(f"sweep {sweep_id} is not running in this process") from None


def caused_by_full_disk(error: BaseException | None) -> bool:
    """Whether an exception, or one it came from, is 'no space left on device'."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if getattr(error, "errno", None) == 28 or "No space left on device" in str(error):
            return True
        error = getattr(error, "cause", None) or error.__cause__ or error.__context__
    return False


class SweepMonitor(Callback):
    """Records every trial, watches disks and the store, stops the sweep with a reason."""

    def __init__(self, *, sweep_id: str, recorder: SweepRecorder, parents: dict[str, str], epochs: int,
                 watched: list[tuple[str, Path]], min_free_bytes: int, seal: Seal,
                 restored_trials: int | None = None):
        self.sweep_id = sweep_id
        self.recorder = recorder
        self.parents = dict(parents)
        self.epochs = epochs
        self.watched = watched
        self.min_free_bytes = min_free_bytes
        self.seal = seal
        self.restored_trials = restored_trials  # None: a new sweep, nothing to reconcile
        self.stop_reason: str | None = None
        self.interrupted = False
        self._trials: list[Trial] = []
        self._unsealed = False  # Tune saved before any step told where its staging folder is
        self._reconciled = restored_trials is None
        self._recording = True
        self._next_check = 0.0
        self._handlers: dict[int, Any] = {}
        self._placements: dict[str, dict[str, str]] = {}  # trial id -> node, device, resources tagged
        _LIVE[sweep_id] = self

    def __reduce__(self) -> tuple[Callable[[str], SweepMonitor], tuple[str]]:
        return live_monitor, (self.sweep_id,)

    def close(self) -> None:
        """Put back the signal handlers and leave the process's list of live monitors."""
        for signum, handler in self._handlers.items():
            if signal.getsignal(signum) is not handler:
                continue
            signal.signal(signum, handler.args[0])
        _LIVE.pop(self.sweep_id, None)

    # -- stopping ------------------------------------------------------------------------
    def setup(self, **info: Any) -> None:
        """Note interruptions: Tune installed its handlers for Ctrl-C and SIGUSR1 just before."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGINT, signal.SIGUSR1):
            previous = signal.getsignal(signum)
            if callable(previous):
                self._handlers[signum] = functools.partial(self._noted, previous)
                signal.signal(signum, self._handlers[signum])

    def _noted(self, previous: Callable[..., Any], signum: int, frame: Any) -> None:
        self.interrupted = True
        previous(signum, frame)

    def stop(self, reason: str) -> None:
        """End the sweep as Ctrl-C does (resumable), keeping the first reason."""
        if self.stop_reason is not None:
            return
        self.stop_reason = reason
        if signal.SIGUSR1 in self._handlers:
            signal.raise_signal(signal.SIGUSR1)
        else:
            raise StopSweep(reason)

    def _watch(self, *, now: bool = False) -> None:
        moment = time.monotonic()
        if self.stop_reason is not None or (not now and moment < self._next_check):
            return
        self._next_check = moment + CHECK_EVERY_S
        if self.recorder.writer.failure is not None:
            self.stop(self.recorder.writer.failure)
            return
        full = self._full_disk()
        if full is not None:
            self.stop(full)

    def _full_disk(self) -> str | None:
        for what, folder in self.watched:
            free = free_bytes(folder)
            if free < self.min_free_bytes:
                return (f"the {what} {folder} is full: {free / 2**20:.1f} MiB free, the sweep needs "
                        f"{self.min_free_bytes / 2**20:g} MiB (--min-free-mb)")
        return None

    # -- Tune's events -------------------------------------------------------------------
    def on_step_begin(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        self._trials = trials
        if not self._reconciled:
            self._reconcile(trials)
        self._watch()

    def _reconcile(self, trials: list[Trial]) -> None:
        """After a resume: MLflow gets what it missed, and runs Tune does not know are lost."""
        self._reconciled = True
        if self.restored_trials and not trials:
            self._recording = False  # Tune started over instead of resuming: record nothing
            self.stop("Ray Tune could not restore the saved state (see its log above)")
            return
        records = []
        for trial in trials:
            finished = trial.status in (Trial.TERMINATED, Trial.ERROR)
            state = schema.ERRORED if trial.status == Trial.ERROR else end_state(trial.last_result, self.epochs)
            records.append(TrialRecord(trial_id=trial.trial_id, config=dict(trial.config), finished=finished,
                                       end_state=state if finished else None,
                                       history=read_history(trial.path, trial.last_result)))
        self.recorder.reconcile(records, self.parents)

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        if self._recording:
            self.recorder.start_trial(parent_run_id=self.parents[trial.config["dataset"]],
                                      trial_id=trial.trial_id, config=dict(trial.config))

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict,
                        **info: Any) -> None:
        if self._recording:
            self._tag_placement(trial, result)
            self.recorder.log_result(trial.trial_id, result)

    def _tag_placement(self, trial: Trial, result: dict) -> None:
        """Where the trial trains: its node, its device and what Ray gave it (again after a move)."""
        given = trial.placement_group_factory.required_resources
        placement = {schema.NODE_ID: str(result.get("node_id")), schema.DEVICE: str(result.get("device")),
                     schema.RESOURCES: ", ".join(f"{key}={value:g}" for key, value in sorted(given.items()))}
        if self._placements.get(trial.trial_id) != placement:
            self._placements[trial.trial_id] = placement
            self.recorder.tag_trial(trial.trial_id, placement)

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        if self._recording:
            self.recorder.finish_trial(trial.trial_id, end_state(trial.last_result, self.epochs))

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._watch(now=True)  # a failed checkpoint on a full disk: stop before the retries

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._watch(now=True)
        if self._recording and self.stop_reason is None:
            self.recorder.finish_trial(trial.trial_id, schema.ERRORED)

    def get_state(self) -> None:
        """Tune calls this while saving, after its state files are written to its staging
        folder, before it copies them to the storage path: seal them now. On a full disk
        the copy would cut them short, so they are withdrawn instead and the storage path
        keeps the last state that was copied whole. Returns None (no state of ours to save).

        The staging folder is known from the trials, which Tune hands over at each step:
        a resumed sweep with nothing left to run takes no step, so its saves are sealed at
        the experiment's end (`on_experiment_end`), from the same folder."""
        if not self._trials:
            self._unsealed = True
            return None
        self._seal_staging()
        return None

    def _seal_staging(self) -> None:
        self._unsealed = False
        staging = Path(self._trials[0].storage.experiment_driver_staging_path)
        full = self._full_disk()
        if full is None:
            try:
                self.seal.add(staging)
                return
            except OSError as error:
                full = f"cannot seal the saved state in {self.seal.sweep_dir}: {error.strerror or error}"
        for name in sealed_names(staging):
            (staging / name).unlink(missing_ok=True)
        self.stop(full)

    @property
    def trials(self) -> list[Trial]:
        """Every trial of the run (Tune's own objects), once Tune has ended it."""
        return list(self._trials)

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        """A resumed sweep with nothing left to run still gets its records reconciled, and the
        state its saves wrote sealed."""
        self._trials = trials
        if self._unsealed and trials:
            self._seal_staging()
        if not self._reconciled:
            self._reconcile(trials)


STATE_SYNC_FAILED = "Saving experiment state to storage"  # Tune's message when a state copy fails


class QuietFaults(logging.Filter):
    """Drops Ray's tracebacks for faults the monitor reports in one line itself."""

    def __init__(self, monitor: SweepMonitor):
        super().__init__()
        self.monitor = monitor

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        message = record.getMessage()
        if caused_by_full_disk(error) or "No space left on device" in message:
            return False
        if self.monitor.stop_reason is not None and (record.levelno < logging.ERROR
                                                     or message.startswith(STATE_SYNC_FAILED)):
            # Tune's "stop signal received", and its last state copy racing the one still in
            # flight when the monitor stopped it: the sweep's own line says how to go on.
            return False
        # Tune's own resume hint and list of unfinished trials: the sweep prints its own line.
        return "Tuner.restore(" not in message and not message.startswith("Trials did not complete")


@contextlib.contextmanager
def quiet_faults(monitor: SweepMonitor) -> Iterator[None]:
    """Ray's log without the tracebacks of faults the monitor reports in one line."""
    handlers = logging.getLogger("ray").handlers
    quiet = QuietFaults(monitor)
    for handler in handlers:
        handler.addFilter(quiet)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(quiet)


def _as_ctrl_c(signum: int, frame: Any) -> None:
    """SIGTERM (a scheduler, `kill`) does what Ctrl-C does: Tune saves and stops, resumable."""
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
    else:
        raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_as_ctrl_c(*, on_interrupt: Callable[[], Exception]) -> Iterator[None]:
    """Within the block SIGTERM acts as Ctrl-C; a KeyboardInterrupt becomes `on_interrupt()`.

    Installed after `ray.init`, it also replaces the stack dump Ray's runtime
    prints for SIGTERM in the driver.
    """
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _as_ctrl_c) if main else None
    try:
        yield
    except KeyboardInterrupt:
        raise on_interrupt() from None
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
