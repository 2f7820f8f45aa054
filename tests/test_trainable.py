"""The Ray Tune Trainable: per-epoch reports, checkpoints, actor reuse."""

from __future__ import annotations

import gc
import math
import pickle
import weakref
from pathlib import Path

import pytest
import ray
import torch

from trainables import RegimeTrainable, training
from trainables.checkpoint import CHECKPOINT_FILE
from trainables.predictions import unpack_correct

CONFIG = {"regime": "lerac", "dataset": "digits", "epochs": 3, "curriculum_epochs": 2, "seed": 5}


@pytest.fixture(scope="module", autouse=True)
def ray_runtime():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_step_reports_one_epoch_with_every_layer_rate():
    trainable = RegimeTrainable(config=CONFIG)
    result = trainable.train()
    assert result["epoch"] == 1 and result["training_iteration"] == 1
    assert {"train_loss", "val_acc", "epoch_seconds", "train_seconds"} <= set(result)
    assert "test_acc" not in result and "test_correct" not in result  # measured at the end
    assert [key for key in result if key.startswith("lr/")] == [
        "lr/stem", "lr/block1", "lr/block2", "lr/head"
    ]
    assert result["lr/stem"] > result["lr/head"]  # still inside LeRaC's curriculum
    assert result["device"] == "cpu" and not result["done"] and not result["should_checkpoint"]
    trainable.stop()


def test_rate_trace_shows_the_rise_within_an_epoch():
    trainable = RegimeTrainable(config=CONFIG)
    trace = trainable.train()["rate_trace"]
    steps_per_epoch = trainable.trainer.steps_per_epoch
    assert len(trace["steps"]) == 10 and trace["steps"][-1] == steps_per_epoch - 1
    assert list(trace["rates"]) == ["stem", "block1", "block2", "head"]
    head = trace["rates"]["head"]
    assert head == sorted(head) and head[0] < head[-1]  # LeRaC's deepest layer rising
    assert head[-1] == trainable.trainer.regime.scheduler.schedule.rates_at(steps_per_epoch - 1)[-1]
    trainable.stop()


def test_done_after_the_last_epoch_with_test_accuracy_and_a_checkpoint():
    trainable = RegimeTrainable(config={**CONFIG, "epochs": 2})
    results = [trainable.train() for _ in range(2)]
    assert [r["done"] for r in results] == [False, True]
    assert [r["should_checkpoint"] for r in results] == [False, True]  # direct use: at the end
    assert results[1]["train_seconds"] == pytest.approx(sum(r["epoch_seconds"] for r in results))
    correct = unpack_correct(results[1]["test_correct"])
    assert len(correct) == len(trainable.trainer.data.test)
    assert correct.mean() == pytest.approx(results[1]["test_acc"], abs=1e-6)
    trainable.stop()


def test_sweep_key_sets_checkpoint_and_test_epochs():
    sweep = {"checkpoint_epochs": [2], "test_epochs": [1, 2], "stage": "search"}
    trainable = RegimeTrainable(config={**CONFIG, "epochs": 4, "sweep": sweep})
    assert trainable.trainer.config.train.epochs == 4  # "sweep" is not a run setting
    results = [trainable.train() for _ in range(4)]
    assert [r["should_checkpoint"] for r in results] == [False, True, False, True]
    assert ["test_acc" in r for r in results] == [True, True, False, True]
    assert ["test_correct" in r for r in results] == [True, True, False, True]
    for r in results:
        if "test_acc" in r:
            assert unpack_correct(r["test_correct"]).mean() == pytest.approx(r["test_acc"], abs=1e-6)
    trainable.stop()


def test_buffered_training_ends_at_every_rung_and_at_the_end():
    """The sweep lets Tune buffer a trial's epochs in its actor (`search.tune_environment.RESULT_BUFFER_S`);
    Tune ends a buffer at a result that asks for a checkpoint, so ASHA still sees each rung
    before the trial trains past it."""
    sweep = {"checkpoint_epochs": [2], "stage": "search"}
    trainable = RegimeTrainable(config={**CONFIG, "epochs": 5, "sweep": sweep})
    buffers = [trainable.train_buffered(buffer_time_s=60, max_buffer_length=100) for _ in range(2)]
    assert [[result["epoch"] for result in buffer] for buffer in buffers] == [[1, 2], [3, 4, 5]]
    assert [result["done"] for result in buffers[1]] == [False, False, True]
    trainable.stop()


def test_restored_trial_continues_bit_identically(tmp_path):
    config = {**CONFIG, "sweep": {"checkpoint_epochs": [1], "test_epochs": [2]}}
    original = RegimeTrainable(config=config)
    assert original.train()["should_checkpoint"]
    checkpoint = original.save(str(tmp_path / "checkpoint"))
    expected = original.train()

    restored = RegimeTrainable(config=config)
    restored.restore(checkpoint)
    resumed = restored.train()
    for key in ("epoch", "train_loss", "val_acc", "test_acc", "test_correct", "lr/stem", "lr/head",
                "rate_trace"):
        assert resumed[key] == expected[key], key
    original.stop()
    restored.stop()


class PlantedCode:
    """Unpickling this touches a marker file: what a checkpoint planted in storage could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "code-ran"
    folder = tmp_path / "planted"
    folder.mkdir()
    torch.save({"trainer": PlantedCode(marker), "train_seconds": 0.0}, folder / CHECKPOINT_FILE)
    trainable = RegimeTrainable(config=CONFIG)
    with pytest.raises(pickle.UnpicklingError):
        trainable.load_checkpoint(str(folder))
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError):  # the same file under weights_only=False would run it
        torch.load(folder / CHECKPOINT_FILE, weights_only=True)
    torch.load(folder / CHECKPOINT_FILE, weights_only=False)
    assert marker.exists()
    trainable.stop()


def test_reset_config_rebuilds_for_actor_reuse():
    trainable = RegimeTrainable(config=CONFIG)
    trainable.train()
    assert trainable.reset_config({"regime": "conventional", "dataset": "digits", "epochs": 3, "seed": 5})
    fresh = RegimeTrainable(config={"regime": "conventional", "dataset": "digits", "epochs": 3, "seed": 5})
    reused_result, fresh_result = trainable.trainer.train_epoch(), fresh.trainer.train_epoch()
    assert reused_result.train_loss == fresh_result.train_loss
    assert reused_result.epoch == 1
    trainable.stop()
    fresh.stop()


def test_reset_config_releases_the_finished_run_before_building_the_next(monkeypatch):
    """A reused actor never holds two runs' models and data at once (on a GPU packed with
    trials that is what runs out)."""
    trainable = RegimeTrainable(config=CONFIG)
    trainable.train()
    finished = weakref.ref(trainable.trainer)
    gone_when_the_next_was_built = []

    class Watching(training.Trainer):
        def __init__(self, *args, **kwargs):
            gone_when_the_next_was_built.append(finished() is None)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(training, "Trainer", Watching)
    gc.disable()  # only reference counting may free it
    try:
        assert trainable.reset_config({"regime": "cbs", "dataset": "digits", "epochs": 2, "seed": 6})
    finally:
        gc.enable()
    assert gone_when_the_next_was_built == [True]
    assert trainable.train()["epoch"] == 1
    trainable.stop()


@pytest.mark.slow
def test_reset_config_frees_a_compiled_model_at_once():
    """A compiled model and its compiled forward refer to each other: the reset collects them,
    rather than leaving the model (on a GPU, its weights) to Python's next full collection."""
    trainable = RegimeTrainable(config={**CONFIG, "epochs": 1, "curriculum_epochs": 1, "compile": True})
    trainable.train()
    compiled = weakref.ref(trainable.trainer.model)
    gc.disable()  # no automatic collection: only the reset's own may free it
    try:
        assert trainable.reset_config({"regime": "conventional", "dataset": "digits", "epochs": 1, "seed": 6})
        alive = compiled() is not None
    finally:
        gc.enable()
    assert not alive
    trainable.stop()


def test_divergence_is_reported_and_ends_the_trial():
    trainable = RegimeTrainable(
        config={"regime": "conventional", "dataset": "digits", "epochs": 3, "lr": 9, "momentum": 0.99,
                "batch_size": 16, "schedule": "constant"}
    )
    result = trainable.train()
    assert result["diverged"] and result["done"] and result["epoch"] == 1
    assert result["should_checkpoint"]  # its last result: Tune keeps the trial's end
    assert math.isfinite(result["train_loss"])  # exploding, not yet NaN: trainables.divergence
    trainable.stop()
