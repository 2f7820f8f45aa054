"""Ending a runtime the sweep started: every process it started is gone, and Ray is left clean.

Runs in a fresh Python process of its own: the suite's shared Ray runtime is not this test's to end.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent("""
    import json, ray
    from ray._private import worker
    from search.local_runtime import stop_local_runtime

    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    handles = [info.process for infos in worker._global_node.all_processes.values() for info in infos]
    stop_local_runtime()
    ended = [process.poll() is not None for process in handles]
    uninitialized = not ray.is_initialized()
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    again = ray.get(ray.put(41)) + 1
    ray.shutdown()
    print(json.dumps({"started": len(handles), "ended": ended, "uninitialized": uninitialized,
                      "again": again}))
""")


def test_every_process_the_runtime_started_has_ended_and_ray_can_start_again():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["started"] >= 3  # the GCS, the raylet, the reaper at least
    assert all(report["ended"]), report
    assert report["uninitialized"]
    assert report["again"] == 42
    assert "Traceback" not in done.stderr


JOINED = textwrap.dedent("""
    import json, subprocess, sys, ray
    from ray._private import worker
    import search.local_runtime as local_runtime

    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    address = ray.get_runtime_context().gcs_address
    joined = subprocess.run([sys.executable, "-c", '''
    import json, sys, ray
    from ray._private import worker
    import search.local_runtime as local_runtime
    ray.init(address=sys.argv[1], log_to_driver=False)
    spilled = []
    worker._global_node.destroy_external_storage = lambda: spilled.append(True)
    local_runtime.stop_local_runtime()
    print(json.dumps({"spilled_destroyed": bool(spilled), "uninitialized": not ray.is_initialized()}))
    '''.replace("\\n    ", "\\n"), address], capture_output=True, text=True, timeout=300)
    handles = [info.process for infos in worker._global_node.all_processes.values() for info in infos]
    alive = all(process.poll() is None for process in handles)
    local_runtime.stop_local_runtime()
    print(json.dumps({"joined": json.loads(joined.stdout.strip().splitlines()[-1]), "alive": alive,
                      "stderr": joined.stderr[-1000:]}))
""")


def test_a_driver_that_joined_a_cluster_only_disconnects():
    """With `--address` the runtime is not this driver's: stopping leaves its processes and its
    spilled objects alone (Ray's own shutdown destroys spilled objects only for a head node)."""
    done = subprocess.run([sys.executable, "-c", JOINED], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["joined"] == {"spilled_destroyed": False, "uninitialized": True}, report["stderr"]
    assert report["alive"]  # the cluster's processes outlived the joined driver's stop
