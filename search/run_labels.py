"""How a sweep's runs read in MLflow's runs table: short distinct names, end states, the leader.

MLflow's table shows a run's name before anything else and cuts it at about
25 characters, so the names lead with what tells runs apart: the dataset and
sweep date for a parent, the regime and trial number (or seed) for a child.
How a trial ended is appended to its name when it did not complete (`lerac ·
trial 4 (stopped@3)`), and the search trial whose config leads its dataset
gets a star and the tags `leader` (and `winner` when the verdict names one).
The sweep id stays in the tags (`sweep_id`), where filters use it.
"""

from __future__ import annotations

import re
from typing import Any

from search import schema

STAR = "★ "
SEP = " · "
_SWEEP_ID = re.compile(r"^\d{4}(\d{4})-(\d{4})\d{2}-[0-9a-f]+$")  # YYYYMMDD-HHMMSS-hex
_VERDICT_LABELS = {schema.TIE: "tie", schema.NO_RESULT: "no result",
                   schema.NO_TRUSTWORTHY_WINNER: "no trustworthy winner"}  # and winner: `<regime> wins`


def short_sweep(sweep_id: str) -> str:
    """`20261123-235401-3fa2c1` -> `1123-2354` (month, day, hour, minute); other ids as given."""
    match = _SWEEP_ID.match(sweep_id)
    return f"{match.group(1)}-{match.group(2)}" if match else sweep_id


def parent_run_name(dataset: str, sweep_id: str, *, verdict: str | None = None,
                    winner: str | None = None) -> str:
    """`digits · 1123-2354`, and once decided `digits · 1123-2354 · tie` or `... · lerac wins`."""
    name = f"{dataset}{SEP}{short_sweep(sweep_id)}"
    if verdict is None:
        return name
    return name + SEP + (f"{winner} wins" if verdict == schema.WINNER else _VERDICT_LABELS.get(verdict, verdict))


def trial_run_name(*, regime: str, trial_id: str, notes: dict[str, Any], seed: Any) -> str:
    """`lerac · trial 4` for a search trial, `lerac · seed 3` for a confirmation run
    (`· config 2` when more than the best config of the regime is confirmed)."""
    if notes.get("stage") == schema.CONFIRM:
        rank = int(notes.get("rank", 1))
        return f"{regime}{SEP}seed {seed}" + (f"{SEP}config {rank}" if rank > 1 else "")
    number = notes.get("number")
    return f"{regime}{SEP}trial {number}" if number is not None else f"{regime}{SEP}{trial_id}"


def ended_run_name(name: str, state: str, epoch: int) -> str:
    """The name with how the trial ended when it did not complete: `(stopped@3)`,
    `(diverged@2)`, `(errored@5)`."""
    if state == schema.COMPLETED or "@" in name:
        return name
    word = {schema.STOPPED_EARLY: "stopped"}.get(state, state)
    return f"{name} ({word}@{epoch})"


def leader_run_name(name: str) -> str:
    return name if name.startswith(STAR) else STAR + name


def mark_leader(client: Any, run_id: str, *, winner: bool) -> None:
    """Star the search trial whose config leads its dataset; tag it leader (and winner)."""
    client.set_tag(run_id, schema.LEADER, "true")
    if winner:
        client.set_tag(run_id, schema.WINNER_RUN, "true")
    client.update_run(run_id, name=leader_run_name(client.get_run(run_id).info.run_name or ""))
