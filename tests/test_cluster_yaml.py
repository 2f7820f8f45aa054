"""cluster.yaml: valid for Ray's launcher, and its commands behave on real nodes.

Ray runs every set-up and start command over SSH as
`bash --login -c -i 'source ~/.bashrc; export ... && (CMD)'` (its own
`_with_interactive`, used here): commands are run exactly so, with fake
`mlflow`, `nvidia-smi`, `mount` ... on PATH and HOME in a temporary folder,
so nothing on this machine is touched or matched by name.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import requests
import yaml
from local_servers import free_port
from ray.autoscaler._private.command_runner import _with_interactive
from ray.autoscaler._private.resource_demand_scheduler import (
    _default_utilization_scorer,
    get_nodes_for,
)
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parent.parent
CLUSTER_YAML = ROOT / "cluster.yaml"
COMMAND_LISTS = ("initialization_commands", "setup_commands", "head_setup_commands",
                 "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands")
# us-west-2 on-demand Linux prices (USD/h, 2025) and memory (GiB) of the types cluster.yaml may
# use; a type missing here fails the cost test until its price is added.
INSTANCES = {"m5.xlarge": (0.192, 16), "g5.xlarge": (1.006, 16), "g5.2xlarge": (1.212, 32),
             "g5.4xlarge": (1.624, 64), "g5.12xlarge": (5.672, 192), "g5.48xlarge": (16.288, 768)}
# Trial shapes the README shows (CPUs, GPUs per trial, trials at once).
TRIAL_SHAPES = [(1, 0.25, 16), (1, 0.5, 8), (2, 0.5, 8), (4, 1, 4), (1, 0.25, 3)]


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def all_commands(cluster: dict) -> list[str]:
    return [command for key in COMMAND_LISTS for command in cluster.get(key) or []]


def run_like_ray(command: str, *, home: Path, path: Path | None = None,
                 timeout: float = 60) -> subprocess.CompletedProcess:
    """Run `command` as Ray's updater does over SSH: sshd's shell runs Ray's bash wrapper."""
    # A login shell resets PATH (/etc/profile); ~/.bashrc, which Ray sources, sets it again, as
    # cluster.yaml's own set-up does for its virtualenv.
    (home / ".bashrc").write_text(f'export PATH="{path}:$PATH"\n' if path else "")
    wrapped = " ".join(_with_interactive(command))  # the string sshd hands to the login shell
    env = {"HOME": str(home), "PATH": os.environ["PATH"], "LANG": "C.UTF-8"}
    shell = subprocess.Popen(["bash", "-c", wrapped], env=env, cwd=home, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        stdout, stderr = shell.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:  # a command that never returns: end it and all it started
        os.killpg(shell.pid, 9)
        raise
    return subprocess.CompletedProcess(shell.args, shell.returncode, stdout, stderr)


def fake(folder: Path, name: str, script: str) -> None:
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(script).lstrip())
    path.chmod(0o755)


def self_matching(command: str) -> list[str]:
    """The name patterns of `command` (pkill/pgrep -f, killall) that match Ray's wrapper of it."""
    wrapped = " ".join(_with_interactive(command))
    words = list(shlex.shlex(command, posix=True, punctuation_chars=True))
    found = []
    for position, word in enumerate(words):
        if word in ("pkill", "pgrep", "killall"):
            pattern = next((w for w in words[position + 1:] if not w.startswith("-")), None)
            if pattern is not None and re.search(pattern, wrapped):
                found.append(pattern)
    return found


# -- the schema and the shape ----------------------------------------------------------

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


def test_head_runs_no_trials_and_mlflow_on_localhost_on_the_shared_file_system(cluster):
    assert cluster["available_node_types"][cluster["head_node_type"]]["resources"] == {"CPU": 0}
    head_commands = " ".join(cluster["head_start_ray_commands"])
    assert "mlflow server --host 127.0.0.1" in head_commands
    assert "--backend-store-uri sqlite:////shared/" in head_commands  # outlives `ray down`
    assert "--artifacts-destination /shared/" in head_commands
    assert "--dashboard-host=127.0.0.1" in head_commands


def test_nodes_install_the_project_with_its_cluster_extra_and_the_pinned_torch(cluster):
    setup = " ".join(cluster["setup_commands"])
    assert "lerac-search[cluster]" in setup
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'cluster = \[[^\]]*"ray\[default\]', pyproject)
    ci_pins = re.findall(r'"(torch(?:vision)?==[^"]+)"', (ROOT / ".ci" / "run").read_text())
    assert ci_pins and all(f'"{pin}"' in setup for pin in ci_pins)  # what CI tests is what runs
    assert "--index-url https://download.pytorch.org/whl/cu" in setup


def test_every_node_type_pins_one_image_and_has_an_instance_profile(cluster):
    nodes = cluster["available_node_types"].values()
    images = {node["node_config"].get("ImageId", "") for node in nodes}
    assert len(images) == 1 and next(iter(images)).startswith("ami-")  # one Python everywhere
    for node in nodes:
        assert "Name" in node["node_config"]["IamInstanceProfile"]
    readme = (ROOT / "README.md").read_text()
    for node in nodes:  # the README creates the profiles cluster.yaml names
        assert node["node_config"]["IamInstanceProfile"]["Name"] in readme


def test_token_authentication_is_on_with_one_token_everywhere(cluster):
    assert cluster["file_mounts"]["/home/ubuntu/.ray/auth_token"] == "~/.ray/auth_token"
    assert any("export RAY_AUTH_MODE=token" in command for command in cluster["setup_commands"])


def test_holds_no_credentials(cluster):
    text = CLUSTER_YAML.read_text()
    for secret in ("aws_access_key_id", "aws_secret_access_key", "ssh_private_key", "PRIVATE KEY"):
        assert secret.lower() not in text.lower()

    def values(node):
        if isinstance(node, dict):
            for key, value in node.items():
                yield str(key), value
                yield from values(value)
        elif isinstance(node, list):
            for item in node:
                yield from values(item)

    for key, value in values(cluster):
        if re.search(r"token|password|secret|access_key", key, re.I) and isinstance(value, str):
            assert value.startswith("~/"), f"{key} holds a value, not a path"


def _aws_resources(node: dict) -> dict:
    """A node type's resources as Ray's AWS provider fills them in (memory, accelerator)."""
    price_memory = INSTANCES[node["node_config"]["InstanceType"]]
    resources = {**node.get("resources", {}), "memory": int(price_memory[1] * 2**30 * 0.7)}
    if resources.get("GPU"):
        resources["accelerator_type:A10G"] = 1
    return resources


def autoscaler_cost(node_types: dict, cpus: float, gpus: float, trials: int) -> float:
    """Hourly price of the nodes Ray's autoscaler starts for `trials` pending trials."""
    types = {name: {**node, "resources": _aws_resources(node)} for name, node in node_types.items()}
    chosen, unplaced = get_nodes_for(
        types, {}, "head", 100, [{"CPU": cpus, "GPU": gpus}] * trials,
        lambda resources, demand, node_type: _default_utilization_scorer(
            resources, demand, node_type, node_availability_summary=None))
    assert not unplaced
    return sum(count * INSTANCES[types[name]["node_config"]["InstanceType"]][0]
               for name, count in chosen.items())


def cheapest_packing(node_types: dict, cpus: float, gpus: float, trials: int) -> float:
    costs = []
    for node in node_types.values():
        resources = node.get("resources", {})
        per_node = min(resources.get("CPU", 0) // cpus, resources.get("GPU", 0) // gpus)
        if per_node >= 1:
            costs.append(math.ceil(trials / per_node) * INSTANCES[node["node_config"]["InstanceType"]][0])
    return min(costs)


def test_fractional_gpu_trials_do_not_buy_a_large_node_where_small_ones_are_cheaper(cluster):
    workers = {name: node for name, node in cluster["available_node_types"].items()
               if name != cluster["head_node_type"]}
    for cpus, gpus, trials in TRIAL_SHAPES:
        assert autoscaler_cost(workers, cpus, gpus, trials) <= \
               cheapest_packing(workers, cpus, gpus, trials) + 1e-9, (cpus, gpus, trials)
    # The check can fail: next to a 4-GPU type, Ray's scorer buys the large node.
    with_large = {**workers, "gpu_x4": {"min_workers": 0, "max_workers": 2, "resources": {"CPU": 48, "GPU": 4},
                                        "node_config": {"InstanceType": "g5.12xlarge"}}}
    assert autoscaler_cost(with_large, 1, 0.25, 16) > cheapest_packing(with_large, 1, 0.25, 16)


# -- the commands, run the way Ray runs them ------------------------------------------

def test_no_command_hides_a_failure_or_matches_its_own_shell(cluster):
    for command in all_commands(cluster):
        assert not re.search(r"\|\|\s*(true|:)\s*$", command), command
        assert not self_matching(command), command
    assert self_matching('pkill -f "mlflow server" || true') == ["mlflow server"]  # the check can fail


def test_a_failed_or_missing_mount_fails_the_node_set_up(cluster, tmp_path):
    bin_dir = tmp_path / "bin"
    fake(bin_dir, "sudo", '#!/bin/sh\nexec "$@"\n')
    fake(bin_dir, "mountpoint", "#!/bin/sh\nexit 1\n")  # /shared is not mounted
    fake(bin_dir, "mount", "#!/bin/sh\necho 'mount.nfs4: Failed to resolve server' >&2\nexit 32\n")
    mount_commands = [c for c in cluster["setup_commands"] if "mountpoint" in c]
    assert len(mount_commands) == 2
    for command in mount_commands:
        assert run_like_ray(command, home=tmp_path, path=bin_dir).returncode != 0, command


@pytest.mark.parametrize(("output", "ok"), [("580.95.05", True), ("570.133.20", False), ("", False)])
def test_gpu_workers_refuse_a_driver_too_old_for_torch(cluster, tmp_path, output, ok):
    bin_dir = tmp_path / "bin"
    fake(bin_dir, "nvidia-smi", f"#!/bin/sh\n{'echo ' + output if output else 'exit 9'}\n")
    (driver_check,) = [c for c in cluster["worker_setup_commands"] if "nvidia-smi" in c]
    result = run_like_ray(driver_check, home=tmp_path, path=bin_dir)
    assert (result.returncode == 0) == ok
    if not ok:
        assert "needs 580 or newer" in result.stderr


FAKE_MLFLOW = f"""
#!{sys.executable}
# Stands in for `mlflow server`: answers /health on --port until it is stopped.
import http.server, sys
port = int(sys.argv[sys.argv.index("--port") + 1])
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"OK")
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}/stat").exists() else "X"
    return state != "Z"


def test_the_heads_mlflow_commands_restart_one_server_through_rays_wrapper(cluster, tmp_path):
    """What two `ray up`s run on the head: every command exits 0, one server is left."""
    port, bin_dir = free_port(), tmp_path / "bin"
    fake(bin_dir, "mlflow", FAKE_MLFLOW)
    commands = [c.replace("5000", str(port)).replace("/shared", str(tmp_path / "shared"))
                for c in cluster["head_start_ray_commands"] if "mlflow" in c]
    assert len(commands) == 4  # stop the last one, make its folder, start, wait until it answers
    pids = []
    try:
        for _ in range(2):
            for command in commands:
                result = run_like_ray(command, home=tmp_path, path=bin_dir)
                assert result.returncode == 0, (command, result.stderr)
            pids.append(int((tmp_path / "mlflow.pid").read_text()))
            assert requests.get(f"http://127.0.0.1:{port}/health", timeout=5).ok
        first, second = pids
        assert first != second and not _alive(first) and _alive(second)
    finally:
        for pid in pids:
            if _alive(pid):
                os.kill(pid, 15)


def test_a_name_matching_pkill_kills_rays_wrapper_shell(tmp_path):
    """Why cluster.yaml stops MLflow by pid: the original command, in a private PID namespace
    (so that it can match nothing outside), kills the shell Ray runs it in (exit 143)."""
    bin_dir = tmp_path / "bin"
    fake(bin_dir, "mlflow", FAKE_MLFLOW)
    (tmp_path / ".bashrc").write_text(f'export PATH="{bin_dir}:$PATH"\n')
    wrapped = " ".join(_with_interactive('pkill -f "mlflow server" || true'))
    script = (f"mlflow server --port {free_port()} & sleep 1; bash -c {shlex.quote(wrapped)}; "
              "echo status=$?; kill %1 2>/dev/null; exit 0")
    try:
        result = subprocess.run(
            ["unshare", "--pid", "--fork", "--mount-proc", "--map-root-user", "bash", "-c", script],
            env={"HOME": str(tmp_path), "PATH": f"{bin_dir}:{os.environ['PATH']}"}, cwd=tmp_path,
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        pytest.skip("unshare is not installed")
    if "status=" not in result.stdout:
        pytest.skip(f"no private PID namespace here: {result.stderr.strip()[:200]}")
    assert "status=143" in result.stdout  # the namespace's processes end with its first one
