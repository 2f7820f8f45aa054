"""Settings that can only be mistakes are refused by name: upper bounds, non-finite floats,
seeds torch cannot take, a batch larger than the training split, a device that is not there."""

from __future__ import annotations

import dataclasses
import typing

import pytest
import torch

from trainables.config import RunConfig, TrainSettings
from trainables.regimes import REGIMES
from trainables.training import Trainer, resolve_device

# (regime, key, value): each is just past a bound, or absurd.
OUT_OF_BOUNDS = [
    ("conventional", "lr", 50),
    ("conventional", "lr", 10.5),
    ("conventional", "min_lr", 11),
    ("conventional", "epochs", 10_001),
    ("conventional", "batch_size", 100_000),
    ("conventional", "cpu_threads", 100_000),
    ("conventional", "cpu_threads", 257),
    ("conventional", "weight_decay", 1.5),
    ("conventional", "momentum", 1.0),
    ("conventional", "seed", 2**63),
    ("conventional", "seed", "99999999999999999999"),
    ("conventional", "data_seed", 2**64),
    ("conventional", "milestones", [3, 20_000]),
    ("conventional", "device", "cudax"),
    ("conventional", "device", "cuda:"),
    ("cbs", "cbs_sigma", 1e-200),
    ("cbs", "cbs_sigma", 1000),
    ("cbs", "cbs_every", 10_001),
    ("multirate", "multirate_m", 1001),
    ("per_instance", "instance_lr", 11),
    ("per_instance", "meta_batch_size", 100_000),
]


@pytest.mark.parametrize(("regime", "key", "value"), OUT_OF_BOUNDS)
def test_values_that_can_only_be_mistakes_are_refused_by_name(regime, key, value):
    with pytest.raises(ValueError, match=f"setting '{key}' must be"):
        RunConfig.from_dict({"regime": regime, key: value})


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [("lr", 10, 10.0), ("epochs", 10_000, 10_000), ("batch_size", 1024, 1024), ("cpu_threads", 256, 256),
     ("weight_decay", 1, 1.0), ("seed", 2**63 - 1, 2**63 - 1),
     ("data_seed", "9223372036854775807", 2**63 - 1),  # parsed exactly, not through a float
     ("device", "cuda:1", "cuda:1"), ("device", "cpu", "cpu")],
)
def test_the_bounds_themselves_are_allowed(key, value, expected):
    assert RunConfig.from_dict({key: value}).to_dict()[key] == expected


def float_settings() -> list[tuple[str, str]]:
    """(regime, key) of every float setting, shared or a regime's own."""
    owners = [("conventional", TrainSettings)] + [(name, r.Settings) for name, r in REGIMES.items()]
    return [
        (regime, field.name)
        for regime, settings_type in owners
        for field in dataclasses.fields(settings_type)
        if typing.get_type_hints(settings_type)[field.name] is float
    ]


def test_every_float_setting_is_covered():
    keys = {key for _, key in float_settings()}
    assert {"lr", "momentum", "cbs_sigma", "leap_sigma", "instance_lr", "curriculum_epochs"} <= keys


@pytest.mark.parametrize(("regime", "key"), float_settings())
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), "nan", "inf", "-inf"])
def test_non_finite_values_are_refused_for_every_float_setting(regime, key, value):
    with pytest.raises(ValueError, match=f"setting '{key}' must be a finite number"):
        RunConfig.from_dict({"regime": regime, key: value})


def test_an_overflowing_integer_is_refused_by_name_not_with_an_overflow():
    with pytest.raises(ValueError, match="setting 'lr' must be"):
        RunConfig.from_dict({"lr": 10**400})  # float(10**400) raises OverflowError


def test_a_regime_that_is_not_a_name_is_refused_by_name():
    with pytest.raises(ValueError, match="setting 'regime' must be one regime name"):
        RunConfig.from_dict({"regime": ["lerac", "cbs"]})


def test_a_batch_larger_than_the_training_split_is_refused_when_the_data_is_known():
    config = RunConfig.from_dict({"dataset": "digits", "batch_size": 5000})  # within the static bound
    with pytest.raises(ValueError, match=r"setting 'batch_size' \(5000\) is larger than the training "
                                         r"split \(1078 examples\)"):
        Trainer(config)


def test_a_batch_as_large_as_the_training_split_trains():
    report = Trainer(RunConfig.from_dict({"dataset": "digits", "batch_size": 1078, "epochs": 1})).train_epoch()
    assert report.epoch == 1 and not report.diverged


@pytest.mark.parametrize(("name", "count", "message"), [
    ("cuda", 0, "CUDA is not available here"),
    ("cuda:0", 0, "CUDA is not available here"),
    ("cuda:2", 2, "this machine has 2 CUDA device"),
])
def test_a_device_that_is_not_there_is_refused_by_name(monkeypatch, name, count, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    with pytest.raises(ValueError, match=f"setting 'device' is '{name}' but {message}"):
        resolve_device(name)
