"""End-to-end sweeps with a real Ray runtime and real MLflow stores (sqlite and a server)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray
import requests
from mlflow.tracking import MlflowClient

from search.lerac_sweep import main as sweep_main
from search.recording import SweepRecorder
from search.sweep import SweepOptions, run_sweep
from trainables.config_file import read_config_file
from trainables.train import main as train_main

pytestmark = pytest.mark.slow

EXPERIMENT = "test-sweep"


@pytest.fixture(scope="module", autouse=True)
def ray_runtime():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def small_options(tmp: Path, **overrides) -> SweepOptions:
    return SweepOptions(**{
        "datasets": ("digits",),
        "num_trials": 4,
        "epochs": 2,
        "grace_period": 1,
        "storage_path": str(tmp / "ray"),
        "tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}",
        "experiment": EXPERIMENT,
        **overrides,
    })


def runs_of(client: MlflowClient, role: str, **tags: str) -> list:
    experiment = client.get_experiment_by_name(EXPERIMENT)
    query = " and ".join([f"tags.role = '{role}'"] + [f"tags.{k} = '{v}'" for k, v in tags.items()])
    return client.search_runs([experiment.experiment_id], filter_string=query, max_results=1000)


@pytest.fixture(scope="module")
def two_dataset_sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    options = small_options(tmp, datasets=("digits", "mnist1d"), num_trials=4)
    outcomes = run_sweep(options)
    return tmp, options, outcomes, MlflowClient(options.tracking_uri)


class TestTwoDatasetSweep:
    def test_one_parent_run_per_dataset_with_its_winner(self, two_dataset_sweep):
        _, _, outcomes, client = two_dataset_sweep
        parents = runs_of(client, "parent")
        assert sorted(run.data.tags["dataset"] for run in parents) == ["digits", "mnist1d"]
        for parent in parents:
            children = runs_of(client, "trial", dataset=parent.data.tags["dataset"])
            winner_id = parent.data.tags["winner_run_id"]
            assert winner_id in {child.info.run_id for child in children}
            winner = client.get_run(winner_id)
            assert winner.data.tags["end_state"] == "completed"
            assert parent.data.metrics["best_val_acc"] == winner.data.metrics["val_acc"]
            assert parent.data.params["regime"] == winner.data.tags["regime"] == parent.data.tags["winner_regime"]
        assert {outcome.dataset for outcome in outcomes} == {"digits", "mnist1d"}

    def test_winner_has_the_best_validation_accuracy_among_completed(self, two_dataset_sweep):
        _, _, _, client = two_dataset_sweep
        for parent in runs_of(client, "parent"):
            completed = runs_of(client, "trial", dataset=parent.data.tags["dataset"], end_state="completed")
            assert parent.data.metrics["best_val_acc"] == max(run.data.metrics["val_acc"] for run in completed)

    def test_child_run_for_every_trial_with_per_epoch_metrics(self, two_dataset_sweep):
        _, options, _, client = two_dataset_sweep
        for dataset in options.datasets:
            children = runs_of(client, "trial", dataset=dataset)
            assert len(children) == options.num_trials
            assert len({child.data.tags["trial_id"] for child in children}) == options.num_trials
            for child in children:
                assert child.data.tags["end_state"] in {"completed", "stopped_early"}
                assert child.info.status == "FINISHED"
                assert child.data.tags["mlflow.parentRunId"]
                history = client.get_metric_history(child.info.run_id, "val_acc")
                epochs = options.epochs if child.data.tags["end_state"] == "completed" else 1
                assert sorted(metric.step for metric in history) == list(range(1, epochs + 1))
                assert any(key.startswith("lr/") for key in child.data.metrics)

    def test_best_config_replays_the_recorded_test_accuracy_exactly(self, two_dataset_sweep, tmp_path):
        _, _, _, client = two_dataset_sweep
        parent = runs_of(client, "parent", dataset="digits")[0]
        path = Path(client.download_artifacts(parent.info.run_id, "best_config.yaml", str(tmp_path)))
        config_file = read_config_file(path)
        assert config_file.metadata["source_run_id"] == parent.data.tags["winner_run_id"]
        output = tmp_path / "replay.json"
        assert train_main(["--config", str(path), "--quiet", "--output", str(output)]) == 0
        replay = json.loads(output.read_text())
        assert replay["test_acc"] == parent.data.metrics["best_test_acc"]
        assert replay["val_acc"] == parent.data.metrics["best_val_acc"]


def test_diverged_trial_never_wins(tmp_path):
    recorder = SweepRecorder(tracking_uri=f"sqlite:///{tmp_path / 'm.db'}", experiment=EXPERIMENT, sweep_id="s1")
    parent = recorder.parent_run(dataset="digits", model="small_cnn", regimes=("lerac",), code_version="test")
    for trial_id, val_acc, loss, state in [("a", 0.99, float("nan"), "diverged"), ("b", 0.7, 0.5, "completed"),
                                            ("c", 0.95, 0.2, "stopped_early")]:
        run = recorder.trial_run(parent_run_id=parent, dataset="digits", trial_id=trial_id,
                                 config={"regime": "lerac", "dataset": "digits"})
        recorder.log_epoch(run, {"epoch": 1, "val_acc": val_acc, "test_acc": 0.5, "train_loss": loss})
        recorder.finish_trial(run, state)
    winner = recorder.mark_winner(parent)
    assert winner is not None and winner.val_acc == 0.7


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--datasets", "imagenet"], "unknown dataset 'imagenet'"),
        (["--model", "vgg"], "unknown model 'vgg'"),
        (["--regimes", "lerac", "sgdr"], "unknown regime 'sgdr'"),
        (["--gpus-per-trial", "0.5"], "asks for 0.5 GPUs but the Ray cluster has 0"),
        (["--datasets", "cifar10"], "cifar10: expected"),
        (["--tracking-uri", "http://127.0.0.1:{port}"], "cannot be reached"),
        (["--resume"], "nothing to resume"),
        (["--set", "optimizer=lion"], "'optimizer'"),
    ],
)
def test_bad_input_fails_fast_with_one_line_and_writes_nothing(tmp_path, capsys, args, message):
    args = [arg.replace("{port}", str(_closed_port())) for arg in args]
    common = ["--storage-path", str(tmp_path / "ray"), "--data-dir", str(tmp_path / "data"),
              "--experiment", EXPERIMENT]
    if "--tracking-uri" not in args:
        common += ["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    assert sweep_main(common + args) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and message in error and "\n" not in error
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.fixture()
def mlflow_server(tmp_path):
    port = _closed_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "artifacts"), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{uri}/health", timeout=5).ok:
                break
        except requests.RequestException:  # not listening yet, or too busy to answer
            time.sleep(0.5)
    else:
        server.kill()
        pytest.fail("mlflow server did not start")
    yield uri
    os.killpg(server.pid, 15)
    server.wait(timeout=30)


def test_sweep_records_to_a_real_mlflow_server(tmp_path, mlflow_server):
    options = small_options(tmp_path, tracking_uri=mlflow_server, num_trials=2, epochs=1)
    (outcome,) = run_sweep(options)
    client = MlflowClient(mlflow_server)
    assert len(runs_of(client, "trial", dataset="digits")) == 2
    artifacts = [a.path for a in client.list_artifacts(outcome.parent_run_id)]
    assert artifacts == ["best_config.yaml"]
