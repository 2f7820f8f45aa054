"""Each dataset's leading config and every regime's confirmed config, as replayable files.

Layout under the output folder, mirroring the parent run's artifacts:
`<dataset>/best_config.yaml` (the leading config: the winner's, or in a tie
only the leader's) and `<dataset>/configs/<regime>.yaml`, each with a JSON
twin. The metadata is the sweep's own: the search trial the config came from
(`source_run_id`), the accuracies that trial recorded (a replay with the same
seed and `cpu_threads` reproduces them exactly on the CPU), the confirmation
on fresh seeds and the dataset's verdict. `lerac-train --config FILE` replays
any of them.

`data_dir` is made portable: the sweep recorded the absolute folder of the
machine it ran on, which need not exist where the file is replayed. A folder
under the working directory becomes relative to it (a replay from the same
project folder finds the same data, wherever the project is cloned); any other
folder becomes the default `data`, and the recorded folder is kept in the
metadata (`recorded_data_dir`), so nothing is lost.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.errors import AnalysisError
from analysis.records import Sweep, regime_config_path
from analysis.winners import (
    DatasetVerdict,
    Pick,
    confirmed_configs,
    dataset_verdict,
    leading_config,
)
from search import schema
from trainables.config import TrainSettings
from trainables.config_file import write_config_file

RECORDED_DATA_DIR = "recorded_data_dir"
DEFAULT_DATA_DIR = TrainSettings.__dataclass_fields__["data_dir"].default


@dataclass(frozen=True, kw_only=True)
class Exported:
    """What was written for one dataset, and the verdict it stands under."""

    dataset: str
    verdict: DatasetVerdict
    leading: Pick
    paths: list[Path] = field(default_factory=list)

    @property
    def best_config(self) -> Path:
        return self.paths[0]

    def summary(self) -> str:
        """One plain sentence: is the exported config a winner's or only the leader's?"""
        verdict, regime = self.verdict, self.leading.regime
        if verdict.status == schema.WINNER:
            return (f"{self.dataset}: {regime} wins (significantly better than every other regime); "
                    f"{schema.BEST_CONFIG} is the winner's config")
        return (f"{self.dataset}: the verdict is a TIE ({verdict.tie_text()}): "
                f"{schema.BEST_CONFIG} is the config of the leader, {regime}, NOT a winner")


def portable_data_dir(config: dict[str, Any], cwd: Path) -> tuple[dict[str, Any], str | None]:
    """The config with `data_dir` relative to `cwd` when it lies under it, else the default;
    and the recorded folder when it was replaced."""
    recorded = config.get("data_dir")
    if recorded is None or not Path(recorded).is_absolute():
        return config, None
    try:
        return {**config, "data_dir": str(Path(recorded).relative_to(cwd))}, None
    except ValueError:
        return {**config, "data_dir": DEFAULT_DATA_DIR}, str(recorded)


def _write(path: Path, pick: Pick, provenance: dict[str, Any]) -> list[Path]:
    """The config as YAML (the form trainables.train reads) and its JSON twin."""
    config, recorded = portable_data_dir(pick.config, Path.cwd().resolve())
    metadata = {**(pick.metadata or {}), **provenance, **({RECORDED_DATA_DIR: recorded} if recorded else {})}
    yaml_path = write_config_file(path, config, metadata)
    json_path = path.with_suffix(".json")
    json_path.write_text(json.dumps({**metadata, "config": config}, indent=2, default=str) + "\n")
    return [yaml_path.resolve(), json_path.resolve()]


def export_dataset(sweep: Sweep, dataset: str, out: Path) -> Exported:
    """Write the dataset's leading config and each regime's confirmed config under `out/<dataset>`."""
    verdict = dataset_verdict(sweep, dataset)
    leading = leading_config(sweep, dataset)  # AnalysisError when there is none (pending, no result)
    provenance = {"sweep_id": sweep.sweep_id, "parent_run_id": sweep.parent(dataset)["run_id"]}
    folder = out / dataset
    paths = _write(folder / schema.BEST_CONFIG, leading, provenance)
    for regime, pick in confirmed_configs(sweep, dataset).items():
        if pick.metadata is not None:  # only what the sweep confirmed, never a stand-in
            paths += _write(folder / regime_config_path(regime), pick, provenance)
    return Exported(dataset=dataset, verdict=verdict, leading=leading, paths=paths)


def export_all(sweep: Sweep, out: Path) -> list[Exported]:
    """Export every dataset that has a leading config; a dataset without one is named on stderr."""
    exported = []
    for dataset in sweep.datasets:
        try:
            exported.append(export_dataset(sweep, dataset, out))
        except AnalysisError as error:
            print(f"skipped: {error}", file=sys.stderr)
    if not exported:
        raise AnalysisError(f"sweep {sweep.sweep_id!r} has no leading config to export")
    return exported
