"""Opening the sweep's MLflow store: a new sqlite store prepared on a thread while Ray starts.

Racing sweeps on one store are in tests/test_faults.py (two processes, one store) and
tests/test_sweep_faults.py (two whole sweeps in one empty folder).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

from search.tracking_store import PreparedStore, open_experiment

ROOT = Path(__file__).resolve().parent.parent


def schema_of(path: Path) -> tuple[list[str], list[tuple]]:
    """The store's tables and its alembic revision: what MLflow checks when it opens a store."""
    with sqlite3.connect(path) as db:
        tables = sorted(row[0] for row in db.execute("select name from sqlite_master where type = 'table'"))
        return tables, db.execute("select * from alembic_version").fetchall()


def test_a_prepared_store_opens_like_one_mlflow_created_itself(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "theirs").mkdir()
    prepared = PreparedStore.start(f"sqlite:///{tmp_path / 'mine' / 'mlflow.db'}")
    assert prepared is not None
    client, experiment_id = open_experiment(f"sqlite:///{tmp_path / 'mine' / 'mlflow.db'}", "sweep", prepared)
    prepared.discard()
    assert not prepared.folder.exists()
    MlflowClient(f"sqlite:///{tmp_path / 'theirs' / 'mlflow.db'}").search_experiments()
    assert schema_of(tmp_path / "mine" / "mlflow.db") == schema_of(tmp_path / "theirs" / "mlflow.db")
    run = client.create_run(experiment_id)
    client.log_metric(run.info.run_id, "val_acc", 0.5, step=1)
    assert client.get_metric_history(run.info.run_id, "val_acc")[0].value == 0.5
    assert sorted(path.name for path in (tmp_path / "mine").iterdir()) == ["mlflow.db"]


def test_a_prepared_store_never_replaces_one_that_appeared_meanwhile(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    prepared = PreparedStore.start(uri)
    assert prepared is not None
    MlflowClient(uri).create_experiment("another sweep got here first")
    client, _ = open_experiment(uri, "sweep", prepared)
    prepared.discard()
    names = {experiment.name for experiment in client.search_experiments()}
    assert {"another sweep got here first", "sweep"} <= names


def test_nothing_is_prepared_for_an_existing_store_or_a_server(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()
    assert PreparedStore.start(uri) is None
    assert PreparedStore.start("http://127.0.0.1:5000") is None


def test_a_discarded_store_leaves_nothing_behind(tmp_path):
    prepared = PreparedStore.start(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert prepared is not None
    prepared.discard()  # a sweep refused before it opened its store
    assert list(tmp_path.iterdir()) == [] and not prepared.folder.exists()


def test_the_store_thread_and_rays_start_up_import_no_module_in_common(tmp_path):
    """The thread imports while the main thread starts Ray: a module both import at once
    could deadlock on Python's import locks. Each side runs in a fresh process after the
    imports the sweep's driver has done by then; the control shows the check sees overlap."""
    script = """
import json, sys
import search.lerac_sweep, search.monitor, search.recording
import ray
before = set(sys.modules)
if sys.argv[1] == "store":
    from mlflow.tracking import MlflowClient
    MlflowClient(sys.argv[2]).search_experiments(max_results=1)
else:
    from search.checks import check_cluster_resources
    from search.options import SweepOptions
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        check_cluster_resources(SweepOptions())
    finally:
        ray.shutdown()
print(json.dumps(sorted(set(sys.modules) - before)))
"""

    def imported(*args: str) -> set[str]:
        done = subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, capture_output=True,
                              text=True, check=True, timeout=300)
        return set(json.loads(done.stdout.strip().splitlines()[-1]))

    by_store = imported("store", f"sqlite:///{tmp_path / 'mlflow.db'}")
    by_ray = imported("ray")
    assert by_store and by_ray
    assert by_store & by_ray == set()
    assert by_store & imported("store", f"sqlite:///{tmp_path / 'again.db'}") == by_store  # control
