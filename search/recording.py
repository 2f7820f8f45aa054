"""MLflow records of a sweep: a parent run per dataset, a child run per trial.

The recorder is a Ray Tune callback in the driver process, so it sees every
trial's results in order and writes them with `MlflowClient` against explicit
run ids (no global active run, nothing to nest across processes). A trial's
child run is found again by its tags after a resume, so a resumed trial keeps
its run instead of getting a duplicate. Names and rules: `search.schema`.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray.tune import Callback
from ray.tune.experiment import Trial
from ray.tune.result import AUTO_RESULT_KEYS

from search import schema
from search.balanced_search import SWEEP_KEY, end_state
from search.verdicts import DatasetOutcome, config_metadata, description
from trainables.config import RunConfig
from trainables.config_file import write_config_file

MLFLOW_BATCH_LIMIT = 900  # log_batch accepts at most 1000 metrics per call
MLFLOW_PARAM_LIMIT = 100  # and at most 100 params
# Result keys that are Tune's bookkeeping or not a number to chart; every other
# number a Trainable reports becomes a metric without being listed anywhere.
NOT_METRICS = frozenset({*AUTO_RESULT_KEYS, "epoch", "done", "should_checkpoint"})
RATE_TRACE = "rate_trace"


def run_config(config: Mapping[str, Any]) -> RunConfig:
    """The validated training config of a Tune trial config (the searcher's notes removed)."""
    return RunConfig.from_dict({key: value for key, value in config.items() if key != SWEEP_KEY})


def _params(values: Mapping[str, Any]) -> list[Param]:
    return [Param(key, str(value)) for key, value in values.items()]


def artifact_location(tracking_uri: str) -> str | None:
    """Artifacts of a sqlite store sit beside the database (`mlruns/`), not in the
    current folder; a server decides for itself (None)."""
    if tracking_uri.startswith("sqlite:///"):
        database = Path(tracking_uri.removeprefix("sqlite:///")).resolve()
        return (database.parent / "mlruns").as_uri()
    return None


def result_metrics(result: Mapping[str, Any], now_ms: int) -> list[Metric]:
    """Every number the Trainable reported (step = epoch), and its rate trace (step = optimizer step)."""
    epoch = int(result["epoch"])
    trace = result.get(RATE_TRACE)
    metrics = [
        Metric(key, float(value), now_ms, epoch)
        for key, value in result.items()
        if key not in NOT_METRICS and isinstance(value, (int, float)) and not isinstance(value, bool)
        and not (trace and key.startswith(schema.LR_PREFIX))
    ]
    if trace:
        metrics += [
            Metric(schema.LR_PREFIX + group, float(rate), now_ms, int(step))
            for group, rates in trace["rates"].items()
            for step, rate in zip(trace["steps"], rates, strict=True)
        ]
    return metrics


class SweepRecorder:
    """Creates and finds a sweep's MLflow runs and writes to them.

    Per-epoch metrics and end states are written by one background thread, in
    order: Tune waits for its callbacks before a trial's next epoch, and a
    synchronous MLflow call cost 15-30 ms of every epoch. Anything that reads
    the records back first waits for the writes (`flush`).
    """

    def __init__(self, *, tracking_uri: str, experiment: str, sweep_id: str):
        self.tracking_uri = tracking_uri
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

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles callbacks with its experiment state: leave the writer thread out."""
        return {key: value for key, value in self.__dict__.items() if key not in ("_writer", "_pending")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlflow-writer")
        self._pending = []

    # -- finding and creating runs -------------------------------------------------------
    def find_run(self, **tags: str) -> str | None:
        """The id of this sweep's run carrying `tags`, if it exists (e.g. after a resume)."""
        conditions = [f"tags.{schema.SWEEP_ID} = '{self.sweep_id}'"]
        conditions += [f"tags.{key} = '{value}'" for key, value in tags.items()]
        found = self.client.search_runs([self.experiment_id], filter_string=" and ".join(conditions))
        return found[0].info.run_id if found else None

    def parent_run(self, *, dataset: str, model: str, regimes: tuple[str, ...], code_version: str,
                   protocol: Mapping[str, Any]) -> str:
        """The dataset's parent run for this sweep, created (with the protocol) on first use."""
        existing = self.find_run(**{schema.ROLE: schema.PARENT, schema.DATASET: dataset})
        if existing is not None:
            return existing
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"{dataset}-{self.sweep_id}",
            tags={
                schema.ROLE: schema.PARENT,
                schema.DATASET: dataset,
                schema.MODEL: model,
                schema.SWEEP_ID: self.sweep_id,
                schema.CODE_VERSION: code_version,
                schema.REGIMES: ",".join(regimes),
            },
        )
        run_id = run.info.run_id
        flat = {f"protocol.{key}": value for key, value in protocol.items() if not isinstance(value, dict)}
        for start in range(0, len(flat), MLFLOW_PARAM_LIMIT):
            chunk = dict(list(flat.items())[start : start + MLFLOW_PARAM_LIMIT])
            self.client.log_batch(run_id, params=_params(chunk))
        self._log_json(run_id, schema.PROTOCOL_FILE, protocol)
        return run_id

    def trial_run(self, *, parent_run_id: str, trial_id: str, config: Mapping[str, Any]) -> str:
        """The trial's child run, found by its tags after a resume, else created."""
        existing = self.find_run(**{schema.ROLE: schema.TRIAL, schema.TRIAL_ID: trial_id})
        if existing is not None:
            self.client.update_run(existing, status="RUNNING")
            return existing
        notes = config.get(SWEEP_KEY, {})
        stage = notes.get("stage", schema.SEARCH)
        flat = run_config(config).to_dict()
        tags = {
            schema.PARENT_RUN_ID: parent_run_id,
            schema.ROLE: schema.TRIAL,
            schema.STAGE: stage,
            schema.DATASET: str(flat["dataset"]),
            schema.REGIME: str(flat["regime"]),
            schema.SWEEP_ID: self.sweep_id,
            schema.TRIAL_ID: trial_id,
        }
        name = f"{flat['regime']}-{trial_id}"
        if stage == schema.CONFIRM:
            source = self.find_run(**{schema.ROLE: schema.TRIAL, schema.TRIAL_ID: notes["source_trial"]})
            tags.update({schema.SEED: str(flat["seed"]), schema.RANK: str(notes["rank"]),
                         schema.SOURCE_RUN_ID: source or schema.NONE})
            name = f"{flat['regime']}-confirm-seed{flat['seed']}" + (f"-rank{notes['rank']}" if notes["rank"] > 1 else "")
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        self.client.log_batch(run.info.run_id, params=_params(run_config(config).to_params()))
        return run.info.run_id

    def last_logged_epoch(self, run_id: str) -> int:
        """The last epoch a run holds, so a resumed trial does not log an epoch twice."""
        history = self.client.get_metric_history(run_id, schema.VAL_ACC)
        return max((metric.step for metric in history), default=0)

    # -- writing in the background ---------------------------------------------------------
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

    def log_result(self, run_id: str, result: Mapping[str, Any]) -> None:
        """One epoch's metrics in batched calls, written in the background."""
        metrics = result_metrics(result, int(time.time() * 1000))
        for start in range(0, len(metrics), MLFLOW_BATCH_LIMIT):
            self._submit(self.client.log_batch, run_id, metrics=metrics[start : start + MLFLOW_BATCH_LIMIT])

    def tag_run(self, run_id: str, tags: Mapping[str, str]) -> None:
        """Set tags on a run (in the background, in order with its metrics)."""
        self._submit(self.client.log_batch, run_id, tags=[RunTag(key, value) for key, value in tags.items()])

    def finish_trial(self, run_id: str, state: str) -> None:
        """Tag how the trial ended and close its run (in the background, after its metrics)."""
        ended = int(time.time() * 1000)  # now, not when the background writer gets to it
        self._submit(self.client.set_tag, run_id, schema.END_STATE, state)
        self._submit(self.client.set_terminated, run_id,
                     status="FAILED" if state == schema.ERRORED else "FINISHED", end_time=ended)

    # -- the verdict -------------------------------------------------------------------
    def _log_json(self, run_id: str, name: str, content: Any) -> None:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / name
            path.write_text(json.dumps(content, indent=2, default=str))
            self.client.log_artifact(run_id, str(path))

    def run_link(self, run_id: str) -> str:
        """A link to a run that works inside MLflow's UI (Markdown in a run description)."""
        return f"#/experiments/{self.experiment_id}/runs/{run_id}"

    def record_verdict(self, outcome: DatasetOutcome, *, code_version: str) -> None:
        """The dataset's verdict on its parent run: tags, metrics, description, files."""
        self.flush()
        verdict, parent = outcome.verdict, outcome.parent_run_id
        sources = {regime: self.find_run(**{schema.ROLE: schema.TRIAL, schema.TRIAL_ID: c.source.trial_id})
                   for regime, c in outcome.confirmed.items()}
        leading = outcome.leading
        leading_run = sources.get(leading.regime) if leading else None
        now = int(time.time() * 1000)
        metrics = []
        for arm in verdict.arms:
            metrics += [Metric(f"confirm_test_acc/{arm.regime}", arm.test.mean / 100, now, 0),
                        Metric(f"confirm_val_acc/{arm.regime}", arm.mean_val / 100, now, 0)]
        for comparison in verdict.comparisons:
            metrics += [Metric(f"gap_points/{comparison.regime}", comparison.gap.mean, now, 0),
                        Metric(f"p_holm/{comparison.regime}", comparison.pvalue_holm, now, 0)]
        if leading is not None:
            metrics += [Metric("best_val_acc", float(leading.source.result[schema.VAL_ACC]), now, 0),
                        Metric("best_test_acc", float(leading.source.result[schema.TEST_ACC]), now, 0)]
        tags = {
            schema.VERDICT: verdict.outcome,
            schema.WINNER_REGIME: verdict.winner or schema.NONE,
            schema.LEADING_REGIME: verdict.leader or schema.NONE,
            schema.LEADING_RUN_ID: leading_run or schema.NONE,
            schema.TIED_REGIMES: ",".join(verdict.tied),
            schema.RUN_NOTE: description(outcome, leading_link=leading_run and self.run_link(leading_run)),
        }
        self.client.log_batch(parent, metrics=metrics, tags=[RunTag(k, v) for k, v in tags.items()])
        self._log_json(parent, schema.VERDICT_FILE, verdict.to_dict())
        with tempfile.TemporaryDirectory() as folder:
            for regime, confirmed in outcome.confirmed.items():
                metadata = config_metadata(outcome, regime, code_version=code_version,
                                           source_run_id=sources[regime])
                path = write_config_file(Path(folder) / f"{regime}.yaml", confirmed.config, metadata)
                self.client.log_artifact(parent, str(path), artifact_path=schema.REGIME_CONFIGS)
                if leading is not None and regime == leading.regime:
                    best = write_config_file(Path(folder) / schema.BEST_CONFIG, confirmed.config, metadata)
                    self.client.log_artifact(parent, str(best))
        self.client.set_terminated(parent, status="FAILED" if verdict.outcome == schema.NO_RESULT else "FINISHED")


class MlflowTrialCallback(Callback):
    """Ray Tune callback: every trial of the sweep into its dataset's child run."""

    def __init__(self, recorder: SweepRecorder, *, parents: Mapping[str, str], epochs: int):
        self.recorder = recorder
        self.parents = dict(parents)
        self.epochs = epochs
        self.run_ids: dict[str, str] = {}
        self.logged_epochs: dict[str, int] = {}
        self.placements: dict[str, dict[str, str]] = {}

    def _run_id(self, trial: Trial) -> str:
        if trial.trial_id not in self.run_ids:
            run_id = self.recorder.trial_run(
                parent_run_id=self.parents[trial.config["dataset"]],
                trial_id=trial.trial_id,
                config=trial.config,
            )
            self.run_ids[trial.trial_id] = run_id
            self.logged_epochs[trial.trial_id] = self.recorder.last_logged_epoch(run_id)
        return self.run_ids[trial.trial_id]

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._run_id(trial)

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict,
                        **info: Any) -> None:
        run_id = self._run_id(trial)
        self._tag_placement(trial, run_id, result)
        if result["epoch"] > self.logged_epochs[trial.trial_id]:
            self.recorder.log_result(run_id, result)
            self.logged_epochs[trial.trial_id] = result["epoch"]

    def _tag_placement(self, trial: Trial, run_id: str, result: dict) -> None:
        """Where the trial trains: its node, its device and what Ray gave it (again after a move)."""
        given = trial.placement_group_factory.required_resources
        placement = {schema.NODE_ID: str(result.get("node_id")), schema.DEVICE: str(result.get("device")),
                     schema.RESOURCES: ", ".join(f"{key}={value:g}" for key, value in sorted(given.items()))}
        if self.placements.get(trial.trial_id) != placement:
            self.placements[trial.trial_id] = placement
            self.recorder.tag_run(run_id, placement)

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self.recorder.finish_trial(self._run_id(trial), end_state(trial.last_result, self.epochs))

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self.recorder.finish_trial(self._run_id(trial), schema.ERRORED)

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        """Everything Tune reported is in MLflow before `fit()` returns, interrupted or not."""
        self.recorder.flush()

