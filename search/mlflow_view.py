"""Links into MLflow's UI that open a sweep the way a reviewer reads it.

MLflow's runs table shows only run names and dates by default, and its URL
carries only the search facets (filter, sort); the columns come from the
browser's local storage or from a shared view: an experiment tag
`mlflow.sharedViewState.<key>` holding the view's JSON, opened by a link with
`?viewStateShareKey=<key>` (what the UI's own "Share" button writes; MLflow
3.17 reads plain JSON there, as older versions do). Each sweep publishes one
such view: its runs only, newest first, with the verdict, stage, end state,
accuracies and the main settings as columns, grouped by dataset (grouping
lists every run flat under its dataset; without it MLflow folds each trial
under its parent run). The links also ask for the UI's "Model training" mode
(`workflowType=machine_learning`): MLflow 3.17 opens an experiment in its
GenAI overview otherwise, where runs are not shown.
"""

from __future__ import annotations

import json
from typing import Any

from search import schema

UI_HOST = "127.0.0.1"
UI_PORT = 5000
MODE = "workflowType=machine_learning"
RUN_NAME_WIDTH = 320  # pixels: room for "★ conventional · trial 10 (stopped@4)"


def column(kind: str, name: str) -> str:
    """A runs-table column as MLflow's UI names it: kind.`name` (kind: attributes, params, metrics, tags)."""
    return f"{kind}.`{name}`"


VIEW_COLUMNS = (
    column("tags", schema.VERDICT),
    column("tags", schema.STAGE),
    column("tags", schema.END_STATE),
    column("metrics", schema.VAL_ACC),
    column("metrics", schema.TEST_ACC),
    column("metrics", schema.percent_key(schema.BEST_VAL_ACC)),
    column("metrics", schema.percent_key(schema.BEST_TEST_ACC)),
    column("tags", schema.SEED),
    column("params", "lr"),
    column("params", "batch_size"),
    column("params", "weight_decay"),
    column("params", "warmup_epochs"),
    column("params", "curriculum_epochs"),
    column("params", "decay_base"),
    column("params", "shape"),
    column("attributes", "Duration"),
)


def view_key(sweep_id: str) -> str:
    return f"lerac-{sweep_id}"


def view_state(sweep_id: str) -> dict[str, Any]:
    """The sweep's runs (parents and their trials) by dataset, newest first, with the columns
    above. (The UI applies column widths only to columns named in `columnOrder`.)"""
    run_name = column("attributes", "Run Name")
    return {
        "searchFilter": f"tags.{schema.SWEEP_ID} = '{sweep_id}'",
        "orderByKey": "attributes.start_time",
        "orderByAsc": False,
        "selectedColumns": list(VIEW_COLUMNS),
        "columnOrder": [run_name, column("attributes", "Created"), *VIEW_COLUMNS],
        "columnWidths": {run_name: RUN_NAME_WIDTH},
        "groupBy": {"aggregateFunction": "average",
                    "groupByKeys": [{"mode": "tag", "groupByData": schema.DATASET}]},
    }


def publish_view(client: Any, experiment_id: str, sweep_id: str) -> None:
    """Store the sweep's view on its experiment, where `sweep_link` finds it."""
    client.set_experiment_tag(experiment_id, schema.SHARED_VIEW_PREFIX + view_key(sweep_id),
                              json.dumps(view_state(sweep_id)))


def ui_base(tracking_uri: str) -> str:
    """Where the UI is: the tracking server itself, or `mlflow ui` on this machine."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return f"http://{UI_HOST}:{UI_PORT}"


def sweep_link(base: str, experiment_id: str, sweep_id: str) -> str:
    return f"{base}/#/experiments/{experiment_id}/runs?{MODE}&viewStateShareKey={view_key(sweep_id)}"


def run_link(base: str, experiment_id: str, run_id: str) -> str:
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}?{MODE}"
