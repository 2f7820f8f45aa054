"""`python -m analysis` only reads a store: it refuses files that are not (this) MLflow's
store without changing a byte of them, and every failure is one line."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

import analysis.leaderboard
from analysis.__main__ import main
from trainables.config import RunConfig


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A real MLflow sqlite store holding one small finished sweep (records only, no training)."""
    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    client = MlflowClient(f"sqlite:///{path}")
    experiment = client.create_experiment("lerac-sweep")
    parent = client.create_run(experiment, tags={"role": "parent", "dataset": "digits", "sweep_id": "s1"})
    for trial, val_acc in (("t0", 0.5), ("t1", 0.6)):
        run = client.create_run(experiment, tags={
            "role": "trial", "dataset": "digits", "sweep_id": "s1", "trial_id": trial, "regime": "conventional",
            "end_state": "completed", "mlflow.parentRunId": parent.info.run_id,
        })
        for key, value in RunConfig.from_dict({"epochs": 2}).to_params().items():
            client.log_param(run.info.run_id, key, value)
        for key, value in {"val_acc": val_acc, "test_acc": 0.5, "train_loss": 1.0}.items():
            client.log_metric(run.info.run_id, key, value, step=2)
        client.set_terminated(run.info.run_id)
    client.set_terminated(parent.info.run_id)
    return path


def refused(path: Path, capsys, tmp_path) -> str:
    """Run the leaderboard on `path`; assert exit 2, one line, no output folder; return the line."""
    before = digest(path)
    assert main(["leaderboard", "--tracking-uri", f"sqlite:///{path}", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert digest(path) == before, "the analysis wrote to a store it only reads"
    assert not (tmp_path / "out").exists()
    return err


def make_sqlite_with_a_table(path: Path) -> Path:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (text TEXT)")
        db.execute("INSERT INTO notes VALUES ('my data')")
    return path


def make_text_file(path: Path) -> Path:
    path.write_text("not a database\n")
    return path


def make_empty_file(path: Path) -> Path:
    path.touch()  # sqlite reads it as an empty database, in which MLflow would create its schema
    return path


@pytest.mark.parametrize(("name", "make"), [
    ("other.db", make_sqlite_with_a_table), ("notes.txt", make_text_file), ("empty.db", make_empty_file),
])
def test_a_file_that_is_not_an_mlflow_store_is_refused_untouched(tmp_path, capsys, name, make):
    path = make(tmp_path / name)
    assert refused(path, capsys, tmp_path) == f"error: {path} is not an MLflow tracking database\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no journal, no mlruns/ beside it


def test_a_store_of_another_mlflow_schema_is_refused_untouched(store, tmp_path, capsys):
    old = tmp_path / "old.db"
    old.write_bytes(store.read_bytes())
    with sqlite3.connect(old) as db:
        db.execute("UPDATE alembic_version SET version_num = '0a8600bd6a3b'")
    err = refused(old, capsys, tmp_path)
    assert "is an MLflow database of another version (schema 0a8600bd6a3b" in err and "mlflow db upgrade" in err


def test_a_current_store_is_read_without_a_byte_changing(store, tmp_path, capsys):
    before = digest(store)
    assert main(["leaderboard", "--tracking-uri", f"sqlite:///{store}", "--out", str(tmp_path)]) == 0
    assert "digits" in capsys.readouterr().out and (tmp_path / "leaderboard.csv").is_file()
    assert digest(store) == before


def test_an_output_folder_that_is_a_file_is_one_line(store, tmp_path, capsys):
    out = tmp_path / "taken"
    out.write_text("a file, not a folder")
    assert main(["leaderboard", "--tracking-uri", f"sqlite:///{store}", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and str(out) in err


def test_an_mlflow_failure_after_opening_the_store_is_one_line(store, monkeypatch, capsys):
    def fail(sweep):
        raise MlflowException("the server went away\nretries exhausted")

    monkeypatch.setattr(analysis.leaderboard, "leaderboard", fail)
    assert main(["leaderboard", "--tracking-uri", f"sqlite:///{store}"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: MLflow at sqlite:///{store}: the server went away retries exhausted\n"


def test_a_bad_flag_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["leaderboard", "--no-such-flag"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert err.startswith("error: unrecognized arguments: --no-such-flag")
