"""The contract every regime must pass (like Optuna's sampler test suite).

A new regime is registered in `trainables.regimes.REGIMES` (its settings in
`trainables.regime_settings.REGIME_SETTINGS`); it must then add its
quick-training settings to `QUICK_SETTINGS` and pass every test here: on digits
with small_cnn, and on a small text task (RTE format, BERT) and a small audio
task (ESC-50 format, small_cnn on log-mel spectrograms) that the tests write in
the official formats. A regime that cannot apply to a task's model is listed in
`NOT_APPLICABLE` and must refuse it with one clear error.
"""

from __future__ import annotations

import dataclasses
import gc
import io
import weakref
from collections.abc import Callable
from pathlib import Path

import official_formats
import pytest
import torch

from trainables.config import RunConfig
from trainables.regime_settings import REGIME_SETTINGS
from trainables.regimes import REGIME_NAMES, REGIMES, regime_class
from trainables.training import Trainer

BASE = {"dataset": "digits", "model": "small_cnn", "epochs": 4, "lr": 0.05, "seed": 3}
QUICK_SETTINGS: dict[str, dict] = {
    "conventional": {},
    "lerac": {"curriculum_epochs": 1, "decay_base": 0.1, "shape": "exp"},
    "cbs": {"cbs_sigma": 1.0, "cbs_every": 1},
    "leap": {"leap_sigma": 0.5},
    "multirate": {"multirate_m": 2, "fast_layers": 1},
    "per_instance": {"instance_lr": 0.1},
}
CHANCE = 0.1


def make_trainer(regime: str, **overrides) -> Trainer:
    return Trainer(RunConfig.from_dict({**BASE, "regime": regime, **QUICK_SETTINGS[regime], **overrides}))


def still_alive_when_released(build: Callable[[], Trainer]) -> list[str]:
    """What of a trained run outlives its release when only reference counting may free it.

    None of it should: an actor that releases a finished run before the next
    (`RegimeTrainable.reset_config`) then gets its model, optimizer and device
    data back at once, not at Python's next full garbage collection, which may
    come trials later. So a regime must not tie them into a reference cycle.
    """
    make_trainer("conventional")  # a process's first Trainer imports torch's lazy parts: with gc on
    trainer = build()
    trainer.train_epoch(test=True)
    parts = [trainer, trainer.model, trainer.regime, trainer.regime.optimizer, trainer.data.train.x]
    released = [weakref.ref(part) for part in parts]
    del parts
    gc.disable()
    try:
        del trainer
        return [type(ref()).__name__ for ref in released if ref() is not None]
    finally:
        gc.enable()


def test_every_registered_regime_is_covered():
    assert set(QUICK_SETTINGS) == set(REGIME_NAMES)


def test_each_regime_trains_with_the_settings_the_driver_validates():
    """The sweep's driver reads settings from `trainables.regime_settings` (no torch); the
    regime that trains must take exactly those, under the same name."""
    assert tuple(REGIMES) == REGIME_NAMES == tuple(REGIME_SETTINGS)
    for name, regime in REGIMES.items():
        assert regime.name == name and regime.Settings is REGIME_SETTINGS[name]


@pytest.mark.parametrize("regime", REGIME_NAMES)
class TestRegimeContract:
    def test_trains_well_above_chance(self, regime):
        trainer = make_trainer(regime)
        reports = [trainer.train_epoch() for _ in range(BASE["epochs"])]
        assert not any(report.diverged for report in reports)
        assert reports[-1].val_acc > CHANCE + 0.5
        assert reports[-1].train_loss < reports[0].train_loss

    def test_checkpoint_round_trip_continues_identically(self, regime):
        original = make_trainer(regime)
        original.train_epoch()
        buffer = io.BytesIO()
        torch.save(original.state_dict(), buffer)
        expected = original.train_epoch(test=True)

        restored = make_trainer(regime, seed=99)  # different seed: state must come from the checkpoint
        buffer.seek(0)
        # Tensors and plain data only: a checkpoint never needs to run code to load.
        restored.load_state_dict(torch.load(buffer, weights_only=True))
        resumed = restored.train_epoch(test=True)

        assert dataclasses.replace(resumed, epoch_seconds=0) == dataclasses.replace(expected, epoch_seconds=0)
        assert resumed.test_acc is not None
        assert (resumed.test_correct == expected.test_correct).all()
        for a, b in zip(original.model.state_dict().values(), restored.model.state_dict().values(), strict=True):
            assert torch.equal(a, b)

    def test_same_seed_same_result(self, regime):
        first, second = make_trainer(regime, epochs=1), make_trainer(regime, epochs=1)
        a, b = first.train_epoch(), second.train_epoch()
        assert (a.train_loss, a.val_acc, a.test_acc) == (b.train_loss, b.val_acc, b.test_acc)
        assert torch.equal(first.predict(first.data.test), second.predict(second.data.test))

    def test_a_released_run_is_freed_at_once(self, regime):
        assert still_alive_when_released(lambda: make_trainer(regime, epochs=1)) == []

    def test_different_seed_different_result(self, regime):
        a = make_trainer(regime, epochs=1, seed=1).train_epoch()
        b = make_trainer(regime, epochs=1, seed=2).train_epoch()
        assert a.train_loss != b.train_loss

    def test_unknown_key_is_rejected_by_name(self, regime):
        with pytest.raises(ValueError, match="'no_such_setting'"):
            RunConfig.from_dict({"regime": regime, "no_such_setting": 1})

    def test_out_of_range_values_are_rejected_by_name(self, regime):
        for field in dataclasses.fields(regime_class(regime).Settings):
            bad = "no-such-choice" if field.metadata.get("choices") else -1e9
            with pytest.raises(ValueError, match=f"'{field.name}'"):
                RunConfig.from_dict({"regime": regime, field.name: bad})

    def test_reports_a_rate_for_every_layer(self, regime):
        trainer = make_trainer(regime, epochs=2)
        report = trainer.train_epoch()
        names = [group["name"] for group in trainer.regime.optimizer.param_groups]
        assert list(report.layer_rates) == names
        assert all(rate > 0 for rate in report.layer_rates.values())

    def test_config_round_trips_through_a_flat_dict(self, regime):
        config = RunConfig.from_dict({**BASE, "regime": regime, **QUICK_SETTINGS[regime]})
        assert RunConfig.from_dict(config.to_dict()) == config

    def test_config_round_trips_through_string_params(self, regime):
        config = RunConfig.from_dict(
            {**BASE, "regime": regime, **QUICK_SETTINGS[regime], "milestones": [2, 3], "data_dir": "2024"}
        )
        params = config.to_params()
        assert all(isinstance(value, str) for value in params.values())
        assert RunConfig.from_params(params) == config


def test_unknown_regime():
    with pytest.raises(ValueError, match="unknown regime 'sgdr'"):
        RunConfig.from_dict({"regime": "sgdr"})


def test_shared_setting_out_of_range():
    with pytest.raises(ValueError, match="'lr'"):
        RunConfig.from_dict({"lr": 0})


def test_lerac_starts_deeper_layers_lower():
    trainer = make_trainer("lerac", curriculum_epochs=3)
    rates = list(trainer.regime.layer_rates().values())
    assert rates[0] == pytest.approx(BASE["lr"])
    assert rates == sorted(rates, reverse=True) and rates[-1] < rates[0]


def test_lerac_curriculum_longer_than_training_is_rejected():
    with pytest.raises(ValueError, match="'curriculum_epochs'"):
        RunConfig.from_dict({"regime": "lerac", "epochs": 2, "curriculum_epochs": 3})


def test_multirate_needs_a_slow_layer():
    with pytest.raises(ValueError, match="'fast_layers'"):
        make_trainer("multirate", fast_layers=4)


def test_nesterov_needs_momentum():
    with pytest.raises(ValueError, match="'nesterov'"):
        RunConfig.from_dict({"nesterov": True, "momentum": 0.0})


def test_lerac_resnet18_blocks_start_at_the_official_rates():
    trainer = Trainer(RunConfig.from_dict({
        "regime": "lerac", "model": "resnet18", "dataset": "digits", "lr": 0.1,
        "decay_base": 0.1, "eta_min": 1e-6, "curriculum_epochs": 5, "epochs": 10,
    }))
    rates = trainer.regime.layer_rates()
    assert list(rates) == ["stem", "layer1.0", "layer1.1", "layer2.0", "layer2.1",
                           "layer3.0", "layer3.1", "layer4.0", "layer4.1", "head"]
    assert list(rates.values()) == pytest.approx([0.1, 1e-2, 1e-3, 1e-4, 1e-5] + [1e-6] * 5)


def test_compiled_model_trains_and_is_reused_by_the_next_trial():
    from torch._dynamo.utils import counters

    first = make_trainer("conventional", compile=True, epochs=2)
    assert first.train_epoch().val_acc > CHANCE + 0.3
    assert list(first.model.state_dict()) == list(make_trainer("conventional").model.state_dict())
    graphs = counters["stats"]["unique_graphs"]
    second = make_trainer("conventional", compile=True, epochs=2, seed=4)  # a new trial, same process
    second.train_epoch()
    assert counters["stats"]["unique_graphs"] == graphs  # no recompilation


def test_per_instance_rejects_compile():
    with pytest.raises(ValueError, match="'compile'"):
        RunConfig.from_dict({"regime": "per_instance", "compile": True})


def test_lerac_official_cifar10_settings_step_up_per_epoch():
    """The official CIFAR-10 run: stepped x10 per epoch, classifier from eta0 * 1e-3."""
    trainer = Trainer(RunConfig.from_dict({
        "regime": "lerac", "model": "resnet18", "dataset": "digits", "lr": 0.1, "decay_base": 0.1,
        "eta_min": 1e-6, "curriculum_epochs": 6, "epochs": 10, "rule": "stepped",
        "updates_per_epoch": 1, "head_scale": 1e-3,
    }))
    schedule, per_epoch = trainer.regime.scheduler.schedule, trainer.steps_per_epoch
    start = [0.1, 1e-2, 1e-3, 1e-4, 1e-5] + [1e-6] * 4 + [1e-4]
    assert schedule.rates_at(per_epoch - 1) == pytest.approx(start)
    assert schedule.rates_at(per_epoch) == pytest.approx([min(0.1, 10 * r) for r in start])
    assert schedule.rates_at(5 * per_epoch) == pytest.approx([0.1] * 10)
    assert schedule.rates_at(3 * per_epoch)[-1] == pytest.approx(0.1)  # the head arrives early


def test_lerac_replaces_the_warmup():
    with pytest.raises(ValueError, match="'warmup_epochs'"):
        RunConfig.from_dict({"regime": "lerac", "warmup_epochs": 1})


def test_optional_setting_round_trips_as_none():
    config = RunConfig.from_dict({"regime": "lerac"})
    assert config.regime.head_scale is None
    assert RunConfig.from_params(config.to_params()) == config


# ---------------------------------------------------------------- text and audio tasks

# Tiny but learnable: a keyword decides the RTE label; a tone's frequency the ESC-50 class.
TASKS: dict[str, dict] = {
    "text": {"dataset": "rte", "model": "bert", "max_length": 20, "vocab_size": 120,
             "optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.01, "batch_size": 8,
             "epochs": 3, "seed": 3},
    "audio": {"dataset": "esc50", "model": "small_cnn", "sample_rate": 8000, "n_mels": 16,
              "hop_ms": 50, "lr": 0.05, "batch_size": 8, "epochs": 6, "seed": 3},
}
TASK_CHANCE = {"text": 0.5, "audio": 0.25}  # RTE: 2 classes; the ESC-50 files: 4 tones
# Settings a regime needs on a task beyond QUICK_SETTINGS: a held-out batch that fits the tiny
# data; multirate's slow layers step every m = 2 iterations, so BERT needs more epochs to learn.
TASK_SETTINGS = {("text", "per_instance"): {"meta_batch_size": 16},
                 ("audio", "per_instance"): {"meta_batch_size": 16},
                 ("text", "multirate"): {"epochs": 5}}
# Regimes that cannot apply to a task's model, and the words their error must contain.
NOT_APPLICABLE = {("text", "cbs"): "3x3 convolutions"}
SLOW_CASES = {("text", "per_instance")}  # a double backward through BERT: ~10 s here
APPLICABLE = [
    pytest.param(task, regime, marks=[pytest.mark.slow] if (task, regime) in SLOW_CASES else [])
    for task in TASKS for regime in REGIME_NAMES if (task, regime) not in NOT_APPLICABLE
]


@pytest.fixture(scope="module")
def task_data(tmp_path_factory) -> Path:
    """One folder with the RTE and ESC-50 files (its caches are built by the first test)."""
    root = tmp_path_factory.mktemp("official")
    official_formats.write_rte(root, train=160, val=40)
    official_formats.write_esc50(root, per_class_per_fold=6)
    return root


def task_config(task: str, regime: str, data_dir: Path, **overrides) -> RunConfig:
    return RunConfig.from_dict({
        **TASKS[task], "data_dir": str(data_dir), "regime": regime, **QUICK_SETTINGS[regime],
        **TASK_SETTINGS.get((task, regime), {}), **overrides,
    })


@pytest.mark.parametrize(("task", "regime"), APPLICABLE)
class TestTextAndAudioTasks:
    def test_trains_well_above_chance(self, task, regime, task_data):
        trainer = Trainer(task_config(task, regime, task_data))
        reports = [trainer.train_epoch() for _ in range(trainer.config.train.epochs)]
        assert not any(report.diverged for report in reports)
        assert reports[-1].val_acc >= TASK_CHANCE[task] + 0.3
        assert reports[-1].test_acc >= TASK_CHANCE[task] + 0.3
        assert reports[-1].train_loss < reports[0].train_loss

    def test_a_released_run_is_freed_at_once(self, task, regime, task_data):
        assert still_alive_when_released(lambda: Trainer(task_config(task, regime, task_data, epochs=1))) == []

    def test_checkpoint_round_trip_continues_identically(self, task, regime, task_data):
        original = Trainer(task_config(task, regime, task_data, epochs=2))
        original.train_epoch()
        buffer = io.BytesIO()
        torch.save(original.state_dict(), buffer)
        expected = original.train_epoch()
        restored = Trainer(task_config(task, regime, task_data, epochs=2, seed=99))
        buffer.seek(0)
        restored.load_state_dict(torch.load(buffer, weights_only=True))
        resumed = restored.train_epoch()
        assert dataclasses.replace(resumed, epoch_seconds=0) == dataclasses.replace(expected, epoch_seconds=0)
        assert (resumed.test_correct == expected.test_correct).all()


@pytest.mark.parametrize(("task", "regime"), list(NOT_APPLICABLE))
def test_a_regime_that_cannot_apply_says_why(task, regime, task_data):
    with pytest.raises(ValueError, match=NOT_APPLICABLE[(task, regime)]):
        Trainer(task_config(task, regime, task_data))


@pytest.mark.parametrize("model", ["lstm", "septr"])
def test_cbs_refuses_models_without_3x3_convolutions(model, task_data):
    task = "text" if model == "lstm" else "audio"
    with pytest.raises(ValueError, match=f"3x3 convolutions; '{model}' has none"):
        Trainer(task_config(task, "cbs", task_data, model=model))


def test_audio_masking_is_reproducible_and_changes_training(task_data):
    first, second, unmasked = (Trainer(task_config("audio", "conventional", task_data)) for _ in range(3))
    assert first.data.masking is not None
    unmasked.data = dataclasses.replace(unmasked.data, masking=None)
    a, b, c = first.train_epoch(), second.train_epoch(), unmasked.train_epoch()
    assert a.train_loss == b.train_loss
    assert a.train_loss != c.train_loss


def test_lerac_official_bert_variant_lowers_only_pooler_and_classifier(task_data):
    trainer = Trainer(task_config("text", "lerac", task_data, curriculum_layers=2, curriculum_epochs=2))
    lr = TASKS["text"]["lr"]
    rates = trainer.regime.layer_rates()
    assert list(rates) == ["embeddings", "layer.0", "layer.1", "layer.2", "layer.3", "pooler", "classifier"]
    assert list(rates.values()) == pytest.approx([lr] * 5 + [lr * 0.1, lr * 0.01])
    trainer.train_epoch()  # half way through the rise: only the lowered groups are below eta0
    rates = list(trainer.regime.layer_rates().values())
    assert rates[:5] == pytest.approx([lr] * 5) and lr * 0.01 < rates[-1] < rates[-2] < lr
