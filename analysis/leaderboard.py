"""Per dataset and regime: how good the best and the typical trial was, and how trials ended.

Accuracies are over completed trials only (the full epoch budget), so regimes
are compared on the same budget; `test_of_best` is the test accuracy of the
trial with the best validation accuracy, the only honest test number to quote.
"""

from __future__ import annotations

import math

import pandas as pd

from analysis.records import Sweep
from analysis.winners import best_trial, completed, winner_run_id

COLUMNS = (
    "dataset", "regime", "trials", "completed", "best_val_acc", "test_of_best",
    "mean_val_acc", "mean_test_acc", "stopped_early", "diverged", "errored", "winner",
)
SHARES = ("stopped_early", "diverged", "errored")
ACCURACIES = ("best_val_acc", "test_of_best", "mean_val_acc", "mean_test_acc")


def _row(dataset: str, regime: str, trials: pd.DataFrame, winner_id: str | None) -> dict:
    done = completed(trials)
    best = best_trial(trials)
    count = len(trials)
    return {
        "dataset": dataset,
        "regime": regime,
        "trials": count,
        "completed": len(done),
        "best_val_acc": best.val_acc if best else math.nan,
        "test_of_best": best.test_acc if best else math.nan,
        "mean_val_acc": done["val_acc"].mean() if len(done) else math.nan,
        "mean_test_acc": done["test_acc"].mean() if len(done) else math.nan,
        **{state: (trials["end_state"] == state).sum() / count if count else math.nan for state in SHARES},
        "winner": winner_id is not None and bool((trials["run_id"] == winner_id).any()),
    }


def leaderboard(sweep: Sweep) -> pd.DataFrame:
    """One row per dataset and regime (regimes the sweep offered but never tried show 0 trials)."""
    rows = []
    for dataset in sweep.datasets:
        trials = sweep.trials_of(dataset)
        winner_id = winner_run_id(sweep, dataset)
        offered = list(sweep.parent(dataset)["regimes"])
        regimes = dict.fromkeys([*offered, *sorted(trials["regime"].dropna().unique())])
        for regime in regimes:
            rows.append(_row(dataset, regime, trials[trials["regime"] == regime], winner_id))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def format_table(board: pd.DataFrame) -> str:
    """The leaderboard as text: accuracies and shares in percent, the winner row starred."""
    shown = board.copy()
    for column in (*ACCURACIES, *SHARES):
        shown[column] = shown[column].map(lambda v: "-" if math.isnan(v) else f"{100 * v:.2f}")
    shown["winner"] = shown["winner"].map(lambda w: "*" if w else "")
    return shown.to_string(index=False)
