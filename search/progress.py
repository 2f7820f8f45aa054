"""What a person sees when a sweep ends: each dataset's verdict and where to look next
(the live display while it runs is `search.live`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from search import schema
from search.next_steps import next_steps
from search.verdicts import DatasetOutcome
from trainables.regimes import regime_class


def format_settings(config: dict[str, Any]) -> str:
    """The shared settings that matter most, then the regime's own."""
    keys = ["lr", "batch_size", "weight_decay"]
    if config.get("warmup_epochs"):
        keys.append("warmup_epochs")
    keys += [name for name in regime_class(config["regime"]).Settings.__dataclass_fields__ if name in config]
    return ", ".join(
        f"{key}={config[key]:.3g}" if isinstance(config[key], float) else f"{key}={config[key]}"
        for key in keys
    )


def _interval(low: float, high: float, signed: bool = False) -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return "[n/a]"
    form = "+.2f" if signed else ".2f"
    return f"[{low:{form}}, {high:{form}}]"


def dataset_block(outcome: DatasetOutcome) -> list[str]:
    verdict = outcome.verdict
    title = {schema.WINNER: f"WINNER {verdict.winner}",
             schema.TIE: f"TIE ({', '.join(verdict.tied)} within noise)",
             schema.NO_RESULT: "NO VERDICT (no regime completed a confirmation run)"}[verdict.outcome]
    lines = [f"{outcome.dataset}: {title}",
             f"  {'regime':<14}{'search trials':<38}{'confirmed test acc [95% CI]':<32}"
             f"{'leader ahead by [95% CI]':<28}Holm p"]
    comparisons = {c.regime: c for c in verdict.comparisons}
    for regime, search in outcome.searches.items():
        states = ", ".join(f"{n} {state}" for state, n in sorted(search.end_states.items()))
        arm = next((a for a in verdict.arms if a.regime == regime), None)
        confirmed = f"{arm.test.mean:6.2f}% {_interval(arm.test.low, arm.test.high)}" if arm else "no result"
        comparison = comparisons.get(regime)
        gap, p = ("leader", "") if regime == verdict.leader else ("", "")
        if comparison is not None:
            gap = f"{comparison.gap.mean:+.2f} {_interval(comparison.gap.low, comparison.gap.high, True)}"
            p = f"{comparison.pvalue_holm:.3g}"
        lines.append(f"  {regime:<14}{f'{search.trials}: {states}':<38}{confirmed:<32}{gap:<28}{p}")
    if outcome.leading is not None:
        lines.append(f"  leading config ({outcome.leading.regime}): {format_settings(outcome.leading.config)}")
    lines.append(f"  MLflow parent run {outcome.parent_run_id}")
    return lines


def summary_table(outcomes: Sequence[DatasetOutcome], tracking_uri: str, experiment: str) -> str:
    """The final verdict per dataset, with the evidence and how to look further."""
    seeds = max((len(arm.seeds) for o in outcomes for arm in o.verdict.arms), default=0)
    lines = ["", f"Verdicts per dataset (each regime's best config retrained on {seeds} fresh seeds; "
                 "paired t-test against the leader, Holm-corrected, alpha 0.05):", ""]
    for outcome in outcomes:
        lines += dataset_block(outcome) + [""]
    lines += next_steps(tracking_uri, experiment, {o.dataset: o.parent_run_id for o in outcomes})
    return "\n".join(lines)
