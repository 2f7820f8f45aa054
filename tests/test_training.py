"""The Trainer's step, reports and compiled models, measured on the CPU.

Host-device syncs cannot be timed without a GPU, but the ops that cause them
can be counted on the CPU: reading a device value on the host (`item`,
`_local_scalar_dense`, `nonzero`, `is_nonzero`) and `.to(device)` / `.cpu()`
transfers. A training step must have none of them.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.profiler import ProfilerActivity, profile

from trainables.config import RunConfig
from trainables.data import Dataset, Split, load_dataset
from trainables.regimes import REGIME_NAMES
from trainables.training import TRACE_SAMPLES, ExecutionPlan, Trainer

QUICK = {
    "conventional": {},
    "lerac": {"curriculum_epochs": 1},
    "cbs": {"cbs_every": 1},
    "leap": {"leap_sigma": 0.5},
    "multirate": {"multirate_m": 2},
    "per_instance": {},
}
HOST_READS = ("aten::item", "aten::_local_scalar_dense", "aten::nonzero", "aten::is_nonzero")
TRANSFERS = ("to", "cpu", "cuda", "item", "tolist", "numpy", "__bool__")


def make_trainer(regime: str, data: Dataset | None = None, **overrides) -> Trainer:
    """A trainer on the CPU, also where CUDA is present: these numbers are the CPU's."""
    config = {"regime": regime, "dataset": "digits", "epochs": 3, "seed": 0, "device": "cpu",
              **QUICK[regime], **overrides}
    return Trainer(RunConfig.from_dict(config), data=data)


@functools.cache
def tiny_digits() -> Dataset:
    """128 training and 64 validation/test digits: two steps per epoch at batch 64."""
    full = load_dataset("digits")

    def head(split: Split, n: int) -> Split:
        return Split(split.x[:n], split.y[:n])

    return Dataset(
        name="digits", train=head(full.train, 128), val=head(full.val, 64),
        test=head(full.test, 64), num_classes=10, input_shape=full.input_shape,
        crop_padding=full.crop_padding, flip=full.flip, noisy=full.noisy[:128],
        trusted=full.trusted[:128],
    )


def three_channel(data: Dataset) -> Dataset:
    """`data` with its images repeated over 3 channels, so channels_last differs from NCHW."""

    def rgb(split: Split) -> Split:
        return Split(split.x.repeat(1, 3, 1, 1), split.y)

    return dataclasses.replace(data, train=rgb(data.train), val=rgb(data.val), test=rgb(data.test),
                               input_shape=(3, *data.input_shape[1:]))


class TransferSpy(TorchFunctionMode):
    """Records tensor methods that move data between host and device or read it on the host.

    `.to(...)` counts only when it names a device (a dtype cast is not a transfer).
    """

    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in TRANSFERS and (name != "to" or _names_device(args[1:], kwargs)):
            self.calls.append(name)
        return func(*args, **kwargs)


def _names_device(args: tuple, kwargs: dict) -> bool:
    values = [*args, kwargs.get("device")]
    return any(isinstance(v, (torch.device, str, torch.Tensor)) for v in values)


def profile_steps(trainer: Trainer, steps: int = 2) -> tuple[collections.Counter, list[str]]:
    """aten op counts and host transfers of `steps` training steps, after one warm-up step."""
    trainer.regime.start_epoch(0)
    trainer.model.train()
    order = torch.randperm(len(trainer.data.train), generator=torch.Generator().manual_seed(0))
    batch = trainer.config.train.batch_size
    index = order[: (steps + 1) * batch].view(steps + 1, batch)
    trainer.train_step(index[0])
    spy = TransferSpy()
    with profile(activities=[ProfilerActivity.CPU]) as prof, spy:
        for row in index[1:]:
            trainer.train_step(row)
    counts = collections.Counter(e.name for e in prof.events() if e.name.startswith("aten::"))
    return counts, spy.calls


@pytest.mark.parametrize("regime", REGIME_NAMES)
def test_training_step_never_waits_for_the_device(regime):
    counts, transfers = profile_steps(make_trainer(regime))
    assert {op: counts[op] for op in HOST_READS} == dict.fromkeys(HOST_READS, 0)
    assert transfers == []
    assert sum(counts.values()) > 50  # the profiler did see the step


def test_the_spy_sees_what_the_old_step_did():
    """The checks above can fail: a host read and a CPU-drawn tensor moved to the device."""
    spy = TransferSpy()
    with profile(activities=[ProfilerActivity.CPU]) as prof, spy:
        offsets = torch.randint(0, 3, (2, 8), generator=torch.Generator().manual_seed(0))
        offsets.to(torch.device("cpu"))
        offsets.sum().item()
        offsets.float()  # a cast, not a transfer
    counts = collections.Counter(e.name for e in prof.events())
    assert spy.calls == ["to", "item"]
    assert counts["aten::item"] == 1


def test_leap_draws_its_noise_once_per_step():
    trainer = make_trainer("leap", model="resnet18", batch_size=8)
    counts, _ = profile_steps(trainer, steps=2)
    assert len(list(trainer.model.parameters())) > 50
    assert counts["aten::normal_"] == 2 and counts["aten::randn"] == 0


def test_leap_scales_each_update_by_one_plus_noise():
    """LEAP's step equals the optimizer's update times (1 + eps) with eps ~ N(0, sigma^2)."""
    leap = make_trainer("leap", leap_sigma=0.5)
    plain = make_trainer("conventional")
    index = torch.arange(64)
    before = [p.detach().clone() for p in leap.model.parameters()]
    leap.train_step(index)
    plain.train_step(index)
    ratios = torch.cat([
        ((a - b0) / (c - b0)).flatten()
        for a, c, b0 in zip(leap.model.parameters(), plain.model.parameters(), before, strict=True)
    ]).detach()
    ratios = ratios[ratios.isfinite()]
    assert abs(ratios.mean().item() - 1.0) < 0.02
    assert abs(ratios.std().item() - 0.5) < 0.02


@pytest.mark.slow
def test_compiled_runs_in_one_process_match_eager_for_every_regime_in_turn():
    """Reused actors: each compiled run trains as its eager twin, whatever ran before it."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()  # a fresh cache, as in a new worker process, whatever ran before
    data = tiny_digits()
    sequence = [
        ("conventional", {}, "new"),
        ("cbs", {}, "new"),  # a conventional graph must not be replayed without the blur
        ("cbs", {"cbs_sigma": 2.0, "cbs_decay": 0.5}, "shared"),  # CBS runs share one graph
        ("conventional", {}, "shared"),  # and conventional keeps its own
        ("multirate", {}, "any"),
        ("lerac", {}, "shared"),
        ("leap", {}, "shared"),
    ]
    for regime, settings, graphs in sequence:
        before = counters["stats"]["unique_graphs"]
        compiled = make_trainer(regime, data, compile=True, epochs=2, **settings)
        eager = make_trainer(regime, data, epochs=2, **settings)
        for _ in range(2):  # CBS changes its blur between the epochs
            compiled.fit_epoch()
            eager.fit_epoch()
        for a, b in zip(compiled.model.parameters(), eager.model.parameters(), strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=f"{regime} trained differently")
        compiled.model.eval()
        with torch.no_grad():
            output = compiled.model(data.val.x)
            with torch.compiler.set_stance("force_eager"):
                reference = compiled.model(data.val.x)
        torch.testing.assert_close(output, reference, atol=1e-4, rtol=1e-4, msg=regime)
        new_graphs = counters["stats"]["unique_graphs"] - before
        if graphs == "new":
            assert new_graphs > 0, regime
        elif graphs == "shared":
            assert new_graphs == 0, regime


@pytest.mark.slow
def test_a_reused_actors_compiled_runs_stay_under_the_recompile_limit():
    """Regimes with and without hooks at the GPU space's batch sizes, in turn in one process:
    past dynamo's recompile limit every later run would silently train eager."""
    torch._dynamo.reset()
    data = load_dataset("digits")
    sequence = [("conventional", 128), ("cbs", 128), ("conventional", 256), ("cbs", 256),
                ("lerac", 512), ("leap", 512), ("cbs", 512), ("conventional", 128)]
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        for regime, batch_size in sequence:
            trainer = make_trainer(regime, data, compile=True, batch_size=batch_size, epochs=2)
            trainer.train_epoch(test=True)  # training, validation and test batches


@pytest.mark.parametrize("regime", REGIME_NAMES)
def test_the_gpu_plan_trains_every_regime(regime):
    """The GPU's layout and precision (bf16 autocast, channels_last, data stored so), on the CPU."""
    gpu_plan = ExecutionPlan.for_device(torch.device("cuda"))
    assert gpu_plan == ExecutionPlan(channels_last=True, bf16=True)
    config = RunConfig.from_dict({"regime": regime, "epochs": 2, "seed": 0, **QUICK[regime]})
    trainer = Trainer(config, data=three_channel(tiny_digits()), plan=gpu_plan)
    stored = trainer.data.train.x
    assert stored.dtype == torch.bfloat16 and stored.is_contiguous(memory_format=torch.channels_last)
    conv = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    counts, transfers = profile_steps(trainer, steps=1)
    assert transfers == [] and counts["aten::item"] == 0
    report = trainer.train_epoch()
    assert math.isfinite(report.train_loss) and 0 <= report.val_acc <= 1
    assert all(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True)
               if a.dim() > 1)


# -- reports ------------------------------------------------------------------------
def applied_rates(trainer: Trainer) -> list[list[float]]:
    """Spy: the learning rate of every param group at each optimizer step, as the step saw it."""
    seen: list[list[float]] = []
    trainer.regime.optimizer.register_step_pre_hook(
        lambda optimizer, args, kwargs: seen.append([g["lr"] for g in optimizer.param_groups])
    )
    return seen


def test_rate_trace_samples_the_rates_training_used_during_the_curriculum():
    trainer = make_trainer("lerac", curriculum_epochs=1.5, epochs=3)
    seen = applied_rates(trainer)
    steps = trainer.steps_per_epoch
    reports = [trainer.train_epoch() for _ in range(3)]
    names = list(reports[0].layer_rates)

    first, second, third = (report.rate_trace for report in reports)
    assert len(first) == TRACE_SAMPLES and len(second) == TRACE_SAMPLES  # both start inside k
    assert [t for t, _ in first][0] == 0 and [t for t, _ in first][-1] == steps - 1
    assert [t for t, _ in second][0] == steps and [t for t, _ in second][-1] == 2 * steps - 1
    gaps = {b - a for (a, _), (b, _) in zip(first[:-1], first[1:], strict=True)}
    assert max(gaps) - min(gaps) <= 1  # evenly spaced
    assert [t for t, _ in third] == [3 * steps - 1]  # after the curriculum: the last step only

    for report in reports:
        for t, rates in report.rate_trace:
            assert list(rates.values()) == seen[t], t
        assert report.layer_rates == dict(zip(names, seen[report.epoch * steps - 1], strict=True))
    assert first[0][1]["stem"] > first[0][1]["head"]  # rising: deeper layers start lower
    assert all(rate > 0 for rate in reports[-1].layer_rates.values())  # the last step's, not t+1's


def test_rate_trace_outside_a_curriculum_is_the_last_step():
    trainer = make_trainer("conventional")
    seen = applied_rates(trainer)
    report = trainer.train_epoch()
    assert [t for t, _ in report.rate_trace] == [trainer.steps_per_epoch - 1]
    assert list(report.layer_rates.values()) == seen[-1]


def test_test_accuracy_only_when_asked_and_after_the_last_epoch():
    trainer = make_trainer("conventional", epochs=3)
    first, second, last = trainer.train_epoch(), trainer.train_epoch(test=True), trainer.train_epoch()
    assert first.test_acc is None and first.test_correct is None
    assert "test_acc" not in first.metrics() and "val_acc" in first.metrics()
    for report in (second, last):
        assert report.test_correct.dtype == bool
        assert len(report.test_correct) == len(trainer.data.test)
        assert report.test_acc == pytest.approx(report.test_correct.mean(), abs=1e-6)
        assert report.metrics()["test_acc"] == report.test_acc
    assert last.test_acc == trainer.evaluate(trainer.data.test)
    predictions = trainer.predict(trainer.data.test)
    assert (last.test_correct == (predictions == trainer.data.test.y).numpy()).all()


def test_a_diverged_epoch_reports_test_accuracy():
    trainer = make_trainer("conventional", epochs=3, lr=9, momentum=0.99, batch_size=16,
                           schedule="constant", weight_decay=0)
    report = trainer.train_epoch()
    assert report.diverged and not trainer.finished
    assert report.test_acc is not None
