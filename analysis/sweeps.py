"""The sweeps of an experiment, newest first: when, on what, with which verdicts, in which state.

Read from the parent runs only (one per dataset and sweep), so listing a large
experiment costs one query, not one per trial.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass

from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from analysis.errors import AnalysisError
from analysis.records import open_client, search
from search import schema

# A parent run's MLflow status, as a reader of the list understands it. A parent stays
# RUNNING until its verdict is recorded, so a sweep stopped without a clean end looks so too.
STATES = {"RUNNING": "running or interrupted", "FINISHED": "finished", "FAILED": "no result",
          "KILLED": "interrupted", "SCHEDULED": "scheduled"}


@dataclass(frozen=True, kw_only=True)
class SweepRow:
    sweep_id: str
    started_ms: int
    datasets: tuple[str, ...]
    regimes: tuple[str, ...]
    verdicts: tuple[str, ...]  # per dataset, in the order of `datasets`
    state: str
    code_version: str

    @property
    def started(self) -> str:
        stamp = datetime.datetime.fromtimestamp(self.started_ms / 1000)
        return stamp.strftime("%Y-%m-%d %H:%M")


# Every outcome a sweep records (schema.VERDICTS), from its parent run's tags.
VERDICT_TEXTS: dict[str, Callable[[dict[str, str]], str]] = {
    schema.WINNER: lambda tags: f"{tags.get(schema.WINNER_REGIME)} wins",
    schema.TIE: lambda tags: f"tie ({tags.get(schema.TIED_REGIMES, '').replace(',', ', ')})",
    schema.NO_RESULT: lambda tags: "no result",
    schema.NO_TRUSTWORTHY_WINNER: lambda tags: (f"no trustworthy winner ({tags.get(schema.LEADING_REGIME)} "
                                                "leads near chance)"),
}


def verdict_text(tags: dict[str, str]) -> str:
    """`lerac wins`, `tie (conventional, lerac)`, `no result`, `no trustworthy winner (lerac leads
    near chance)`, or `pending` (not decided yet); an outcome this version does not know as it is."""
    verdict = tags.get(schema.VERDICT)
    if verdict is None:
        return "pending"
    return VERDICT_TEXTS[verdict](tags) if verdict in VERDICT_TEXTS else verdict


def _state(runs: list[Run]) -> str:
    """The sweep's state: the least finished of its parent runs' states."""
    order = ["RUNNING", "SCHEDULED", "KILLED", "FAILED", "FINISHED"]
    worst = min((run.info.status for run in runs), key=lambda s: order.index(s) if s in order else 0)
    return STATES.get(worst, worst.lower())


def list_sweeps(tracking_uri: str, experiment: str) -> list[SweepRow]:
    """Every sweep recorded in the experiment, newest first; AnalysisError on bad input."""
    client = open_client(tracking_uri)
    try:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise AnalysisError(f"no experiment named {experiment!r} at {tracking_uri}")
        parents = search(client, found.experiment_id, f"tags.{schema.ROLE} = '{schema.PARENT}'")
    except MlflowException as error:
        raise AnalysisError(f"cannot read MLflow at {tracking_uri}: {error.message}") from None
    by_sweep: dict[str, list[Run]] = {}
    for run in parents:
        by_sweep.setdefault(run.data.tags.get(schema.SWEEP_ID, "?"), []).append(run)
    rows = []
    for sweep_id, runs in by_sweep.items():
        runs.sort(key=lambda run: run.info.start_time)
        tags = [run.data.tags for run in runs]
        rows.append(SweepRow(
            sweep_id=sweep_id,
            started_ms=runs[0].info.start_time,
            datasets=tuple(t.get(schema.DATASET, "?") for t in tags),
            regimes=tuple(item for item in tags[0].get(schema.REGIMES, "").split(",") if item),
            verdicts=tuple(verdict_text(t) for t in tags),
            state=_state(runs),
            code_version=tags[0].get(schema.CODE_VERSION, "?"),
        ))
    return sorted(rows, key=lambda row: row.started_ms, reverse=True)


def format_sweeps(rows: list[SweepRow]) -> str:
    """One line per sweep, aligned; the verdicts as `dataset: verdict`."""
    table = [("sweep id", "started", "state", "regimes", "code", "verdicts")]
    table += [(row.sweep_id, row.started, row.state, ", ".join(row.regimes), row.code_version,
               "; ".join(f"{d}: {v}" for d, v in zip(row.datasets, row.verdicts, strict=True)))
              for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]) - 1)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False))
                     + "  " + line[-1] for line in table)
