"""What a person sees when a sweep ends: each dataset's verdict and where to look next
(the live display while it runs is `search.live`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from search import schema
from search.next_steps import next_steps
from search.verdicts import ROW_HEADERS, DatasetOutcome, verdict_rows, verdict_title
from trainables.regime_settings import settings_class


def format_settings(config: dict[str, Any]) -> str:
    """The shared settings that matter most, then the regime's own."""
    keys = ["lr", "batch_size", "weight_decay"]
    if config.get("warmup_epochs"):
        keys.append("warmup_epochs")
    keys += [name for name in settings_class(config["regime"]).__dataclass_fields__ if name in config]
    return ", ".join(
        f"{key}={config[key]:.3g}" if isinstance(config[key], float) else f"{key}={config[key]}"
        for key in keys
    )


WIDTHS = (14, 38, 32, 34)


def dataset_block(outcome: DatasetOutcome) -> list[str]:
    """One dataset's verdict and its evidence, as fixed-width text."""
    def line(cells: tuple[str, ...]) -> str:
        return "  " + "".join(f"{cell:<{width}}" for cell, width in zip(cells[:-1], WIDTHS, strict=True)) + cells[-1]

    lines = [f"{outcome.dataset}: verdict: {verdict_title(outcome.verdict)}"]
    if outcome.verdict.outcome == schema.NO_TRUSTWORTHY_WINNER:
        lines.append(f"  {outcome.headline()}")
    lines.append(line(ROW_HEADERS))
    lines += [line(row) for row in verdict_rows(outcome)]
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
