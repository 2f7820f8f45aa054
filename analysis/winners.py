"""Which trial won, and the best trial of a regime, by the contract's rule.

The winner is the completed trial with the highest final validation accuracy
(never test accuracy); ties go to the lower final training loss, as
search/recording.py breaks them. The parent run's recorded winner is used when
the sweep recorded one, so analysis and sweep never disagree on a finished sweep.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from typing import Any

import pandas as pd
from mlflow.exceptions import MlflowException

from analysis.errors import AnalysisError
from analysis.records import Sweep, trial_config
from trainables.config import RunConfig
from trainables.config_file import read_config_file

BEST_CONFIG = "best_config.yaml"
NO_WINNER = "none"


@dataclass(frozen=True)
class Pick:
    """A chosen trial: its run, regime, complete flat config and recorded final accuracies."""

    run_id: str
    regime: str
    config: dict[str, Any]
    val_acc: float
    test_acc: float


def completed(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials that ran their full budget with finite results: the only ones that can win."""
    finite = trials["val_acc"].map(math.isfinite) & trials["train_loss"].map(math.isfinite)
    return trials[(trials["end_state"] == "completed") & finite]


def _pick(trial: pd.Series, config: dict[str, Any] | None = None) -> Pick:
    return Pick(
        run_id=trial["run_id"],
        regime=trial["regime"],
        config=config if config is not None else trial_config(trial),
        val_acc=float(trial["val_acc"]),
        test_acc=float(trial["test_acc"]),
    )


def best_trial(trials: pd.DataFrame, regime: str | None = None) -> Pick | None:
    """The best completed trial (of `regime`, if given) by the winner rule; None if there is none."""
    candidates = completed(trials)
    if regime is not None:
        candidates = candidates[candidates["regime"] == regime]
    if candidates.empty:
        return None
    return _pick(_rank(candidates).iloc[0])


def _rank(candidates: pd.DataFrame) -> pd.DataFrame:
    """Best first: highest validation accuracy, ties to the lower training loss."""
    ranked = candidates.assign(neg_loss=-candidates["train_loss"])
    return ranked.sort_values(["val_acc", "neg_loss"], ascending=False, kind="stable")


def _recorded_config(sweep: Sweep, dataset: str) -> dict[str, Any] | None:
    """The parent run's best_config.yaml, validated; None if the sweep did not write one."""
    with tempfile.TemporaryDirectory() as folder:
        try:
            path = sweep.client.download_artifacts(sweep.parent(dataset)["run_id"], BEST_CONFIG, folder)
        except (MlflowException, OSError):
            return None
        return RunConfig.from_dict(read_config_file(path).settings).to_dict()


def _winner_row(sweep: Sweep, dataset: str) -> tuple[pd.Series, bool]:
    """The winning trial's row, and whether the sweep recorded it (else it is recomputed)."""
    recorded = sweep.parent(dataset)["winner_run_id"]
    trials = sweep.trials_of(dataset)
    if isinstance(recorded, str) and recorded != NO_WINNER:
        rows = trials[trials["run_id"] == recorded]
        if rows.empty:
            raise AnalysisError(f"the recorded winner {recorded} of {dataset!r} is not a trial of the sweep")
        return rows.iloc[0], True
    candidates = completed(trials)
    if recorded == NO_WINNER or candidates.empty:
        raise AnalysisError(f"dataset {dataset!r} of sweep {sweep.sweep_id!r} has no completed trial")
    return _rank(candidates).iloc[0], False


def winner_run_id(sweep: Sweep, dataset: str) -> str | None:
    """The winner's run id, or None when the dataset has no completed trial."""
    try:
        return _winner_row(sweep, dataset)[0]["run_id"]
    except AnalysisError:
        return None


def winner(sweep: Sweep, dataset: str) -> Pick:
    """The dataset's winner with its config (the recorded best_config.yaml when there is one)."""
    row, recorded = _winner_row(sweep, dataset)
    return _pick(row, _recorded_config(sweep, dataset) if recorded else None)
