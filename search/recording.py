"""MLflow records of a sweep: a parent run per dataset, a child run per trial.

The recorder is a Ray Tune callback in the driver process, so it sees every
trial's results in order and writes them with `MlflowClient` against explicit
run ids (no global active run, nothing to nest across processes). A trial's
child run is found again by its tags after a resume, so a resumed trial keeps
its run instead of getting a duplicate. The schema is in docs/contracts.md.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray.tune import Callback
from ray.tune.experiment import Trial

from trainables.config import RunConfig
from trainables.config_file import write_config_file

PARENT_ROLE = "parent"
TRIAL_ROLE = "trial"
METRIC_KEYS = ("train_loss", "val_acc", "test_acc", "epoch_seconds", "train_seconds")
BEST_CONFIG = "best_config.yaml"
MLFLOW_BATCH_LIMIT = 900  # log_batch accepts at most 1000 metrics per call


def end_state(last_result: dict[str, Any], epochs: int) -> str:
    """How a trial ended, from its last reported result."""
    if last_result.get("diverged"):
        return "diverged"
    if last_result.get("epoch", 0) >= epochs:
        return "completed"
    return "stopped_early"


def _flat_params(config: dict[str, Any]) -> list[Param]:
    return [Param(key, value) for key, value in RunConfig.from_dict(config).to_params().items()]


def artifact_location(tracking_uri: str) -> str | None:
    """Artifacts of a sqlite store sit beside the database (`mlruns/`), not in the
    current folder; a server decides for itself (None)."""
    if tracking_uri.startswith("sqlite:///"):
        database = Path(tracking_uri.removeprefix("sqlite:///")).resolve()
        return (database.parent / "mlruns").as_uri()
    return None


class SweepRecorder:
    """Creates and finds a sweep's MLflow runs.

    Per-epoch metrics and end states are written by one background thread, in
    order: Tune waits for its callbacks before a trial's next epoch, and a
    synchronous MLflow call cost 15-30 ms of every epoch. Anything that reads
    the records back (`flush`, winners, counts) first waits for the writes.
    """

    def __init__(self, *, tracking_uri: str, experiment: str, sweep_id: str):
        self.client = MlflowClient(tracking_uri)
        self.sweep_id = sweep_id
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlflow-writer")
        self._pending: list[Future] = []
        found = self.client.get_experiment_by_name(experiment)
        self.experiment_id = (
            found.experiment_id
            if found
            else self.client.create_experiment(experiment, artifact_location=artifact_location(tracking_uri))
        )

    def _sweep_run(self, **tags: str) -> str | None:
        """The id of this sweep's run carrying `tags`, if it exists (e.g. after a resume)."""
        conditions = [f"tags.sweep_id = '{self.sweep_id}'"]
        conditions += [f"tags.{key} = '{value}'" for key, value in tags.items()]
        found = self.client.search_runs([self.experiment_id], filter_string=" and ".join(conditions))
        return found[0].info.run_id if found else None

    def parent_run(self, *, dataset: str, model: str, regimes: tuple[str, ...], code_version: str) -> str:
        """The dataset's parent run for this sweep, created on first use."""
        existing = self._sweep_run(role=PARENT_ROLE, dataset=dataset)
        if existing is not None:
            return existing
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"{dataset}-{self.sweep_id}",
            tags={
                "role": PARENT_ROLE,
                "dataset": dataset,
                "model": model,
                "sweep_id": self.sweep_id,
                "code_version": code_version,
                "regimes": ",".join(regimes),
            },
        )
        return run.info.run_id

    def trial_run(self, *, parent_run_id: str, dataset: str, trial_id: str, config: dict[str, Any]) -> str:
        """The trial's child run, found by its tags after a resume, else created."""
        existing = self._sweep_run(role=TRIAL_ROLE, trial_id=trial_id)
        if existing is not None:
            self.client.update_run(existing, status="RUNNING")
            return existing
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"{config['regime']}-{trial_id}",
            tags={
                "mlflow.parentRunId": parent_run_id,
                "role": TRIAL_ROLE,
                "dataset": dataset,
                "sweep_id": self.sweep_id,
                "trial_id": trial_id,
                "regime": str(config["regime"]),
            },
        )
        self.client.log_batch(run.info.run_id, params=_flat_params(config))
        return run.info.run_id

    def last_logged_epoch(self, run_id: str) -> int:
        """The last epoch a run holds, so a resumed trial does not log an epoch twice."""
        history = self.client.get_metric_history(run_id, "val_acc")
        return max((metric.step for metric in history), default=0)

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles callbacks with its experiment state: leave the writer thread out."""
        return {key: value for key, value in self.__dict__.items() if key not in ("_writer", "_pending")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlflow-writer")
        self._pending = []

    def _submit(self, write: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        for done in [future for future in self._pending if future.done()]:
            done.result()  # a failed write surfaces here rather than vanishing
            self._pending.remove(done)
        self._pending.append(self._writer.submit(write, *args, **kwargs))

    def flush(self) -> None:
        """Wait until every queued write is in MLflow (raises the first failure)."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def log_epoch(self, run_id: str, result: dict[str, Any]) -> None:
        """One epoch's metrics in batched calls (step = epoch), written in the background."""
        now = int(time.time() * 1000)
        step = int(result["epoch"])
        metrics = [
            Metric(key, float(value), now, step)
            for key, value in result.items()
            if (key in METRIC_KEYS or key.startswith("lr/")) and isinstance(value, (int, float))
        ]
        for start in range(0, len(metrics), MLFLOW_BATCH_LIMIT):
            self._submit(self.client.log_batch, run_id, metrics=metrics[start : start + MLFLOW_BATCH_LIMIT])

    def finish_trial(self, run_id: str, state: str) -> None:
        """Tag how the trial ended and close its run (in the background, after its metrics)."""
        ended = int(time.time() * 1000)  # now, not when the background writer gets to it
        self._submit(self.client.set_tag, run_id, "end_state", state)
        self._submit(
            self.client.set_terminated,
            run_id,
            status="FAILED" if state == "errored" else "FINISHED",
            end_time=ended,
        )

    def mark_winner(self, parent_run_id: str) -> Winner | None:
        """Record the dataset's winner on its parent run; None if no trial completed."""
        self.flush()
        winner = self.find_winner(parent_run_id)
        if winner is None:
            self.client.set_tag(parent_run_id, "winner_run_id", "none")
            self.client.set_terminated(parent_run_id, status="FAILED")
            return None
        self.client.log_batch(
            parent_run_id,
            metrics=[
                Metric("best_val_acc", winner.val_acc, int(time.time() * 1000), 0),
                Metric("best_test_acc", winner.test_acc, int(time.time() * 1000), 0),
            ],
            params=_flat_params(winner.config),
            tags=[RunTag("winner_run_id", winner.run_id), RunTag("winner_regime", winner.config["regime"])],
        )
        parent = self.client.get_run(parent_run_id)
        metadata = {
            "dataset": parent.data.tags["dataset"],
            "model": parent.data.tags["model"],
            "seed": winner.config["seed"],
            "code_version": parent.data.tags["code_version"],
            "source_run_id": winner.run_id,
            "recorded_val_acc": winner.val_acc,
            "recorded_test_acc": winner.test_acc,
        }
        with tempfile.TemporaryDirectory() as folder:
            path = write_config_file(Path(folder) / BEST_CONFIG, winner.config, metadata)
            self.client.log_artifact(parent_run_id, str(path))
        self.client.set_terminated(parent_run_id, status="FINISHED")
        return winner

    def end_state_counts(self, parent_run_id: str) -> dict[str, int]:
        """How many of the dataset's trials ended in each way."""
        self.flush()
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
            max_results=10_000,
        )
        counts: dict[str, int] = {}
        for run in runs:
            state = run.data.tags.get("end_state", "unfinished")
            counts[state] = counts.get(state, 0) + 1
        return counts

    def find_winner(self, parent_run_id: str) -> Winner | None:
        """Highest final validation accuracy among completed trials (never test accuracy)."""
        self.flush()
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=(
                f"tags.mlflow.parentRunId = '{parent_run_id}' and tags.end_state = 'completed'"
            ),
            max_results=10_000,
        )
        candidates = [
            run for run in runs
            if math.isfinite(run.data.metrics.get("val_acc", math.nan))
            and math.isfinite(run.data.metrics.get("train_loss", math.nan))
        ]
        if not candidates:
            return None
        best = max(
            candidates,
            key=lambda run: (run.data.metrics["val_acc"], -run.data.metrics["train_loss"]),
        )
        config = RunConfig.from_params(best.data.params).to_dict()
        return Winner(
            run_id=best.info.run_id,
            config=config,
            val_acc=best.data.metrics["val_acc"],
            test_acc=best.data.metrics["test_acc"],
        )


@dataclass(frozen=True)
class Winner:
    run_id: str
    config: dict[str, Any]
    val_acc: float
    test_acc: float


class MlflowTrialCallback(Callback):
    """Ray Tune callback: every trial of one dataset's sweep into its child run."""

    def __init__(self, recorder: SweepRecorder, *, parent_run_id: str, dataset: str, epochs: int):
        self.recorder = recorder
        self.parent_run_id = parent_run_id
        self.dataset = dataset
        self.epochs = epochs
        self.run_ids: dict[str, str] = {}
        self.logged_epochs: dict[str, int] = {}

    def _run_id(self, trial: Trial) -> str:
        if trial.trial_id not in self.run_ids:
            run_id = self.recorder.trial_run(
                parent_run_id=self.parent_run_id,
                dataset=self.dataset,
                trial_id=trial.trial_id,
                config=RunConfig.from_dict(trial.config).to_dict(),
            )
            self.run_ids[trial.trial_id] = run_id
            self.logged_epochs[trial.trial_id] = self.recorder.last_logged_epoch(run_id)
        return self.run_ids[trial.trial_id]

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._run_id(trial)

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any) -> None:
        run_id = self._run_id(trial)
        if result["epoch"] > self.logged_epochs[trial.trial_id]:
            self.recorder.log_epoch(run_id, result)
            self.logged_epochs[trial.trial_id] = result["epoch"]

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self.recorder.finish_trial(self._run_id(trial), end_state(trial.last_result or {}, self.epochs))

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        """Everything Tune reported is in MLflow before `fit()` returns, interrupted or not."""
        self.recorder.flush()

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self.recorder.finish_trial(self._run_id(trial), "errored")
