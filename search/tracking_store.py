"""Opening a sweep's MLflow store and experiment, safely when several sweeps start at once."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from mlflow.tracking import MlflowClient


def sqlite_folder(tracking_uri: str) -> Path:
    return Path(tracking_uri.removeprefix("sqlite:///")).resolve().parent


def artifact_location(tracking_uri: str) -> str | None:
    """Artifacts of a sqlite store sit beside the database (`mlruns/`), not in the
    current folder; a server decides for itself (None)."""
    if tracking_uri.startswith("sqlite:///"):
        return (sqlite_folder(tracking_uri) / "mlruns").as_uri()
    return None


@contextlib.contextmanager
def store_lock(tracking_uri: str) -> Iterator[None]:
    """Serialise creating a sqlite store and its experiment across processes.

    Two sweeps started together in an empty folder would both create MLflow's
    tables (one crashes on "table already exists") or both create the
    experiment. The lock is on the database's folder itself, so nothing extra
    is left beside the database.
    """
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    descriptor = os.open(sqlite_folder(tracking_uri), os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def open_experiment(tracking_uri: str, experiment: str) -> tuple[MlflowClient, str]:
    """A client of the store and the id of `experiment`, created if missing."""
    with store_lock(tracking_uri):
        client = MlflowClient(tracking_uri)  # a new sqlite store gets its tables here
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(
            experiment, artifact_location=artifact_location(tracking_uri))
    return client, experiment_id
