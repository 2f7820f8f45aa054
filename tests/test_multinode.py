"""The multi-node path on one machine: a head plus a worker node that declares 2 GPUs."""

from __future__ import annotations

import pytest
import ray
from mlflow.tracking import MlflowClient
from ray.cluster_utils import Cluster

from search.sweep import SweepOptions, run_sweep

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    worker = cluster.add_node(num_cpus=4, num_gpus=2)
    ray.init(address=cluster.address, log_to_driver=False)
    cluster.wait_for_nodes()
    yield worker
    ray.shutdown()
    cluster.shutdown()


def max_overlap(intervals: list[tuple[int, int]]) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak


def test_half_gpu_trials_run_four_at_a_time_on_the_gpu_node(cluster, tmp_path):
    options = SweepOptions(
        # Trials of 20 epochs (about 3 s here) outlast the spread of the four actors' start-ups
        # (up to 1 s here): with 8 epochs the fourth trial sometimes began as the first ended.
        datasets=("digits",), regimes=("conventional",), num_trials=6, confirm_seeds=2, epochs=20,
        grace_period=20, cpus_per_trial=1,
        gpus_per_trial=0.5, max_concurrent=8, storage_path=str(tmp_path / "ray"),
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="multinode",
        fixed={"device": "cpu"},  # the node declares GPUs that CUDA cannot see: train on the CPU on purpose
    )
    (outcome,) = run_sweep(options)
    assert outcome.leading is not None

    client = MlflowClient(options.tracking_uri)
    experiment = client.get_experiment_by_name("multinode")
    trials = client.search_runs([experiment.experiment_id], filter_string="tags.role = 'trial'")
    assert len(trials) == 8  # 6 search trials, 2 confirmation runs
    assert max_overlap([(run.info.start_time, run.info.end_time) for run in trials]) == 4

    result_files = list((tmp_path / "ray").rglob("result.json"))
    assert len(result_files) == 8
    import json

    for path in result_files:
        results = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        assert {r["node_id"] for r in results} == {cluster.node_id}  # placed on the GPU node
        assert {r["device"] for r in results} == {"cpu"}  # as asked (test_gpu_assignment: the refusal)
