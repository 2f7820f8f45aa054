"""The sweep's command starting Ray's local runtime on a thread while it imports the sweep.

The runtime a command starts early must be used by the sweep or ended with the
command, and the thread that starts it must never import a module the main
thread imports meanwhile (two threads importing one module can meet on
Python's import locks). Each check runs in fresh Python processes: the suite's
shared Ray runtime is not these tests' to use or end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from search.launch import starts_local_runtime

ROOT = Path(__file__).resolve().parent.parent
SWEEP = ROOT / "search" / "lerac_sweep.py"


@pytest.mark.parametrize(("argv", "early"), [
    ([], True),
    (["--datasets", "digits", "--regimes", "lerac", "conventional", "--trials", "4"], True),
    (["--set", "lr=0.1", "--tracking-uri", "sqlite:///x.db"], True),
    (["--address", "auto"], False),
    (["--address=auto"], False),
    (["--addr", "auto"], False),  # argparse takes an unambiguous prefix of a flag
    (["--config", "sweep.yaml"], False),
    (["--resume", "--storage-path", "r"], False),
    (["--res"], False),
    (["-h"], False),
    (["--help"], False),
    (["--version"], False),
    (["--datasets", "digits", "--", "--address"], True),  # after "--" nothing is a flag
])
def test_only_a_command_that_cannot_name_a_cluster_starts_ray_early(argv, early):
    assert starts_local_runtime(argv) is early


def _processes_of_session(pid: int) -> list[str]:
    """Command lines of live processes of the Ray session started by process `pid` (Ray names a
    session's folder after the driver's pid and passes it to every process it starts)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if f"_{pid}/" in command and state != "Z":
            found.append(command)
    return found


@pytest.mark.slow
def test_bad_input_is_refused_in_one_line_and_the_runtime_started_early_is_ended(tmp_path):
    command = [sys.executable, str(SWEEP), "--epochs", "0", "--storage-path", str(tmp_path / "ray"),
               "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    done = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = done.communicate(timeout=300)
    assert done.returncode == 2
    assert err.startswith("error: ") and "epochs" in err and err.count("\n") == 1, err  # Ray's lines held back
    assert out == ""
    temp = Path(os.environ.get("RAY_TMPDIR", "/tmp")) / "ray"
    assert list(temp.glob(f"session_*_{done.pid}")), "the command did not start Ray early"
    assert _processes_of_session(done.pid) == []
    assert not (tmp_path / "ray").exists() and not (tmp_path / "mlflow.db").exists()


HOLDING = textwrap.dedent("""
    import sys
    from search.local_runtime import EarlyStart
    from search.tune_environment import set_sweep_environment
    set_sweep_environment()
    early = EarlyStart.start()
    early._up.wait()  # the runtime is up and Ray has logged its start
    print("-- up --", file=sys.stderr, flush=True)
    early.wait()  # the sweep has accepted its input and uses the runtime
    print("-- used --", file=sys.stderr, flush=True)
    early.stop()
""")


@pytest.mark.slow
def test_rays_lines_from_the_early_start_wait_until_the_sweep_uses_the_runtime():
    done = subprocess.run([sys.executable, "-c", HOLDING], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stderr.splitlines()
    started = [i for i, line in enumerate(lines) if "Started a local Ray instance" in line]
    assert len(started) == 1, done.stderr
    assert lines.index("-- up --") < started[0] < lines.index("-- used --")


# The modules each thread imports while they run together, each measured in a fresh process
# from the point where that thread begins: the starter's (`ray.init`, from `EarlyStart.start`),
# the main thread's (up to `early.wait()` in search.sweep, on the default sweep's path) and
# the store thread's (`search.tracking_store.PreparedStore`, started just before that wait).
IMPORTS = textwrap.dedent("""
    import json, os, sys
    import search.launch
    from search.local_runtime import RAY_START_IMPORTS
    if sys.argv[1] == "pre-imported":
        import importlib
        for module in RAY_START_IMPORTS:
            importlib.import_module(module)
    else:
        import ray
    if sys.argv[2] == "store":
        import search.lerac_sweep, search.monitor, search.recording, search.tracking_store
    before = set(sys.modules)
    if sys.argv[2] == "starter":
        from search.local_runtime import start_local_runtime, stop_local_runtime
        start_local_runtime()
        stop_local_runtime()
    elif sys.argv[2] == "store":
        from mlflow.tracking import MlflowClient
        MlflowClient(sys.argv[3]).search_experiments(max_results=1)
    else:
        import search.local_runtime as local_runtime
        import search.tracking_store as tracking_store

        class Recorder:
            @classmethod
            def start(cls):
                return cls()

            def wait(self):
                print(json.dumps(sorted(set(sys.modules) - before)), flush=True)
                os._exit(0)

        local_runtime.EarlyStart = search.launch.EarlyStart = Recorder
        tracking_store.PreparedStore.start = classmethod(lambda cls, uri: None)  # measured apart
        search.launch.main(sys.argv[3:])
    print(json.dumps(sorted(set(sys.modules) - before)))
""")


@pytest.mark.slow
def test_the_thread_starting_ray_imports_no_module_the_other_threads_import_meanwhile(tmp_path):
    def imported(*args: str) -> set[str]:
        done = subprocess.run([sys.executable, "-c", IMPORTS, *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return set(json.loads(done.stdout.strip().splitlines()[-1]))

    sweep = ["--storage-path", str(tmp_path / "ray"), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    starter = imported("pre-imported", "starter")
    driver = imported("pre-imported", "driver", *sweep)
    store = imported("pre-imported", "store", f"sqlite:///{tmp_path / 'store.db'}")
    assert starter and "ray.tune" in driver and "alembic" in store
    assert starter & driver == set()
    assert starter & store == set()
    assert imported("ray-only", "starter") & imported("ray-only", "driver", *sweep)  # control


DRIVER = textwrap.dedent("""
    import json, sys
    import search.launch
    code = search.launch.main(sys.argv[1:])
    print(json.dumps({"code": code, "torch": sorted(m for m in sys.modules if m.split(".")[0] == "torch")}))
""")


@pytest.mark.slow
def test_the_sweeps_driver_never_imports_torch(tmp_path):
    """Torch is the trials' alone: the driver validates, searches, records and gives its verdicts
    without it (its import is about 1.5 s of one core on the way to the first trial)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep = ["--datasets", "digits", "--regimes", "conventional", "lerac", "--trials", "2", "--epochs", "2",
             "--grace-period", "2", "--confirm-seeds", "2", "--storage-path", str(tmp_path / "ray"),
             "--tracking-uri", uri, "--experiment", "no-torch"]
    done = subprocess.run([sys.executable, "-c", DRIVER, *sweep], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    ended = json.loads(done.stdout.strip().splitlines()[-1])
    assert ended["code"] in (0, 1), done.stderr[-2000:]  # a verdict for the dataset, winner or not
    assert ended["torch"] == []
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("no-torch").experiment_id
    trained = client.search_runs([experiment], "tags.role = 'trial'", max_results=100)
    assert len(trained) == 2 * (2 + 2)  # the trials trained, with torch, in their own processes


EARLY = textwrap.dedent("""
    import json, time, ray
    from ray._private import worker
    from ray._raylet import AuthenticationMode, get_authentication_mode
    from search.local_runtime import EarlyStart

    early = EarlyStart.start()
    early.wait()
    token = get_authentication_mode() == AuthenticationMode.TOKEN
    handles = [info.process for infos in worker._global_node.all_processes.values() for info in infos]
    time.sleep(1.0)  # the starting thread is parked by now; a finished one would take Ray with it
    alive = [process.poll() is None for process in handles]
    answer = ray.get(ray.put(41)) + 1
    early.stop()
    early.stop()
    print(json.dumps({"alive": alive, "answer": answer, "ended": [p.poll() is not None for p in handles],
                      "uninitialized": not ray.is_initialized(), "token": token}))
""")


@pytest.mark.slow
@pytest.mark.parametrize("users_auth_mode", [None, "disabled"])
def test_a_runtime_started_on_a_thread_serves_the_main_thread_until_stopped(users_auth_mode):
    """Ray binds the processes it starts to the starting thread (Linux's parent-death signal is
    per thread): the runtime must outlive the start, and end on `stop`. It keeps Ray's token
    authentication, without Ray's warning about it, unless the user chose a mode."""
    env = {key: value for key, value in os.environ.items() if key != "RAY_AUTH_MODE"}
    if users_auth_mode is not None:
        env["RAY_AUTH_MODE"] = users_auth_mode
    done = subprocess.run([sys.executable, "-c", EARLY], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(report["alive"]) >= 3 and all(report["alive"]), report
    assert report["answer"] == 42
    assert all(report["ended"]) and report["uninitialized"]
    assert "SIGTERM handler" not in done.stderr
    assert report["token"] == (users_auth_mode is None)
    assert "Token authentication is enabled" not in done.stderr
