"""Significance tests for "the winner beats the baseline".

McNemar's exact test compares two models on the same test examples (one seed
pair); the paired t-test and Wilcoxon's signed-rank test compare their test
accuracies across seeds, which is what shows the gap is not one lucky seed.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar


@dataclass(frozen=True)
class McNemar:
    """The 2x2 table of one seed pair (a = winner, b = baseline) and its exact p-value."""

    both_correct: int
    only_a: int
    only_b: int
    both_wrong: int
    pvalue: float

    @property
    def table(self) -> list[list[int]]:
        return [[self.both_correct, self.only_a], [self.only_b, self.both_wrong]]


@dataclass(frozen=True)
class Paired:
    """Paired comparison of accuracies across seeds; differences are a - b, in points."""

    seeds: int
    mean_difference: float
    cohens_d: float
    ttest_pvalue: float
    wilcoxon_pvalue: float


def contingency(correct_a: np.ndarray, correct_b: np.ndarray) -> np.ndarray:
    """[[both right, only a right], [only b right, both wrong]] from per-example correctness."""
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"correctness vectors differ in length: {a.shape} vs {b.shape}")
    return np.array([[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]])


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> McNemar:
    """Exact (binomial) McNemar test: only the examples the two models disagree on count."""
    table = contingency(correct_a, correct_b)
    result = mcnemar(table, exact=True)
    return McNemar(
        both_correct=int(table[0, 0]),
        only_a=int(table[0, 1]),
        only_b=int(table[1, 0]),
        both_wrong=int(table[1, 1]),
        pvalue=float(result.pvalue),
    )


def point_differences(accuracies_a: np.ndarray, accuracies_b: np.ndarray) -> np.ndarray:
    """a - b in points, rounded so that nominally equal gaps (k/n accuracies) are exactly equal."""
    a, b = np.asarray(accuracies_a, dtype=float), np.asarray(accuracies_b, dtype=float)
    differences = np.round(100 * (a - b), 9)
    if len(differences) < 2:
        raise ValueError("a paired test needs at least two seeds")
    return differences


def paired_ttest(accuracies_a: np.ndarray, accuracies_b: np.ndarray) -> float:
    """Two-sided paired t-test p-value; 1 when every difference is zero, 0 when all are
    equal and non-zero (no seed disagrees)."""
    differences = point_differences(accuracies_a, accuracies_b)
    if not differences.any():
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy warns on near-identical differences
        return float(stats.ttest_1samp(differences, 0.0).pvalue)


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (what statsmodels' multipletests(method='holm')
    returns; written out because that function runs gc.collect() on every call, 0.1 s)."""
    order = np.argsort(pvalues)
    adjusted = np.empty(len(pvalues))
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[index]))
        adjusted[index] = running
    return [float(p) for p in adjusted]


def paired_tests(accuracies_a: np.ndarray, accuracies_b: np.ndarray) -> Paired:
    """Paired t-test, Wilcoxon signed-rank test and Cohen's d (mean / sd of the differences).

    Identical non-zero differences give t and d infinite (p = 0): no seed
    disagrees. When every difference is zero, both tests say p = 1 and d is 0.
    """
    differences = point_differences(accuracies_a, accuracies_b)
    if not differences.any():
        return Paired(len(differences), 0.0, 0.0, 1.0, 1.0)
    mean, spread = differences.mean(), differences.std(ddof=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy warns on near-identical differences
        wilcoxon = stats.wilcoxon(differences).pvalue
    return Paired(
        seeds=len(differences),
        mean_difference=float(mean),
        cohens_d=float(mean / spread) if spread > 0 else math.copysign(math.inf, mean),
        ttest_pvalue=paired_ttest(accuracies_a, accuracies_b),
        wilcoxon_pvalue=float(wilcoxon),
    )
