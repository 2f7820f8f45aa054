"""MLflow records of a sweep: a parent run per dataset, a child run per trial.

Writes go through `BackgroundWriter` (one thread, in order, outages waited out
up to a limit) against explicit run ids: no global active run, nothing to nest
across processes, and Tune never waits for MLflow. A trial's child run is
found again by its tags, so a resumed trial keeps its run. After any stop,
`reconcile` makes the records agree with the trials Tune restored: missed
epochs are written from Tune's own results, finished trials are closed with
their end state, and runs of trials Tune never saved are closed as `lost`.

A trial's epochs, tags and end gather in one batch until the trial ends, for
at most `GATHER_S` (longer while the writer is busy), and go to the store in
one call: every store call costs the driver CPU that the trials beside it on
the same machine would otherwise use (about 6 ms of CPU per call on a sqlite
store, where a trial epoch takes 0.1-0.3 s here), and Tune hands over
buffered epochs in bursts. Names and rules: `search.schema`.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME
from ray.tune.result import AUTO_RESULT_KEYS

from search import schema
from search.balanced_search import SWEEP_KEY
from search.run_labels import ended_run_name, mark_leader, parent_run_name, trial_run_name
from search.tracking_store import PreparedStore, open_experiment
from search.tune_environment import RESULT_BUFFER_S
from search.verdicts import DatasetOutcome, config_metadata, description, verdict_record
from search.writer import BackgroundWriter
from trainables.config import RunConfig
from trainables.config_file import write_config_file

MLFLOW_BATCH_LIMIT = 900  # log_batch accepts at most 1000 metrics per call
MLFLOW_PARAM_LIMIT = 100  # and at most 100 params
# Result keys that are Tune's bookkeeping or not a number to chart; every other
# number a Trainable reports becomes a metric without being listed anywhere.
NOT_METRICS = frozenset({*AUTO_RESULT_KEYS, "epoch", "done", "should_checkpoint", "num_classes"})
RATE_TRACE = "rate_trace"
# How long a trial's first unwritten epoch may wait for later ones before its batch is written:
# as long as Tune itself may hold epochs in the trial's actor, so the MLflow view lags at most
# twice that. A trial's end, and `flush`, write what is waiting at once.
GATHER_S = RESULT_BUFFER_S
CLOSED = frozenset({RunStatus.to_string(RunStatus.FINISHED), RunStatus.to_string(RunStatus.FAILED),
                    RunStatus.to_string(RunStatus.KILLED)})


def run_config(config: Mapping[str, Any]) -> RunConfig:
    """The validated training config of a Tune trial config (the searcher's notes removed)."""
    return RunConfig.from_dict({key: value for key, value in config.items() if key != SWEEP_KEY})


def _params(values: Mapping[str, Any]) -> list[Param]:
    return [Param(key, str(value)) for key, value in values.items()]


def result_metrics(result: Mapping[str, Any]) -> list[Metric]:
    """Every number the Trainable reported (step = epoch), and its rate trace (step = optimizer step).

    Stamped with the result's own time, so writing the same epoch twice (a retry
    after a lost answer, a resume) stores it once; `val_acc` comes last, so an
    epoch whose `val_acc` is stored was stored whole.
    """
    epoch = int(result["epoch"])
    stamp = int(float(result.get("timestamp", time.time())) * 1000)
    trace = result.get(RATE_TRACE)
    metrics = [
        Metric(key, float(value), stamp, epoch)
        for key, value in result.items()
        if key not in NOT_METRICS and isinstance(value, (int, float)) and not isinstance(value, bool)
        and not (trace and key.startswith(schema.LR_PREFIX))
    ]
    if trace:
        metrics += [
            Metric(schema.LR_PREFIX + group, float(rate), stamp, int(step))
            for group, rates in trace["rates"].items()
            for step, rate in zip(trace["steps"], rates, strict=True)
        ]
    return sorted(metrics, key=lambda metric: metric.key == schema.VAL_ACC)


@dataclass(frozen=True, kw_only=True)
class TrialRecord:
    """What the records need of a Tune trial, copied out of Tune's thread."""

    trial_id: str
    config: Mapping[str, Any]
    finished: bool = False
    end_state: str | None = None
    history: list[Mapping[str, Any]] = field(default_factory=list)  # results, oldest first


@dataclass
class TrialWrites:
    """A trial's writes gathered until it ends, for at most `GATHER_S` (longer while the writer is
    busy), sent in one store call."""

    results: list[Mapping[str, Any]] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    end: tuple[str, int] | None = None  # end state, end time (ms)
    since: float = field(default_factory=time.monotonic)  # when the first of them was gathered


def read_history(trial_path: str | None, last_result: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """A trial's results from its `result.json` in the storage path (plain JSON), one per epoch.

    Lines cut off by a full disk or a kill are skipped; Tune's own last result
    fills in an epoch the file lacks.
    """
    by_epoch: dict[int, dict[str, Any]] = {}
    path = Path(trial_path) / "result.json" if trial_path else None
    if path is not None and path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            try:
                result = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(result, dict) and "epoch" in result:
                by_epoch[int(result["epoch"])] = result
    if last_result and "epoch" in last_result:
        by_epoch.setdefault(int(last_result["epoch"]), dict(last_result))
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


class SweepRecorder:
    """Creates and finds a sweep's MLflow runs and writes to them (through the writer)."""

    def __init__(self, *, tracking_uri: str, experiment: str, sweep_id: str,
                 writer: BackgroundWriter | None = None, warn: Callable[[str], None] = print,
                 patience_s: float = 120.0, prepared: PreparedStore | None = None):
        self.tracking_uri = tracking_uri
        self.sweep_id = sweep_id
        # writer thread only: trial id -> run id, its name, the epochs stored; creations tried that
        # may have reached the store before failing
        self._run_ids: dict[str, str] = {}
        self._names: dict[str, str] = {}
        self._logged: dict[str, set[int]] = {}
        self._creating: set[str] = set()
        self._lock = threading.Lock()
        self._gathered = threading.Condition(self._lock)  # notified at a trial's end and at `flush`
        self._waiting: dict[str, TrialWrites] = {}  # trial id -> writes queued, not yet taken
        self._flushing = False  # while `flush` waits, nothing gathers longer (under `_lock`)
        self.client, self.experiment_id = open_experiment(tracking_uri, experiment, prepared)
        self.writer = writer or BackgroundWriter(store=tracking_uri, patience_s=patience_s, warn=warn)

    # -- finding and creating runs (any thread) ------------------------------------------
    def runs(self, **tags: str) -> list[Any]:
        """This sweep's runs carrying `tags`, every page."""
        conditions = [f"tags.{schema.SWEEP_ID} = '{self.sweep_id}'"]
        conditions += [f"tags.{key} = '{value}'" for key, value in tags.items()]
        found, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], filter_string=" and ".join(conditions),
                                           max_results=1000, page_token=token)
            found += list(page)
            token = page.token
            if not token:
                return found

    def find_run(self, **tags: str) -> str | None:
        """The id of this sweep's run carrying `tags`, if it exists (e.g. after a resume)."""
        found = self.runs(**tags)
        return found[0].info.run_id if found else None

    def parent_run(self, *, dataset: str, model: str, regimes: tuple[str, ...], code_version: str,
                   protocol: Mapping[str, Any]) -> str:
        """The dataset's parent run for this sweep, created (with the protocol) on first use.

        Called before the sweep writes anything else, directly (not through the
        writer): a store that does not work fails the sweep at once.
        """
        existing = self.find_run(**{schema.ROLE: schema.PARENT, schema.DATASET: dataset})
        if existing is not None:
            return existing
        run = self.client.create_run(
            self.experiment_id,
            run_name=parent_run_name(dataset, self.sweep_id),
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

    # -- trials (queued; run on the writer thread) ---------------------------------------
    def start_trial(self, *, parent_run_id: str, trial_id: str, config: Mapping[str, Any]) -> None:
        """Queue the trial's run, stamped with this moment: the writer may reach it seconds later."""
        self.writer.submit(self._trial_run, parent_run_id, trial_id, config, started_ms=int(time.time() * 1000))

    def log_result(self, trial_id: str, result: Mapping[str, Any]) -> None:
        """One epoch's metrics, unless the run already holds that epoch (a replay after a restore)."""
        with self._lock:
            self._gather(trial_id).results.append(dict(result))

    def finish_trial(self, trial_id: str, state: str) -> None:
        """Tag how the trial ended and close its run, after its metrics."""
        with self._lock:
            self._gather(trial_id).end = (state, int(time.time() * 1000))
            self._gathered.notify_all()  # nothing follows a trial's end: its batch is complete

    def tag_trial(self, trial_id: str, tags: Mapping[str, str]) -> None:
        """Set tags on a trial's run, in order with its metrics."""
        with self._lock:
            self._gather(trial_id).tags.update(tags)

    def _gather(self, trial_id: str) -> TrialWrites:
        """The trial's writes not yet taken by the writer; a new batch is queued when there are none.
        Called under `_lock`."""
        writes = self._waiting.get(trial_id)
        if writes is None:
            writes = self._waiting[trial_id] = TrialWrites()
            self.writer.submit(self._write_gathered, trial_id, writes)
        return writes

    def reconcile(self, trials: list[TrialRecord], parents: Mapping[str, str]) -> None:
        """Make the records agree with the trials Tune restored (queued before anything else)."""
        self.writer.submit(self._reconcile, trials, dict(parents))

    def flush(self) -> None:
        """Wait until every queued write is in MLflow (StoreFailed if the store failed)."""
        with self._lock:
            self._flushing = True
            self._gathered.notify_all()
        try:
            self.writer.flush()
        finally:
            with self._lock:
                self._flushing = False

    def _trial_run(self, parent_run_id: str, trial_id: str, config: Mapping[str, Any],
                   found: Any | None = None, started_ms: int | None = None) -> str:
        """The trial's child run: created; or found by its tags (reopened) when a resume restored it
        or when an earlier try to create it may have reached the store before failing."""
        if trial_id in self._run_ids:
            return self._run_ids[trial_id]
        if found is None and trial_id in self._creating:
            runs = self.runs(**{schema.ROLE: schema.TRIAL, schema.TRIAL_ID: trial_id})
            if runs:  # created, but the answer was lost: perhaps before its params
                found = runs[0]
                self._log_params(found.info.run_id, config)
        if found is not None:
            run_id = found.info.run_id
            if found.info.status != RunStatus.to_string(RunStatus.RUNNING):
                self.client.update_run(run_id, status="RUNNING")
            history = self.client.get_metric_history(run_id, schema.VAL_ACC)
            self._logged[trial_id] = {metric.step for metric in history}
            self._names[trial_id] = found.info.run_name or ""
        else:
            self._creating.add(trial_id)  # kept should this try fail after reaching the store
            run_id = self._create_trial_run(parent_run_id, trial_id, config, started_ms)
            self._creating.discard(trial_id)
            self._logged[trial_id] = set()
        self._run_ids[trial_id] = run_id
        return run_id

    def _create_trial_run(self, parent_run_id: str, trial_id: str, config: Mapping[str, Any],
                          started_ms: int | None) -> str:
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
        name = trial_run_name(regime=str(flat["regime"]), trial_id=trial_id, notes=notes, seed=flat["seed"])
        if stage == schema.CONFIRM:
            source = self._run_ids.get(notes["source_trial"]) or \
                self.find_run(**{schema.ROLE: schema.TRIAL, schema.TRIAL_ID: notes["source_trial"]})
            tags.update({schema.SEED: str(flat["seed"]), schema.RANK: str(notes["rank"]),
                         schema.SOURCE_RUN_ID: source or schema.NONE})
        run = self.client.create_run(self.experiment_id, start_time=started_ms, run_name=name, tags=tags)
        self._names[trial_id] = name
        self._log_params(run.info.run_id, config)
        return run.info.run_id

    def _log_params(self, run_id: str, config: Mapping[str, Any]) -> None:
        self.client.log_batch(run_id, params=_params(run_config(config).to_params()))

    def _write_gathered(self, trial_id: str, writes: TrialWrites) -> None:
        """Take the trial's gathered writes once they hold its end or are `GATHER_S` old (later ones
        start a new batch) and write them. The writes queued behind wait too, none longer than its
        own window."""
        with self._lock:
            self._gathered.wait_for(lambda: writes.end is not None or self._flushing,
                                    timeout=max(0.0, writes.since + GATHER_S - time.monotonic()))
            if self._waiting.get(trial_id) is writes:
                del self._waiting[trial_id]
        self._write(trial_id, writes)

    def _write(self, trial_id: str, writes: TrialWrites) -> None:
        """Epochs the run lacks (each with `val_acc` last, so an epoch whose `val_acc` is stored was
        stored whole), tags, and the end: its state, the name saying how it ended, the status."""
        run_id = self._run_ids.get(trial_id)
        if run_id is None:
            return
        fresh: dict[int, Mapping[str, Any]] = {}
        for result in writes.results:
            if int(result["epoch"]) not in self._logged[trial_id]:
                fresh.setdefault(int(result["epoch"]), result)
        metrics = [metric for epoch in sorted(fresh) for metric in result_metrics(fresh[epoch])]
        tags = dict(writes.tags)
        if writes.end is not None:
            state = writes.end[0]
            tags[schema.END_STATE] = state
            name = self._names[trial_id]  # set with the run id (`_trial_run`)
            ended = ended_run_name(name, state, max(self._logged[trial_id] | fresh.keys(), default=0))
            if ended != name:
                tags[MLFLOW_RUN_NAME] = ended  # kept as the name once stored (a retry renames again)
        chunks = [metrics[start : start + MLFLOW_BATCH_LIMIT] for start in range(0, len(metrics), MLFLOW_BATCH_LIMIT)]
        chunks = chunks or ([[]] if tags else [])
        for index, chunk in enumerate(chunks):
            last = index == len(chunks) - 1  # the tags (the end state among them) after every metric
            self.client.log_batch(run_id, metrics=chunk,
                                  tags=[RunTag(key, value) for key, value in tags.items()] if last else [])
        self._logged[trial_id] |= fresh.keys()
        if MLFLOW_RUN_NAME in tags:
            self._names[trial_id] = tags[MLFLOW_RUN_NAME]
        if writes.end is not None:
            state, ended_ms = writes.end
            self.client.set_terminated(run_id, status="FAILED" if state == schema.ERRORED else "FINISHED",
                                       end_time=ended_ms)

    def _reconcile(self, trials: list[TrialRecord], parents: Mapping[str, str]) -> None:
        runs = {run.data.tags.get(schema.TRIAL_ID): run for run in self.runs(**{schema.ROLE: schema.TRIAL})}
        known = {trial.trial_id for trial in trials}
        for trial_id, run in runs.items():
            if trial_id in known:
                continue
            if run.data.tags.get(schema.END_STATE) != schema.LOST:
                self.client.set_tag(run.info.run_id, schema.END_STATE, schema.LOST)
            if run.info.status not in CLOSED:
                self.client.set_terminated(run.info.run_id, status="KILLED")
        for trial in trials:
            run = runs.get(trial.trial_id)
            if (trial.finished and run is not None and run.info.status in CLOSED
                    and run.data.tags.get(schema.END_STATE) == trial.end_state):
                continue  # closed after its last write: the writer writes in order
            self._trial_run(parents[trial.config["dataset"]], trial.trial_id, trial.config, found=run)
            end = None
            if trial.finished:
                last = trial.history[-1].get("timestamp") if trial.history else None
                end = (trial.end_state or schema.ERRORED, int(float(last) * 1000) if last else int(time.time() * 1000))
            self._write(trial.trial_id, TrialWrites(results=list(trial.history), end=end))

    # -- the verdict (on the writer thread, after every trial's records) -----------------
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
        self.writer.call(self._record_verdict, outcome, code_version)

    def _record_verdict(self, outcome: DatasetOutcome, code_version: str) -> None:
        verdict, parent = outcome.verdict, outcome.parent_run_id
        sources = {regime: self.find_run(**{schema.ROLE: schema.TRIAL, schema.TRIAL_ID: c.source.trial_id})
                   for regime, c in outcome.confirmed.items()}
        leading = outcome.leading
        leading_run = sources.get(leading.regime) if leading else None
        now = int(time.time() * 1000)
        metrics = []
        for arm in verdict.arms:
            metrics += [Metric(schema.CONFIRM_TEST_ACC + arm.regime, arm.test.mean / 100, now, 0),
                        Metric(schema.CONFIRM_VAL_ACC + arm.regime, arm.mean_val / 100, now, 0)]
        for comparison in verdict.comparisons:
            metrics += [Metric(schema.GAP_POINTS + comparison.regime, comparison.gap.mean, now, 0),
                        Metric(schema.P_HOLM + comparison.regime, comparison.pvalue_holm, now, 0)]
        if leading is not None:
            metrics += [Metric(schema.BEST_VAL_ACC, float(leading.source.result[schema.VAL_ACC]), now, 0),
                        Metric(schema.BEST_TEST_ACC, float(leading.source.result[schema.TEST_ACC]), now, 0)]
        metrics += [Metric(schema.percent_key(m.key), round(100 * m.value, 2), now, 0) for m in metrics
                    if m.key.startswith((schema.CONFIRM_TEST_ACC, schema.CONFIRM_VAL_ACC, schema.BEST_VAL_ACC,
                                         schema.BEST_TEST_ACC))]
        if outcome.chance is not None:
            metrics += [Metric(schema.CHANCE_ACC, outcome.chance, now, 0),
                        Metric(schema.TRUST_FLOOR_ACC, outcome.trust_floor, now, 0)]
        tags = {
            schema.VERDICT: verdict.outcome,
            schema.VERDICT_REASON: outcome.headline(),
            schema.WINNER_REGIME: verdict.winner or schema.NONE,
            schema.LEADING_REGIME: verdict.leader or schema.NONE,
            schema.LEADING_RUN_ID: leading_run or schema.NONE,
            schema.TIED_REGIMES: ",".join(verdict.tied),
            schema.RUN_NOTE: description(outcome, leading_link=leading_run and self.run_link(leading_run)),
        }
        self.client.log_batch(parent, metrics=metrics, tags=[RunTag(k, v) for k, v in tags.items()])
        self.client.update_run(parent, name=parent_run_name(outcome.dataset, self.sweep_id, verdict=verdict.outcome,
                                                            winner=verdict.winner))
        if leading_run is not None:
            mark_leader(self.client, leading_run, winner=verdict.outcome == schema.WINNER)
        self._log_json(parent, schema.VERDICT_FILE, verdict_record(outcome))
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
