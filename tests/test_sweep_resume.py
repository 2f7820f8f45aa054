"""An interrupted sweep resumes with --resume: no finished trial lost, no run duplicated."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

SWEEP = Path(__file__).resolve().parent.parent / "search" / "lerac_sweep.py"
TRIALS = 3  # per regime
RUNS = 2 * TRIALS + 2 * 2  # two regimes: their search trials and 2 confirmation seeds each


def trial_runs(tracking_uri: str) -> list:
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("resume-test")
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], filter_string="tags.role = 'trial'")


def test_interrupted_sweep_resumes_without_duplicates_or_losses(tmp_path):
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = [sys.executable, str(SWEEP), "--datasets", "digits", "--trials", str(TRIALS),
            "--epochs", "3", "--grace-period", "3", "--max-concurrent", "1", "--confirm-seeds", "2",
            "--storage-path", str(tmp_path / "ray"), "--tracking-uri", tracking_uri,
            "--experiment", "resume-test"]
    driver = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and driver.poll() is None:
        finished = [run for run in trial_runs(tracking_uri) if "end_state" in run.data.tags]
        if len(finished) >= 2:
            break
        time.sleep(0.5)
    assert driver.poll() is None, "the sweep ended before it could be interrupted"
    driver.send_signal(signal.SIGINT)  # Ctrl-C
    output, _ = driver.communicate(timeout=120)
    assert driver.returncode == 130, output
    assert "--resume" in output
    before = {run.data.tags["trial_id"]: run.info.run_id for run in trial_runs(tracking_uri)}
    finished_before = {
        run.data.tags["trial_id"] for run in trial_runs(tracking_uri) if "end_state" in run.data.tags
    }
    assert 2 <= len(finished_before) < RUNS

    resumed = subprocess.run(
        [*args, "--resume"], cwd=tmp_path, capture_output=True, text=True, timeout=400
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "Verdicts per dataset" in resumed.stdout

    after = trial_runs(tracking_uri)
    trial_ids = [run.data.tags["trial_id"] for run in after]
    assert len(trial_ids) == len(set(trial_ids)) == RUNS
    assert all(run.data.tags.get("end_state") for run in after)
    for trial_id, run_id in before.items():  # same trial keeps its MLflow run
        assert {run.info.run_id for run in after if run.data.tags["trial_id"] == trial_id} == {run_id}
    client = MlflowClient(tracking_uri)
    for run in after:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")]
        assert steps == sorted(set(steps)), "an epoch was logged twice"
