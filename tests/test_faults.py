"""Faults and hostile input, part by part (no Ray runtime): the tracking writer's patience,
the seal over Tune's saved state (with a planted pickle), resume's options, free-space and
store checks before the start, verdicts near chance, and a searcher that outlived its state.

The same faults against whole sweeps are in tests/test_sweep_faults.py.
"""

from __future__ import annotations

import errno
import logging
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from analysis.verdict import trust_floor
from search import schema
from search.balanced_search import SWEEP_KEY, BalancedSearch, Confirmation, Group, SamplerSettings
from search.integrity import (
    DICT_CHECKPOINT,
    KEY_FILE_ENV,
    SEAL_FILE,
    Seal,
    StateRefused,
    key_path,
    load_key,
)
from search.lerac_sweep import build_parser, main, resume_options
from search.monitor import STATE_SYNC_FAILED, QuietFaults
from search.options import SweepOptions
from search.progress import dataset_block
from search.recording import SweepRecorder
from search.spaces import Budget, SearchSpace
from search.state import load_state, save_state
from search.verdicts import TrialOutcome, config_metadata, dataset_outcomes
from search.writer import BackgroundWriter, StoreFailed
from trainables.config_file import read_config_file

ROOT = os.geteuid() == 0


@pytest.fixture(autouse=True)
def state_key(tmp_path_factory, monkeypatch):
    """Every test seals with a key of its own, never the user's."""
    monkeypatch.setenv(KEY_FILE_ENV, str(tmp_path_factory.mktemp("key") / "state.key"))


# -- the tracking writer -----------------------------------------------------------------
class Flaky:
    """A store write that fails `failures` times (a server that is down), then works."""

    def __init__(self, failures: int, error: Exception | None = None):
        self.failures = failures
        self.error = error or MlflowException("API request failed: Connection refused")
        self.calls = 0

    def __call__(self, value: str) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return value


def test_writer_waits_out_an_outage_in_order_and_says_so_twice():
    warnings: list[str] = []
    writer = BackgroundWriter(store="http://x", patience_s=30, warn=warnings.append)
    flaky, order = Flaky(3), []
    writer.submit(flaky, "first")
    writer.submit(order.append, "second")  # queued behind the outage, written after it
    assert writer.call(order.append, "third") is None
    assert order == ["second", "third"] and flaky.calls == 4 and writer.failure is None
    assert len(warnings) == 2
    assert warnings[0].startswith("MLflow tracking store http://x is failing (API request failed")
    assert "stops if it still fails after 30 s" in warnings[0]
    assert warnings[1].startswith("MLflow tracking store http://x is back after")
    writer.close()


def test_writer_gives_up_after_its_patience_and_drops_later_writes():
    warnings: list[str] = []
    writer = BackgroundWriter(store="http://x", patience_s=1.0, warn=warnings.append)
    started = time.monotonic()
    with pytest.raises(StoreFailed, match=r"failed for \d+ s: API request failed"):
        writer.call(Flaky(10**6), "never")
    assert 1.0 <= time.monotonic() - started < 10
    with pytest.raises(StoreFailed):
        writer.flush()
    assert writer.submit(print, "dropped").exception() is not None
    assert len(warnings) == 1
    writer.close()


def test_writer_does_not_wait_on_a_write_the_store_refuses():
    writer = BackgroundWriter(store="http://x", patience_s=60, warn=print)
    refused = MlflowException("bad value", error_code=INVALID_PARAMETER_VALUE)
    started = time.monotonic()
    with pytest.raises(StoreFailed, match="refused a write: bad value"):
        writer.call(Flaky(1, refused), "x")
    assert time.monotonic() - started < 5
    writer.close()


# -- the seal over Tune's saved state ------------------------------------------------------
class Planted:
    """A pickle that, when loaded, writes a marker file: what an attacker would plant."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def tune_state(folder: Path) -> Path:
    """A sweep folder as Tune leaves it: pickles and JSON at its top, a trial with a checkpoint."""
    folder.mkdir(parents=True)
    (folder / "tuner.pkl").write_bytes(pickle.dumps({"tuner": 1}))
    (folder / "experiment_state-2026.json").write_text('{"trial_data": []}')
    (folder / "searcher-state-2026.pkl").write_bytes(pickle.dumps({"searcher": 1}))
    (folder / "search_gen_state-2026.json").write_bytes(pickle.dumps({"gen": 1}))
    (folder / "sweep_state.json").write_text("{}")
    (folder / "optuna-journal.log").write_text("")
    (folder / "trial_1" / "checkpoint_000000").mkdir(parents=True)
    return folder


def sealed(tmp_path) -> tuple[Path, bytes]:
    folder = tune_state(tmp_path / "ray" / "sweep-1")
    key = load_key(tmp_path / "ray")
    Seal(sweep_dir=folder, sweep_id="sweep-1", key=key).add(folder)
    return folder, key


def test_a_sealed_state_verifies_and_the_key_stays_private(tmp_path):
    folder, key = sealed(tmp_path)
    seal = Seal.verify(sweep_dir=folder, sweep_id="sweep-1", key=key)
    assert set(seal.files) == {"tuner.pkl", "experiment_state-2026.json", "searcher-state-2026.pkl",
                               "search_gen_state-2026.json"}
    assert (key_path().stat().st_mode & 0o777) == 0o600 and len(key) == 32
    assert load_key(tmp_path / "ray") == key  # created once, then reused
    with pytest.raises(TypeError):
        pickle.dumps(seal)  # it holds the key: never into Tune's pickles


def test_a_planted_pickle_is_refused_before_anything_unpickles_it(tmp_path):
    folder, key = sealed(tmp_path)
    marker = tmp_path / "marker"
    planted = pickle.dumps(Planted(marker))
    (folder / "searcher-state-2026.pkl").write_bytes(planted)
    with pytest.raises(StateRefused, match="searcher-state-2026.pkl differs from what the sweep wrote"):
        Seal.verify(sweep_dir=folder, sweep_id="sweep-1", key=key)
    assert not marker.exists()
    pickle.loads(planted)  # the planted file is live: loading it runs code
    assert marker.read_text() == "code ran"


@pytest.mark.parametrize("attack", ["new pickle", "cut short", "dict checkpoint", "forged seal", "other key"])
def test_anything_tune_would_unpickle_must_be_what_the_sweep_sealed(tmp_path, attack):
    folder, key = sealed(tmp_path)
    if attack == "new pickle":
        (folder / "callback-states-2026.pkl").write_bytes(pickle.dumps({}))
        message = "callback-states-2026.pkl is not in its seal"
    elif attack == "cut short":  # what a full disk leaves behind
        state = folder / "experiment_state-2026.json"
        state.write_bytes(state.read_bytes()[:5])
        message = "differs from what the sweep wrote"
    elif attack == "dict checkpoint":
        (folder / "trial_1" / "checkpoint_000000" / DICT_CHECKPOINT).write_bytes(pickle.dumps({}))
        message = "a pickle this sweep never writes"
    elif attack == "forged seal":
        seal = folder / SEAL_FILE
        seal.write_text(seal.read_text().replace('"tuner.pkl": [\n   "', '"tuner.pkl": [\n   "0'))
        message = "does not verify with the key"
    else:
        key = os.urandom(32)
        message = "does not verify with the key"
    with pytest.raises(StateRefused, match=message):
        Seal.verify(sweep_dir=folder, sweep_id="sweep-1", key=key)


def test_a_copy_cut_off_midway_still_verifies_against_the_new_seal(tmp_path):
    """Tune copies its files after the seal is written: a mix of old and new versions passes."""
    folder, key = sealed(tmp_path)
    staging = tmp_path / "staging"
    shutil.copytree(folder, staging)
    (staging / "experiment_state-2026.json").write_text('{"trial_data": [1]}')
    (staging / "searcher-state-2026.pkl").write_bytes(pickle.dumps({"searcher": 2}))
    seal = Seal.verify(sweep_dir=folder, sweep_id="sweep-1", key=key)
    seal.add(staging)  # the monitor seals the staging files, into the storage path
    shutil.copy(staging / "searcher-state-2026.pkl", folder)  # the copy stops after one file
    Seal.verify(sweep_dir=folder, sweep_id="sweep-1", key=key)


def test_a_state_key_inside_the_storage_path_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_FILE_ENV, str(tmp_path / "ray" / "state.key"))
    with pytest.raises(StateRefused, match="inside the storage path"):
        load_key(tmp_path / "ray")


# -- resume's options ---------------------------------------------------------------------
def stored_sweep(tmp_path, sweep_id="20260101-000000-aaaaaa", **overrides) -> Path:
    storage = tmp_path / "ray"
    options = SweepOptions(datasets=("digits",), num_trials=2, epochs=2, grace_period=1, confirm_seeds=2,
                           storage_path=str(storage), tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                           **overrides)
    save_state(storage, sweep_id, options)
    return storage


def test_resume_refuses_flags_it_would_not_apply_and_accepts_the_same_command(tmp_path):
    storage = stored_sweep(tmp_path, address="auto")
    parser = build_parser()
    same = ["--datasets", "digits", "--trials", "2", "--epochs", "2", "--storage-path", str(storage), "--resume"]
    passed, stored = resume_options(parser.parse_args(same), same)
    assert stored.num_trials == 2 and stored.address == "auto"  # not the CLI's default
    assert passed.model_fields_set == {"storage_path"}
    changed = [*same, "--trials", "5", "--regimes", "lerac"]
    with pytest.raises(Exception, match=r"--regimes, --trials would not be applied: drop them"):
        resume_options(parser.parse_args(changed), changed)
    runtime = [*same, "--min-free-mb", "1", "--address", "local"]
    passed, stored = resume_options(parser.parse_args(runtime), runtime)
    assert passed.min_free_mb == 1 and passed.address == "local"


def test_resume_names_any_sweep_under_the_storage_path(tmp_path, capsys):
    storage = stored_sweep(tmp_path, "20260101-000000-aaaaaa", seed=1)
    stored_sweep(tmp_path, "20260102-000000-bbbbbb", seed=2)
    assert load_state(storage)[0] == "20260102-000000-bbbbbb"  # the latest by default
    sweep_id, options = load_state(storage, "20260101-000000-aaaaaa")
    assert (sweep_id, options.seed) == ("20260101-000000-aaaaaa", 1)
    for args, message in [
        (["--resume", "--sweep-id", "nope"], "no sweep 'nope' to resume under"),
        (["--resume", "--sweep-id", "../ray"], "no sweep '../ray' to resume"),
        (["--sweep-id", "20260101-000000-aaaaaa"], "--sweep-id names a sweep to resume"),
        (["--restart"], "--restart starts an interrupted sweep again"),
    ]:
        assert main([*args, "--storage-path", str(storage)]) == 2
        error = capsys.readouterr().err
        assert error.startswith("error: ") and message in error and error.count("\n") == 1
    assert "20260101-000000-aaaaaa, 20260102-000000-bbbbbb" in load_state_error(storage)


def load_state_error(storage: Path) -> str:
    try:
        load_state(storage, "missing")
    except Exception as error:
        return str(error)
    return ""


# -- before the start: disks and the tracking store ----------------------------------------
@pytest.fixture()
def tiny_disk(tmp_path):
    """A 1 MiB tmpfs (unmounted afterwards), for a disk that fills or refuses writes."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], check=True)
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=True)


@pytest.mark.skipif(not ROOT, reason="mounting a tmpfs needs root")
def test_a_full_disk_or_unwritable_store_fails_before_the_start(tmp_path, tiny_disk, capsys):
    (tiny_disk / "filler").write_bytes(b"\0" * 900_000)
    args = ["--datasets", "digits", "--storage-path", str(tiny_disk / "ray"), "--data-dir", str(tmp_path / "data"),
            "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--min-free-mb", "1"]
    assert main(args) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: the storage path {tiny_disk / 'ray'} is full: 0.1 MiB free")
    assert error.count("\n") == 1 and sorted(p.name for p in tiny_disk.iterdir()) == ["filler"]

    subprocess.run(["mount", "-o", "remount,ro", str(tiny_disk)], check=True)
    started = time.monotonic()
    args = ["--datasets", "digits", "--storage-path", str(tmp_path / "ray"), "--data-dir", str(tmp_path / "data"),
            "--tracking-uri", f"sqlite:///{tiny_disk / 'mlflow.db'}"]
    assert main(args) == 2
    error = capsys.readouterr().err
    assert error == (f"error: MLflow tracking URI sqlite:///{tiny_disk / 'mlflow.db'}: cannot write in "
                     f"{tiny_disk} (Read-only file system)\n")
    assert time.monotonic() - started < 30 and not (tmp_path / "ray").exists()


# -- verdicts near chance --------------------------------------------------------------------
def confirmations(regime: str, accuracies: list[float], *, source: str) -> list[TrialOutcome]:
    config = {"dataset": "digits", "regime": regime, "model": "small_cnn", "seed": 0, "lr": 0.1,
              "batch_size": 64, "weight_decay": 1e-4}
    runs = [TrialOutcome(trial_id=source, config={**config, SWEEP_KEY: {"stage": schema.SEARCH}},
                         result={"epoch": 2, "val_acc": accuracies[0], "test_acc": accuracies[0],
                                 "train_loss": 2.3, "num_classes": 10})]
    for seed, accuracy in enumerate(accuracies, start=1):
        notes = {"stage": schema.CONFIRM, "rank": 1, "source_trial": source}
        runs.append(TrialOutcome(trial_id=f"{source}-{seed}", config={**config, "seed": seed, SWEEP_KEY: notes},
                                 result={"epoch": 2, "val_acc": accuracy, "test_acc": accuracy,
                                         "train_loss": 2.3, "num_classes": 10}))
    return runs


def outcome_of(trials: list[TrialOutcome]):
    (outcome,) = dataset_outcomes(trials, datasets=["digits"], regimes=["conventional", "lerac"],
                                  parents={"digits": "parent"}, epochs=2)
    return outcome


def test_a_leader_near_chance_is_no_trustworthy_winner_whatever_the_tests_say():
    assert trust_floor(0.1) == pytest.approx(0.19) and trust_floor(0.01) == pytest.approx(0.109)
    # lerac beats a diverged-looking conventional at every seed, but at 12%: near chance (10%)
    outcome = outcome_of(confirmations("lerac", [0.12, 0.125, 0.118, 0.121], source="a")
                         + confirmations("conventional", [0.02, 0.021, 0.019, 0.02], source="b"))
    assert outcome.verdict.outcome == schema.NO_TRUSTWORTHY_WINNER and outcome.verdict.winner is None
    assert outcome.verdict.leader == "lerac" and outcome.chance == pytest.approx(0.1)
    assert "no trustworthy winner: the leader lerac reaches only 12.10%" in outcome.headline()
    summary = "\n".join(dataset_block(outcome))
    assert "digits: verdict: no trustworthy winner" in summary and "chance is 10.00% with 10 classes" in summary
    metadata = config_metadata(outcome, "lerac", code_version="x", source_run_id="r")
    assert metadata["verdict"]["outcome"] == schema.NO_TRUSTWORTHY_WINNER
    assert metadata["verdict"]["trustworthy"] is False
    good = outcome_of(confirmations("lerac", [0.95, 0.96, 0.955, 0.951], source="a")
                      + confirmations("conventional", [0.90, 0.91, 0.905, 0.9], source="b"))
    assert good.verdict.outcome == schema.WINNER and good.verdict.winner == "lerac"


def test_no_trustworthy_winner_is_on_the_parent_run_and_in_best_config(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    recorder = SweepRecorder(tracking_uri=uri, experiment="trust", sweep_id="s1", warn=print)
    parent = recorder.parent_run(dataset="digits", model="small_cnn", regimes=("conventional", "lerac"),
                                 code_version="x", protocol={})
    trials = confirmations("lerac", [0.12, 0.125, 0.118], source="a") \
        + confirmations("conventional", [0.02, 0.021, 0.019], source="b")
    (outcome,) = dataset_outcomes(trials, datasets=["digits"], regimes=["conventional", "lerac"],
                                  parents={"digits": parent}, epochs=2)
    recorder.record_verdict(outcome, code_version="x")
    run = MlflowClient(uri).get_run(parent)
    assert run.data.tags[schema.VERDICT] == schema.NO_TRUSTWORTHY_WINNER
    assert run.data.tags[schema.WINNER_REGIME] == schema.NONE
    assert run.data.tags[schema.VERDICT_REASON].startswith("no trustworthy winner: the leader lerac")
    assert run.data.metrics[schema.CHANCE_ACC] == pytest.approx(0.1)
    assert run.data.metrics[schema.TRUST_FLOOR_ACC] == pytest.approx(0.19)
    assert "**Verdict: no trustworthy winner (the leader is near chance" in run.data.tags[schema.RUN_NOTE]
    best = MlflowClient(uri).download_artifacts(parent, schema.BEST_CONFIG, str(tmp_path))
    assert read_config_file(best).metadata["verdict"]["outcome"] == schema.NO_TRUSTWORTHY_WINNER
    recorder.writer.close()


# -- a searcher whose saved state is older than its Optuna journal ---------------------------
def make_searcher(tmp_path) -> BalancedSearch:
    space = SearchSpace(regime="conventional", budget=Budget(epochs=4, grace_period=2),
                        fixed={"dataset": "digits", "regime": "conventional"})
    return BalancedSearch(groups=[Group(dataset="digits", regime="conventional", space=space)],
                          trials_per_group=3, epochs=4, sampler=SamplerSettings(kind="random"),
                          confirmation=Confirmation(seeds=(1, 2)), study_prefix="sweep-1",
                          journal=tmp_path / "journal.log")


def finish(searcher: BalancedSearch, trial_id: str, *, val: float) -> None:
    """Report all four epochs and end the trial as Tune would."""
    result = {}
    for epoch in range(1, 5):
        result = {"epoch": epoch, "val_acc": val * epoch / 4, "train_loss": 1.0 / epoch, "diverged": False}
        searcher.on_trial_result(trial_id, result)
    searcher.on_trial_complete(trial_id, result)


def test_trials_the_saved_searcher_never_knew_are_failed_and_never_confirmed(tmp_path):
    searcher = make_searcher(tmp_path)
    searcher.suggest("t-first")
    finish(searcher, "t-first", val=0.5)
    searcher.save(str(tmp_path / "state.pkl"))  # Tune's last save before the driver died
    searcher.suggest("t-lost-running")  # asked after that save: in the journal only
    searcher.suggest("t-lost-done")
    finish(searcher, "t-lost-done", val=0.99)

    restored = make_searcher(tmp_path)
    restored.restore(str(tmp_path / "state.pkl"))
    study = restored.studies["digits/conventional"]
    states = {t.user_attrs["tune_trial_id"]: (t.state, t.user_attrs.get(schema.END_STATE))
              for t in study.get_trials()}
    assert states["t-lost-running"] == (TrialState.FAIL, schema.LOST)
    assert states["t-lost-done"][0] == TrialState.COMPLETE  # finished: Optuna keeps it, TPE learns
    assert [t.user_attrs["tune_trial_id"] for t in restored.best_configs("digits/conventional")] == ["t-first"]
    second = restored.suggest("t-second")  # the lost trials do not count against the budget
    assert second[SWEEP_KEY]["stage"] == schema.SEARCH


@pytest.mark.skipif(sys.platform != "linux", reason="the sqlite store lock uses flock")
def test_two_processes_create_one_store_and_one_experiment(tmp_path):
    """MLflow's sqlite schema creation races between processes; the folder lock serialises it."""
    code = ("import sys; from search.tracking_store import open_experiment; "
            "print(open_experiment(sys.argv[1], 'race')[1])")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    racers = [subprocess.Popen([sys.executable, "-c", code, uri], env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(2)]
    outputs = [racer.communicate(timeout=120) for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0], outputs
    assert len({out.strip().splitlines()[-1] for out, _ in outputs}) == 1


def _ray_record(message: str, level: int = logging.ERROR, error: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(error), error, None) if error is not None else None
    return logging.LogRecord("ray.tune", level, __file__, 1, message, None, exc_info)


def test_rays_tracebacks_are_dropped_only_for_faults_the_sweep_reports_itself():
    monitor = SimpleNamespace(stop_reason=None)
    quiet = QuietFaults(monitor)
    state_copy = f"{STATE_SYNC_FAILED} at '/storage/sweep' failed with exception: "
    race = FileNotFoundError(2, "Failed to open local file 'experiment_state.json'")
    assert quiet.filter(_ray_record(state_copy, error=race))  # a failed save while running: shown
    assert quiet.filter(_ray_record("Trial errored", error=RuntimeError("boom")))
    assert not quiet.filter(_ray_record("copy failed", error=OSError(errno.ENOSPC, "No space left on device")))
    monitor.stop_reason = "the storage path /storage is full"
    assert not quiet.filter(_ray_record(state_copy, error=race))  # the last copy racing the stop
    assert not quiet.filter(_ray_record("Stop signal received", level=logging.INFO))
    assert quiet.filter(_ray_record("Trial errored", error=RuntimeError("boom")))  # other errors still shown
