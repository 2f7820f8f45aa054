"""Is the winner really better? Retrain it and a baseline over fresh seeds and test the gap.

One seed is noise, and the sweep picked its winner on the very seed it ran, so
the confirmation trains both arms on seeds the sweep did not use. Each seed
pair gets McNemar's exact test on the per-example test predictions; the seeds
together get a paired t-test and Wilcoxon's test on test accuracy. The gap
counts as significant at a level only when all of these agree: the winner
ahead on average, the paired t-test below the level, and McNemar below the
level in favour of the winner for a majority of the seed pairs.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.entities import Metric, RunTag

from analysis.errors import AnalysisError
from analysis.records import Sweep, log_files
from analysis.stats import McNemar, Paired, mcnemar_exact, paired_tests
from analysis.winners import Pick, best_trial, winner
from trainables.config import RunConfig
from trainables.regimes import regime_class
from trainables.training import Trainer

ALPHAS = (0.05, 0.001)
BASELINES = ("tuned", "ablation")
CONFIRM_FILE = "confirm.json"
CONVENTIONAL = "conventional"


@dataclass(frozen=True)
class Arm:
    """One side of the comparison: a name for people, the run it came from, its config."""

    label: str
    run_id: str | None
    config: dict[str, Any]


@dataclass(frozen=True)
class SeedPair:
    seed: int
    winner_acc: float
    baseline_acc: float
    mcnemar: McNemar


@dataclass(frozen=True)
class Confirmation:
    dataset: str
    winner: Arm
    baseline: Arm
    baseline_reason: str
    pairs: list[SeedPair]
    paired: Paired

    def significant(self, alpha: float) -> bool:
        """Winner ahead on average, paired t-test < alpha, McNemar < alpha for most pairs in its favour."""
        favouring = sum(
            pair.mcnemar.pvalue < alpha and pair.mcnemar.only_a > pair.mcnemar.only_b for pair in self.pairs
        )
        return (
            self.paired.mean_difference > 0
            and self.paired.ttest_pvalue < alpha
            and favouring > len(self.pairs) / 2
        )

    def verdict(self) -> str:
        """One plain sentence: better or not, at which level, by how much."""
        gap = self.paired.mean_difference
        levels = [alpha for alpha in ALPHAS if self.significant(alpha)]
        size = f"{gap:+.2f} points on average over {self.paired.seeds} seeds (Cohen's d {self.paired.cohens_d:.2f})"
        if not levels:
            ahead = "" if gap > 0 else " (the baseline is ahead)"
            return (f"the winner is NOT significantly better than the baseline at 0.05{ahead}: {size}, "
                    f"paired t-test p = {self.paired.ttest_pvalue:.3g}")
        strength = "at 0.05 and at 0.001" if len(levels) == 2 else "at 0.05 (not at 0.001)"
        return f"the winner IS significantly better than the baseline {strength}: {size}"

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "significant": {str(alpha): self.significant(alpha) for alpha in ALPHAS},
            "verdict": self.verdict(),
        }


def ablation_config(config: dict[str, Any]) -> dict[str, Any]:
    """The same settings with the regime switched to conventional (its own keys dropped)."""
    own = {field for field in regime_class(config["regime"]).Settings.__dataclass_fields__}
    shared = {key: value for key, value in config.items() if key not in own}
    return RunConfig.from_dict({**shared, "regime": CONVENTIONAL}).to_dict()


def _trial_arm(role: str, pick: Pick) -> Arm:
    return Arm(f"{role}: {pick.regime} (run {pick.run_id})", pick.run_id, pick.config)


def choose_baseline(sweep: Sweep, dataset: str, top: Pick, mode: str) -> tuple[Arm, str]:
    """The arm the winner must beat, and why it was chosen."""
    trials = sweep.trials_of(dataset)
    if top.regime == CONVENTIONAL:
        other = best_trial(trials, "lerac") or best_trial(trials[trials["regime"] != CONVENTIONAL])
        if other is None:
            raise AnalysisError(
                f"the winner of {dataset!r} is conventional and no other regime completed a trial: "
                "there is no curriculum to confirm it against"
            )
        return _trial_arm("baseline", other), (
            f"the winner is conventional training itself, so it is compared against the best "
            f"completed {other.regime} trial: a significant gap means the curriculum lost"
        )
    tuned = best_trial(trials, CONVENTIONAL) if mode == "tuned" else None
    if tuned is not None:
        return _trial_arm("baseline", tuned), (
            "the best completed conventional trial: each regime is compared with the settings "
            "the same search tuned for it"
        )
    reason = ("no conventional trial completed, so " if mode == "tuned" else "") + (
        "the winner's own settings with regime conventional: only the curriculum differs"
    )
    return Arm(f"baseline: the winner's settings, regime conventional (from run {top.run_id})",
               None, ablation_config(top.config)), reason


def run_seed(config: dict[str, Any], seed: int) -> np.ndarray:
    """Train `config` with `seed` for its full budget; per-example test correctness."""
    trainer = Trainer(RunConfig.from_dict({**config, "seed": seed}))
    while not trainer.finished and not trainer.train_epoch().diverged:
        pass
    return (trainer.predict(trainer.data.test) == trainer.data.test.y.cpu()).numpy()


def fresh_seeds(sweep: Sweep, dataset: str, count: int) -> list[int]:
    """`count` seeds above every seed the dataset's trials used."""
    used = sweep.trials_of(dataset)["params.seed"].dropna().astype(int)
    first = int(used.max()) + 1 if len(used) else 0
    return list(range(first, first + count))


def confirm(
    sweep: Sweep,
    dataset: str,
    seeds: Sequence[int],
    mode: str = "tuned",
    on_pair: Callable[[SeedPair], None] | None = None,
) -> Confirmation:
    """Retrain winner and baseline on each seed and test the gap."""
    top = winner(sweep, dataset)
    baseline, reason = choose_baseline(sweep, dataset, top, mode)
    pairs = []
    for seed in seeds:
        correct_winner, correct_baseline = run_seed(top.config, seed), run_seed(baseline.config, seed)
        pair = SeedPair(
            seed=seed,
            winner_acc=float(correct_winner.mean()),
            baseline_acc=float(correct_baseline.mean()),
            mcnemar=mcnemar_exact(correct_winner, correct_baseline),
        )
        pairs.append(pair)
        if on_pair is not None:
            on_pair(pair)
    paired = paired_tests(np.array([p.winner_acc for p in pairs]), np.array([p.baseline_acc for p in pairs]))
    return Confirmation(dataset, _trial_arm("winner", top), baseline, reason, pairs, paired)


def describe(result: Confirmation) -> str:
    """The confirmation as text: arms, per-seed results, tests, verdict."""
    lines = [
        f"{result.dataset}: {result.winner.label} vs {result.baseline.label}",
        f"  baseline chosen: {result.baseline_reason}",
    ]
    for pair in result.pairs:
        m = pair.mcnemar
        lines.append(
            f"  seed {pair.seed}: winner {100 * pair.winner_acc:.2f}%  baseline {100 * pair.baseline_acc:.2f}%  "
            f"McNemar only-winner {m.only_a} / only-baseline {m.only_b}, p = {m.pvalue:.3g}"
        )
    p = result.paired
    lines += [
        f"  paired t-test p = {p.ttest_pvalue:.3g}, Wilcoxon p = {p.wilcoxon_pvalue:.3g}"
        + ("  (Wilcoxon cannot reach 0.05 with fewer than 6 seeds)" if p.seeds < 6 else ""),
        "  " + "; ".join(f"significant at {a}: {'yes' if result.significant(a) else 'no'}" for a in ALPHAS),
        f"  verdict: {result.verdict()}",
    ]
    return "\n".join(lines)


def _finite(value: float) -> float:
    """MLflow stores NaN but not infinity faithfully; clip an infinite effect size."""
    return value if not math.isinf(value) else math.copysign(1e308, value)


def log_confirmation(sweep: Sweep, result: Confirmation) -> None:
    """Metrics, tags and confirm.json on the dataset's parent run (the report reads them back)."""
    run_id = sweep.parent(result.dataset)["run_id"]
    p = result.paired
    summary = {
        "confirm_winner_mean_test_acc": float(np.mean([pair.winner_acc for pair in result.pairs])),
        "confirm_baseline_mean_test_acc": float(np.mean([pair.baseline_acc for pair in result.pairs])),
        "confirm_mean_difference_points": p.mean_difference,
        "confirm_cohens_d": _finite(p.cohens_d),
        "confirm_ttest_p": p.ttest_pvalue,
        "confirm_wilcoxon_p": p.wilcoxon_pvalue,
    }
    now = int(time.time() * 1000)
    metrics = [Metric(key, value, now, 0) for key, value in summary.items()]
    metrics += [Metric("confirm_mcnemar_p", pair.mcnemar.pvalue, now, pair.seed) for pair in result.pairs]
    tags = {
        "confirm_baseline": result.baseline.label,
        "confirm_seeds": ",".join(str(pair.seed) for pair in result.pairs),
        "confirm_verdict": result.verdict(),
        **{f"confirm_significant_{alpha}": str(result.significant(alpha)).lower() for alpha in ALPHAS},
    }
    sweep.client.log_batch(run_id, metrics=metrics, tags=[RunTag(k, v) for k, v in tags.items()])
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / CONFIRM_FILE
        path.write_text(json.dumps(result.to_dict(), indent=2))
        log_files(sweep, result.dataset, [path])
