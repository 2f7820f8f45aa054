"""Ordered background writes to an MLflow store that may stop answering for a while.

A sweep must neither lose records to a tracking server that restarts nor hang
for minutes, silently, on one that is gone. Every write runs on one background
thread, in order (a trial's metrics before its end state), and a write that
fails for a reason that can pass (the server does not answer, sqlite is locked
or its disk is full) is retried until it succeeds or the store has been failing
for `patience_s`. The first failure is reported at once as a warning, a
recovery as another; past the patience the writer gives up (`failure`) and the
sweep stops with one line, to be continued with `--resume`, which writes what
was missed from Tune's own results.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from mlflow.exceptions import MlflowException

# MLflow's own HTTP retries default to about four minutes per request (7 retries,
# backoff factor 2) and a 120 s timeout; the writer does the waiting instead, so one
# request gives up in seconds. A value the user set is kept.
HTTP_RETRY_SETTINGS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
}
# Answers that say the request itself is wrong: retrying cannot help.
PERMANENT_ERRORS = frozenset({"INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS", "BAD_REQUEST",
                              "INVALID_STATE", "PERMISSION_DENIED", "UNAUTHENTICATED",
                              "CUSTOMER_UNAUTHORIZED"})
MAX_PAUSE_S = 5.0


def bound_http_retries() -> None:
    """Make one MLflow HTTP request give up within seconds (unless the user chose otherwise)."""
    for name, value in HTTP_RETRY_SETTINGS.items():
        os.environ.setdefault(name, value)


def one_line(error: BaseException) -> str:
    """An exception as one short line (MLflow's messages carry whole responses)."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 240 else text[:237] + "..."


def transient(error: BaseException) -> bool:
    """Whether a failed write may succeed later: the store, not the request, is at fault."""
    if isinstance(error, MlflowException):
        return error.error_code not in PERMANENT_ERRORS
    return isinstance(error, (OSError, ConnectionError, TimeoutError)) or \
        type(error).__module__.startswith(("sqlalchemy", "requests", "urllib3", "sqlite3"))


class StoreFailed(Exception):
    """The tracking store failed for longer than the sweep waits, or refused a write."""


class BackgroundWriter:
    """Runs writes in order on one thread, waiting out store outages up to `patience_s`."""

    def __init__(self, *, store: str, patience_s: float, warn: Callable[[str], None]):
        self.store = store
        self.patience_s = patience_s
        self.warn = warn
        self.failure: str | None = None
        self.outages = 0  # outages that recovered
        self._queue: queue.Queue[tuple[Callable[[], Any], Future] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="mlflow-writer", daemon=True)
        self._thread.start()

    def submit(self, write: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
        """Queue a write; once the store has failed, writes are dropped (resume rewrites them)."""
        future: Future = Future()
        if self.failure is not None:
            future.set_exception(StoreFailed(self.failure))
            return future
        self._queue.put((lambda: write(*args, **kwargs), future))
        return future

    def call(self, write: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a write after everything queued before it and return its result (or raise StoreFailed)."""
        return self.submit(write, *args, **kwargs).result()

    def flush(self) -> None:
        """Wait until everything queued is written; StoreFailed if the store failed."""
        self.call(lambda: None)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    # -- the writer thread -------------------------------------------------------------
    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            write, future = item
            if self.failure is not None:
                future.set_exception(StoreFailed(self.failure))
                continue
            try:
                future.set_result(self._with_patience(write))
            except StoreFailed as failed:
                future.set_exception(failed)
            except BaseException as error:  # a bug in the write itself: the caller sees it
                future.set_exception(error)

    def _with_patience(self, write: Callable[[], Any]) -> Any:
        started = None
        pause = 0.5
        while True:
            try:
                result = write()
            except Exception as error:
                if not transient(error):
                    self.failure = f"MLflow tracking store {self.store} refused a write: {one_line(error)}"
                    raise StoreFailed(self.failure) from error
                now = time.monotonic()
                if started is None:
                    started = now
                    self.warn(f"MLflow tracking store {self.store} is failing ({one_line(error)}); "
                              f"records are kept in order and the sweep stops if it still fails "
                              f"after {self.patience_s:g} s")
                if now - started >= self.patience_s:
                    self.failure = (f"MLflow tracking store {self.store} failed for "
                                    f"{now - started:.0f} s: {one_line(error)}")
                    raise StoreFailed(self.failure) from error
                time.sleep(min(pause, max(0.0, self.patience_s - (now - started))))
                pause = min(2 * pause, MAX_PAUSE_S)
                continue
            if started is not None:
                self.outages += 1
                self.warn(f"MLflow tracking store {self.store} is back after "
                          f"{time.monotonic() - started:.0f} s; every queued record was written")
            return result
