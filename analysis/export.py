"""The winner of each dataset as a replayable config file (YAML) and its JSON twin.

`python -m trainables.train --config FILE` retrains the winner from either
file; with the same seed and `cpu_threads` on the CPU it reproduces
`recorded_test_acc` exactly and says so.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from analysis.errors import AnalysisError
from analysis.records import Sweep
from analysis.winners import Pick, winner
from trainables.config_file import write_config_file


def metadata(sweep: Sweep, dataset: str, pick: Pick) -> dict[str, Any]:
    """Where the config came from and what it scored (the keys trainables.train checks)."""
    return {
        "dataset": dataset,
        "model": pick.config["model"],
        "seed": pick.config["seed"],
        "code_version": sweep.parent(dataset)["code_version"],
        "source_run_id": pick.run_id,
        "recorded_val_acc": pick.val_acc,
        "recorded_test_acc": pick.test_acc,
    }


def export_winner(sweep: Sweep, dataset: str, out: Path) -> tuple[Path, Path]:
    """Write `<dataset>.yaml` and `<dataset>.json` (same content) for the dataset's winner."""
    pick = winner(sweep, dataset)
    about = metadata(sweep, dataset, pick)
    yaml_path = write_config_file(out / f"{dataset}.yaml", pick.config, about)
    json_path = out / f"{dataset}.json"
    json_path.write_text(json.dumps({**about, "config": pick.config}, indent=2) + "\n")
    return yaml_path, json_path


def export_all(sweep: Sweep, out: Path) -> list[Path]:
    """Export every dataset that has a winner; a dataset without one is named on stderr."""
    written: list[Path] = []
    for dataset in sweep.datasets:
        try:
            written.extend(export_winner(sweep, dataset, out))
        except AnalysisError as error:
            print(f"skipped: {error}", file=sys.stderr)
    if not written:
        raise AnalysisError(f"sweep {sweep.sweep_id!r} has no winner to export")
    return written
