"""What a person watching a sweep sees: a compact live table and a final summary."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ray.tune import CLIReporter


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
        parameter_columns={"regime": "regime", "lr": "lr", "batch_size": "batch"},
        max_progress_rows=12,
        max_report_frequency=10,
        sort_by_metric=True,
    )


def _format_settings(config: dict[str, Any]) -> str:
    regime = config["regime"]
    keys = ["lr", "batch_size", "weight_decay"]
    keys += [name for name in config if name in _regime_keys(regime)]
    return ", ".join(
        f"{key}={config[key]:.3g}" if isinstance(config[key], float) else f"{key}={config[key]}"
        for key in keys
    )


def _regime_keys(regime: str) -> set[str]:
    from trainables.regimes import regime_class

    return set(regime_class(regime).Settings.__dataclass_fields__)


def summary_table(outcomes: Sequence[Any], tracking_uri: str, experiment: str) -> str:
    """The final per-dataset winners table, plus how to open MLflow."""
    lines = ["", "Winners per dataset (chosen on validation accuracy):"]
    header = f"  {'dataset':<14}{'regime':<14}{'val acc':>9}{'test acc':>10}  trials (end states)"
    lines += [header, "  " + "-" * (len(header) + 10)]
    for outcome in outcomes:
        states = ", ".join(f"{count} {state}" for state, count in sorted(outcome.end_states.items()))
        if outcome.winner is None:
            lines.append(f"  {outcome.dataset:<14}{'(no completed trial)':<33}  {states}")
            continue
        winner = outcome.winner
        lines.append(
            f"  {outcome.dataset:<14}{winner.config['regime']:<14}"
            f"{100 * winner.val_acc:>8.2f}%{100 * winner.test_acc:>9.2f}%  {states}"
        )
        lines.append(f"  {'':<14}settings: {_format_settings(winner.config)}")
        lines.append(f"  {'':<14}MLflow run {winner.run_id} (parent {outcome.parent_run_id})")
    lines += [
        "",
        f"Review in MLflow:  mlflow ui --backend-store-uri {tracking_uri}   (experiment '{experiment}')",
        f"Best configs:      python -m analysis export --tracking-uri {tracking_uri} --experiment {experiment}",
    ]
    return "\n".join(lines)


