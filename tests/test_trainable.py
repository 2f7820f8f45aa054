"""The Ray Tune Trainable: per-epoch reports, checkpoints, actor reuse."""

from __future__ import annotations

import math

import pytest
import ray

from trainables import RegimeTrainable

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
    assert {"train_loss", "val_acc", "test_acc", "epoch_seconds", "train_seconds"} <= set(result)
    assert [key for key in result if key.startswith("lr/")] == [
        "lr/stem", "lr/block1", "lr/block2", "lr/head"
    ]
    assert result["lr/stem"] > result["lr/head"]  # still inside LeRaC's curriculum
    assert result["device"] == "cpu" and not result["done"]
    trainable.stop()


def test_done_after_the_last_epoch():
    trainable = RegimeTrainable(config={**CONFIG, "epochs": 2})
    results = [trainable.train() for _ in range(2)]
    assert [r["done"] for r in results] == [False, True]
    assert results[1]["train_seconds"] == pytest.approx(sum(r["epoch_seconds"] for r in results))
    trainable.stop()


def test_restored_trial_continues_bit_identically(tmp_path):
    original = RegimeTrainable(config=CONFIG)
    original.train()
    checkpoint = original.save(str(tmp_path / "checkpoint"))
    expected = original.train()

    restored = RegimeTrainable(config=CONFIG)
    restored.restore(checkpoint)
    resumed = restored.train()
    for key in ("epoch", "train_loss", "val_acc", "test_acc", "lr/stem", "lr/head"):
        assert resumed[key] == expected[key], key
    original.stop()
    restored.stop()


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


def test_divergence_is_reported_and_ends_the_trial():
    trainable = RegimeTrainable(
        config={"regime": "conventional", "dataset": "digits", "epochs": 3, "lr": 9, "momentum": 0.99,
                "batch_size": 16, "schedule": "constant"}
    )
    result = trainable.train()
    assert result["diverged"] and result["done"] and result["epoch"] == 1
    assert math.isfinite(result["train_loss"])  # exploding, not yet NaN: trainables.divergence
    trainable.stop()
