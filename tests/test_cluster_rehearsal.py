"""The cluster path rehearsed on one machine, the way the README runs it on AWS.

Ray's fake autoscaling provider plays the cloud: the head and the worker node
types, with their resources, are read from cluster.yaml itself (a head of 0
CPUs, GPU workers that scale from zero; the GPUs are declared, CUDA is absent,
so the sweep opts in to the CPU with `--set device=cpu`). Token authentication
is on, as cluster.yaml sets it. The README's sweep is submitted through the
Jobs API with `ray job submit` against an MLflow server whose store lies under
a folder standing in for /shared. Then: GPU workers started from zero and ran
every trial, MLflow holds every run, optuna-dashboard opens the sweep's
studies, the records read back from a copy after the "cluster" is gone (as the
README pulls them), and the idle workers go away.

`ray up` itself cannot run with the fake provider (its defaults file is not in
the wheel), so the head starts as `ray up` starts it on AWS: `ray start --head
--autoscaling-config=...`. Every process this module starts is in a process
group of its own and ended by that group; `ray stop` is never called.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import requests
import yaml
from local_servers import answers, free_port
from mlflow.tracking import MlflowClient
from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID

from search import schema

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
EXPERIMENT = "rehearsal"
TRIALS, CONFIRM_SEEDS, REGIMES = 1, 2, ("conventional", "lerac")
RUNS = len(REGIMES) * (TRIALS + CONFIRM_SEEDS)  # search trials and confirmation runs


def fake_cluster_config(cluster: dict, *, gcs_port: int, idle_minutes: float) -> dict:
    """cluster.yaml's node types and head resources, for Ray's fake multi-node provider.

    The autoscaler wants every top-level field and the head type under the
    fake provider's own name.
    """
    types = dict(cluster["available_node_types"])
    head = types.pop(cluster["head_node_type"])
    node_types = {name: {"resources": node["resources"], "min_workers": node.get("min_workers", 0),
                         "max_workers": node["max_workers"], "node_config": {}}
                  for name, node in types.items()}
    node_types["ray.head.default"] = {"resources": head["resources"], "max_workers": 0, "node_config": {}}
    return {
        "cluster_name": "rehearsal", "max_workers": cluster["max_workers"],
        "upscaling_speed": cluster["upscaling_speed"], "idle_timeout_minutes": idle_minutes,
        "provider": {"type": "fake_multinode", "gcs_address": f"127.0.0.1:{gcs_port}",
                     "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True},
        "auth": {}, "docker": {}, "available_node_types": node_types, "head_node_type": "ray.head.default",
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
        "rsync_exclude": [], "rsync_filter": [], "initialization_commands": [], "setup_commands": [],
        "head_setup_commands": [], "worker_setup_commands": [], "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


def start_group(command: list[str], *, env: dict, log: Path) -> subprocess.Popen:
    """A process in a process group of its own, so it and its children end together."""
    with open(log, "ab") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def end_groups(*pgids: int, grace: float = 5) -> None:
    """SIGTERM to each group, then SIGKILL to whatever is left of them."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = []
        for pgid in pgids:
            try:
                os.killpg(pgid, sig)
                alive.append(pgid)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while alive and time.monotonic() < deadline:
            time.sleep(0.5)
            alive = [pgid for pgid in alive if _group_alive(pgid)]
        pgids = tuple(alive)
        if not pgids:
            return


def _group_alive(pgid: int) -> bool:
    try:  # the group's leader is our child: reap it if it ended, or it counts as alive
        os.waitpid(pgid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_until_up(url: str, seconds: float = 120, token: Path | None = None) -> None:
    headers = {"Authorization": f"Bearer {token.read_text()}"} if token else {}
    if not answers(url, seconds=seconds, headers=headers):
        pytest.fail(f"{url} did not come up")


def mlflow_server(store: Path, port: int, env: dict, log: Path) -> subprocess.Popen:
    """The head's MLflow command from cluster.yaml, with /shared standing in as `store`."""
    return start_group([str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
                        "--workers", "1", "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
                        "--artifacts-destination", str(store / "artifacts")], env=env, log=log)


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    """Start the fake cluster and MLflow, submit the README's sweep, and hand over the records."""
    tmp = tmp_path_factory.mktemp("rehearsal")
    shared = tmp / "shared"
    (shared / "mlflow").mkdir(parents=True)
    ray_tmp = tempfile.mkdtemp(prefix="rh", dir="/tmp")  # Ray's socket paths must stay short
    token = tmp / "auth_token"
    token.write_text(uuid.uuid4().hex + uuid.uuid4().hex)
    gcs, dashboard, mlflow_port = free_port(), free_port(), free_port()
    # A node's environment: the project installed (this checkout first on the path, as
    # `ray up` syncs and installs it), its Python first on PATH, Ray's token on.
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RAY_")},
           "PATH": f"{BIN}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT), "HOME": str(tmp),
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), "RAY_USAGE_STATS_ENABLED": "0"}
    config = tmp / "autoscaler.json"
    cluster = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    config.write_text(json.dumps(fake_cluster_config(cluster, gcs_port=gcs, idle_minutes=0.1)))
    head_cpus = cluster["available_node_types"][cluster["head_node_type"]]["resources"]["CPU"]

    groups = []
    try:
        server = mlflow_server(shared / "mlflow", mlflow_port, env, tmp / "mlflow.log")
        groups.append(server.pid)
        head = start_group(
            [str(BIN / "ray"), "start", "--head", f"--port={gcs}", f"--num-cpus={head_cpus}",
             f"--autoscaling-config={config}", f"--temp-dir={ray_tmp}", "--dashboard-host=127.0.0.1",
             f"--dashboard-port={dashboard}", f"--ray-client-server-port={free_port()}",
             f"--dashboard-agent-listen-port={free_port()}", "--disable-usage-stats"],
            env={**env, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}, log=tmp / "head.log")
        groups.append(head.pid)
        assert head.wait(timeout=120) == 0, (tmp / "head.log").read_text()[-2000:]
        wait_until_up(f"http://127.0.0.1:{mlflow_port}/health")  # started beside the head
        address = f"http://127.0.0.1:{dashboard}"
        wait_until_up(f"{address}/api/version", token=token)

        sweep = ["lerac-sweep", "--address", "auto", "--datasets", "digits",
                 "--regimes", *REGIMES, "--trials", str(TRIALS), "--epochs", "2", "--grace-period", "1",
                 "--confirm-seeds", str(CONFIRM_SEEDS), "--gpus-per-trial", "0.5", "--max-concurrent", "4",
                 "--wait-for-gpus", "--data-dir", str(shared / "data"),
                 "--storage-path", str(shared / "ray_results"),
                 "--tracking-uri", f"http://127.0.0.1:{mlflow_port}", "--experiment", EXPERIMENT,
                 "--set", "device=cpu"]
        job = subprocess.run(
            [str(BIN / "ray"), "job", "submit", "--address", address, "--submission-id", f"rehearsal-{uuid.uuid4().hex[:8]}", "--", *sweep],
            env=env, capture_output=True, text=True, timeout=420)
        yield {"job": job, "shared": shared, "tmp": tmp, "env": env,
               "gcs": gcs, "mlflow": f"http://127.0.0.1:{mlflow_port}", "server": server}
    finally:
        end_groups(*groups)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_the_readme_sweep_runs_as_a_job_and_ends_with_a_verdict(rehearsal):
    job = rehearsal["job"]
    assert job.returncode == 0, job.stdout[-4000:] + job.stderr[-2000:]
    assert "Verdicts per dataset" in job.stdout
    assert any(line.strip().startswith("Browse in MLflow:") and rehearsal['mlflow'] in line
               for line in job.stdout.splitlines())  # a server: open its URL, no `mlflow ui`


def trial_results(shared: Path) -> dict[str, list[dict]]:
    return {str(path.parent): [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            for path in (shared / "ray_results").rglob("result.json")}


def test_gpu_workers_scaled_up_from_zero_and_ran_every_trial(rehearsal):
    results = trial_results(rehearsal["shared"])
    assert len(results) == RUNS
    nodes = {result["node_id"] for epochs in results.values() for result in epochs}
    assert FAKE_HEAD_NODE_ID not in nodes  # the head (0 CPUs) runs no trial
    assert nodes and all(node.startswith("fffff") for node in nodes)  # nodes the autoscaler started
    assert {result["device"] for epochs in results.values() for result in epochs} == {"cpu"}


def test_mlflow_holds_every_run_with_where_it_ran(rehearsal):
    client = MlflowClient(rehearsal["mlflow"])
    experiment = client.get_experiment_by_name(EXPERIMENT)
    trials = client.search_runs([experiment.experiment_id], filter_string=f"tags.{schema.ROLE} = '{schema.TRIAL}'")
    assert len(trials) == RUNS
    for run in trials:
        tags = run.data.tags
        assert tags[schema.END_STATE] in (schema.COMPLETED, schema.STOPPED_EARLY)  # none errored
        assert tags[schema.NODE_ID] != FAKE_HEAD_NODE_ID
        assert tags[schema.DEVICE] == "cpu" and tags[schema.RESOURCES] == "CPU=1, GPU=0.5"
    (parent,) = client.search_runs([experiment.experiment_id], filter_string=f"tags.{schema.ROLE} = '{schema.PARENT}'")
    assert parent.data.tags[schema.VERDICT] in (schema.WINNER, schema.TIE)


def test_optuna_dashboard_opens_the_sweeps_studies(rehearsal):
    (journal,) = (rehearsal["shared"] / "ray_results").rglob("optuna-journal.log")
    sweep_id = journal.parent.name
    port = free_port()
    dashboard = start_group([str(BIN / "optuna-dashboard"), str(journal), "--host", "127.0.0.1",
                             "--port", str(port)], env=rehearsal["env"], log=rehearsal["tmp"] / "optuna.log")
    try:
        wait_until_up(f"http://127.0.0.1:{port}/api/studies")
        studies = requests.get(f"http://127.0.0.1:{port}/api/studies", timeout=10).json()["study_summaries"]
        names = {study["study_name"]: study["study_id"] for study in studies}
        assert set(names) == {f"{sweep_id}/digits/{regime}" for regime in REGIMES}
        study = requests.get(f"http://127.0.0.1:{port}/api/studies/{names[f'{sweep_id}/digits/lerac']}",
                             timeout=10).json()
        assert len(study["trials"]) == TRIALS
    finally:
        end_groups(dashboard.pid)


def test_records_read_back_from_a_pulled_copy_after_the_cluster_is_gone(rehearsal, tmp_path):
    """`ray down` ends the head and its MLflow server; the copy the README pulls keeps every run
    and every artifact (a local `mlflow server --artifacts-destination` serves them from there)."""
    end_groups(rehearsal["server"].pid)
    pulled = tmp_path / "cluster-records" / "mlflow"
    shutil.copytree(rehearsal["shared"] / "mlflow", pulled)
    client = MlflowClient(f"sqlite:///{pulled / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == RUNS + 1
    (parent,) = [run for run in runs if run.data.tags[schema.ROLE] == schema.PARENT]
    served = parent.info.artifact_uri.removeprefix("mlflow-artifacts:/")
    best = pulled / "artifacts" / served / schema.BEST_CONFIG
    assert re.search(r"regime: (conventional|lerac)", best.read_text())


def test_trials_no_node_type_can_host_are_refused_with_one_line(rehearsal, tmp_path):
    """The node types are read from the running cluster's autoscaler: 2 GPUs per trial fit none."""
    refused = subprocess.run(
        ["lerac-sweep", "--address", "auto", "--datasets", "digits", "--gpus-per-trial", "2",
         "--wait-for-gpus", "--storage-path", str(tmp_path / "ray"),
         "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
        env={**rehearsal["env"], "RAY_ADDRESS": f"127.0.0.1:{rehearsal['gcs']}"},
        capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2, refused.stderr[-2000:]
    (line,) = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert "2 GPU but no node of this cluster can ever host one" in line and "gpu_a10g (4 CPU, 1 GPU)" in line
    assert not (tmp_path / "ray").exists() and not (tmp_path / "mlflow.db").exists()


def test_idle_gpu_workers_go_away(rehearsal):
    """The workers that ran the trials (above) leave once idle: the cluster scales back to zero."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        status = subprocess.run([str(BIN / "ray"), "status", f"--address=127.0.0.1:{rehearsal['gcs']}"],
                                env=rehearsal["env"], capture_output=True, text=True, timeout=60).stdout
        active = status.split("Active:")[1].split("Pending:")[0] if "Active:" in status else status
        if "gpu_a10g" not in active:
            return
        time.sleep(2)
    pytest.fail(f"GPU workers still up:\n{status}")
