"""The verdict procedure, proven by simulation: its false-positive rate and its power.

Each simulated sweep draws every regime's test accuracy on S paired seeds as
base + planted gap + a seed effect shared by all regimes (same initialisation
draws and batch order) + the regime's own noise; on digits the seed-to-seed
spread of a config is about 1 point (REGIMES.md), so both noise terms are set
to 0.7 points (the paired difference then has a standard deviation of 1 point).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from analysis.stats import holm
from analysis.verdict import ALPHA, Interval, SeedResult, decide
from search import schema

SEED_NOISE = ARM_NOISE = 0.007
SIMULATIONS = 1000
SEEDS = 5  # the sweep's default number of confirmation seeds


def simulate(gaps: list[float], *, seeds: int = SEEDS, rng: np.random.Generator) -> dict[str, list[SeedResult]]:
    shared = rng.normal(0.0, SEED_NOISE, seeds)
    results = {}
    for index, gap in enumerate(gaps):
        test = 0.95 + gap + shared + rng.normal(0.0, ARM_NOISE, seeds)
        val = test + rng.normal(0.0, 0.003, seeds)
        results[f"regime{index}"] = [SeedResult(seed, float(v), float(t))
                                     for seed, (t, v) in enumerate(zip(test, val, strict=True))]
    return results


def winner_rate(gaps: list[float], *, expected: str | None = None, seeds: int = SEEDS) -> float:
    """Share of simulated sweeps that name a winner (`expected`, when given)."""
    rng = np.random.default_rng(len(gaps) * 1000 + int(1e4 * sum(gaps)) + seeds)
    wins = 0
    for _ in range(SIMULATIONS):
        verdict = decide("sim", simulate(gaps, seeds=seeds, rng=rng))
        wins += verdict.winner is not None and (expected is None or verdict.winner == expected)
    return wins / SIMULATIONS


# A binomial share of 1000 draws at 5% has a standard error of 0.7 points.
TOLERANCE = 3 * math.sqrt(ALPHA * (1 - ALPHA) / SIMULATIONS)


class TestFalsePositiveRate:
    @pytest.mark.parametrize("regimes", [2, 3, 4])
    def test_identical_regimes_rarely_get_a_winner(self, regimes):
        assert winner_rate([0.0] * regimes) <= ALPHA + TOLERANCE

    def test_holds_with_three_seeds(self):
        assert winner_rate([0.0, 0.0], seeds=3) <= ALPHA + TOLERANCE


class TestPower:
    def test_a_two_point_gap_is_found_most_of_the_time(self):
        assert winner_rate([0.02, 0.0], expected="regime0") >= 0.8

    def test_against_two_rivals_after_correction(self):
        assert winner_rate([0.02, 0.0, 0.0], expected="regime0") >= 0.8

    def test_a_gap_far_below_the_noise_is_a_tie(self):
        assert winner_rate([0.002, 0.0]) <= 0.2


class TestDecision:
    def test_tie_names_the_regimes_within_noise_and_the_worse_ones(self):
        rng = np.random.default_rng(7)
        results = simulate([0.0, 0.0, -0.2], rng=rng)
        verdict = decide("d", results)
        assert verdict.outcome == schema.TIE and verdict.winner is None
        assert set(verdict.tied) == {"regime0", "regime1"} and verdict.worse == ("regime2",)
        assert "tie between" in verdict.headline()

    def test_winner_is_significantly_better_than_every_other(self):
        verdict = decide("d", simulate([0.2, 0.0, 0.0], rng=np.random.default_rng(1)))
        assert verdict.outcome == schema.WINNER and verdict.winner == verdict.leader == "regime0"
        assert all(c.significant and c.gap.low > 0 for c in verdict.comparisons)
        assert verdict.headline().startswith("regime0 wins")

    def test_identical_runs_tie_with_p_one(self):
        runs = [SeedResult(seed, 0.9, 0.9 + seed / 1000) for seed in range(4)]
        verdict = decide("d", {"a": runs, "b": list(runs)})
        assert verdict.outcome == schema.TIE and verdict.comparisons[0].pvalue_holm == 1.0

    def test_one_seed_never_makes_a_winner(self):
        verdict = decide("d", {"a": [SeedResult(0, 0.99, 0.99)], "b": [SeedResult(0, 0.5, 0.5)]})
        assert verdict.outcome == schema.TIE

    def test_only_shared_seeds_are_paired(self):
        a = [SeedResult(seed, 0.9, 0.9 + 0.01 * seed) for seed in range(4)]
        b = [SeedResult(seed, 0.9, 0.9) for seed in (1, 2, 3, 9)]
        (comparison,) = decide("d", {"a": a, "b": b}).comparisons
        assert comparison.seeds == (1, 2, 3)
        assert comparison.gap.mean == pytest.approx(2.0)

    def test_no_results_and_missing_regimes(self):
        assert decide("d", {"a": [], "b": []}).outcome == schema.NO_RESULT
        verdict = decide("d", {"a": [SeedResult(0, 0.9, 0.9)], "b": []})
        assert verdict.missing == ("b",) and "nothing to compare" in verdict.headline()

    def test_mcnemar_per_seed_pair_from_correctness(self):
        correct_a = np.array([1, 1, 1, 1, 0], dtype=bool)
        correct_b = np.array([1, 0, 0, 1, 0], dtype=bool)
        a = [SeedResult(s, 0.8, 0.8, correct_a) for s in range(2)]
        b = [SeedResult(s, 0.4, 0.4, correct_b) for s in range(2)]
        (comparison,) = decide("d", {"a": a, "b": b}).comparisons
        assert [(m.only_a, m.only_b) for m in comparison.mcnemar] == [(2, 0), (2, 0)]

    def test_to_dict_is_json_ready(self):
        import json

        verdict = decide("d", {"a": [SeedResult(0, 0.9, 0.9)], "b": [SeedResult(0, 0.8, 0.8)]})
        assert json.loads(json.dumps(verdict.to_dict()))["headline"] == verdict.headline()


class TestBuildingBlocks:
    def test_holm_matches_statsmodels(self):
        rng = np.random.default_rng(0)
        for size in (1, 2, 3, 6):
            pvalues = list(rng.uniform(0, 0.2, size))
            assert holm(pvalues) == pytest.approx(list(multipletests(pvalues, method="holm")[1]))

    def test_interval_is_the_t_interval(self):
        values = [97.1, 97.9, 96.8, 97.5]
        low, high = stats.t.interval(0.95, 3, loc=np.mean(values), scale=stats.sem(values))
        interval = Interval.of(values)
        assert (interval.low, interval.high) == pytest.approx((low, high))
        assert Interval.of([1.0]).low == -math.inf
        assert Interval.of([99.0, 100.0], bounds=(0, 100)).high == 100
