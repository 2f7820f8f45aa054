"""Who wins a dataset (the sweep's verdict), which config leads, and the best of a regime's search.

The product's rule: a regime wins only when the sweep's verdict says so
(significantly better than every other regime on fresh seeds, after Holm's
correction); otherwise the verdict is a tie and the regime with the best mean
confirmed test accuracy merely leads. Nothing here picks a winner by itself.
Within one regime's search, trials are ranked by `search.schema.rank_key`:
final validation accuracy, never test accuracy.

A sweep that has not recorded its verdict yet (still running, or interrupted)
is "pending": its confirmation runs so far are summarised with the same
procedure (`analysis.verdict.decide`), and nobody is marked as winner.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from analysis.errors import AnalysisError
from analysis.records import Sweep, regime_config_path, trial_config
from analysis.verdict import SeedResult, decide
from search import schema

PENDING = "pending"  # the sweep has recorded no verdict for the dataset yet
WORSE = "worse"  # significantly worse than the leader
NO_RESULT_MARK = "no result"


@dataclass(frozen=True, kw_only=True)
class Pick:
    """A config and where it came from: its search trial and that trial's final accuracies."""

    run_id: str | None
    regime: str
    config: dict[str, Any]
    val_acc: float
    test_acc: float
    metadata: dict[str, Any] | None = None  # the recorded config file's metadata, if read from one


# -- a regime's search -------------------------------------------------------------------
def completed(trials: pd.DataFrame) -> pd.DataFrame:
    """Search trials that ran their whole budget with finite results: the only ones ranked."""
    finite = trials[schema.VAL_ACC].map(math.isfinite) & trials[schema.TRAIN_LOSS].map(math.isfinite)
    return trials[(trials[schema.END_STATE] == schema.COMPLETED) & finite]


def ranked(trials: pd.DataFrame) -> pd.DataFrame:
    """Completed trials, best first by the schema's rule (validation accuracy, then loss)."""
    done = completed(trials)
    keys = [schema.rank_key(val, loss) for val, loss in zip(done[schema.VAL_ACC], done[schema.TRAIN_LOSS],
                                                               strict=True)]
    order = sorted(range(len(done)), key=lambda i: keys[i], reverse=True)
    return done.iloc[order]


def _pick(trial: pd.Series) -> Pick:
    return Pick(run_id=trial["run_id"], regime=trial[schema.REGIME], config=trial_config(trial),
                val_acc=float(trial[schema.VAL_ACC]), test_acc=float(trial[schema.TEST_ACC]))


def best_trial(trials: pd.DataFrame, regime: str | None = None) -> Pick | None:
    """The best completed search trial (of `regime`, if given); None if there is none."""
    if regime is not None:
        trials = trials[trials[schema.REGIME] == regime]
    best = ranked(trials)
    return _pick(best.iloc[0]) if len(best) else None


# -- confirmation runs -------------------------------------------------------------------
def confirmed_runs(confirmations: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Each regime's confirmation runs of the config that counts, by seed.

    With several configs per regime (top-k), the one with the best mean
    validation accuracy over its seeds counts, as in the sweep's own verdict.
    Errored runs and runs without a test accuracy are no evidence.
    """
    usable = confirmations[(confirmations[schema.END_STATE] != schema.ERRORED)
                           & confirmations[schema.TEST_ACC].map(math.isfinite)]
    chosen = {}
    for regime, runs in usable.groupby(schema.REGIME, sort=False):
        rank = schema.top_k_choice(runs.groupby(schema.RANK)[schema.VAL_ACC].mean().to_dict())
        chosen[regime] = runs[runs[schema.RANK] == rank].sort_values(schema.SEED)
    return chosen


def seed_results(runs: pd.DataFrame | None) -> list[SeedResult]:
    """Confirmation runs as the verdict procedure reads them (no per-example predictions:
    MLflow does not keep them, so McNemar's tables come only from the recorded verdict)."""
    if runs is None:
        return []
    return [SeedResult(seed=int(run[schema.SEED]), val_acc=float(run[schema.VAL_ACC]),
                       test_acc=float(run[schema.TEST_ACC]), run_id=run["run_id"])
            for _, run in runs.iterrows()]


# -- the verdict -------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class DatasetVerdict:
    """A dataset's verdict as recorded by the sweep, with its evidence.

    `detail` has the form of `Verdict.to_dict()`: the sweep's `verdict.json`
    when it is there (`recorded`), else recomputed from the confirmation runs
    (no McNemar tables then).
    """

    dataset: str
    status: str  # schema.WINNER | schema.TIE | schema.NO_RESULT | PENDING
    winner: str | None
    leader: str | None
    leading_run_id: str | None
    tied: tuple[str, ...]
    detail: dict[str, Any]
    recorded: bool

    def arm(self, regime: str) -> dict[str, Any] | None:
        return next((arm for arm in self.detail["arms"] if arm["regime"] == regime), None)

    def comparison(self, regime: str) -> dict[str, Any] | None:
        return next((c for c in self.detail["comparisons"] if c["regime"] == regime), None)

    def mark(self, regime: str) -> str:
        """The regime's place in the verdict: winner, tie, worse, no result or pending."""
        if self.status == PENDING:
            return PENDING
        if self.status == schema.NO_RESULT or self.arm(regime) is None:
            return NO_RESULT_MARK
        if self.status == schema.WINNER:
            return schema.WINNER if regime == self.winner else WORSE
        return schema.TIE if regime in self.tied else WORSE

    def title(self) -> str:
        """The verdict in a few words, as a reviewer should read it."""
        if self.status == schema.WINNER:
            return f"WINNER {self.winner}"
        if self.status == schema.TIE:
            return f"TIE ({self.tie_text()})"
        if self.status == schema.NO_RESULT:
            return "NO RESULT (no regime completed a confirmation run)"
        leads = f"; {self.leader} leads so far" if self.leader else ""
        return f"PENDING (the sweep has recorded no verdict yet{leads})"

    def tie_text(self) -> str:
        """Who is tied, or why a lone leader is no winner."""
        if len(self.tied) < 2:
            return f"only {self.leader} has confirmation runs: nothing to compare it with"
        return f"{', '.join(self.tied)} within noise; {self.leader} leads"

    def headline(self) -> str:
        """The verdict procedure's one sentence; marked provisional while the sweep is unfinished."""
        headline = str(self.detail.get("headline", ""))
        return f"provisional, from the confirmation runs so far: {headline}" if self.status == PENDING else headline


def _tag(value: Any) -> str | None:
    return None if value is None or value == schema.NONE or value != value else str(value)


def dataset_verdict(sweep: Sweep, dataset: str) -> DatasetVerdict:
    """The dataset's verdict: the sweep's tags and verdict.json, else the evidence so far."""
    parent = sweep.parent(dataset)
    status = _tag(parent[schema.VERDICT])
    detail = sweep.verdict_file(dataset) if status else None
    recorded = detail is not None
    if detail is None:
        confirmations = sweep.confirmations_of(dataset)
        by_regime = confirmed_runs(confirmations)
        regimes = list(parent[schema.REGIMES]) or list(by_regime)
        detail = decide(dataset, {regime: seed_results(by_regime.get(regime)) for regime in regimes}).to_dict()
    if status is None:
        return DatasetVerdict(dataset=dataset, status=PENDING, winner=None, leader=detail["leader"],
                              leading_run_id=None, tied=(), detail=detail, recorded=False)
    return DatasetVerdict(
        dataset=dataset, status=status,
        winner=_tag(parent[schema.WINNER_REGIME]),
        leader=_tag(parent[schema.LEADING_REGIME]),
        leading_run_id=_tag(parent[schema.LEADING_RUN_ID]),
        tied=tuple(parent[schema.TIED_REGIMES]),
        detail=detail, recorded=recorded,
    )


# -- the configs the verdict is about ------------------------------------------------------
def _from_file(sweep: Sweep, dataset: str, path: str) -> Pick | None:
    found = sweep.config_file(dataset, path)
    if found is None:
        return None
    meta = found.metadata
    return Pick(run_id=meta.get(schema.SOURCE_RUN_ID), regime=found.settings["regime"], config=found.settings,
                val_acc=float(meta.get(schema.RECORDED_VAL_ACC, math.nan)),
                test_acc=float(meta.get(schema.RECORDED_TEST_ACC, math.nan)), metadata=meta)


def leading_config(sweep: Sweep, dataset: str) -> Pick:
    """The leading config (`best_config.yaml`): the winner's, or in a tie the leader's."""
    verdict = dataset_verdict(sweep, dataset)
    if verdict.status == PENDING:
        raise AnalysisError(f"dataset {dataset!r} of sweep {sweep.sweep_id!r} has no verdict yet: the sweep "
                            "has not finished (continue it with --resume)")
    if verdict.leader is None:
        raise AnalysisError(f"dataset {dataset!r} of sweep {sweep.sweep_id!r} has no leading config: "
                            "no regime completed a confirmation run")
    pick = _from_file(sweep, dataset, schema.BEST_CONFIG)
    if pick is None:
        raise AnalysisError(f"parent run {sweep.parent(dataset)['run_id']} of {dataset!r} has no "
                            f"{schema.BEST_CONFIG} although its verdict names a leader")
    return pick


def confirmed_configs(sweep: Sweep, dataset: str) -> dict[str, Pick]:
    """Each regime's confirmed config: the one the sweep retrained on fresh seeds.

    Read from `configs/<regime>.yaml` when the sweep recorded it; before the
    verdict, the search trial the confirmation runs retrain, or else the
    regime's best completed search trial (what the sweep will confirm).
    """
    trials = sweep.trials_of(dataset)
    by_regime = confirmed_runs(sweep.confirmations_of(dataset))
    offered = list(sweep.parent(dataset)[schema.REGIMES]) or sorted(trials[schema.REGIME].dropna().unique())
    picks = {}
    for regime in offered:
        pick = _from_file(sweep, dataset, regime_config_path(regime))
        if pick is None and regime in by_regime:
            source = by_regime[regime][schema.SOURCE_RUN_ID].iloc[0]
            rows = trials[trials["run_id"] == source]
            pick = _pick(rows.iloc[0]) if len(rows) else None
        if pick is None:
            pick = best_trial(trials, regime)
        if pick is not None:
            picks[regime] = pick
    return picks
