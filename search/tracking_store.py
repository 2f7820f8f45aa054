"""Opening a sweep's MLflow store and experiment, safely when several sweeps start at once."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from search.store_uri import SQLITE_PREFIX, sqlite_path


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
CACHE_DIR_ENV = "LERAC_CACHE_DIR"


def store_template() -> Path | None:
    """Where an empty store of the installed MLflow version is kept for the next new sqlite store:
    in $LERAC_CACHE_DIR, else ~/.cache/lerac-search (a copy of what MLflow itself builds;
    delete it at any time). None where there is no home folder to keep it in."""
    import mlflow

    configured = os.environ.get(CACHE_DIR_ENV)
    try:
        folder = Path(configured).expanduser() if configured else \
            Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lerac-search"
    except RuntimeError:  # no $HOME and no user entry for this uid (some containers)
        return None
    return folder / f"mlflow-{mlflow.__version__}-empty-store.db"


def _usable(template: Path | None) -> bool:
    try:
        return template is not None and template.is_file()
    except OSError:  # e.g. a cache folder this user may not read: built as without one
        return False


def _opens_as_store(path: Path) -> bool:
    """Whether MLflow opens `path` as a sqlite store of its own version (creating the tables of
    a new one)."""
    try:
        MlflowClient(f"{SQLITE_PREFIX}{path}").search_experiments(max_results=1)
    except Exception:  # noqa: BLE001 - damaged, unwritable, or another MLflow's schema
        return False
    return True


def _copy_database(source: Path, target: Path) -> None:
    """A consistent copy of a sqlite database (whatever journal mode it uses), written under a
    private name and renamed, so no reader sees half a file."""
    partial = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.partial")
    try:
        with contextlib.closing(sqlite3.connect(source)) as original, \
                contextlib.closing(sqlite3.connect(partial)) as copy:
            original.backup(copy)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def _not_about_the_users_store(record: logging.LogRecord) -> bool:
    """Log filter: MLflow's messages while it builds a prepared store are not about the
    user's store (and a sweep refused meanwhile must print one line only)."""
    return record.threadName != PREPARING_THREAD


class PreparedStore:
    """A new sqlite store's MLflow tables, ready before the sweep opens its store.

    MLflow creates a new sqlite store by running its whole migration history
    (about 1 s of one core here), all of it on the way to the first trial: by
    the time the sweep opens its store, Ray is up and the driver has nothing
    else to do. So the first sweep on a machine keeps a copy of the empty store
    it built (`store_template`, one per MLflow version), and every later new
    store is that copy (a few milliseconds). Without the template the tables
    are built on a thread in a private temporary folder, beside Ray's start
    when the sweep starts Ray itself; with one, the same thread checks that
    MLflow opens the template (importing MLflow's sqlalchemy store, about
    0.6 s of one core here, while the driver waits for Ray's start).
    `open_experiment` copies the prepared file into place, under `store_lock`,
    only if the store is still missing then. So a sweep refused before that
    leaves nothing beside the user's files, an existing store is never
    replaced, and if preparing failed (or the template does not open) MLflow
    creates the store as before.
    """

    def __init__(self, target: Path, template: Path | None) -> None:
        self.target = target
        self.template = template
        self.folder: Path | None = None  # the private folder of a store built here
        self._built: Path | None = template if _usable(template) else None
        self._template_opens: bool | None = None  # checked on the thread, before it is copied
        self._thread: threading.Thread | None = None

    @classmethod
    def start(cls, tracking_uri: str) -> PreparedStore | None:
        """Prepare when `tracking_uri` names a sqlite store that does not exist yet: the template,
        or (when there is none) a build started on a thread."""
        target = sqlite_path(tracking_uri)
        if target is None or target.exists():
            return None
        prepared = cls(target, store_template())
        if prepared._built is None:
            prepared._start(prepared._build, prepared._new_folder() / "mlflow.db")
        else:
            prepared._start(prepared._check_template)
        return prepared

    def _new_folder(self) -> Path:
        self.folder = Path(tempfile.mkdtemp(prefix="lerac-store-"))
        return self.folder

    def _start(self, work: Callable[..., None], *args: Any) -> None:
        # The thread imports MLflow's store (sqlalchemy, alembic, its migrations) while the
        # main thread imports Ray's start-up: no module in common, so no import lock shared
        # (tests/test_tracking_store.py checks that this stays so).
        store_log = logging.getLogger("mlflow.store.db.utils")
        if _not_about_the_users_store not in store_log.filters:
            store_log.addFilter(_not_about_the_users_store)  # its "Creating tables" is about a temp file
        self._thread = threading.Thread(target=work, args=args, name=PREPARING_THREAD, daemon=True)
        self._thread.start()

    def _check_template(self) -> None:
        self._template_opens = self.template is not None and _opens_as_store(self.template)

    def _build(self, path: Path) -> None:
        if not _opens_as_store(path):
            return  # MLflow then creates the store itself, as without this
        self._built = path
        if self.template is None:
            return
        with contextlib.suppress(OSError, sqlite3.Error):  # no cache (read-only home): built next time too
            self.template.parent.mkdir(parents=True, exist_ok=True)
            _copy_database(path, self.template)

    def move_into_place(self) -> None:
        """Put the prepared store where the sweep's belongs, if that is still missing (call under
        `store_lock`). A template MLflow does not open as a store of its own version is dropped
        (the next new store builds it again), and MLflow builds this one itself."""
        if self._thread is not None:
            self._thread.join()
        if self._built is None or self.target.exists():
            return
        if self.template is not None and self._built == self.template and not self._template_opens:
            with contextlib.suppress(OSError):  # damaged, or from another build of this MLflow version
                self.template.unlink(missing_ok=True)
            return
        with contextlib.suppress(OSError, sqlite3.Error):  # e.g. the template vanished meanwhile
            _copy_database(self._built, self.target)

    def discard(self) -> None:
        """Remove the temporary folder (after the thread is done with it)."""
        if self._thread is not None:
            self._thread.join()
        if self.folder is not None:
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
