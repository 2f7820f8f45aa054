"""Opening the sweep's MLflow store: a new sqlite store copied from the machine's template of an
empty store, or (the first time) built on a thread while Ray starts.

Racing sweeps on one store are in tests/test_faults.py (two processes, one store) and
tests/test_sweep_faults.py (two whole sweeps in one empty folder).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from search.next_steps import absolute_uri
from search.store_uri import sqlite_path
from search.tracking_store import CACHE_DIR_ENV, PreparedStore, open_experiment, store_template

ROOT = Path(__file__).resolve().parent.parent


def test_a_tracking_uri_names_a_sqlite_file_relative_or_absolute_or_a_server(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert sqlite_path("sqlite:///mlflow.db") == Path("mlflow.db")
    assert sqlite_path("sqlite:////data/runs/mlflow.db") == Path("/data/runs/mlflow.db")
    assert sqlite_path("http://127.0.0.1:5000") is None and sqlite_path("https://mlflow.example") is None
    assert absolute_uri("sqlite:///mlflow.db") == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert absolute_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def schema_of(path: Path) -> tuple[list[str], list[tuple]]:
    """The store's tables and its alembic revision: what MLflow checks when it opens a store."""
    with sqlite3.connect(path) as db:
        tables = sorted(row[0] for row in db.execute("select name from sqlite_master where type = 'table'"))
        return tables, db.execute("select * from alembic_version").fetchall()


@pytest.fixture()
def no_template(tmp_path, monkeypatch):
    """An empty cache folder: the next new store is built, and becomes the template."""
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))
    assert not store_template().exists()
    return store_template()


def test_the_first_store_is_built_on_a_thread_and_kept_as_the_template_of_the_next(tmp_path, no_template):
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    (tmp_path / "theirs").mkdir()
    MlflowClient(f"sqlite:///{tmp_path / 'theirs' / 'mlflow.db'}").search_experiments()
    built = PreparedStore.start(f"sqlite:///{tmp_path / 'first' / 'mlflow.db'}")
    assert built is not None and built.folder is not None  # no template yet: built here
    open_experiment(f"sqlite:///{tmp_path / 'first' / 'mlflow.db'}", "sweep", built)
    built.discard()
    assert not built.folder.exists() and no_template.is_file()

    copied = PreparedStore.start(f"sqlite:///{tmp_path / 'second' / 'mlflow.db'}")
    assert copied is not None and copied.folder is None  # nothing built: the template is copied
    client, experiment_id = open_experiment(f"sqlite:///{tmp_path / 'second' / 'mlflow.db'}", "sweep", copied)
    copied.discard()
    for store in ("first", "second"):
        assert schema_of(tmp_path / store / "mlflow.db") == schema_of(tmp_path / "theirs" / "mlflow.db")
        assert sorted(path.name for path in (tmp_path / store).iterdir()) == ["mlflow.db"]
    run = client.create_run(experiment_id)
    client.log_metric(run.info.run_id, "val_acc", 0.5, step=1)
    assert client.get_metric_history(run.info.run_id, "val_acc")[0].value == 0.5
    assert schema_of(no_template)[1] == schema_of(tmp_path / "theirs" / "mlflow.db")[1]
    assert {e.name for e in MlflowClient(f"sqlite:///{no_template}").search_experiments()} == {"Default"}


def not_a_database(template: Path) -> None:
    template.write_bytes(b"not a database" * 100)


def another_mlflows_store(template: Path) -> None:
    other = template.with_name("other.db")  # opened here under its own name: MLflow keeps its engine
    MlflowClient(f"sqlite:///{other}").search_experiments()
    with sqlite3.connect(other) as db:
        db.execute("update alembic_version set version_num = 'from-another-mlflow'")
    other.rename(template)


@pytest.mark.parametrize("damage", [not_a_database, another_mlflows_store])
def test_a_damaged_template_is_dropped_and_mlflow_builds_the_store(tmp_path, no_template, damage):
    no_template.parent.mkdir(parents=True)
    damage(no_template)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    prepared = PreparedStore.start(uri)
    assert prepared is not None and prepared.folder is None
    client, experiment_id = open_experiment(uri, "sweep", prepared)
    prepared.discard()
    assert client.get_experiment(experiment_id).name == "sweep"
    assert schema_of(tmp_path / "mlflow.db")[1] != [("from-another-mlflow",)]
    assert not no_template.exists()  # the next new store builds a good one
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cache", "mlflow.db"]
    fresh = PreparedStore.start(f"sqlite:///{tmp_path / 'next.db'}")
    assert fresh is not None and fresh.folder is not None  # no template: built again
    fresh.discard()


def test_a_cache_folder_that_cannot_be_made_leaves_the_store_built_as_without_one(tmp_path, monkeypatch):
    (tmp_path / "a file").write_text("")
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "a file" / "cache"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    prepared = PreparedStore.start(uri)
    assert prepared is not None and prepared.folder is not None
    client, experiment_id = open_experiment(uri, "sweep", prepared)
    prepared.discard()
    assert client.get_experiment(experiment_id).name == "sweep"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a file", "mlflow.db"]


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


@pytest.mark.parametrize("template", [True, False], ids=["from the template", "built"])
def test_a_discarded_store_leaves_nothing_behind(tmp_path, no_template, template):
    if template:
        first = PreparedStore.start(f"sqlite:///{tmp_path / 'first.db'}")
        open_experiment(f"sqlite:///{tmp_path / 'first.db'}", "x", first)  # leaves the template
        first.discard()
        assert no_template.is_file()
    (tmp_path / "sweep").mkdir()
    prepared = PreparedStore.start(f"sqlite:///{tmp_path / 'sweep' / 'mlflow.db'}")
    assert prepared is not None and (prepared.folder is None) == template
    prepared.discard()  # a sweep refused before it opened its store
    assert list((tmp_path / "sweep").iterdir()) == []
    assert prepared.folder is None or not prepared.folder.exists()


def test_the_store_thread_and_rays_start_up_import_no_module_in_common(tmp_path):
    """The thread imports while the main thread starts Ray: a module both import at once
    could deadlock on Python's import locks. Each side runs in a fresh process after the
    imports the sweep's driver has done by then; the control shows the check sees overlap."""
    script = """
import json, sys
import search.lerac_sweep, search.monitor, search.recording
import ray
from search.local_runtime import import_ray_start_modules
import_ray_start_modules()  # what the sweep imports before it starts the store's thread
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
