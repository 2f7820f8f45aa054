"""A sweep's MLflow records as pandas DataFrames: the one module that reads MLflow.

Every command works from one `Sweep` (the parent runs and child runs of one
sweep id), so all of them see the same numbers. The record schema, every tag,
stage, end state and file name, is `search.schema`; nothing here spells one
out. Child runs are of two stages: search trials (ranked on validation
accuracy within their regime) and confirmation runs (a regime's best search
config retrained on a fresh seed, the verdict's evidence). Runs ended `lost`
(trials the sweep's saved state never recorded; another trial ran in each one's
place) are part of neither: `trials_of` and `confirmations_of` leave them out,
so budgets, leaderboards and pictures count what the search and the verdict
used, and `lost_of` lists them for readers that say how many there were.
Per-epoch histories and artifacts are fetched only when a command needs them.
"""

from __future__ import annotations

import contextlib
import json
import math
import sqlite3
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from analysis.errors import AnalysisError
from search import schema
from search.store_uri import sqlite_path
from trainables.config import RunConfig
from trainables.config_file import ConfigFile, read_config_file

PARAM = "params."
ANALYSIS_FOLDER = "analysis"  # where the analysis commands attach their files on a parent run
EPOCHS = "epochs"  # column: the epochs a run trained (the step of its last validation accuracy)
RUN_COLUMNS = (
    "run_id", "parent_run_id", schema.DATASET, schema.REGIME, schema.STAGE, schema.TRIAL_ID,
    schema.END_STATE, "status", "start_time", EPOCHS, schema.VAL_ACC, schema.TEST_ACC, schema.TRAIN_LOSS,
    schema.SEED, schema.RANK, schema.SOURCE_RUN_ID,
)  # columns named as the tags they come from
_PAGE = 1000


@dataclass(frozen=True, kw_only=True)
class Sweep:
    """One sweep: its parent runs (one row per dataset) and its child runs (one row per run)."""

    client: MlflowClient
    experiment: str
    experiment_id: str
    sweep_id: str
    parents: pd.DataFrame
    runs: pd.DataFrame
    _artifacts: dict[tuple[str, str], str | None] = field(default_factory=dict, repr=False, compare=False)

    @property
    def datasets(self) -> list[str]:
        return list(self.parents.index)

    def parent(self, dataset: str) -> pd.Series:
        return self.parents.loc[dataset]

    def _ended(self, dataset: str, stage: str | None, *, lost: bool) -> pd.DataFrame:
        """The dataset's runs (of `stage`, or both) that ended: the lost ones or all the others."""
        runs = self.runs
        rows = runs[(runs[schema.DATASET] == dataset) & (runs[schema.END_STATE] != schema.UNFINISHED)
                    & ((runs[schema.END_STATE] == schema.LOST) == lost)]
        if stage is not None:
            rows = rows[rows[schema.STAGE] == stage]
        return rows.reset_index(drop=True)

    def trials_of(self, dataset: str) -> pd.DataFrame:
        """The dataset's finished search trials, `lost` ones left out: what each regime's search tried."""
        return self._ended(dataset, schema.SEARCH, lost=False)

    def confirmations_of(self, dataset: str) -> pd.DataFrame:
        """The dataset's finished confirmation runs, `lost` ones left out, with their `seed`, `rank`
        and `source_run_id`."""
        return self._ended(dataset, schema.CONFIRM, lost=False).astype({schema.SEED: "Int64",
                                                                        schema.RANK: "Int64"})

    def lost_of(self, dataset: str, stage: str | None = None) -> pd.DataFrame:
        """The dataset's `lost` runs (of `stage`, or both): counted nowhere, only reported."""
        return self._ended(dataset, stage, lost=True)

    # -- the parent's files --------------------------------------------------------------
    def artifact_text(self, dataset: str, path: str) -> str | None:
        """A file attached to the dataset's parent run, or None when it has no such file."""
        run_id = self.parent(dataset)["run_id"]
        if (run_id, path) not in self._artifacts:
            with tempfile.TemporaryDirectory() as folder:
                try:
                    local = self.client.download_artifacts(run_id, path, folder)
                    text = Path(local).read_text(encoding="utf-8")
                except (MlflowException, OSError, UnicodeDecodeError):
                    text = None
            self._artifacts[(run_id, path)] = text
        return self._artifacts[(run_id, path)]

    def artifact_json(self, dataset: str, path: str) -> dict[str, Any] | None:
        """A JSON file of the parent run; AnalysisError when it is there but not JSON."""
        text = self.artifact_text(dataset, path)
        if text is None:
            return None
        try:
            content = json.loads(text)
        except json.JSONDecodeError as error:
            raise AnalysisError(
                f"{path} of parent run {self.parent(dataset)['run_id']} is not JSON: {error}"
            ) from None
        if not isinstance(content, dict):
            raise AnalysisError(f"{path} of parent run {self.parent(dataset)['run_id']} is not a JSON object")
        return content

    def verdict_file(self, dataset: str) -> dict[str, Any] | None:
        """The sweep's `verdict.json` (`analysis.verdict.Verdict.to_dict()`), if recorded."""
        return self.artifact_json(dataset, schema.VERDICT_FILE)

    def protocol(self, dataset: str) -> dict[str, Any] | None:
        """The sweep's own settings and search ranges (`protocol.json`), if recorded."""
        return self.artifact_json(dataset, schema.PROTOCOL_FILE)

    def config_file(self, dataset: str, path: str) -> ConfigFile | None:
        """A replayable config the sweep attached (`best_config.yaml`, `configs/<regime>.yaml`),
        validated; None when it is not there."""
        text = self.artifact_text(dataset, path)
        if text is None:
            return None
        where = f"{path} of parent run {self.parent(dataset)['run_id']}"
        with tempfile.TemporaryDirectory() as folder:
            local = Path(folder) / Path(path).name
            local.write_text(text, encoding="utf-8")
            try:
                found = read_config_file(local)
                settings = RunConfig.from_dict(found.settings).to_dict()
            except ValueError as error:
                raise AnalysisError(f"{where}: {' '.join(str(error).split())}") from None
        return ConfigFile(settings=settings, metadata=found.metadata)


def regime_config_path(regime: str) -> str:
    """Where the parent run keeps a regime's confirmed config."""
    return f"{schema.REGIME_CONFIGS}/{regime}.yaml"


# -- opening a store ---------------------------------------------------------------------
def open_client(tracking_uri: str) -> MlflowClient:
    """A client for an existing store; a mistyped sqlite path must not create an empty database."""
    path = sqlite_path(tracking_uri)
    if path is not None:
        if not path.is_file():
            raise AnalysisError(f"no MLflow database at {path} (tracking URI {tracking_uri})")
        check_mlflow_database(path)
    return MlflowClient(tracking_uri)


def check_mlflow_database(path: Path) -> None:
    """Refuse, reading it only, an sqlite file that MLflow would write to when opened.

    MLflow creates its tables in a database that lacks any of them and migrates one of an
    older schema, in place: pointed at some other sqlite file (an 8 KB one grew to 958 KB and
    70 tables) or at an old store, a read-only command would rewrite it. So the file is read
    first, in sqlite's read-only mode, and must hold this MLflow's whole schema.
    """
    try:
        uri = f"{path.resolve().as_uri()}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
            tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            revision = None
            if "alembic_version" in tables:
                revision = db.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:  # not an sqlite database at all (a text file, say)
        tables, revision = set(), None
    if not {"experiments", "runs", "alembic_version"} <= tables:
        raise AnalysisError(f"{path} is not an MLflow tracking database")
    expected_tables, head = _mlflow_schema()
    found = revision[0] if revision else None
    if found != head or not expected_tables <= tables:
        raise AnalysisError(
            f"{path} is an MLflow database of another version (schema {found}, this MLflow reads "
            f"{head}); MLflow would migrate it in place: upgrade a copy with "
            f"'mlflow db upgrade sqlite:///COPY' and analyse the copy"
        )


def _mlflow_schema() -> tuple[set[str], str]:
    """The tables and schema revision this MLflow expects: the same test MLflow applies when it
    decides to create or migrate tables (`_all_tables_exist`, `_verify_schema`)."""
    # Importing mlflow.store.db.utils registers every ORM table on Base.
    from mlflow.store.db.base_sql_model import Base
    from mlflow.store.db.utils import _get_latest_schema_revision

    return set(Base.metadata.tables), _get_latest_schema_revision()


def search(client: MlflowClient, experiment_id: str, filter_string: str) -> list[Run]:
    """All runs matching a filter, newest first, across result pages."""
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string=filter_string, max_results=_PAGE,
            order_by=["attributes.start_time DESC"], page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


# -- one row per run ---------------------------------------------------------------------
def _metric(run: Run, key: str) -> float:
    return float(run.data.metrics.get(key, math.nan))


def _last_step(run: Run, key: str) -> int:
    """The step of a metric's latest value (MLflow keeps it beside the value), 0 if never logged."""
    return max((metric.step for metric in run.data.to_proto().metrics if metric.key == key), default=0)


def _listed(text: str | None) -> tuple[str, ...]:
    return tuple(item for item in (text or "").split(",") if item)


def _integer(text: str | None) -> float:
    """A numeric tag as a number (NaN when absent, so the column stays numeric)."""
    try:
        return int(text) if text is not None else math.nan
    except ValueError:
        return math.nan


def _parent_row(run: Run) -> dict[str, Any]:
    tags = run.data.tags
    return {
        schema.DATASET: tags.get(schema.DATASET),
        "run_id": run.info.run_id,
        "status": run.info.status,
        "start_time": run.info.start_time,
        schema.MODEL: tags.get(schema.MODEL),
        schema.CODE_VERSION: tags.get(schema.CODE_VERSION),
        schema.REGIMES: _listed(tags.get(schema.REGIMES)),
        schema.VERDICT: tags.get(schema.VERDICT),  # None until the sweep has decided
        schema.WINNER_REGIME: tags.get(schema.WINNER_REGIME),
        schema.LEADING_REGIME: tags.get(schema.LEADING_REGIME),
        schema.LEADING_RUN_ID: tags.get(schema.LEADING_RUN_ID),
        schema.TIED_REGIMES: _listed(tags.get(schema.TIED_REGIMES)),
        schema.VERDICT_REASON: tags.get(schema.VERDICT_REASON),
        "description": tags.get(schema.RUN_NOTE, ""),
        "metrics": dict(run.data.metrics),
    }


def _run_row(run: Run) -> dict[str, Any]:
    tags = run.data.tags
    return {
        "run_id": run.info.run_id,
        "parent_run_id": tags.get(schema.PARENT_RUN_ID),
        schema.DATASET: tags.get(schema.DATASET),
        schema.REGIME: tags.get(schema.REGIME),
        # Runs recorded before stages existed were all search trials.
        schema.STAGE: tags.get(schema.STAGE, schema.SEARCH),
        schema.TRIAL_ID: tags.get(schema.TRIAL_ID),
        schema.END_STATE: tags.get(schema.END_STATE, schema.UNFINISHED),
        "status": run.info.status,
        "start_time": run.info.start_time,
        EPOCHS: _last_step(run, schema.VAL_ACC),
        schema.VAL_ACC: _metric(run, schema.VAL_ACC),
        schema.TEST_ACC: _metric(run, schema.TEST_ACC),
        schema.TRAIN_LOSS: _metric(run, schema.TRAIN_LOSS),
        schema.SEED: _integer(tags.get(schema.SEED)),
        schema.RANK: _integer(tags.get(schema.RANK)),
        schema.SOURCE_RUN_ID: tags.get(schema.SOURCE_RUN_ID),
        **{PARAM + key: value for key, value in run.data.params.items()},
    }


def load_sweep(tracking_uri: str, experiment: str, sweep_id: str | None = None) -> Sweep:
    """Read a sweep (the experiment's latest when `sweep_id` is None); AnalysisError on bad input."""
    client = open_client(tracking_uri)
    try:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise AnalysisError(f"no experiment named {experiment!r} at {tracking_uri}")
        experiment_id = found.experiment_id
        parents = search(client, experiment_id, f"tags.{schema.ROLE} = '{schema.PARENT}'")
        known = list(dict.fromkeys(run.data.tags[schema.SWEEP_ID] for run in parents
                                   if schema.SWEEP_ID in run.data.tags))
        if not known:
            raise AnalysisError(f"experiment {experiment!r} holds no sweep (no parent runs)")
        sweep_id = sweep_id or known[0]
        if sweep_id not in known:
            raise AnalysisError(
                f"no sweep {sweep_id!r} in experiment {experiment!r}; known sweeps: {', '.join(known)}"
            )
        parents = [run for run in parents if run.data.tags.get(schema.SWEEP_ID) == sweep_id]
        children = search(client, experiment_id,
                          f"tags.{schema.ROLE} = '{schema.TRIAL}' and tags.{schema.SWEEP_ID} = '{sweep_id}'")
    except MlflowException as error:
        raise AnalysisError(f"cannot read MLflow at {tracking_uri}: {error.message}") from None
    runs = pd.DataFrame([_run_row(run) for run in children])
    runs = runs.reindex(columns=[*RUN_COLUMNS, *sorted(set(runs.columns) - set(RUN_COLUMNS))])
    ended = runs[schema.END_STATE] != schema.UNFINISHED
    if not (ended & (runs[schema.END_STATE] != schema.LOST)).any():
        lost = int((runs[schema.END_STATE] == schema.LOST).sum())
        raise AnalysisError(f"sweep {sweep_id!r} has no finished trials yet ({len(children)} started"
                            + (f", {lost} of them lost)" if lost else ")"))
    parent_frame = pd.DataFrame([_parent_row(run) for run in parents]).drop_duplicates(schema.DATASET)
    return Sweep(
        client=client,
        experiment=experiment,
        experiment_id=experiment_id,
        sweep_id=sweep_id,
        parents=parent_frame.set_index(schema.DATASET).sort_index(),
        runs=runs.sort_values([schema.DATASET, schema.STAGE, schema.TRIAL_ID], ignore_index=True),
    )


# -- configs and histories ---------------------------------------------------------------
def config_from_params(params: Mapping[str, str]) -> dict[str, Any]:
    """A run's complete, validated flat config from its MLflow params."""
    return RunConfig.from_params(params).to_dict()


def trial_config(run: pd.Series) -> dict[str, Any]:
    """The flat config of one row of `Sweep.runs`."""
    params = {
        key.removeprefix(PARAM): value
        for key, value in run.items()
        if key.startswith(PARAM) and isinstance(value, str)
    }
    try:
        return config_from_params(params)
    except ValueError as error:
        raise AnalysisError(f"run {run['run_id']} holds an invalid config: {error}") from None


def histories(client: MlflowClient, run_ids: Iterable[str], key: str) -> pd.DataFrame:
    """Per-step values of one metric for several runs: columns run_id, step, value
    (step = epoch for accuracies and losses, optimizer step for `lr/<group>`)."""
    rows = [
        {"run_id": run_id, "step": metric.step, "value": metric.value}
        for run_id in run_ids
        for metric in client.get_metric_history(run_id, key)
    ]
    frame = pd.DataFrame(rows, columns=["run_id", "step", "value"])
    return frame.sort_values(["run_id", "step"], ignore_index=True)


def log_files(sweep: Sweep, dataset: str, paths: Iterable[Path], folder: str = ANALYSIS_FOLDER) -> None:
    """Attach files to the dataset's parent run (where the MLflow UI shows them)."""
    run_id = sweep.parent(dataset)["run_id"]
    for path in paths:
        sweep.client.log_artifact(run_id, str(path), artifact_path=folder)
