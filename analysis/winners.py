"""Who wins a dataset (the sweep's verdict), which config leads, and the best of a regime's search.

The product's rule: a regime wins only when the sweep's verdict says so
(significantly better than every other regime on fresh seeds, after Holm's
correction); otherwise the verdict is a tie and the regime with the best mean
confirmed test accuracy merely leads. A leader at or near chance is no result
at all (`no_trustworthy_winner`): it still leads, but nothing marks it or its
config as a winner's. Nothing here picks a winner by itself.
Within one regime's search, trials are ranked by `search.schema.rank_key`:
final validation accuracy, never test accuracy.

A sweep that has not recorded its verdict yet (still running, or interrupted)
is "pending": its confirmation runs so far are summarised with the same
procedure (`analysis.verdict.decide`), and nobody is marked as winner.
"""

from __future__ import annotations

import math
from collections.abc import Callable
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
NEAR_CHANCE = "near chance"  # a regime of a `no_trustworthy_winner` verdict: every one is below the floor


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
    (no McNemar tables then). `reason` is the sweep's one sentence
    (`verdict_reason`); `chance_acc` and `trust_floor_acc` the bar a winner's mean
    confirmed test accuracy had to clear, when the sweep recorded them.
    """

    dataset: str
    status: str  # one of schema.VERDICTS, or PENDING
    winner: str | None
    leader: str | None
    leading_run_id: str | None
    tied: tuple[str, ...]
    detail: dict[str, Any]
    recorded: bool
    reason: str | None = None
    chance_acc: float | None = None
    trust_floor_acc: float | None = None

    @property
    def trustworthy(self) -> bool:
        """False when the leader is near chance: its config must not be presented as a result."""
        return self.status != schema.NO_TRUSTWORTHY_WINNER

    def arm(self, regime: str) -> dict[str, Any] | None:
        return next((arm for arm in self.detail["arms"] if arm["regime"] == regime), None)

    def comparison(self, regime: str) -> dict[str, Any] | None:
        return next((c for c in self.detail["comparisons"] if c["regime"] == regime), None)

    def mark(self, regime: str) -> str:
        """The regime's place in the verdict: winner, tie, worse, near chance, no result or pending."""
        if self.status == PENDING:
            return PENDING
        if self.status == schema.NO_RESULT or self.arm(regime) is None:
            return NO_RESULT_MARK
        if self.status == schema.WINNER:
            return schema.WINNER if regime == self.winner else WORSE
        if self.status == schema.TIE:
            return schema.TIE if regime in self.tied else WORSE
        # No trustworthy winner: nobody wins. An outcome this version does not know: shown as recorded.
        return NEAR_CHANCE if self.status == schema.NO_TRUSTWORTHY_WINNER else self.status

    def title(self) -> str:
        """The verdict in a few words, as a reviewer should read it."""
        return TITLES.get(self.status, _unknown_title)(self)

    def tie_text(self) -> str:
        """Who is tied, or why a lone leader is no winner."""
        if len(self.tied) < 2:
            return f"only {self.leader} has confirmation runs: nothing to compare it with"
        return f"{', '.join(self.tied)} within noise; {self.leader} leads"

    def leader_test_acc(self) -> float | None:
        """The leader's mean confirmed test accuracy, a fraction (None without a leader)."""
        arm = self.arm(self.leader) if self.leader else None
        return None if arm is None or arm["test"]["mean"] is None else arm["test"]["mean"] / 100

    def chance_text(self) -> str | None:
        """`chance 10.00%, trust floor 19.00% (...)`, when the sweep recorded the figures."""
        if self.chance_acc is None or self.trust_floor_acc is None:
            return None
        leader = self.leader_test_acc()
        leads = f"; the leader {self.leader} reaches {100 * leader:.2f}%" if leader is not None else ""
        return (f"chance {100 * self.chance_acc:.2f}%, trust floor {100 * self.trust_floor_acc:.2f}% (a winner's "
                f"mean confirmed test accuracy must reach it{leads})")

    def headline(self) -> str:
        """The sweep's one sentence; the verdict procedure's, marked provisional, while it is unfinished."""
        if self.status != PENDING and self.reason:
            return self.reason
        headline = str(self.detail.get("headline", ""))
        return f"provisional, from the confirmation runs so far: {headline}" if self.status == PENDING else headline


def _near_chance_title(verdict: DatasetVerdict) -> str:
    leader = verdict.leader_test_acc()
    figures = f" at {100 * leader:.2f}%" if leader is not None else ""
    floor = (f", below the trust floor {100 * verdict.trust_floor_acc:.2f}%"
             if verdict.trust_floor_acc is not None else ", at or near chance")
    return f"NO TRUSTWORTHY WINNER ({verdict.leader} leads{figures}{floor}: not a result)"


def _unknown_title(verdict: DatasetVerdict) -> str:
    return f"{verdict.status.upper()} (an outcome this version does not know; nobody is marked winner)"


# Every outcome a sweep records (schema.VERDICTS), and PENDING: how a reviewer reads it.
TITLES: dict[str, Callable[[DatasetVerdict], str]] = {
    schema.WINNER: lambda verdict: f"WINNER {verdict.winner}",
    schema.TIE: lambda verdict: f"TIE ({verdict.tie_text()})",
    schema.NO_RESULT: lambda verdict: "NO RESULT (no regime completed a confirmation run)",
    schema.NO_TRUSTWORTHY_WINNER: _near_chance_title,
    PENDING: lambda verdict: "PENDING (the sweep has recorded no verdict yet"
                             + (f"; {verdict.leader} leads so far)" if verdict.leader else ")"),
}


def _tag(value: Any) -> str | None:
    return None if value is None or value == schema.NONE or value != value else str(value)


def _fraction(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def dataset_verdict(sweep: Sweep, dataset: str) -> DatasetVerdict:
    """The dataset's verdict: the sweep's tags and verdict.json, else the evidence so far."""
    parent = sweep.parent(dataset)
    status = _tag(parent[schema.VERDICT])
    detail = sweep.verdict_file(dataset) if status else None
    metrics = parent["metrics"]
    # The parent's metrics, else verdict.json's copy of the same figures.
    chance = _fraction(metrics.get(schema.CHANCE_ACC, (detail or {}).get(schema.CHANCE_ACC)))
    floor = _fraction(metrics.get(schema.TRUST_FLOOR_ACC, (detail or {}).get(schema.TRUST_FLOOR_ACC)))
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
        detail=detail, recorded=recorded, reason=_tag(parent[schema.VERDICT_REASON]),
        chance_acc=chance, trust_floor_acc=floor,
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
    """The leading config (`best_config.yaml`): the winner's, or else the leader's (in a tie, or
    near chance: then callers must not present it as a result; see `DatasetVerdict.trustworthy`)."""
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
