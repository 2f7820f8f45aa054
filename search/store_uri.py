"""What an MLflow tracking URI names: a sqlite database file, or a tracking server.

Free of MLflow, so that the checks on the driver's way to the first trial can ask
it without importing MLflow's store, which a thread prepares beside them
(`search.tracking_store.PreparedStore`).
"""

from __future__ import annotations

from pathlib import Path

SQLITE_PREFIX = "sqlite:///"


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a sqlite store (as the URI gives it); None for a tracking server."""
    if not tracking_uri.startswith(SQLITE_PREFIX):
        return None
    return Path(tracking_uri.removeprefix(SQLITE_PREFIX))
