"""Per dataset and regime: how its search went and what its confirmation on fresh seeds says.

Search columns come from the regime's own search trials: how they ended, the
trial-epochs they used, the best and mean final validation accuracy over
completed trials and the test accuracy of the best one (the best is chosen on
validation only). Confirmation columns come from the verdict: the regime's
confirmed config retrained on fresh seeds, its mean test accuracy with a 95%
t-interval, its gap to the leader (leader minus this regime, in points, with
interval) and the Holm-corrected p-value of that gap. `verdict` marks the winner only when the
sweep's verdict names one; otherwise the leader and every regime within noise
of it are marked `tie`, and when the leader is near chance (`no_trustworthy_winner`)
every regime is marked `near chance`. `lost` counts the regime's runs the sweep's
saved state never recorded (another trial ran in each one's place): they are in
no other column. `chance_acc` and `trust_floor_acc` are the dataset's bar for a
winner, when the sweep recorded it.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from analysis.records import EPOCHS, Sweep
from analysis.winners import NEAR_CHANCE, DatasetVerdict, completed, dataset_verdict, ranked
from search import schema

# How a counted search trial can end: every end state but `lost`.
COUNTED_STATES = tuple(state for state in schema.END_STATES if state != schema.LOST)
SEARCH_COLUMNS = (
    "trials", *COUNTED_STATES, "trial_epochs",
    "best_val_acc", "mean_val_acc", "test_of_best",
)
CONFIRM_COLUMNS = (
    "seeds", "confirm_test_acc", "confirm_ci_low", "confirm_ci_high",
    "gap_points", "gap_ci_low", "gap_ci_high", "p_holm",
)
LOST = "lost"  # column: the regime's lost runs, search and confirmation
COLUMNS = ("dataset", "regime", *SEARCH_COLUMNS, *CONFIRM_COLUMNS, "verdict", LOST,
           schema.CHANCE_ACC, schema.TRUST_FLOOR_ACC)
# Fractions in [0, 1], shown in percent; gaps are already in points.
ACCURACIES = ("best_val_acc", "mean_val_acc", "test_of_best", "confirm_test_acc", "confirm_ci_low",
              "confirm_ci_high", schema.CHANCE_ACC, schema.TRUST_FLOOR_ACC)
MARKS = {schema.WINNER: "* winner", schema.TIE: "= tie", NEAR_CHANCE: "! near chance"}


def _number(value: Any) -> float:
    """verdict.json writes infinite interval ends as null."""
    return math.nan if value is None else float(value)


def _search_columns(trials: pd.DataFrame) -> dict[str, Any]:
    done = completed(trials)
    best = ranked(trials)
    return {
        "trials": len(trials),
        **{state: int((trials[schema.END_STATE] == state).sum()) for state in COUNTED_STATES},
        "trial_epochs": int(trials[EPOCHS].sum()),
        "best_val_acc": float(best[schema.VAL_ACC].iloc[0]) if len(best) else math.nan,
        "mean_val_acc": float(done[schema.VAL_ACC].mean()) if len(done) else math.nan,
        "test_of_best": float(best[schema.TEST_ACC].iloc[0]) if len(best) else math.nan,
    }


def _confirm_columns(verdict: DatasetVerdict, regime: str) -> dict[str, Any]:
    arm, comparison = verdict.arm(regime), verdict.comparison(regime)
    columns: dict[str, Any] = dict.fromkeys(CONFIRM_COLUMNS, math.nan)
    if arm is not None:
        test = arm["test"]
        columns.update(seeds=len(arm["seeds"]), confirm_test_acc=_number(test["mean"]) / 100,
                       confirm_ci_low=_number(test["low"]) / 100, confirm_ci_high=_number(test["high"]) / 100)
    else:
        columns["seeds"] = 0
    if regime == verdict.detail.get("leader"):
        columns["gap_points"] = 0.0
    if comparison is not None:
        gap = comparison["gap"]
        columns.update(gap_points=_number(gap["mean"]), gap_ci_low=_number(gap["low"]),
                       gap_ci_high=_number(gap["high"]), p_holm=_number(comparison["pvalue_holm"]))
    return columns


def leaderboard(sweep: Sweep) -> pd.DataFrame:
    """One row per dataset and regime (a regime the sweep offered but never ran shows 0 trials)."""
    rows = []
    for dataset in sweep.datasets:
        trials = sweep.trials_of(dataset)
        lost = sweep.lost_of(dataset)[schema.REGIME].value_counts()
        verdict = dataset_verdict(sweep, dataset)
        offered = list(sweep.parent(dataset)[schema.REGIMES])
        regimes = dict.fromkeys([*offered, *sorted(trials[schema.REGIME].dropna().unique())])
        for regime in regimes:
            rows.append({
                "dataset": dataset, "regime": regime,
                **_search_columns(trials[trials[schema.REGIME] == regime]),
                **_confirm_columns(verdict, regime),
                "verdict": verdict.mark(regime),
                LOST: int(lost.get(regime, 0)),
                schema.CHANCE_ACC: _number(verdict.chance_acc),
                schema.TRUST_FLOOR_ACC: _number(verdict.trust_floor_acc),
            })
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _percent(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.2f}"


def _interval(mean: float, low: float, high: float, *, signed: bool = False) -> str:
    if math.isnan(mean):
        return "-"
    form = "+.2f" if signed else ".2f"
    ends = f"[{low:{form}}, {high:{form}}]" if math.isfinite(low) and math.isfinite(high) else "[n/a]"
    return f"{mean:{form}} {ends}"


def display(board: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard for people: percentages, intervals in one cell, the verdict spelled out
    (the `lost` column only when a run was lost; the chance figures go under the table)."""
    shown = pd.DataFrame({
        "dataset": board["dataset"],
        "regime": board["regime"],
        "trials": board["trials"],
        "done/stop/div/err": [f"{r.completed}/{r.stopped_early}/{r.diverged}/{r.errored}"
                              for r in board.itertuples()],
        "trial-epochs": board["trial_epochs"],
        "best val": board["best_val_acc"].map(_percent),
        "mean val": board["mean_val_acc"].map(_percent),
        "test of best": board["test_of_best"].map(_percent),
        "seeds": board["seeds"],
        "confirmed test [95% CI]": [_interval(100 * r.confirm_test_acc, 100 * r.confirm_ci_low,
                                              100 * r.confirm_ci_high) for r in board.itertuples()],
        "gap: leader - this, points [95% CI]": [
            "leader" if r.gap_points == 0 and math.isnan(r.p_holm)
            else _interval(r.gap_points, r.gap_ci_low, r.gap_ci_high, signed=True)
            for r in board.itertuples()],
        "Holm p": board["p_holm"].map(lambda p: "-" if math.isnan(p) else f"{p:.3g}"),
        "verdict": board["verdict"].map(lambda mark: MARKS.get(mark, mark)),
    })
    if board[LOST].any():
        shown.insert(4, "lost (not counted)", board[LOST])
    return shown


def format_table(board: pd.DataFrame) -> str:
    """The leaderboard as text (see `display`)."""
    return display(board).to_string(index=False)
