"""What a person watching a sweep sees: a compact live table and a final summary."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ray.tune import CLIReporter

from search import schema
from search.verdicts import DatasetOutcome
from trainables.regimes import regime_class


def progress_reporter() -> CLIReporter:
    """Ray's live table with the key metrics and the shared settings, nothing else.

    Regime-specific settings are left out: they are conditional, absent from
    other regimes' configs, and Ray's best-trial line fails on a missing key.
    """
    return CLIReporter(
        metric_columns={
            "training_iteration": "epoch",
            "train_loss": "loss",
            "val_acc": "val acc",
            "train_seconds": "train s",
        },
        parameter_columns={"dataset": "dataset", "regime": "regime", "sweep/stage": "stage",
                           "lr": "lr", "batch_size": "batch"},
        max_progress_rows=12,
        max_report_frequency=10,
        sort_by_metric=True,
    )


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
             f"{'gap to leader [95% CI]':<28}Holm p"]
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
    lines += [
        # A server already serves its UI; `mlflow ui` only opens a store (it cannot open a server).
        f"Review in MLflow:  open {tracking_uri} in a browser   (experiment '{experiment}')"
        if tracking_uri.startswith(("http://", "https://")) else
        f"Review in MLflow:  mlflow ui --backend-store-uri {tracking_uri}   (experiment '{experiment}')",
        f"Best configs:      python -m analysis export --tracking-uri {tracking_uri} --experiment {experiment}",
    ]
    return "\n".join(lines)
