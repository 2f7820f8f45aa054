"""A sweep's own state file under the storage path, so `--resume` can continue it.

`<storage>/<sweep_id>/sweep_state.json` holds the options the sweep was started
with (plain JSON, validated on reading: nothing in it runs); `latest_sweep.json`
names the sweep started last, which `--resume` continues unless `--sweep-id`
names another.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from pydantic import ValidationError

from search.checks import SweepError
from search.integrity import StateRefused
from search.options import SweepOptions, first_error

LATEST_SWEEP = "latest_sweep.json"
STATE_FILE = "sweep_state.json"
ABANDONED = ".abandoned-"  # <sweep_id>.abandoned-<time>: Tune state set aside by --restart


def _write(path: Path, text: str) -> None:
    """Whole or not at all: a full disk leaves the previous file, never half of one."""
    draft = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        draft.write_text(text)
        os.replace(draft, path)
    finally:
        draft.unlink(missing_ok=True)


def save_state(storage_path: Path, sweep_id: str, options: SweepOptions) -> None:
    """The sweep's options beside its Tune experiment, and a pointer to it as the latest."""
    path = storage_path / sweep_id / STATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    _write(path, json.dumps({"sweep_id": sweep_id, "options": options.model_dump(mode="json")}, indent=2))
    _write(storage_path / LATEST_SWEEP, json.dumps({"sweep_id": sweep_id}))


def sweep_ids(storage_path: Path) -> list[str]:
    """Every sweep that can be resumed under `storage_path`, oldest first."""
    if not storage_path.is_dir():
        return []
    return sorted(entry.name for entry in storage_path.iterdir()
                  if (entry / STATE_FILE).is_file() and ABANDONED not in entry.name)


def load_state(storage_path: Path, sweep_id: str | None = None) -> tuple[str, SweepOptions]:
    """The options of `sweep_id` (default: the sweep started last) under `storage_path`.

    SweepError, one line, when there is nothing to resume or the state file is
    not one this program wrote.
    """
    if sweep_id is None:
        latest = storage_path / LATEST_SWEEP
        if not latest.is_file():
            raise SweepError(f"nothing to resume: no sweep was started under {storage_path}")
        try:
            sweep_id = str(json.loads(latest.read_text())["sweep_id"])
        except (ValueError, KeyError, TypeError):
            raise SweepError(f"cannot resume: {latest} is damaged; name the sweep with --sweep-id "
                             f"(sweeps here: {', '.join(sweep_ids(storage_path)) or 'none'})") from None
    path = storage_path / sweep_id / STATE_FILE
    if "/" in sweep_id or sweep_id in ("", ".", "..") or not path.is_file():
        known = sweep_ids(storage_path)
        raise SweepError(f"no sweep {sweep_id!r} to resume under {storage_path} "
                         f"(sweeps there: {', '.join(known) or 'none'})")
    try:
        stored = json.loads(path.read_text())
        if stored.get("sweep_id") != sweep_id:
            raise SweepError(f"{path} belongs to sweep {stored.get('sweep_id')!r}, not {sweep_id!r}")
        options = SweepOptions(**stored["options"])
    except ValidationError as error:
        raise SweepError(f"cannot resume: {path} holds bad options ({first_error(error)})") from None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise SweepError(f"cannot resume: {path} is damaged") from None
    return sweep_id, options.model_copy(update={"storage_path": str(storage_path)})


def set_aside(storage_path: Path, sweep_id: str) -> Path:
    """Move a sweep's Tune state out of the way so it can start again under the same id.

    Nothing is deleted: the folder is renamed, and the user decides when to remove it.
    """
    folder = storage_path / sweep_id
    aside = storage_path / f"{sweep_id}{ABANDONED}{time.strftime('%Y%m%d-%H%M%S')}"
    folder.rename(aside)
    return aside


def saved_trial_count(sweep_dir: Path) -> int:
    """How many trials Tune's newest saved state holds (read as plain JSON, nothing unpickled).

    Tune falls back to a new experiment, with a warning in its log, when it
    cannot restore its state; knowing the count lets the sweep notice.
    """
    states = sorted(sweep_dir.glob("experiment_state-*.json"))
    if not states:
        raise StateRefused(f"it has no saved Tune state in {sweep_dir}")
    try:
        return len(json.loads(states[-1].read_text())["trial_data"])
    except (ValueError, KeyError, TypeError):
        raise StateRefused(f"its Tune state {states[-1]} is damaged") from None
