"""cluster.yaml validates offline against Ray's own cluster-launcher schema."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = Path(__file__).resolve().parent.parent / "cluster.yaml"


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def test_validates_against_rays_schema(cluster):
    validate_config(prepare_config(cluster))


def test_schema_check_can_fail(cluster):
    broken = {**cluster, "available_node_types": {"head": {"resources": {"CPU": 1}}}}
    with pytest.raises(Exception):  # noqa: B017 - any schema error will do
        validate_config(prepare_config(broken))


def test_gpu_workers_scale_from_zero_with_integer_resources(cluster):
    gpu_types = {
        name: node for name, node in cluster["available_node_types"].items()
        if node.get("resources", {}).get("GPU", 0) > 0
    }
    assert gpu_types
    for node in gpu_types.values():
        assert node["min_workers"] == 0
        assert all(isinstance(value, int) for value in node["resources"].values())


def test_head_runs_mlflow_on_localhost_and_installs_the_project(cluster):
    head_commands = " ".join(cluster["head_start_ray_commands"])
    assert "mlflow server --host 127.0.0.1" in head_commands
    assert any("pip install" in command and "lerac-search" in command for command in cluster["setup_commands"])


def test_holds_no_credentials():
    text = CLUSTER_YAML.read_text().lower()
    for secret in ("aws_access_key_id", "aws_secret_access_key", "password", "token:", "ssh_private_key"):
        assert secret not in text
