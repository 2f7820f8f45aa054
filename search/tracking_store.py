"""Opening a sweep's MLflow store and experiment, safely when several sweeps start at once."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from mlflow.tracking import MlflowClient


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a sqlite store (as the URI gives it); None for a tracking server."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri.removeprefix("sqlite:///"))


def artifact_location(tracking_uri: str) -> str | None:
    """Artifacts of a sqlite store sit beside the database (`mlruns/`), not in the
    current folder; a server decides for itself (None)."""
    database = sqlite_path(tracking_uri)
    return None if database is None else (database.resolve().parent / "mlruns").as_uri()


@contextlib.contextmanager
def store_lock(tracking_uri: str) -> Iterator[None]:
    """Serialise creating a sqlite store and its experiment across processes.

    Two sweeps started together in an empty folder would both create MLflow's
    tables (one crashes on "table already exists") or both create the
    experiment. The lock is on the database's folder itself, so nothing extra
    is left beside the database.
    """
    database = sqlite_path(tracking_uri)
    if database is None:
        yield
        return
    import fcntl

    descriptor = os.open(database.resolve().parent, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


PREPARING_THREAD = "prepare-mlflow-store"


def _not_about_the_users_store(record: logging.LogRecord) -> bool:
    """Log filter: MLflow's messages while it builds a prepared store are not about the
    user's store (and a sweep refused meanwhile must print one line only)."""
    return record.threadName != PREPARING_THREAD


class PreparedStore:
    """A new sqlite store's MLflow tables, built on a thread while Ray starts (or finishes
    starting, when `search.launch` started it early).

    MLflow creates a new sqlite store by running its whole migration history
    (about 1.6 s on 2 cores), which would otherwise wait for Ray's start-up to
    end. The thread builds the tables in a private temporary
    folder; `open_experiment` copies that file into place, under `store_lock`,
    only if the store is still missing then. So a sweep refused before that
    leaves nothing beside the user's files, an existing store is never
    replaced, and if the thread failed MLflow creates the store as before.
    """

    def __init__(self, target: Path) -> None:
        self.target = target
        self.folder = Path(tempfile.mkdtemp(prefix="lerac-store-"))
        self._built: Path | None = None
        self._thread = threading.Thread(target=self._build, name=PREPARING_THREAD, daemon=True)

    @classmethod
    def start(cls, tracking_uri: str) -> PreparedStore | None:
        """Start preparing when `tracking_uri` names a sqlite store that does not exist yet."""
        target = sqlite_path(tracking_uri)
        if target is None or target.exists():
            return None
        # The thread imports MLflow's store (sqlalchemy, alembic, its migrations) while the
        # main thread imports Ray's start-up: no module in common, so no import lock shared
        # (tests/test_tracking_store.py checks that this stays so).
        store_log = logging.getLogger("mlflow.store.db.utils")
        if _not_about_the_users_store not in store_log.filters:
            store_log.addFilter(_not_about_the_users_store)  # its "Creating tables" is about a temp file
        prepared = cls(target)
        prepared._thread.start()
        return prepared

    def _build(self) -> None:
        path = self.folder / "mlflow.db"
        try:
            MlflowClient(f"sqlite:///{path}").search_experiments(max_results=1)
        except Exception:  # noqa: BLE001 - MLflow then creates the store itself, as without this
            return
        self._built = path

    def move_into_place(self) -> None:
        """Put the prepared store where the sweep's belongs, if that is still missing (call under
        `store_lock`); written under a private name and renamed, so no reader sees half a file."""
        self._thread.join()
        if self._built is None or self.target.exists():
            return
        partial = self.target.with_name(f".{self.target.name}.{os.getpid()}.partial")
        with contextlib.closing(sqlite3.connect(self._built)) as source, \
                contextlib.closing(sqlite3.connect(partial)) as copy:
            source.backup(copy)  # a consistent copy, whatever journal mode MLflow chose
        os.replace(partial, self.target)

    def discard(self) -> None:
        """Remove the temporary folder (after the thread is done with it)."""
        self._thread.join()
        shutil.rmtree(self.folder, ignore_errors=True)


def open_experiment(tracking_uri: str, experiment: str,
                    prepared: PreparedStore | None = None) -> tuple[MlflowClient, str]:
    """A client of the store and the id of `experiment`, created if missing (a new sqlite
    store from `prepared` when given)."""
    with store_lock(tracking_uri):
        if prepared is not None:
            prepared.move_into_place()
        client = MlflowClient(tracking_uri)  # a new sqlite store gets its tables here
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(
            experiment, artifact_location=artifact_location(tracking_uri))
    return client, experiment_id
