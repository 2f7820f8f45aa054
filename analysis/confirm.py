"""Confirm a dataset's verdict again by hand: retrain configs on fresh seeds and decide.

The sweep itself retrains every regime's best config on fresh seeds and
records the verdict. This command repeats that on seeds nobody has used (more
seeds, a second opinion), or puts the leading config against one baseline:

- `all` (default): every regime's confirmed config, decided as the sweep decides;
- `tuned`: the leader against conventional training's confirmed config (the
  same search tuned it); when conventional leads, against LeRaC's (else the
  next best regime's);
- `ablation`: the leader against itself without its curriculum. For LeRaC that
  is conventional training with a linear warm-up as long as its curriculum
  (warmup_epochs = k) and the same decay from k on, so the two differ only in
  the per-layer rise (REGIMES.md: warm-up is the competitor reviewers named);
  for other regimes, the same shared settings with regime conventional.

The statistics are `analysis.verdict.decide`'s: each arm's mean test accuracy
with a 95% t-interval, paired gaps to the leader with intervals, paired
t-tests corrected with Holm's method, and McNemar's exact test per seed pair;
and, as in the sweep, a leader at or near chance is no trustworthy winner
(`analysis.verdict.distrust`, from the number of classes training saw).
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analysis.errors import AnalysisError
from analysis.records import PARAM, Sweep, log_files
from analysis.verdict import SeedResult, Verdict, decide, distrust, near_chance_reason, trust_floor
from analysis.winners import PENDING, Pick, confirmed_configs, dataset_verdict
from search import schema
from trainables.config import RunConfig
from trainables.regimes import Conventional, Lerac, regime_class
from trainables.training import Trainer

BASELINES = ("all", "tuned", "ablation")
ABLATION = "ablation"


def confirm_file(mode: str) -> str:
    """The file a confirmation is attached as, under the parent run's analysis/ folder."""
    return f"confirm-{mode}.json"


@dataclass(frozen=True, kw_only=True)
class Arm:
    """One config under test: a label for the verdict, where it came from, the config."""

    label: str
    source: str
    config: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class Confirmation:
    dataset: str
    mode: str
    seeds: tuple[int, ...]
    arms: tuple[Arm, ...]
    verdict: Verdict
    num_classes: int | None = None  # as training saw it: chance = 1 / num_classes

    def headline(self) -> str:
        """The verdict's sentence; for a leader near chance, with the chance figures."""
        if self.verdict.outcome == schema.NO_TRUSTWORTHY_WINNER and self.num_classes:
            return near_chance_reason(self.verdict, self.num_classes)
        return self.verdict.headline()

    def to_dict(self) -> dict[str, Any]:
        chance = 1.0 / self.num_classes if self.num_classes else None
        return {
            "dataset": self.dataset,
            "mode": self.mode,
            "seeds": list(self.seeds),
            "arms": [{"label": arm.label, "source": arm.source, "config": arm.config} for arm in self.arms],
            "verdict": {**self.verdict.to_dict(), "headline": self.headline()},
            "num_classes": self.num_classes,
            schema.CHANCE_ACC: chance,
            schema.TRUST_FLOOR_ACC: trust_floor(chance) if chance is not None else None,
        }


def ablation_config(config: dict[str, Any]) -> dict[str, Any]:
    """The same run without its curriculum: only the regime's own mechanism is taken away.

    LeRaC becomes conventional training with a linear warm-up of length k: both
    then decay from step k with the same schedule, so from k on their rates are
    equal and before k only the per-layer rise differs.
    """
    full = RunConfig.from_dict(config).to_dict()
    regime = full["regime"]
    if regime == Conventional.name:
        raise AnalysisError("the leader is conventional training: it has no curriculum to ablate "
                            "(use --baseline all or tuned)")
    own = set(regime_class(regime).Settings.__dataclass_fields__)
    shared = {key: value for key, value in full.items() if key not in own}
    if regime == Lerac.name:
        shared["warmup_epochs"] = full["curriculum_epochs"]
    return RunConfig.from_dict({**shared, "regime": Conventional.name}).to_dict()


def _describe_pick(pick: Pick) -> str:
    recorded = "the sweep's confirmed config" if pick.metadata is not None else "the best search trial"
    return f"{recorded} of {pick.regime} (search run {pick.run_id})"


def choose_arms(sweep: Sweep, dataset: str, mode: str) -> list[Arm]:
    """The configs to retrain: every regime's, or the leader's and one baseline."""
    if mode not in BASELINES:
        raise AnalysisError(f"unknown baseline {mode!r}; choose one of {', '.join(BASELINES)}")
    picks = confirmed_configs(sweep, dataset)
    if not picks:
        raise AnalysisError(f"dataset {dataset!r} of sweep {sweep.sweep_id!r} has no completed search trial")
    if mode == "all":
        return [Arm(label=regime, source=_describe_pick(pick), config=pick.config) for regime, pick in picks.items()]
    verdict = dataset_verdict(sweep, dataset)
    if verdict.status == PENDING or verdict.leader is None:
        raise AnalysisError(f"dataset {dataset!r} has no recorded leader to compare with a baseline "
                            "(use --baseline all)")
    leader = picks[verdict.leader]
    arms = [Arm(label=leader.regime, source=_describe_pick(leader), config=leader.config)]
    baseline = _tuned_baseline(picks, verdict.leader, verdict.detail) if mode == "tuned" else None
    if baseline is not None:
        return [*arms, Arm(label=baseline.regime, source=_describe_pick(baseline), config=baseline.config)]
    why = "" if mode == ABLATION else "no conventional config was searched, so: "
    source = f"{why}the leader's settings without its curriculum (regime conventional"
    source += ", warm-up as long as k)" if leader.regime == Lerac.name else ")"
    return [*arms, Arm(label=ABLATION, source=source, config=ablation_config(leader.config))]


def _tuned_baseline(picks: dict[str, Pick], leader: str, detail: dict[str, Any]) -> Pick | None:
    """Conventional's confirmed config; when conventional leads, LeRaC's or the next best."""
    if leader != Conventional.name:
        return picks.get(Conventional.name)
    if Lerac.name in picks:
        return picks[Lerac.name]
    means = {arm["regime"]: arm["test"]["mean"] for arm in detail["arms"]}
    others = [regime for regime in picks if regime != leader]
    if not others:
        raise AnalysisError("conventional training leads and no other regime has a config to compare with")
    return picks[max(others, key=lambda regime: means.get(regime, -math.inf))]


def run_seed(config: dict[str, Any], seed: int) -> tuple[SeedResult, int]:
    """Train `config` with `seed` for its whole budget (or until it diverges); the result and the
    dataset's number of classes (the trust floor's chance level)."""
    trainer = Trainer(RunConfig.from_dict({**config, "seed": seed}))
    while not trainer.finished and not trainer.train_epoch().diverged:
        pass
    test = trainer.data.test
    correct = (trainer.predict(test) == test.y.cpu()).numpy()
    return (SeedResult(seed=seed, val_acc=trainer.evaluate(trainer.data.val), test_acc=float(correct.mean()),
                       correct=correct), trainer.data.num_classes)


def fresh_seeds(sweep: Sweep, dataset: str, count: int) -> list[int]:
    """`count` seeds above every seed the dataset's runs used (search and confirmation, lost runs
    included: their seeds were used too)."""
    runs = sweep.runs[sweep.runs[schema.DATASET] == dataset]
    used = runs[PARAM + "seed"].dropna().astype(int) if PARAM + "seed" in runs else []
    first = int(max(used)) + 1 if len(used) else 0
    return list(range(first, first + count))


def confirm(arms: Sequence[Arm], *, dataset: str, seeds: Sequence[int], mode: str,
            on_run: Callable[[str, SeedResult], None] | None = None) -> Confirmation:
    """Retrain every arm on every seed (seed by seed, so arms finish together) and decide."""
    results: dict[str, list[SeedResult]] = {arm.label: [] for arm in arms}
    classes = set()
    for seed in seeds:
        for arm in arms:
            result, num_classes = run_seed(arm.config, seed)
            results[arm.label].append(result)
            classes.add(num_classes)
            if on_run is not None:
                on_run(arm.label, result)
    num_classes = max(classes) if classes else None
    return Confirmation(dataset=dataset, mode=mode, seeds=tuple(seeds), arms=tuple(arms),
                        verdict=distrust(decide(dataset, results), num_classes), num_classes=num_classes)


def _interval(low: float, high: float) -> str:
    return f"[{low:.2f}, {high:.2f}]" if math.isfinite(low) and math.isfinite(high) else "[n/a]"


def describe(result: Confirmation) -> str:
    """The confirmation as text: arms, per-seed accuracies, intervals, tests, verdict."""
    verdict = result.verdict
    lines = [f"{result.dataset}: {len(result.arms)} configs retrained on seeds "
             f"{', '.join(map(str, result.seeds))} (baseline: {result.mode})"]
    lines += [f"  {arm.label}: {arm.source}" for arm in result.arms]
    for arm in verdict.arms:
        per_seed = ", ".join(f"seed {seed} {acc:.2f}%" for seed, acc in zip(arm.seeds, arm.test_by_seed,
                                                                             strict=True))
        lines.append(f"  {arm.regime}: mean test {arm.test.mean:.2f}% {_interval(arm.test.low, arm.test.high)} "
                     f"({per_seed})")
    for comparison in verdict.comparisons:
        lines.append(f"  {verdict.leader} - {comparison.regime}: {comparison.gap.mean:+.2f} points "
                     f"{_interval(comparison.gap.low, comparison.gap.high)}, paired t-test p = "
                     f"{comparison.pvalue:.3g}, Holm p = {comparison.pvalue_holm:.3g}")
        for seed, table in zip(comparison.seeds, comparison.mcnemar, strict=False):
            lines.append(f"    seed {seed}: McNemar only {verdict.leader} right {table.only_a}, only "
                         f"{comparison.regime} right {table.only_b}, exact p = {table.pvalue:.3g}")
    outcome = OUTCOME_WORDS.get(verdict.outcome, verdict.outcome.upper()).format(winner=verdict.winner)
    lines.append(f"  verdict: {outcome}: {result.headline()}")
    return "\n".join(lines)


# Every outcome (schema.VERDICTS) as `describe` prints it.
OUTCOME_WORDS = {schema.WINNER: "WINNER {winner}", schema.TIE: "TIE", schema.NO_RESULT: "NO RESULT",
                 schema.NO_TRUSTWORTHY_WINNER: "NO TRUSTWORTHY WINNER (the leader is near chance: not a result)"}


def log_confirmation(sweep: Sweep, result: Confirmation) -> None:
    """Attach `confirm-<mode>.json` to the dataset's parent run (the report reads it back).

    Nothing else on the parent changes: the sweep's own verdict stays as recorded.
    """
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / confirm_file(result.mode)
        path.write_text(json.dumps(result.to_dict(), indent=2, default=str))
        log_files(sweep, result.dataset, [path])
