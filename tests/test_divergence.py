"""A run whose loss explodes counts as diverged even while the loss is still a finite number."""

from __future__ import annotations

import math

import pytest

from trainables.config import RunConfig
from trainables.divergence import diverged, loss_limit
from trainables.train import main
from trainables.training import Trainer

# Within every bound (lr <= 10), yet the head's weights blow up within the first epoch.
EXPLODING = {"dataset": "digits", "optimizer": "sgd", "lr": 9, "momentum": 0.99, "batch_size": 16,
             "schedule": "constant", "seed": 0}


@pytest.mark.parametrize("loss", [float("nan"), float("inf"), float("-inf"), 1e15, loss_limit(10) + 1e-6])
def test_non_finite_or_far_above_chance_is_diverged(loss):
    assert diverged(loss, 10)


@pytest.mark.parametrize(("loss", "classes"), [(0.0, 10), (math.log(10), 10), (5 * math.log(10), 10),
                                               (30.0, 10), (math.log(200), 200), (10.0, 2)])
def test_chance_level_and_well_above_it_is_still_training(loss, classes):
    assert not diverged(loss, classes)


def test_the_limit_grows_with_the_number_of_classes():
    assert loss_limit(2) < loss_limit(10) < loss_limit(200)
    assert loss_limit(10) == pytest.approx(10 * math.log(10) + 10)


def test_an_exploding_sgd_run_is_reported_diverged_before_its_loss_turns_nan():
    report = Trainer(RunConfig.from_dict({**EXPLODING, "epochs": 3})).train_epoch()
    assert math.isfinite(report.train_loss) and report.train_loss > loss_limit(10)
    assert report.diverged and report.metrics()["diverged"]


def test_the_train_cli_stops_an_exploding_run_and_says_it_diverged(capsys):
    flags = [f"--{key.replace('_', '-')}={value}" for key, value in EXPLODING.items()]
    assert main([*flags, "--epochs", "3"]) == 1
    printed = capsys.readouterr()
    assert printed.out.count("epoch ") == 1  # stopped after the first epoch, not 3
    assert printed.err.startswith("training diverged in epoch 1: mean loss ")
    assert "is above 33.0, far beyond any sane run with 10 classes" in printed.err
