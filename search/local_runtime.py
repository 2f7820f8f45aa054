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

Starting: `start_local_runtime` is the one way a sweep starts its own runtime,
and `EarlyStart` runs it on a thread while the driver is still importing the
sweep (`search.launch`).
"""

from __future__ import annotations

import importlib
import logging
import subprocess
import threading
import time
from typing import Any

GRACE_S = 1.0  # what ray.shutdown() gives each process after SIGTERM, here shared by a stage

# What `ray.init()` imports on its way (usage stats, the dashboard's dependency check, the
# autoscaler's logger, pynvml's library lookup): imported before `EarlyStart`'s thread
# begins, so that while it starts Ray it imports only Ray's own internals, none of which
# the driver imports meanwhile. Two threads importing one module at once can meet on
# Python's import locks; tests/test_launch.py checks that the two sets stay apart.
RAY_START_IMPORTS = (
    "ray._common.usage.usage_lib",
    "ray.dashboard.optional_deps",
    "ray.autoscaler._private.cli_logger",
    "ctypes.util",
    "optparse",
)
STARTING_THREAD = "start-ray-runtime"
# Where and how Ray says that it turned on token authentication for a new local runtime.
TOKEN_NOTICE_LOGGER = "ray._private.authentication.authentication_token_setup"
TOKEN_NOTICE = "Token authentication is enabled for this Ray cluster"


def import_ray_start_modules() -> None:
    """Import `RAY_START_IMPORTS` now, before a thread that imports beside Ray's start begins
    (prometheus_client's `timeit`, for one, is also what MLflow's store thread imports)."""
    for module in RAY_START_IMPORTS:
        importlib.import_module(module)


def start_local_runtime() -> None:
    """Start a fresh Ray runtime on this machine for this driver, without the dashboard.

    Ray turns on its token authentication for a new local runtime (kept) and warns
    that it did, with how to turn it off, at the top of every sweep: a notice that
    asks nothing of the sweep's user, so it is left out.
    """
    import ray

    notices = logging.getLogger(TOKEN_NOTICE_LOGGER)
    notices.addFilter(_not_the_token_notice)
    try:
        # "local" always starts a fresh runtime; None would join a running `ray start` cluster.
        ray.init(address="local", include_dashboard=False, log_to_driver=False)
    finally:
        notices.removeFilter(_not_the_token_notice)


def _not_the_token_notice(record: logging.LogRecord) -> bool:
    """Log filter: Ray's notice that it turned on token authentication by default."""
    return not record.getMessage().startswith(TOKEN_NOTICE)


class _HeldBack(logging.Filter):
    """A handler filter that holds back the records the starting thread logs, but for Ray's
    warning that a thread other than the main one sets no SIGTERM handler, which it drops:
    the sweep sets its own (`search.monitor.sigterm_as_ctrl_c`)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.threadName != STARTING_THREAD:
            return True
        if "SIGTERM handler" not in record.getMessage():
            self.records.append(record)
        return False


class EarlyStart:
    """A local runtime started on a thread while the main thread goes on importing.

    The sweep's driver spends about 3 s of one core importing Ray Tune, MLflow
    and SciPy and checking its input; Ray's start-up takes 2.5-4 s, much
    of it waiting on processes that run on the other core. One after the other
    they left a core idle for seconds before the first trial.

    The thread lives until `stop`: Ray binds each process it starts to the
    thread that started it (Linux's parent-death signal is per thread), so the
    runtime would be killed the moment a finished thread exited.

    Ray's own lines from the start ("Started a local Ray instance", its
    notices) are held back until the sweep uses the runtime (`wait`), after it
    has accepted its input: a command refused meanwhile prints its one error
    line alone.
    """

    def __init__(self) -> None:
        self._error: BaseException | None = None
        self._up = threading.Event()
        self._release = threading.Event()
        self._stopped = False
        self._held: list[tuple[logging.Handler, _HeldBack]] = []
        # A daemon: should the driver exit without `stop`, Ray's processes end with it.
        self._thread = threading.Thread(target=self._start, name=STARTING_THREAD, daemon=True)

    @classmethod
    def start(cls) -> EarlyStart:
        """Begin starting the runtime (the environment must already be set, see
        `search.tune_environment`)."""
        import_ray_start_modules()
        early = cls()
        for handler in logging.getLogger("ray").handlers:  # Ray's own stderr handler
            held = _HeldBack()
            handler.addFilter(held)
            early._held.append((handler, held))
        early._thread.start()
        return early

    def _release_lines(self, *, show: bool) -> None:
        """Stop holding back Ray's lines; print those held when `show`."""
        for handler, held in self._held:
            handler.removeFilter(held)
            for record in held.records if show else ():
                handler.handle(record)
        self._held = []

    def _start(self) -> None:
        try:
            start_local_runtime()
        except BaseException as error:  # noqa: BLE001 - raised again by `wait`, on the main thread
            self._error = error
        self._up.set()
        self._release.wait()

    def wait(self) -> None:
        """Return once the runtime is up, with Ray's lines from its start printed; raise what
        starting it raised."""
        self._up.wait()
        self._release_lines(show=True)
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        """End the runtime (once its start has finished), then the thread; again, nothing."""
        if self._stopped:
            return
        self._stopped = True
        self._up.wait()
        self._release_lines(show=False)  # unused: the command was refused, its error line stands alone
        try:
            stop_local_runtime()  # also after a failed start: Ray may have started some processes
        finally:
            self._release.set()
            self._thread.join()


def _started_processes() -> tuple[Any, dict[str, list[subprocess.Popen]]] | None:
    """The node ray.init() started in this process and its processes by kind; None if unknown, or
    if this driver joined a cluster (`--address`): then only disconnecting is this process's to do,
    and the cluster's spilled objects are not (Ray destroys them only for a head node)."""
    from ray._private import worker

    node = getattr(worker, "_global_node", None)
    groups = getattr(node, "all_processes", None)
    if node is None or not isinstance(groups, dict) or not hasattr(node, "destroy_external_storage") \
            or not getattr(node, "is_head", lambda: False)():
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
