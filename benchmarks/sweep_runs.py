"""Running sweeps for benchmarks and reading back their trials (shared by the sweep benchmarks)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def start_ray(cpus: int) -> None:
    """A local Ray with `cpus` CPUs that run_sweep reuses (so its start-up is never timed)."""
    import ray

    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False)


@contextlib.contextmanager
def output_to(log: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (Tune's live table, Ray's logs) to `log`.

    File-descriptor level, because Ray's loggers hold the original streams.
    """
    saved = [os.dup(1), os.dup(2)]
    with log.open("a") as sink:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


@dataclass(frozen=True)
class TrialRun:
    """A trial as its MLflow child run records it (times in seconds since the epoch)."""

    run_id: str
    start: float
    end: float
    train_seconds: float
    end_state: str


def trial_runs(tracking_uri: str, parent_run_id: str) -> list[TrialRun]:
    """The search trials of one dataset's sweep (not its confirmation runs), in start order."""
    from mlflow.tracking import MlflowClient

    from search import schema

    client = MlflowClient(tracking_uri)
    experiment = client.get_run(parent_run_id).info.experiment_id
    runs = client.search_runs(
        [experiment],
        filter_string=schema.child_filter(parent_run_id, **{schema.ROLE: schema.TRIAL,
                                                            schema.STAGE: schema.SEARCH}),
        max_results=10_000,
    )
    return sorted(
        (
            TrialRun(
                run_id=run.info.run_id,
                start=run.info.start_time / 1000,
                end=run.info.end_time / 1000,
                train_seconds=run.data.metrics.get("train_seconds", 0.0),
                end_state=run.data.tags.get(schema.END_STATE, schema.UNFINISHED),
            )
            for run in runs
        ),
        key=lambda trial: trial.start,
    )
