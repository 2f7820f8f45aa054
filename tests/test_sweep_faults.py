"""Whole sweeps against real faults: SIGTERM and `kill -9` of the driver, a storage path on a
tmpfs that fills, an MLflow server that dies (and comes back, or not), two sweeps started
together in one empty folder, a planted pickle. Each is the CLI in its own process (its own
local Ray), as a user runs it.

After every fault and `--resume`, MLflow must hold every trial exactly once (runs of trials
Tune never saved closed as `lost`), none left RUNNING, and each completed trial every epoch.
Budgets are tiny: digits, one regime, 2 search trials, 2 confirmation seeds, 2 epochs.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from local_servers import answers, free_port, start_mlflow_server
from mlflow.tracking import MlflowClient

from search import schema
from search.integrity import KEY_FILE_ENV, Seal

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SWEEP = ROOT / "search" / "lerac_sweep.py"
EXPERIMENT = "faults"
TRIALS = 2 + 2  # search trials and confirmation runs of the one regime
EPOCHS = 2
OUTAGE_EPOCHS = 40  # the trials of the MLflow outage test: see there
RESUME = re.compile(r"--resume --storage-path (\S+) --sweep-id (\S+)")


def sweep_args(storage: Path, uri: str, *extra: str) -> list[str]:
    return [sys.executable, str(SWEEP), "--datasets", "digits", "--regimes", "conventional",
            "--trials", "2", "--epochs", str(EPOCHS), "--grace-period", str(EPOCHS), "--confirm-seeds", "2",
            "--max-concurrent", "1", "--storage-path", str(storage), "--tracking-uri", uri,
            "--experiment", EXPERIMENT, "--min-free-mb", "1", *extra]


def environment(tmp: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), KEY_FILE_ENV: str(tmp / "key" / "state.key")}


def start(args: list[str], tmp: Path) -> subprocess.Popen:
    return subprocess.Popen(args, cwd=tmp, env=environment(tmp), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def run(args: list[str], tmp: Path, timeout: float = 420) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=tmp, env=environment(tmp), capture_output=True, text=True, timeout=timeout)


def trial_runs(uri: str, sweep_id: str | None = None) -> list:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return []
    query = "tags.role = 'trial'" + (f" and tags.sweep_id = '{sweep_id}'" if sweep_id else "")
    return client.search_runs([experiment.experiment_id], query, max_results=1000)


def seeded_runs(uri: str, seed: int | None = None) -> list:
    """Trial runs (of the search trials of the sweep with `seed`, if given); none while the store
    is being created or a test server is down."""
    try:
        return [r for r in trial_runs(uri) if seed is None or r.data.params.get("seed") == str(seed)]
    except Exception:
        return []


def finished(uri: str, seed: int | None = None) -> int:
    """Finished trial runs (of the search trials of the sweep with `seed`, if given)."""
    return sum(schema.END_STATE in r.data.tags for r in seeded_runs(uri, seed))


def wait_for(condition, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the sweep ended first: {process.communicate()}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)


def one_line(stderr: str, prefix: str) -> str:
    """The sweep's own message: the last line, one line, no traceback anywhere."""
    assert "Traceback" not in stderr and "*** SIG" not in stderr, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(prefix), stderr[-3000:]
    return last


def resume_target(line: str) -> tuple[str, str]:
    storage, sweep_id = RESUME.search(line).groups()
    return storage, sweep_id


def assert_every_trial_once(uri: str, sweep_id: str, epochs: int = EPOCHS) -> list:
    """Every trial of the sweep exactly once, none RUNNING, every epoch of each completed one."""
    runs = trial_runs(uri, sweep_id)
    counted = [run for run in runs if run.data.tags.get(schema.END_STATE) != schema.LOST]
    ids = [run.data.tags[schema.TRIAL_ID] for run in counted]
    assert len(ids) == len(set(ids)) == TRIALS, [(r.data.tags, r.info.status) for r in runs]
    assert all(run.info.status != "RUNNING" for run in runs)
    assert all(run.data.tags.get(schema.END_STATE) in schema.END_STATES for run in runs)
    client = MlflowClient(uri)
    for run in counted:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, schema.VAL_ACC)]
        if run.data.tags[schema.END_STATE] == schema.COMPLETED:
            assert steps == list(range(1, epochs + 1)), steps
    return runs


# -- signals and two sweeps at once -----------------------------------------------------
@pytest.fixture(scope="module")
def two_sweeps(tmp_path_factory):
    """Two sweeps started together in one empty folder; the first is stopped by SIGTERM,
    resumed, killed with `kill -9` (the driver alone) and resumed again."""
    tmp = tmp_path_factory.mktemp("signals")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    args = sweep_args(tmp / "ray", uri)
    first, second = start(args, tmp), start([*args, "--seed", "1"], tmp)
    wait_for(lambda: finished(uri, seed=0) >= 1, first)
    first.send_signal(signal.SIGTERM)
    _, terminated = first.communicate(timeout=180)
    record = {"uri": uri, "tmp": tmp, "sigterm": (first.returncode, terminated)}
    storage, sweep_id = resume_target(one_line(terminated, "interrupted: "))
    record["before"] = {r.data.tags[schema.TRIAL_ID]: r.info.run_id for r in trial_runs(uri, sweep_id)}
    resumed = start([sys.executable, str(SWEEP), "--resume", "--storage-path", storage, "--sweep-id", sweep_id], tmp)
    before = len([r for r in trial_runs(uri, sweep_id) if schema.END_STATE in r.data.tags])
    wait_for(lambda: len([r for r in trial_runs(uri, sweep_id) if schema.END_STATE in r.data.tags]) > before,
             resumed)
    resumed.kill()  # SIGKILL to the driver alone; Ray's own processes follow it down
    resumed.communicate(timeout=60)
    record["killed_with"] = resumed.returncode
    record["final"] = run([*args, "--resume", "--sweep-id", sweep_id], tmp)  # the same command + --resume
    record["second"] = second.communicate(timeout=420)[0], second.returncode
    record["sweep_id"] = sweep_id
    return record


def test_sigterm_stops_like_ctrl_c_with_one_line_and_the_resume_command(two_sweeps):
    code, stderr = two_sweeps["sigterm"]
    assert code == 130
    line = one_line(stderr, f"interrupted: sweep {two_sweeps['sweep_id']} was interrupted")
    assert "finished trials are kept; continue it with: python search/lerac_sweep.py --resume" in line
    assert two_sweeps["killed_with"] == -signal.SIGKILL


def test_after_sigterm_and_kill_9_every_trial_is_in_mlflow_once_none_running(two_sweeps):
    final = two_sweeps["final"]
    assert final.returncode == 0, final.stderr[-3000:]
    assert "Traceback" not in final.stderr
    runs = assert_every_trial_once(two_sweeps["uri"], two_sweeps["sweep_id"])
    for run in runs:  # a run of a trial Tune never saved is closed, not left RUNNING
        if run.data.tags[schema.END_STATE] == schema.LOST:
            assert run.info.status in ("KILLED", "FINISHED")
    after = {run.data.tags[schema.TRIAL_ID]: run.info.run_id for run in runs}
    assert two_sweeps["before"]  # the sweep had runs when SIGTERM came, and keeps them
    assert all(after[trial_id] == run_id for trial_id, run_id in two_sweeps["before"].items())


def test_a_resumed_sweep_prints_its_own_tracking_uri_and_experiment(two_sweeps):
    out = two_sweeps["final"].stdout
    assert f"--backend-store-uri {two_sweeps['uri']} " in out  # the sweep's store, not the CLI default
    assert f"--tracking-uri {two_sweeps['uri']} --experiment {EXPERIMENT}" in out


def test_two_sweeps_started_together_in_one_empty_folder_both_finish(two_sweeps):
    out, code = two_sweeps["second"]
    assert code == 0 and "Verdicts per dataset" in out
    sweeps = {run.data.tags[schema.SWEEP_ID] for run in trial_runs(two_sweeps["uri"])}
    assert len(sweeps) == 2
    for sweep_id in sweeps:
        assert_every_trial_once(two_sweeps["uri"], sweep_id)


def finished_copy(two_sweeps, tmp_path) -> tuple[list[str], Path]:
    """A copy of the finished first sweep that records into its own store: its resume command
    and its folder."""
    source = two_sweeps["tmp"]
    shutil.copytree(source / "ray", tmp_path / "ray")
    shutil.copy(source / "mlflow.db", tmp_path / "mlflow.db")
    shutil.copytree(source / "key", tmp_path / "key")
    sweep_id = two_sweeps["sweep_id"]
    state = tmp_path / "ray" / sweep_id / "sweep_state.json"
    state.write_text(state.read_text().replace(two_sweeps["uri"], f"sqlite:///{tmp_path / 'mlflow.db'}"))
    resume = [sys.executable, str(SWEEP), "--resume", "--storage-path", str(tmp_path / "ray"), "--sweep-id", sweep_id]
    return resume, tmp_path / "ray" / sweep_id


def test_resuming_a_finished_sweep_seals_what_its_saves_wrote(two_sweeps, tmp_path):
    """Nothing left to run: Tune takes no step, so the monitor learns where Tune staged its
    state only at the end; that state must be sealed all the same, or the next resume refuses it."""
    resume, sweep_dir = finished_copy(two_sweeps, tmp_path)
    again = run(resume, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    key = (tmp_path / "key" / "state.key").read_bytes()
    Seal.verify(sweep_dir=sweep_dir, sweep_id=two_sweeps["sweep_id"], key=key)  # raises if any file is unsealed


def test_a_planted_pickle_is_refused_and_restart_starts_the_sweep_again(two_sweeps, tmp_path):
    """A copy of the finished sweep with Tune's searcher state replaced by a pickle that would
    write a marker file: resume refuses it in one line; --restart runs the sweep again."""
    resume, sweep_dir = finished_copy(two_sweeps, tmp_path)
    sweep_id = two_sweeps["sweep_id"]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    marker = tmp_path / "marker"
    searcher_state = max(sweep_dir.glob("searcher-state-*.pkl"))  # the one Tune reads
    searcher_state.write_bytes(pickle.dumps(Planted(marker)))
    refused = run(resume, tmp_path)
    assert refused.returncode == 2 and not marker.exists()
    line = one_line(refused.stderr, f"error: cannot resume sweep {sweep_id}: ")
    assert f"{searcher_state.name} differs from what the sweep wrote" in line and "--resume --restart" in line

    restarted = run([*resume, "--restart"], tmp_path)
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    assert not marker.exists()
    before = {run.info.run_id for run in trial_runs(two_sweeps["uri"], sweep_id)}
    runs = assert_every_trial_once(uri, sweep_id)
    assert len(runs) == len(before) + TRIALS  # the first attempt's runs are kept, closed as lost
    assert {run.info.run_id for run in runs if run.data.tags[schema.END_STATE] == schema.LOST} == before
    assert list((tmp_path / "ray").glob(f"{sweep_id}.abandoned-*/{searcher_state.name}"))


class Planted:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


# -- a storage path that fills -----------------------------------------------------------
@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_disk_that_fills_stops_the_sweep_at_once_and_resume_finishes_it(tmp_path):
    storage = tmp_path / "ray"
    storage.mkdir()
    # A checkpoint of this model is about 0.75 MiB: two trials fill 2 MiB. One trial at a time,
    # and a margin (1.25 MiB must stay free) that the first checkpoint already breaks, so the
    # sweep stops before a second checkpoint can land while Tune copies its state (see README:
    # a disk that fills during that copy leaves a state that resume refuses, pointing to --restart).
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(storage)], check=True)
    try:
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        args = sweep_args(storage, uri, "--min-free-mb", "1.25")
        stopped = run(args, tmp_path)
        assert stopped.returncode == 75
        line = one_line(stopped.stderr, "stopped: sweep ")
        assert f"the storage path {storage} is full" in line and "When that is fixed, continue it with" in line
        _, sweep_id = resume_target(line)
        assert not [run for run in trial_runs(uri) if run.data.tags.get(schema.END_STATE) == schema.ERRORED]
        subprocess.run(["mount", "-o", "remount,size=32m", str(storage)], check=True)  # space freed
        resumed = run([*args, "--resume"], tmp_path)
        if resumed.returncode == 2:
            # The disk filled while Tune was copying its state (a checkpoint landing at that
            # moment): the state is cut short, so resume refuses it in one line and names the
            # way that always ends, the same sweep from scratch with its MLflow records kept.
            refused = one_line(resumed.stderr, "error: cannot resume sweep ")
            assert "cut short when the disk filled" in refused and "--resume --restart" in refused
            resumed = run([*args, "--resume", "--restart"], tmp_path)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert_every_trial_once(uri, sweep_id)
    finally:
        subprocess.run(["umount", "-l", str(storage)], check=True)


# -- an MLflow server that dies ------------------------------------------------------------
class Server:
    """A real `mlflow server` on 127.0.0.1 that the test kills and starts again on the same port."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = start_mlflow_server(self.folder, self.port)
        if not answers(f"{self.uri}/health", seconds=180):
            self.kill()
            pytest.fail("mlflow server did not start")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


def test_an_mlflow_outage_is_reported_at_once_and_waited_out_or_stops_the_sweep(tmp_path):
    """Two sweeps on one server, which dies: the patient one warns, waits and finishes when
    the server is back; the impatient one stops in one line and its resume makes MLflow whole."""
    server = Server(tmp_path)
    server.start()
    # The server dies once the patient sweep has started a trial (its store is open: a sweep
    # that cannot open it refuses to start, exit 2) and the impatient one has finished one. Both
    # must still have trials to record then, however far apart their start-ups end (seconds
    # here): trials of OUTAGE_EPOCHS take seconds each here, and three of each sweep's remain.
    longer = ("--epochs", str(OUTAGE_EPOCHS), "--grace-period", str(OUTAGE_EPOCHS))
    try:
        patient = start(sweep_args(tmp_path / "ray", server.uri, "--tracking-timeout", "600", *longer), tmp_path)
        impatient = start(sweep_args(tmp_path / "ray2", server.uri, "--tracking-timeout", "5", "--seed", "1",
                                     *longer), tmp_path)
        wait_for(lambda: seeded_runs(server.uri, seed=0) and finished(server.uri, seed=1) >= 1, patient)
        server.kill()
        _, stopped = impatient.communicate(timeout=300)
        assert impatient.returncode == 75
        line = one_line(stopped, "stopped: sweep ")
        assert f"MLflow tracking store {server.uri} failed for" in line and "continue it with" in line
        assert f"warning: MLflow tracking store {server.uri} is failing" in stopped
        server.start()
        _, waited = patient.communicate(timeout=420)
        assert patient.returncode == 0, waited[-3000:]
        warnings = [text for text in waited.splitlines() if text.startswith("warning: MLflow")]
        assert len(warnings) == 2 and "is back after" in warnings[1], warnings
        (patient_id,) = {r.data.tags[schema.SWEEP_ID] for r in trial_runs(server.uri)} - {resume_target(line)[1]}
        assert_every_trial_once(server.uri, patient_id, OUTAGE_EPOCHS)

        storage, sweep_id = resume_target(line)
        resumed = run([sys.executable, str(SWEEP), "--resume", "--storage-path", storage, "--sweep-id", sweep_id],
                      tmp_path)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert_every_trial_once(server.uri, sweep_id, OUTAGE_EPOCHS)
    finally:
        server.kill()
