"""Commands the product prints, written so that they run when pasted into a plain shell.

A printed `python -m analysis ...` or `mlflow ui ...` fails in a shell where
the project's virtualenv is not activated ("No module named analysis",
"mlflow: command not found"), and a relative `sqlite:///mlflow.db` points
elsewhere after a `cd`. So every printed command names this installation's
console script by its absolute path unless the shell already finds that very
script, and every store and file by its absolute path.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

from search import schema
from search.mlflow_view import UI_PORT, run_link, sweep_link, ui_base
from search.store_uri import SQLITE_PREFIX, sqlite_path

# The module behind each console script (pyproject.toml's [project.scripts], and MLflow's).
SCRIPT_MODULES = {"lerac-sweep": "search.lerac_sweep", "lerac-train": "trainables.train",
                  "lerac-analysis": "analysis", "mlflow": "mlflow"}
PROJECT_ROOT = Path(__file__).resolve().parent.parent
LABEL_WIDTH = 22


def script(name: str) -> str:
    """How to call a console script of the running installation from any shell: its bare name
    when PATH finds this installation's copy, else the copy's absolute path (a virtualenv
    that is not activated), else `python -m` with the project on PYTHONPATH (a source tree)."""
    beside = Path(sys.executable).parent / name  # not resolved: a venv's python is a symlink
    found = shutil.which(name)
    if beside.is_file():
        if found and os.path.samefile(found, beside):
            return name
        return shlex.quote(str(beside))
    if found:
        return name
    return (f"PYTHONPATH={shlex.quote(str(PROJECT_ROOT))} {shlex.quote(sys.executable)} "
            f"-m {SCRIPT_MODULES[name]}")


def absolute_uri(tracking_uri: str) -> str:
    """`sqlite:///mlflow.db` -> `sqlite:////abs/path/mlflow.db`; servers as given."""
    database = sqlite_path(tracking_uri)
    return tracking_uri if database is None else SQLITE_PREFIX + str(database.resolve())


def analysis_command(command: str, *, tracking_uri: str, experiment: str, sweep_id: str) -> str:
    q = shlex.quote
    return (f"{script('lerac-analysis')} {command} --tracking-uri {q(absolute_uri(tracking_uri))} "
            f"--experiment {q(experiment)} --sweep-id {q(sweep_id)}")


def ui_command(tracking_uri: str) -> str | None:
    """`mlflow ui` for a local store (one worker: it serves one person, and each of the four
    default workers imports MLflow before the UI answers); None for a tracking server, whose UI
    is already up."""
    if sqlite_path(tracking_uri) is None:
        return None
    return (f"{script('mlflow')} ui --backend-store-uri {shlex.quote(absolute_uri(tracking_uri))} "
            f"--port {UI_PORT} --workers 1")


def replay_command(path: Path) -> str:
    return f"{script('lerac-train')} --config {shlex.quote(str(Path(path).resolve()))}"


def _line(label: str, text: str) -> str:
    return f"  {label + ':':<{LABEL_WIDTH}}{text}"


def next_steps(tracking_uri: str, experiment: str, parents: Mapping[str, str]) -> list[str]:
    """What to run and open after a sweep; `parents` maps each dataset to its parent run id."""
    from mlflow.tracking import MlflowClient

    first = MlflowClient(tracking_uri).get_run(next(iter(parents.values())))
    experiment_id, sweep_id = first.info.experiment_id, first.data.tags[schema.SWEEP_ID]
    base = ui_base(tracking_uri)
    common = {"tracking_uri": tracking_uri, "experiment": experiment, "sweep_id": sweep_id}
    lines = ["Next steps (each command runs as printed, from any folder):"]
    ui = ui_command(tracking_uri)
    if ui is not None:
        lines.append(_line("Browse in MLflow", ui))
    lines.append(_line("then open" if ui else "Browse in MLflow", sweep_link(base, experiment_id, sweep_id)))
    lines += [_line(f"{dataset} verdict", run_link(base, experiment_id, run_id))
              for dataset, run_id in parents.items()]
    lines += [
        _line("Leaderboard", analysis_command("leaderboard", **common)),
        _line("Replayable configs", analysis_command("export", **common)),
        _line("Report with plots", analysis_command("report", **common)),
        _line("All sweeps", f"{script('lerac-analysis')} sweeps --tracking-uri "
                            f"{shlex.quote(absolute_uri(tracking_uri))} --experiment {shlex.quote(experiment)}"),
    ]
    return lines
