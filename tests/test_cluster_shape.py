"""Start-up checks that fit an autoscaling cluster: what it is and what it can become.

The end-to-end path (the autoscaler's config read on the head of a running
fake cluster) is in test_cluster_rehearsal.py; these are the rules and the
reading, without Ray.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from local_servers import free_port

from search.checks import placement_problem
from search.cluster_shape import NodeShape, monitor_config_on_this_node, node_types_from_config
from search.mlflow_view import ui_base
from search.next_steps import ui_command

ROOT = Path(__file__).resolve().parent.parent

HEAD = NodeShape(name="node 10.0.0.1 (head)", resources={"CPU": 0, "memory": 8e9}, running=True)
GPU_TYPE = NodeShape(name="gpu_a10g", resources={"CPU": 4, "GPU": 1}, running=False)


def problem(request, shapes, *, autoscaled=True, wait_for_gpus=True):
    return placement_problem(request, shapes, autoscaled=autoscaled, wait_for_gpus=wait_for_gpus)


def test_gpu_trials_fit_a_cluster_whose_gpu_workers_scale_from_zero():
    assert problem({"CPU": 1, "GPU": 0.5}, [HEAD, GPU_TYPE]) is None
    assert problem({"CPU": 1}, [HEAD, GPU_TYPE]) is None  # the autoscaler starts a node for it


def test_gpu_trials_that_would_wait_for_a_worker_need_wait_for_gpus():
    message = problem({"CPU": 1, "GPU": 0.5}, [HEAD, GPU_TYPE], wait_for_gpus=False)
    assert "--wait-for-gpus" in message and "gpu_a10g" in message and "\n" not in message


@pytest.mark.parametrize("request_", [{"CPU": 1, "GPU": 2}, {"CPU": 8, "GPU": 1}])
def test_what_no_node_type_can_ever_host_is_refused_even_when_waiting(request_):
    message = problem(request_, [HEAD, GPU_TYPE])
    assert "can ever host" in message and "gpu_a10g (4 CPU, 1 GPU)" in message and "\n" not in message


def test_a_trial_must_fit_one_node_not_the_sum_of_the_nodes():
    two_nodes = [NodeShape(name=f"node {i}", resources={"CPU": 4, "GPU": 1}, running=True) for i in (1, 2)]
    assert problem({"CPU": 1, "GPU": 1}, two_nodes, autoscaled=False) is None
    assert "per node" in problem({"CPU": 1, "GPU": 2}, two_nodes, autoscaled=False, wait_for_gpus=False)
    assert "can host one" in problem({"CPU": 5}, two_nodes, autoscaled=False)


def test_a_local_runtime_without_gpus_refuses_gpu_trials_unless_told_to_wait():
    local = [NodeShape(name="node 127.0.0.1 (head)", resources={"CPU": 2}, running=True)]
    message = problem({"CPU": 1, "GPU": 0.5}, local, autoscaled=False, wait_for_gpus=False)
    assert "asks for 0.5 GPUs but the Ray cluster has 0" in message
    assert problem({"CPU": 1, "GPU": 0.5}, local, autoscaled=False, wait_for_gpus=True) is None


def test_node_types_come_from_cluster_yaml_without_the_head():
    cluster = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    types = node_types_from_config(cluster)
    workers = {name: node for name, node in cluster["available_node_types"].items()
               if name != cluster["head_node_type"]}
    assert {shape.name: dict(shape.resources) for shape in types} == \
           {name: node["resources"] for name, node in workers.items()}
    assert not any(shape.running for shape in types)
    assert node_types_from_config({**cluster, "max_workers": 0}) == []


def test_the_monitor_of_this_clusters_gcs_is_found_by_its_port(tmp_path):
    """A stand-in process with the autoscaler monitor's command line (ours, ended by pid)."""
    config = tmp_path / "autoscaler.yaml"
    config.write_text(json.dumps({"available_node_types": {"gpu": {"resources": {"GPU": 1}, "max_workers": 1}}}))
    port = str(free_port())
    monitor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                                "/venv/ray/autoscaler/_private/monitor.py", f"--gcs-address=10.0.0.1:{port}",
                                f"--autoscaling-config={config}"])
    try:
        time.sleep(0.2)
        assert monitor_config_on_this_node(port)["available_node_types"]["gpu"]["max_workers"] == 1
        assert monitor_config_on_this_node(str(free_port())) is None  # another cluster's port
    finally:
        monitor.kill()
        monitor.wait()


def test_the_closing_hint_fits_the_tracking_uri():
    """A server already serves its UI (`mlflow ui` cannot open a server): open its URL; a local
    store is opened with `mlflow ui`."""
    assert ui_command("http://127.0.0.1:5000") is None
    assert ui_base("http://127.0.0.1:5000/") == "http://127.0.0.1:5000"
    command = ui_command("sqlite:///mlflow.db")
    assert command is not None and " ui --backend-store-uri sqlite:///" in command
    assert ui_base("sqlite:///mlflow.db").startswith("http://127.0.0.1:")
