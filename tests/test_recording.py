"""The recorder's store calls: a trial's writes gathered into one call (for a while, or while the
writer is busy), and retries that never duplicate a run (against a real sqlite store)."""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

import pytest

from search import schema
from search.balanced_search import SWEEP_KEY
from search.recording import GATHER_S, SweepRecorder

EPOCHS = 8
CONFIG = {"regime": "conventional", "dataset": "digits", "model": "small_cnn", "epochs": EPOCHS, "seed": 0,
          "data_seed": 0, "batch_size": 32, "lr": 0.05, "cpu_threads": 1,
          SWEEP_KEY: {"stage": "search", "group": "digits/conventional", "number": 4}}


class CountingClient:
    """The recorder's real MLflow client, counting each call it makes (and failing on request)."""

    def __init__(self, client: Any):
        self.client = client
        self.calls: collections.Counter[str] = collections.Counter()
        self.fail_after: dict[str, int] = {}  # method -> how many more calls fail after reaching the store
        self.fail_before: dict[str, int] = {}  # method -> how many more calls fail before reaching it

    def __getattr__(self, name: str) -> Any:
        real = getattr(self.client, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            if self.fail_before.get(name):
                self.fail_before[name] -= 1
                raise ConnectionError("the store did not answer")
            result = real(*args, **kwargs)
            if self.fail_after.get(name):
                self.fail_after[name] -= 1
                raise ConnectionError("the answer was lost")  # the write reached the store
            return result
        return counted


@pytest.fixture
def recorder(tmp_path):
    recorder = SweepRecorder(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", experiment="calls", sweep_id="s1",
                             warn=lambda message: None)
    recorder.parent = recorder.parent_run(dataset="digits", model="small_cnn", regimes=("conventional",),
                                          code_version="test", protocol={"epochs": EPOCHS})
    recorder.client = CountingClient(recorder.client)
    yield recorder
    recorder.writer.close()


def result(epoch: int) -> dict[str, Any]:
    return {"epoch": epoch, "train_loss": 1.0 / epoch, "val_acc": 0.5 + epoch / 100, "timestamp": 1000.0 + epoch}


def trial_runs(recorder: SweepRecorder, trial_id: str) -> list[Any]:
    return recorder.runs(**{schema.ROLE: schema.TRIAL, schema.TRIAL_ID: trial_id})


def test_a_trials_writes_gathered_while_the_writer_is_busy_go_to_the_store_in_one_call(recorder):
    recorder.start_trial(parent_run_id=recorder.parent, trial_id="t1", config=CONFIG)
    busy = threading.Event()
    recorder.writer.submit(busy.wait, 30)  # the writer is busy: the trial's writes gather behind it
    for epoch in range(1, 6):
        recorder.log_result("t1", result(epoch))
    recorder.log_result("t1", result(5))  # a replay of an epoch is stored once
    recorder.tag_trial("t1", {schema.DEVICE: "cpu"})
    recorder.finish_trial("t1", schema.STOPPED_EARLY)
    busy.set()
    recorder.flush()

    calls = recorder.client.calls
    assert calls["create_run"] == 1
    assert calls["log_batch"] == 2, "the params at creation, then every epoch, tag and the end state at once"
    assert calls["set_terminated"] == 1
    assert calls["search_runs"] == calls["get_run"] == calls["get_metric_history"] == 0
    (run,) = trial_runs(recorder, "t1")
    history = recorder.client.get_metric_history(run.info.run_id, schema.VAL_ACC)
    assert [metric.step for metric in history] == [1, 2, 3, 4, 5]
    assert run.data.tags[schema.END_STATE] == schema.STOPPED_EARLY
    assert run.data.tags[schema.DEVICE] == "cpu"
    assert run.info.run_name == "conventional · trial 4 (stopped@5)"
    assert run.info.status == "FINISHED"


def test_epochs_reported_one_by_one_to_an_idle_writer_go_in_one_call_and_the_end_at_once(recorder):
    recorder.start_trial(parent_run_id=recorder.parent, trial_id="t1", config=CONFIG)
    recorder.flush()
    for epoch in range(1, 6):  # the writer is idle: without the window each epoch was one call
        recorder.log_result("t1", result(epoch))
        time.sleep(0.05)
    (run,) = trial_runs(recorder, "t1")

    def stored_epochs() -> list[int]:
        return [metric.step for metric in recorder.client.get_metric_history(run.info.run_id, schema.VAL_ACC)]
    deadline = time.monotonic() + GATHER_S + 10
    while len(stored_epochs()) < 5 and time.monotonic() < deadline:  # written without a flush
        time.sleep(0.1)
    assert stored_epochs() == [1, 2, 3, 4, 5], "the gathered epochs were never written"
    assert recorder.client.calls["log_batch"] == 2, "the params, then the five epochs at once"

    recorder.log_result("t1", result(6))
    ended = time.monotonic()
    recorder.finish_trial("t1", schema.COMPLETED)  # nothing follows an end: no reason to wait
    while recorder.client.get_run(run.info.run_id).info.status != "FINISHED" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert time.monotonic() - ended < GATHER_S, "the end waited out the window"
    assert recorder.client.calls["log_batch"] == 3, "the last epoch and the end in one call"
    assert stored_epochs() == [1, 2, 3, 4, 5, 6]


def test_a_trials_run_starts_when_the_trial_did_however_late_the_writer_reaches_it(recorder):
    busy = threading.Event()
    recorder.writer.submit(busy.wait, 30)  # e.g. another trial's epochs gathering
    started_ms = int(time.time() * 1000)
    recorder.start_trial(parent_run_id=recorder.parent, trial_id="t1", config=CONFIG)
    time.sleep(1.0)
    busy.set()
    recorder.flush()

    (run,) = trial_runs(recorder, "t1")
    assert 0 <= run.info.start_time - started_ms < 500, "the start is when the writer got to it"


def test_writes_after_the_writer_took_a_batch_go_in_the_next_one_in_order(recorder):
    recorder.start_trial(parent_run_id=recorder.parent, trial_id="t1", config=CONFIG)
    recorder.flush()
    for epoch in range(1, EPOCHS + 1):
        recorder.log_result("t1", result(epoch))
        if epoch % 3 == 0:
            recorder.flush()  # the writer takes what has gathered; later epochs start a new batch
    recorder.finish_trial("t1", schema.COMPLETED)
    recorder.flush()

    assert recorder.client.calls["log_batch"] == 4  # params; epochs 1-3; 4-6; 7-8 with the end
    (run,) = trial_runs(recorder, "t1")
    history = recorder.client.get_metric_history(run.info.run_id, schema.VAL_ACC)
    assert [metric.step for metric in history] == list(range(1, EPOCHS + 1))
    assert run.info.run_name == "conventional · trial 4", "a completed trial keeps its name"
    assert run.data.tags[schema.END_STATE] == schema.COMPLETED


def test_a_creation_retried_after_its_answer_was_lost_finds_its_run_instead_of_making_a_second(recorder):
    recorder.client.fail_after["create_run"] = 1
    recorder.start_trial(parent_run_id=recorder.parent, trial_id="t1", config=CONFIG)
    recorder.log_result("t1", result(1))
    recorder.finish_trial("t1", schema.STOPPED_EARLY)
    recorder.flush()

    assert recorder.client.calls["create_run"] == 1, "the retry found the run the lost answer had created"
    assert recorder.client.calls["search_runs"] == 1
    (run,) = trial_runs(recorder, "t1")
    assert [m.step for m in recorder.client.get_metric_history(run.info.run_id, schema.VAL_ACC)] == [1]
    assert run.info.run_name == "conventional · trial 4 (stopped@1)"
    assert run.data.params["lr"] == "0.05", "the params the lost answer cut off were written on the retry"


def test_an_end_whose_write_failed_is_written_whole_on_the_retry(recorder):
    recorder.start_trial(parent_run_id=recorder.parent, trial_id="t1", config=CONFIG)
    recorder.flush()
    recorder.client.fail_before["log_batch"] = 1
    recorder.log_result("t1", result(1))
    recorder.log_result("t1", result(2))
    recorder.finish_trial("t1", schema.DIVERGED)
    recorder.flush()

    (run,) = trial_runs(recorder, "t1")
    assert [m.step for m in recorder.client.get_metric_history(run.info.run_id, schema.VAL_ACC)] == [1, 2]
    assert run.info.run_name == "conventional · trial 4 (diverged@2)"
    assert run.data.tags[schema.END_STATE] == schema.DIVERGED
