"""From a finished sweep's trials to each dataset's verdict and what MLflow records of it.

Reads Ray Tune's outcome of every trial (its config, with the searcher's notes,
and its last result), so the verdict is computed from what the workers
reported, whatever MLflow holds. Per dataset and regime: the search trials'
end states and trial-epochs, and the confirmation runs, whose test accuracies
and per-example correctness go to `analysis.verdict.decide`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from analysis.verdict import SeedResult, Verdict, decide, distrust, near_chance_reason, trust_floor
from search import schema
from search.balanced_search import SWEEP_KEY, end_state
from trainables.predictions import unpack_correct


@dataclass(frozen=True, kw_only=True)
class TrialOutcome:
    """One Tune trial as the driver saw it end."""

    trial_id: str
    config: Mapping[str, Any]
    result: Mapping[str, Any]
    errored: bool = False

    @property
    def notes(self) -> Mapping[str, Any]:
        return self.config.get(SWEEP_KEY, {})

    @property
    def stage(self) -> str:
        return self.notes.get("stage", schema.SEARCH)

    def state(self, epochs: int) -> str:
        return end_state(dict(self.result), epochs, error=self.errored)


@dataclass(frozen=True, kw_only=True)
class RegimeSearch:
    """How a regime's search went: end states and the epochs its trials trained."""

    end_states: dict[str, int]
    trial_epochs: int

    @property
    def trials(self) -> int:
        return sum(self.end_states.values())


@dataclass(frozen=True, kw_only=True)
class Confirmed:
    """A regime's confirmed config: the search trial it came from and its fresh-seed runs."""

    regime: str
    source: TrialOutcome
    runs: list[SeedResult]

    @property
    def config(self) -> dict[str, Any]:
        return {key: value for key, value in self.source.config.items() if key != SWEEP_KEY}


@dataclass(frozen=True, kw_only=True)
class DatasetOutcome:
    """Everything the summary, MLflow and the exported config say about one dataset."""

    dataset: str
    parent_run_id: str
    verdict: Verdict
    searches: dict[str, RegimeSearch]
    confirmed: dict[str, Confirmed] = field(default_factory=dict)
    num_classes: int | None = None  # as the confirmation runs reported it

    @property
    def leading(self) -> Confirmed | None:
        return self.confirmed.get(self.verdict.leader) if self.verdict.leader else None

    @property
    def chance(self) -> float | None:
        return 1.0 / self.num_classes if self.num_classes else None

    @property
    def trust_floor(self) -> float | None:
        return trust_floor(self.chance) if self.chance is not None else None

    def headline(self) -> str:
        """One sentence for the verdict, saying why a leader near chance is not a winner."""
        if self.verdict.outcome != schema.NO_TRUSTWORTHY_WINNER:
            return self.verdict.headline()
        return near_chance_reason(self.verdict, self.num_classes)


def seed_result(outcome: TrialOutcome) -> SeedResult | None:
    """A confirmation run's accuracies, or None if it never measured test accuracy."""
    result = outcome.result
    if outcome.errored or schema.TEST_ACC not in result:
        return None
    packed = result.get("test_correct")
    return SeedResult(
        seed=int(outcome.config["seed"]),
        val_acc=float(result[schema.VAL_ACC]),
        test_acc=float(result[schema.TEST_ACC]),
        correct=unpack_correct(packed) if packed else None,
    )


def dataset_outcomes(
    outcomes: Iterable[TrialOutcome], *, datasets: Iterable[str], regimes: Iterable[str],
    parents: Mapping[str, str], epochs: int,
) -> list[DatasetOutcome]:
    """Each dataset's searches, confirmed configs and verdict."""
    outcomes = list(outcomes)
    by_id = {outcome.trial_id: outcome for outcome in outcomes}
    regimes = list(regimes)
    result = []
    for dataset in datasets:
        mine = [o for o in outcomes if o.config.get("dataset") == dataset]
        searches = {}
        for regime in regimes:
            search = [o for o in mine if o.stage == schema.SEARCH and o.config["regime"] == regime]
            searches[regime] = RegimeSearch(
                end_states=dict(Counter(o.state(epochs) for o in search)),
                trial_epochs=sum(int(o.result.get("epoch", 0)) for o in search),
            )
        confirmed: dict[str, Confirmed] = {}
        for regime in regimes:
            ranks: dict[int, list[SeedResult]] = defaultdict(list)
            sources: dict[int, str] = {}
            for o in mine:
                if o.stage == schema.CONFIRM and o.config["regime"] == regime:
                    sources[o.notes["rank"]] = o.notes["source_trial"]
                    run = seed_result(o)
                    if run is not None:
                        ranks[o.notes["rank"]].append(run)
            if ranks:
                rank = schema.top_k_choice({r: float(np.mean([run.val_acc for run in runs]))
                                            for r, runs in ranks.items()})
                confirmed[regime] = Confirmed(regime=regime, source=by_id[sources[rank]],
                                              runs=sorted(ranks[rank], key=lambda r: r.seed))
        verdict = decide(dataset, {regime: confirmed[regime].runs if regime in confirmed else []
                                   for regime in regimes})
        classes = {int(o.result["num_classes"]) for o in mine if o.result.get("num_classes")}
        num_classes = max(classes) if classes else None
        verdict = distrust(verdict, num_classes)  # a leader near chance is nobody's result
        result.append(DatasetOutcome(dataset=dataset, parent_run_id=parents[dataset], verdict=verdict,
                                     searches=searches, confirmed=confirmed, num_classes=num_classes))
    return result


def verdict_record(outcome: DatasetOutcome) -> dict[str, Any]:
    """`verdict.json`: the verdict with its evidence, this sweep's headline and the chance bar."""
    return {**outcome.verdict.to_dict(), "headline": outcome.headline(),
            "num_classes": outcome.num_classes, "chance_acc": outcome.chance,
            "trust_floor_acc": outcome.trust_floor}


# -- what the records say -------------------------------------------------------------
def config_metadata(outcome: DatasetOutcome, regime: str, *, code_version: str,
                    source_run_id: str | None) -> dict[str, Any]:
    """The metadata of a regime's replayable config: where it came from, what it scored.

    `recorded_*` are the search trial's own final accuracies, which a replay
    with the same seed reproduces exactly on the CPU; `confirmation` holds the
    fresh-seed evidence and the dataset's verdict.
    """
    confirmed = outcome.confirmed[regime]
    arm = outcome.verdict.arm(regime)
    verdict = outcome.verdict
    return {
        "dataset": outcome.dataset,
        "model": confirmed.config["model"],
        "regime": regime,
        "seed": confirmed.config["seed"],
        schema.CODE_VERSION: code_version,
        schema.SOURCE_RUN_ID: source_run_id,
        schema.RECORDED_VAL_ACC: float(confirmed.source.result[schema.VAL_ACC]),
        schema.RECORDED_TEST_ACC: float(confirmed.source.result[schema.TEST_ACC]),
        "confirmation": {
            "seeds": list(arm.seeds),
            "mean_test_acc": arm.test.mean / 100,
            "test_acc_95ci": [arm.test.low / 100, arm.test.high / 100],
        },
        "verdict": {
            "outcome": verdict.outcome,
            "winner": verdict.winner,
            "leader": verdict.leader,
            "tied": list(verdict.tied),
            "headline": outcome.headline(),
            "trustworthy": verdict.outcome != schema.NO_TRUSTWORTHY_WINNER,
        },
    }


def _number(value: float, form: str = ".2f") -> str:
    return "n/a" if value != value or abs(value) == float("inf") else f"{value:{form}}"


def _interval(low: float, high: float, form: str = ".2f") -> str:
    return f"[{_number(low, form)}, {_number(high, form)}]"


TITLES = {
    schema.WINNER: "{winner} wins",
    schema.TIE: "tie ({tied} within noise)",
    schema.NO_RESULT: "none (no regime completed a confirmation run)",
    schema.NO_TRUSTWORTHY_WINNER: "no trustworthy winner (the leader is near chance: do not use its "
                                  "config as a result)",
}
ROW_HEADERS = ("regime", "search trials (end states)", "confirmed test acc % [95% CI]",
               "leader ahead by, points [95% CI]", "Holm p")


def verdict_title(verdict: Verdict) -> str:
    """The verdict in a few words: 'lerac wins', 'tie (a, b within noise)'."""
    return TITLES[verdict.outcome].format(winner=verdict.winner, tied=", ".join(verdict.tied))


def verdict_rows(outcome: DatasetOutcome) -> list[tuple[str, str, str, str, str]]:
    """One row per regime (`ROW_HEADERS`), shared by the printed summary and MLflow's description."""
    verdict = outcome.verdict
    comparisons = {c.regime: c for c in verdict.comparisons}
    rows = []
    for regime, search in outcome.searches.items():
        states = ", ".join(f"{n} {state}" for state, n in sorted(search.end_states.items()))
        arm = next((a for a in verdict.arms if a.regime == regime), None)
        confirmed = f"{arm.test.mean:.2f} {_interval(arm.test.low, arm.test.high)}" if arm else "no result"
        comparison = comparisons.get(regime)
        lead, p = ("leader" if regime == verdict.leader else ""), ""
        if comparison is not None:
            lead = f"{comparison.gap.mean:+.2f} {_interval(comparison.gap.low, comparison.gap.high, '+.2f')}"
            p = f"{comparison.pvalue_holm:.3g}"
        rows.append((regime, f"{search.trials} ({states})", confirmed, lead, p))
    return rows


def description(outcome: DatasetOutcome, *, leading_link: str | None) -> str:
    """The parent run's Markdown description: the verdict first, then the evidence."""
    verdict = outcome.verdict
    lines = [f"**Verdict: {verdict_title(verdict)}**", "", outcome.headline(), "",
             "| " + " | ".join(ROW_HEADERS) + " |", "|---" * len(ROW_HEADERS) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in verdict_rows(outcome)]
    if outcome.leading is not None:
        link = f" ([run]({leading_link}))" if leading_link else ""
        lines += ["", f"Leading config: {outcome.leading.regime}, search trial "
                      f"{outcome.leading.source.trial_id}{link}; `{schema.BEST_CONFIG}` replays it."]
    return "\n".join(lines)
