"""Free space where a sweep writes: checked before it starts and watched while it runs.

A full disk under the storage path makes every checkpoint fail; Tune retries
each trial until its failures run out, and a state file cut short cannot be
restored. The sweep needs `--min-free-mb` on the storage path and on a sqlite
store's folder: it refuses to start below that, and stops (resumably) when a
folder falls below it while running.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from search.checks import SweepError
from search.options import SweepOptions
from search.store_uri import sqlite_path


def nearest_existing(path: Path) -> Path:
    """The path itself or its closest ancestor that exists (a storage path not created yet)."""
    path = path.resolve()
    while not path.exists():
        path = path.parent
    return path


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(nearest_existing(path)).free


def watched_folders(options: SweepOptions) -> list[tuple[str, Path]]:
    """Where a sweep writes and needs space: the storage path and a sqlite store's folder."""
    folders = [("storage path", Path(options.storage_path).resolve())]
    database = sqlite_path(options.tracking_uri)
    if database is not None:
        folders.append(("MLflow database folder", database.resolve().parent))
    return folders


def full_disk(options: SweepOptions) -> str | None:
    """Why there is too little space to run (or go on), or None."""
    need = int(options.min_free_mb * 2**20)
    for what, folder in watched_folders(options):
        free = free_bytes(folder)
        if free < need:
            return (f"the {what} {folder} is full: {free / 2**20:.1f} MiB free, the sweep needs "
                    f"{options.min_free_mb:g} MiB (--min-free-mb)")
    return None


def check_free_space(options: SweepOptions) -> None:
    """A disk that cannot hold the sweep's checkpoints fails now, before any trial burns retries."""
    reason = full_disk(options)
    if reason is not None:
        raise SweepError(reason)
