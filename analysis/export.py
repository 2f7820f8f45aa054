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

A dataset whose verdict is `no_trustworthy_winner` (its leader is at or near
chance) is refused: its leading config is no result, and a file named
`best_config.yaml` beside the real ones would be read as one. With
`allow_untrustworthy` its files are written anyway, each with a `warning` as its
first line and `verdict.trustworthy: false`, and the printed summary says so.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
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
WARNING = "warning"  # metadata: why the file must not be read as a result (first in the file)
ALLOW_FLAG = "--allow-untrustworthy"
DEFAULT_DATA_DIR = TrainSettings.__dataclass_fields__["data_dir"].default


class Untrustworthy(AnalysisError):
    """A dataset's leading config is near chance: not exported unless asked for."""


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
        """One plain sentence: is the exported config a winner's, only the leader's, or no result?"""
        return SUMMARIES.get(self.verdict.status, _not_a_winner)(self)


def _not_a_winner(exported: Exported) -> str:
    return (f"{exported.dataset}: the verdict is {exported.verdict.title()}: {schema.BEST_CONFIG} is the "
            f"config of the leader, {exported.leading.regime}, NOT a winner")


def _near_chance(exported: Exported) -> str:
    return (f"WARNING: {exported.dataset}: {exported.verdict.headline()}. {schema.BEST_CONFIG} is the config "
            f"of the leader, {exported.leading.regime}, NOT A RESULT: do not report it or use it as a winner's "
            f"(written because of {ALLOW_FLAG}; its metadata says trustworthy: false)")


# Each outcome that has a leading config (every one of schema.VERDICTS but no_result, which has none).
SUMMARIES: dict[str, Callable[[Exported], str]] = {
    schema.WINNER: lambda e: (f"{e.dataset}: {e.leading.regime} wins (significantly better than every other "
                              f"regime); {schema.BEST_CONFIG} is the winner's config"),
    schema.TIE: lambda e: (f"{e.dataset}: the verdict is a TIE ({e.verdict.tie_text()}): {schema.BEST_CONFIG} "
                           f"is the config of the leader, {e.leading.regime}, NOT a winner"),
    schema.NO_TRUSTWORTHY_WINNER: _near_chance,
}


def untrustworthy_warning(verdict: DatasetVerdict) -> str:
    """The `warning` an untrustworthy dataset's exported files carry first."""
    return (f"NOT A RESULT: {verdict.headline()}. Exported with {ALLOW_FLAG}; do not report this config "
            f"or use it as a winner's.")


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


def _write(path: Path, pick: Pick, provenance: dict[str, Any], verdict: DatasetVerdict) -> list[Path]:
    """The config as YAML (the form trainables.train reads) and its JSON twin; an untrustworthy
    dataset's with the warning first and its verdict marked untrustworthy, whatever the sweep wrote."""
    config, recorded = portable_data_dir(pick.config, Path.cwd().resolve())
    metadata = {**(pick.metadata or {}), **provenance, **({RECORDED_DATA_DIR: recorded} if recorded else {})}
    if not verdict.trustworthy:
        recorded_verdict = metadata.get("verdict") if isinstance(metadata.get("verdict"), dict) else {}
        metadata = {WARNING: untrustworthy_warning(verdict), **metadata,
                    "verdict": {**recorded_verdict, "outcome": verdict.status, "winner": None,
                                "trustworthy": False}}
    yaml_path = write_config_file(path, config, metadata)
    json_path = path.with_suffix(".json")
    json_path.write_text(json.dumps({**metadata, "config": config}, indent=2, default=str) + "\n")
    return [yaml_path.resolve(), json_path.resolve()]


def export_dataset(sweep: Sweep, dataset: str, out: Path, *, allow_untrustworthy: bool = False) -> Exported:
    """Write the dataset's leading config and each regime's confirmed config under `out/<dataset>`;
    Untrustworthy when the leader is near chance and `allow_untrustworthy` is not given."""
    verdict = dataset_verdict(sweep, dataset)
    leading = leading_config(sweep, dataset)  # AnalysisError when there is none (pending, no result)
    if not verdict.trustworthy and not allow_untrustworthy:
        raise Untrustworthy(f"dataset {dataset!r} of sweep {sweep.sweep_id!r} NOT EXPORTED: {verdict.headline()}; "
                            f"its leading config is not a result ({ALLOW_FLAG} writes it anyway, marked "
                            f"untrustworthy)")
    provenance = {"sweep_id": sweep.sweep_id, "parent_run_id": sweep.parent(dataset)["run_id"]}
    folder = out / dataset
    paths = _write(folder / schema.BEST_CONFIG, leading, provenance, verdict)
    for regime, pick in confirmed_configs(sweep, dataset).items():
        if pick.metadata is not None:  # only what the sweep confirmed, never a stand-in
            paths += _write(folder / regime_config_path(regime), pick, provenance, verdict)
    return Exported(dataset=dataset, verdict=verdict, leading=leading, paths=paths)


def export_all(sweep: Sweep, out: Path, *, allow_untrustworthy: bool = False) -> list[Exported]:
    """Export every dataset that has a (trustworthy, unless allowed) leading config; a dataset
    without one is named on stderr."""
    exported, refused = [], False
    for dataset in sweep.datasets:
        try:
            exported.append(export_dataset(sweep, dataset, out, allow_untrustworthy=allow_untrustworthy))
        except Untrustworthy as error:
            refused = True
            print(f"skipped: {error}", file=sys.stderr)
        except AnalysisError as error:
            print(f"skipped: {error}", file=sys.stderr)
    if not exported:
        hint = (f" that is a result (near-chance leaders are written only with {ALLOW_FLAG})" if refused
                else "")
        raise AnalysisError(f"sweep {sweep.sweep_id!r} has no leading config to export{hint}")
    return exported
