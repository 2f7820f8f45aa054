"""A sweep's MLflow records as pandas DataFrames: the one module that reads MLflow.

Every command works from one `Sweep` (parent runs and trial runs of one sweep id,
schema in docs/contracts.md), so all of them see the same numbers. Per-epoch
histories are fetched only when a command needs them.
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from analysis.errors import AnalysisError
from trainables.config import RunConfig

UNFINISHED = "unfinished"
PARAM = "params."
TRIAL_COLUMNS = ("run_id", "parent_run_id", "dataset", "trial_id", "regime", "end_state", "status",
                 "start_time", "val_acc", "test_acc", "train_loss")
_PAGE = 1000


@dataclass(frozen=True)
class Sweep:
    """One sweep: its parent runs (one row per dataset) and its trial runs (one row per trial)."""

    client: MlflowClient
    experiment: str
    experiment_id: str
    sweep_id: str
    parents: pd.DataFrame
    trials: pd.DataFrame

    @property
    def datasets(self) -> list[str]:
        return list(self.parents.index)

    def parent(self, dataset: str) -> pd.Series:
        return self.parents.loc[dataset]

    def trials_of(self, dataset: str) -> pd.DataFrame:
        """The dataset's finished trials (an end_state is set)."""
        rows = self.trials[(self.trials["dataset"] == dataset) & (self.trials["end_state"] != UNFINISHED)]
        return rows.reset_index(drop=True)


def open_client(tracking_uri: str) -> MlflowClient:
    """A client for an existing store; a mistyped sqlite path must not create an empty database."""
    if tracking_uri.startswith("sqlite:///"):
        path = Path(tracking_uri.removeprefix("sqlite:///"))
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


def _metric(run: Run, key: str) -> float:
    return float(run.data.metrics.get(key, math.nan))


def _parent_row(run: Run) -> dict[str, Any]:
    tags = run.data.tags
    return {
        "dataset": tags.get("dataset"),
        "run_id": run.info.run_id,
        "status": run.info.status,
        "start_time": run.info.start_time,
        "model": tags.get("model"),
        "code_version": tags.get("code_version"),
        "regimes": [r for r in tags.get("regimes", "").split(",") if r],
        "winner_run_id": tags.get("winner_run_id"),
        "winner_regime": tags.get("winner_regime"),
        "best_val_acc": _metric(run, "best_val_acc"),
        "best_test_acc": _metric(run, "best_test_acc"),
    }


def _trial_row(run: Run) -> dict[str, Any]:
    tags = run.data.tags
    return {
        "run_id": run.info.run_id,
        "parent_run_id": tags.get("mlflow.parentRunId"),
        "dataset": tags.get("dataset"),
        "trial_id": tags.get("trial_id"),
        "regime": tags.get("regime"),
        "end_state": tags.get("end_state", UNFINISHED),
        "status": run.info.status,
        "start_time": run.info.start_time,
        "val_acc": _metric(run, "val_acc"),
        "test_acc": _metric(run, "test_acc"),
        "train_loss": _metric(run, "train_loss"),
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
        parents = search(client, experiment_id, "tags.role = 'parent'")
        known = list(dict.fromkeys(run.data.tags["sweep_id"] for run in parents if "sweep_id" in run.data.tags))
        if not known:
            raise AnalysisError(f"experiment {experiment!r} holds no sweep (no parent runs)")
        sweep_id = sweep_id or known[0]
        if sweep_id not in known:
            raise AnalysisError(
                f"no sweep {sweep_id!r} in experiment {experiment!r}; known sweeps: {', '.join(known)}"
            )
        parents = [run for run in parents if run.data.tags.get("sweep_id") == sweep_id]
        trials = search(client, experiment_id, f"tags.role = 'trial' and tags.sweep_id = '{sweep_id}'")
    except MlflowException as error:
        raise AnalysisError(f"cannot read MLflow at {tracking_uri}: {error.message}") from None
    trial_frame = pd.DataFrame([_trial_row(run) for run in trials])
    trial_frame = trial_frame.reindex(columns=[*TRIAL_COLUMNS, *sorted(set(trial_frame) - set(TRIAL_COLUMNS))])
    if not (trial_frame["end_state"] != UNFINISHED).any():
        raise AnalysisError(f"sweep {sweep_id!r} has no finished trials yet ({len(trials)} started)")
    parent_frame = pd.DataFrame([_parent_row(run) for run in parents]).drop_duplicates("dataset")
    return Sweep(
        client=client,
        experiment=experiment,
        experiment_id=experiment_id,
        sweep_id=sweep_id,
        parents=parent_frame.set_index("dataset").sort_index(),
        trials=trial_frame.sort_values(["dataset", "trial_id"], ignore_index=True),
    )


def config_from_params(params: Mapping[str, str]) -> dict[str, Any]:
    """A run's complete, validated flat config from its MLflow params."""
    return RunConfig.from_params(params).to_dict()


def trial_config(trial: pd.Series) -> dict[str, Any]:
    """The flat config of one row of `Sweep.trials`."""
    params = {
        key.removeprefix(PARAM): value
        for key, value in trial.items()
        if key.startswith(PARAM) and isinstance(value, str)
    }
    try:
        return config_from_params(params)
    except ValueError as error:
        raise AnalysisError(f"run {trial['run_id']} holds an invalid config: {error}") from None


def histories(client: MlflowClient, run_ids: Iterable[str], key: str) -> pd.DataFrame:
    """Per-epoch values of one metric for several runs: columns run_id, epoch, value."""
    rows = [
        {"run_id": run_id, "epoch": metric.step, "value": metric.value}
        for run_id in run_ids
        for metric in client.get_metric_history(run_id, key)
    ]
    frame = pd.DataFrame(rows, columns=["run_id", "epoch", "value"])
    return frame.sort_values(["run_id", "epoch"], ignore_index=True)


def log_files(sweep: Sweep, dataset: str, paths: Iterable[Path], folder: str = "analysis") -> None:
    """Attach files to the dataset's parent run (where the MLflow UI shows them)."""
    run_id = sweep.parent(dataset)["run_id"]
    for path in paths:
        sweep.client.log_artifact(run_id, str(path), artifact_path=folder)
