"""The live display's lines (search.live), from trial views: no Ray runtime needed.

The end-to-end check, that every dataset of a real sweep gets these lines and
Ray's table, is in tests/test_researcher_view.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

from search import schema
from search.live import (
    RAY_TUNE_LOGGER,
    TrialView,
    dataset_line,
    epochs_owed,
    hide_ray_resume_hint,
    status_lines,
    time_line,
    waiting_line,
)
from search.options import SweepOptions

OPTIONS = SweepOptions(datasets=("digits", "mnist1d"), regimes=("conventional", "lerac"), num_trials=3,
                       epochs=4, grace_period=2, confirm_seeds=2, max_concurrent=2)


def view(dataset="digits", regime="lerac", stage=schema.SEARCH, status="TERMINATED", epochs=4, best=0.9):
    return TrialView(dataset=dataset, regime=regime, stage=stage, status=status, epochs_done=epochs, best_val=best)


def test_dataset_line_counts_each_stage_and_keeps_each_regimes_best_so_far():
    trials = [view(best=0.91), view(best=0.95, epochs=2), view(status="RUNNING", epochs=1, best=0.97),
              view(regime="conventional", status="PENDING", epochs=0, best=None),
              view(dataset="mnist1d", best=0.99)]
    line = dataset_line("digits", trials, OPTIONS, width=7)
    assert line.startswith("digits  search 2/6 done, 1 running, 1 pending · confirm 0/4 done")
    assert "best val so far: conventional -, lerac 97.0%" in line  # a running trial's best counts
    assert "99.0" not in line  # another dataset's trial does not


def test_confirmations_waiting_for_the_last_search_trials_are_explained():
    trials = [view(), view(), view(status="RUNNING", epochs=2)]
    assert "confirmation starts: lerac after 1 more search trial" in dataset_line("digits", trials, OPTIONS, 6)
    trials[-1] = view()
    assert "confirmation starts" not in dataset_line("digits", trials, OPTIONS, 6)


def test_epochs_owed_count_ended_trials_as_trained_and_the_rest_in_full():
    trials = [view(epochs=2), view(status="RUNNING", epochs=1)]  # one stopped at 2, one running
    done, owed = epochs_owed(trials, OPTIONS)
    planned = 2 * 2 * (3 + 2)  # datasets x regimes x (search + confirmation runs)
    assert done == 3
    assert owed == 2 + 4 + (planned - 2) * 4


def test_time_left_comes_from_the_trial_epochs_trained_in_this_run():
    trials = [view(epochs=2), view(status="RUNNING", epochs=2)]  # 4 done of 2 + 4 + 18 * 4 = 78
    assert "time left: estimated after the first epochs" in time_line(trials, OPTIONS, 30.0, 4, False)
    line = time_line(trials, OPTIONS, 40.0, 0, False)  # 4 trial-epochs in 40 s: 74 more take 740 s
    assert "elapsed 0:00:40, 4/78 trial-epochs, about 0:12:20 left" in line
    assert time_line(trials, OPTIONS, 40.0, 0, True).endswith("finished")


def test_pending_trials_are_explained_by_what_the_cluster_holds():
    pending = [view(status="RUNNING"), view(status="PENDING", epochs=0)]
    no_slot = waiting_line(pending, OPTIONS, {"CPU": 1.0}, {"CPU": 0.0})
    assert no_slot == ("waiting: 1 trial for a free slot (1/1 CPUs in use; each trial asks 1 CPU)")
    starting = waiting_line(pending, OPTIONS, {"CPU": 2.0}, {"CPU": 0.0})  # the pending one holds its CPU
    assert starting == "waiting: 1 trial starting (worker processes launching)"
    gpu = OPTIONS.model_copy(update={"gpus_per_trial": 0.25})
    no_gpu = waiting_line(pending, gpu, {"CPU": 8.0}, {"CPU": 7.0})
    assert no_gpu.startswith("waiting: 1 trial for a GPU node (each trial asks 1 CPU and 0.25 GPU; "
                             "the cluster has 0 GPUs now")


def test_the_concurrency_limit_is_named_when_it_holds_trials_back():
    running = [view(status="RUNNING"), view(status="RUNNING")]
    assert waiting_line(running, OPTIONS, {"CPU": 2.0}, {"CPU": 0.0}) == \
        "queued: 18 trials not started yet (2 at a time: --max-concurrent)"
    assert waiting_line(running[:1], OPTIONS, {"CPU": 2.0}, {"CPU": 1.0}) is None


def test_status_block_has_one_line_per_dataset_and_the_storage_path(tmp_path: Path):
    lines = status_lines([view()], OPTIONS, elapsed=5.0, done_at_start=0, finished=False,
                         total={"CPU": 2.0}, free={"CPU": 2.0}, sweep_dir=tmp_path / "20260101-000000-abcdef")
    assert lines[0].startswith("Sweep 20260101-000000-abcdef: elapsed 0:00:05")
    assert [line.split()[0] for line in lines[1:3]] == ["digits", "mnist1d"]
    assert lines[-1] == f"Storage: {tmp_path / '20260101-000000-abcdef'}"


def test_rays_own_resume_hint_is_dropped_and_other_messages_kept(caplog):
    hide_ray_resume_hint()
    hide_ray_resume_hint()  # idempotent: one filter
    logger = logging.getLogger(RAY_TUNE_LOGGER)
    assert sum(type(f).__name__ == "_DropRayResumeHint" for f in logger.filters) == 1
    with caplog.at_level(logging.INFO, logger=RAY_TUNE_LOGGER):
        logger.warning("Experiment has been interrupted, but the most recent state was saved.\n"
                       'Resume experiment with: Tuner.restore(path="/x", trainable=...)')
        logger.info("Total run time: 3.00 seconds")
    messages = [record.getMessage() for record in caplog.records]
    assert messages == ["Total run time: 3.00 seconds"]
