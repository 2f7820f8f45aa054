"""A sweep's own state file under the storage path, so `--resume` can continue it."""

from __future__ import annotations

import json
from pathlib import Path

from search.checks import SweepError
from search.options import SweepOptions

LATEST_SWEEP = "latest_sweep.json"
STATE_FILE = "sweep_state.json"


def save_state(storage_path: Path, sweep_id: str, options: SweepOptions) -> None:
    """The sweep's options beside its Tune experiment, and a pointer to it as the latest."""
    path = storage_path / sweep_id / STATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"sweep_id": sweep_id, "options": options.model_dump(mode="json")}, indent=2))
    (storage_path / LATEST_SWEEP).write_text(json.dumps({"sweep_id": sweep_id}))


def load_latest_state(storage_path: Path) -> tuple[str, SweepOptions]:
    """The last sweep started under `storage_path`; SweepError if there is none."""
    latest = storage_path / LATEST_SWEEP
    if not latest.is_file():
        raise SweepError(f"nothing to resume: no sweep was started under {storage_path}")
    sweep_id = json.loads(latest.read_text())["sweep_id"]
    stored = json.loads((storage_path / sweep_id / STATE_FILE).read_text())["options"]
    return sweep_id, SweepOptions(**stored)
