"""Ending the Ray runtime a sweep started on this machine without waiting on its processes in turn.

`ray.shutdown()` stops the processes `ray.init()` started one after another,
giving each up to a second to exit after SIGTERM, and the autoscaler's
monitor uses all of it (it answers SIGTERM by posting "the autoscaler failed"
to a GCS that is going away): about 1.4 s at the end of every default sweep
here, with every slot idle. Here the raylet goes first (so it ends its
workers while the GCS still answers, as Ray orders it), then every other
process at once, with SIGKILL for the monitor (a local runtime has no
autoscaler to clean up, and Ray kills it after the grace anyway), then the
reaper. Only the processes this driver's `ray.init()` started are signalled,
through the handles Ray keeps, never another runtime on the machine. The
handles are Ray's private state; where a Ray version lacks them,
`ray.shutdown()` does the whole job.
"""

from __future__ import annotations

import subprocess
import time
from typing import Any

GRACE_S = 1.0  # what ray.shutdown() gives each process after SIGTERM, here shared by a stage


def _started_processes() -> tuple[Any, dict[str, list[subprocess.Popen]]] | None:
    """The node ray.init() started in this process and its processes by kind; None if unknown."""
    from ray._private import worker

    node = getattr(worker, "_global_node", None)
    groups = getattr(node, "all_processes", None)
    if node is None or not isinstance(groups, dict) or not hasattr(node, "destroy_external_storage"):
        return None
    handles = {kind: [getattr(info, "process", None) for info in infos] for kind, infos in groups.items()}
    if any(not isinstance(process, subprocess.Popen) for group in handles.values() for process in group):
        return None
    return node, handles


def stop_local_runtime() -> None:
    """Disconnect from the runtime this process started and end its processes in three stages."""
    import ray
    from ray._private import ray_constants, worker

    started = _started_processes()
    if started is None:
        ray.shutdown()
        return
    node, handles = started
    first, last = ray_constants.PROCESS_TYPE_RAYLET, ray_constants.PROCESS_TYPE_REAPER
    monitor = ray_constants.PROCESS_TYPE_MONITOR
    node.destroy_external_storage()  # what ray.shutdown() does first for a head node
    worker._global_node = None  # ray.shutdown() now only disconnects this driver
    ray.shutdown()
    _end_together(handles.get(first, []))
    for process in handles.get(monitor, []):
        process.kill()
    _end_together([process for kind, group in handles.items() if kind not in (first, last) for process in group])
    _end_together(handles.get(last, []))  # should this process die meanwhile, the reaper ends the rest


def _end_together(processes: list[subprocess.Popen]) -> None:
    """SIGTERM to every live process, then SIGKILL to any still alive after the shared grace."""
    live = [process for process in processes if process.poll() is None]
    for process in live:
        process.terminate()
    deadline = time.monotonic() + GRACE_S
    for process in live:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
    for process in live:
        try:
            process.wait(timeout=GRACE_S)
        except subprocess.TimeoutExpired:  # stuck in the kernel: Ray abandons such a process too
            pass
