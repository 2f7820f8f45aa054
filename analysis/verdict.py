"""Which regime wins a dataset, with evidence a reviewer would accept; otherwise "tie".

Input: each regime's confirmed config retrained on the same fresh seeds (the
search never used them), with test accuracy and per-example test correctness
per seed. Seeds pair the arms: the same seed gives every regime the same
initialisation draws and batch order, so seed-to-seed noise largely cancels
in the differences.

The procedure (docs/contracts.md):
1. Each regime: mean test accuracy over seeds with a 95% t-interval (clipped to [0, 100]).
2. The leader: the highest mean test accuracy (ties to the higher mean validation).
3. Every other regime against the leader: the paired gap (leader - other, in
   points) with its 95% t-interval, a two-sided paired t-test, p-values
   corrected for the number of comparisons (Holm), and McNemar's exact test on
   each seed's pair of models.
4. The leader is the winner only when it is significantly better (corrected
   p < alpha) than every other regime; otherwise the verdict is "tie", naming
   the regimes within noise of the leader. Fewer than two paired seeds can
   never make a winner.
5. A leader at or near chance is nobody's result: when its mean test accuracy
   is below the trust floor (chance + `TRUST_MARGIN` of the way to 100%), the
   outcome is `no_trustworthy_winner` whatever the tests say (`distrust`).
Its error rates are measured by simulation in tests/test_verdict.py.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from scipy import stats

from analysis.stats import McNemar, holm, mcnemar_exact, paired_ttest
from search import schema

ALPHA = 0.05
LEVEL = 0.95
# A leader needs a mean confirmed test accuracy of at least chance plus this share of the
# way from chance to perfect: 19% with 10 classes, 10.9% with 100, 55% with 2. Below it
# nothing was found worth exporting, whatever the paired tests say (a regime at chance can
# still "beat" one that diverged).
TRUST_MARGIN = 0.1


@dataclass(frozen=True)
class SeedResult:
    """One confirmation run: a regime's config trained with one fresh seed."""

    seed: int
    val_acc: float
    test_acc: float
    correct: np.ndarray | None = field(default=None, compare=False, repr=False)
    run_id: str | None = None


@dataclass(frozen=True)
class Interval:
    """A mean and its two-sided t-interval (infinite with fewer than two values)."""

    mean: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float], level: float = LEVEL,
           bounds: tuple[float, float] = (-math.inf, math.inf)) -> Interval:
        """The t-interval of `values`, clipped to `bounds` (an accuracy's lies in [0, 100])."""
        values = np.asarray(values, dtype=float)
        mean = float(values.mean())
        if len(values) < 2:
            return cls(mean, bounds[0], bounds[1])
        half = stats.t.ppf((1 + level) / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
        return cls(mean, float(max(bounds[0], mean - half)), float(min(bounds[1], mean + half)))


@dataclass(frozen=True)
class Arm:
    """A regime's confirmation: test accuracy over seeds, in points."""

    regime: str
    seeds: tuple[int, ...]
    test: Interval
    mean_val: float
    test_by_seed: tuple[float, ...] = ()


@dataclass(frozen=True)
class Comparison:
    """The leader against one other regime, on their shared seeds; gaps in points."""

    regime: str
    seeds: tuple[int, ...]
    gap: Interval
    pvalue: float
    pvalue_holm: float
    significant: bool
    mcnemar: tuple[McNemar, ...]


@dataclass(frozen=True)
class Verdict:
    dataset: str
    alpha: float
    outcome: str  # one of schema.VERDICTS
    leader: str | None
    winner: str | None
    tied: tuple[str, ...]  # the leader and every regime not significantly worse
    worse: tuple[str, ...]  # significantly worse than the leader
    arms: tuple[Arm, ...]
    comparisons: tuple[Comparison, ...]
    missing: tuple[str, ...] = ()  # regimes with no confirmation result

    def headline(self) -> str:
        """One sentence a reviewer can check against the numbers."""
        if self.outcome == schema.NO_RESULT:
            return "no verdict: no regime completed a confirmation run"
        leader = self.arm(self.leader)
        where = (f"{leader.test.mean:.2f}% mean test accuracy over {len(leader.seeds)} fresh seeds "
                 f"[95% CI {leader.test.low:.2f}, {leader.test.high:.2f}]")
        if self.outcome == schema.NO_TRUSTWORTHY_WINNER:  # `near_chance_reason` says it with the chance figures
            return f"no trustworthy winner: the leader {self.leader} reaches only {where}, at or near chance"
        if not self.comparisons:
            return f"{self.leader} only ({where}): nothing to compare it with"
        gaps = "; ".join(
            f"vs {c.regime} {c.gap.mean:+.2f} points [{c.gap.low:+.2f}, {c.gap.high:+.2f}], "
            f"Holm p = {c.pvalue_holm:.3g}" for c in self.comparisons
        )
        if self.outcome == schema.WINNER:
            return f"{self.winner} wins: {where}; {gaps}"
        return (f"tie between {', '.join(self.tied)} (within noise at {self.alpha}): "
                f"{self.leader} leads with {where}; {gaps}")

    def arm(self, regime: str | None) -> Arm:
        return next(arm for arm in self.arms if arm.regime == regime)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (infinite interval ends become None)."""
        def clean(value: Any) -> Any:
            if isinstance(value, float) and not math.isfinite(value):
                return None
            if isinstance(value, dict):
                return {key: clean(item) for key, item in value.items()}
            if isinstance(value, (list, tuple)):
                return [clean(item) for item in value]
            return value

        return clean({**asdict(self), "headline": self.headline()})


def decide(dataset: str, results: Mapping[str, Sequence[SeedResult]], *, alpha: float = ALPHA) -> Verdict:
    """The verdict for one dataset from each regime's confirmation runs (accuracies as fractions)."""
    present = {regime: list(runs) for regime, runs in results.items() if runs}
    missing = tuple(regime for regime in results if regime not in present)
    if not present:
        return Verdict(dataset, alpha, schema.NO_RESULT, None, None, (), (), (), (), missing)
    arms = tuple(
        Arm(regime, tuple(run.seed for run in runs),
            Interval.of([100 * run.test_acc for run in runs], bounds=(0.0, 100.0)),
            float(np.mean([100 * run.val_acc for run in runs])),
            tuple(100 * run.test_acc for run in runs))
        for regime, runs in present.items()
    )
    leader = max(arms, key=lambda arm: (arm.test.mean, arm.mean_val)).regime
    others = [regime for regime in present if regime != leader]
    raw = [_compare(present[leader], present[regime], regime) for regime in others]
    corrected = holm([comparison.pvalue for comparison in raw])
    comparisons = tuple(
        Comparison(c.regime, c.seeds, c.gap, c.pvalue, p_holm,
                   p_holm < alpha and c.gap.mean > 0 and len(c.seeds) >= 2, c.mcnemar)
        for c, p_holm in zip(raw, corrected, strict=True)
    )
    worse = tuple(c.regime for c in comparisons if c.significant)
    tied = (leader, *(c.regime for c in comparisons if not c.significant))
    won = bool(comparisons) and len(worse) == len(comparisons)
    return Verdict(
        dataset, alpha, schema.WINNER if won else schema.TIE, leader, leader if won else None,
        tied, worse, arms, comparisons, missing,
    )


def trust_floor(chance: float) -> float:
    """The least mean test accuracy (a fraction) a leader needs to be a trustworthy result."""
    return chance + TRUST_MARGIN * (1.0 - chance)


def untrustworthy(verdict: Verdict, num_classes: int | None) -> bool:
    """A leader at or near chance: its mean confirmed test accuracy is below the trust floor."""
    if verdict.leader is None or not num_classes:
        return False
    return verdict.arm(verdict.leader).test.mean / 100 < trust_floor(1.0 / num_classes)


def distrust(verdict: Verdict, num_classes: int | None) -> Verdict:
    """The verdict, or `no_trustworthy_winner` (nobody wins) when its leader is near chance."""
    if not untrustworthy(verdict, num_classes):
        return verdict
    return replace(verdict, outcome=schema.NO_TRUSTWORTHY_WINNER, winner=None)


def near_chance_reason(verdict: Verdict, num_classes: int) -> str:
    """Why a `no_trustworthy_winner` verdict names nobody: one sentence with the figures."""
    arm, chance = verdict.arm(verdict.leader), 1.0 / num_classes
    return (f"no trustworthy winner: the leader {arm.regime} reaches only {arm.test.mean:.2f}% mean "
            f"test accuracy over {len(arm.seeds)} fresh seeds, below the {100 * trust_floor(chance):.2f}% "
            f"a result needs (chance is {100 * chance:.2f}% with {num_classes} classes)")


def _compare(leader: Sequence[SeedResult], other: Sequence[SeedResult], regime: str) -> Comparison:
    """Leader minus other on the seeds both have."""
    by_seed = {run.seed: run for run in other}
    pairs = [(run, by_seed[run.seed]) for run in leader if run.seed in by_seed]
    seeds = tuple(a.seed for a, _ in pairs)
    gaps = [100 * (a.test_acc - b.test_acc) for a, b in pairs]
    pvalue = paired_ttest(np.array([a.test_acc for a, _ in pairs]),
                          np.array([b.test_acc for _, b in pairs])) if len(pairs) >= 2 else 1.0
    mcnemar = tuple(mcnemar_exact(a.correct, b.correct) for a, b in pairs
                    if a.correct is not None and b.correct is not None)
    gap = Interval.of(gaps) if gaps else Interval(math.nan, -math.inf, math.inf)
    return Comparison(regime, seeds, gap, float(pvalue), float(pvalue), False, mcnemar)
