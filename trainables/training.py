"""One training run, from a validated config to per-epoch reports.

The whole dataset lives on the training device as tensors; each epoch draws one
permutation and slices it into batches, so the loop has no per-example Python.
All randomness after initialisation comes from generators the Trainer owns and
checkpoints, which is what makes a restored run continue bit-identically.

On a GPU nothing in a training step waits for the host: batches are indexed,
augmented and drawn on the device (a device generator), the dataset is stored
once in the step's layout and precision, the optimizer is fused, and the loss
is summed on the device and read once per epoch. Validation accuracy is
measured every epoch (learning curves and ASHA need it), test accuracy only
when asked and at the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from trainables import divergence
from trainables.config import RunConfig, check_batch_fits
from trainables.data import Dataset, Split, augment_batch, load_dataset
from trainables.layers import layer_groups
from trainables.models import build_model
from trainables.regimes import RegimeContext, regime_class

EVAL_BATCH = 1024
# Rate samples per epoch while a curriculum runs: enough to draw its rise.
TRACE_SAMPLES = 10


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"setting 'device' is {name!r} but CUDA is not available here")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"setting 'device' is {name!r} but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


@dataclass(frozen=True, kw_only=True)
class ExecutionPlan:
    """Memory layout and precision of the model, the stored dataset and the step.

    Chosen at run time from the device (`for_device`): on a GPU channels_last
    with bf16 autocast, the dataset stored once as bf16 channels_last (the
    first convolution would cast every batch to bf16 anyway); on the CPU NCHW
    in full precision, which keeps runs bit-reproducible (the team's rule,
    although channels_last measured 10-20% faster per CPU epoch here).
    Benchmarks pass other plans to compare them.
    """

    channels_last: bool = False
    bf16: bool = False

    @classmethod
    def for_device(cls, device: torch.device) -> ExecutionPlan:
        on_gpu = device.type == "cuda"
        return cls(channels_last=on_gpu, bf16=on_gpu)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.bf16:
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def place(self, data: Dataset, device: torch.device) -> Dataset:
        """`data` on `device`, images and spectrograms converted (on the host, once) to the
        plan's layout; token ids stay as they are."""
        if (self.channels_last or self.bf16) and data.train.x.is_floating_point() and data.train.x.dim() == 4:
            dtype = torch.bfloat16 if self.bf16 else None

            def converted(split: Split) -> Split:
                return Split(split.x.to(dtype=dtype, memory_format=self.memory_format), split.y)

            data = dataclasses.replace(
                data, train=converted(data.train), val=converted(data.val), test=converted(data.test)
            )
        return data.to(device)


@dataclass(frozen=True)
class EpochReport:
    """What one epoch produced; `diverged` as `trainables.divergence.diverged` rules.

    `test_acc` is None on epochs where test accuracy was not measured; where it
    was, `test_correct` says which test examples the model got right (for
    McNemar's test). `layer_rates` are the rates of the epoch's last step;
    `rate_trace` holds (step, {layer: rate}) samples of rates the epoch's steps
    used: about ten evenly spaced while a curriculum runs, else the last step.
    """

    epoch: int
    train_loss: float
    val_acc: float
    test_acc: float | None
    epoch_seconds: float
    layer_rates: dict[str, float]
    diverged: bool
    rate_trace: list[tuple[int, dict[str, float]]] = dataclasses.field(default_factory=list)
    test_correct: np.ndarray | None = dataclasses.field(default=None, compare=False, repr=False)

    def metrics(self) -> dict[str, Any]:
        """Flat metrics, as reported to Ray Tune and MLflow (no `test_acc` where not measured)."""
        test = {} if self.test_acc is None else {"test_acc": self.test_acc}
        return {
            "epoch": self.epoch,
            "train_loss": self.train_loss,
            "val_acc": self.val_acc,
            **test,
            "epoch_seconds": self.epoch_seconds,
            "diverged": self.diverged,
            **{f"lr/{name}": rate for name, rate in self.layer_rates.items()},
        }


def compile_in_place(model: torch.nn.Module) -> None:
    """`torch.compile` the model's forward in place (parameter names and state_dict keys stay).

    The compiled function is `call` below, not the module's own call: torch
    (2.11, seen on an H100) skips frames whose code lives in torch.nn, so
    compiling `nn.Sequential`'s call traced nothing there and compiled each
    torchvision BasicBlock as its own frame instead, recompiling per block
    width until the recompile limit left it eager, a third slower than not compiling.
    `call` is this package's code, so the whole model is traced from it.

    Compiled graphs are cached per code object for the whole process, so with
    reused actors a later run replays an earlier run's graph whenever its
    guards pass. torch skips guards on module hooks by default, which replayed
    a conventional graph for CBS (whose blur is a hook) and trained without
    the blur. Guarding on hooks makes a run with other hooks compile its own
    graph; runs with the same hooks still share one.

    The compiled `forward` is an attribute that calls this model: a compiled
    model must not be deep-copied (the copy would run the original) or pickled.
    """
    torch._dynamo.config.skip_nnmodule_hook_guards = False
    forward = model.forward

    def call(*args: Any, **kwargs: Any) -> Any:
        return forward(*args, **kwargs)

    model.forward = torch.compile(call)


class Trainer:
    """Builds data, model and regime from a `RunConfig` and trains epoch by epoch."""

    def __init__(
        self, config: RunConfig, data: Dataset | None = None, *, plan: ExecutionPlan | None = None
    ):
        """`data`, when given, replaces the configured dataset (the config's data keys are
        then ignored): benchmarks and tests use it to train on tensors built in memory.
        `plan` replaces the device's default layout and precision (benchmarks compare them)."""
        self.config = config
        train = config.train
        self.device = resolve_device(train.device)
        self.on_gpu = self.device.type == "cuda"
        self.plan = plan or ExecutionPlan.for_device(self.device)
        if self.on_gpu:
            # Every step has the same shapes: let cuDNN time its algorithms once and keep the best.
            torch.backends.cudnn.benchmark = True
        else:
            torch.set_num_threads(train.cpu_threads)
        if data is None:
            data = load_dataset(
                train.dataset,
                data_dir=train.data_dir,
                data_seed=train.data_seed,
                download=train.download,
                label_noise=train.label_noise,
                **train.data_options(),
            )
        check_batch_fits(train.batch_size, len(data.train))
        self.data = self.plan.place(data, self.device)
        torch.manual_seed(train.seed)
        model = build_model(
            train.model, num_classes=self.data.num_classes, in_channels=self.data.input_shape[0],
            vocab_size=self.data.vocab_size, pretrained=train.pretrained,
        )
        self.model = model.to(self.device, memory_format=self.plan.memory_format)
        # Shuffling and augmentation draw on the training device: no host-device copies.
        self.batches = torch.Generator(device=self.device)
        self.batches.manual_seed(train.seed)
        self.steps_per_epoch = max(1, len(self.data.train) // train.batch_size)
        self.epoch = 0
        # The plan's, not a method of this Trainer: a regime holding one would keep a finished
        # Trainer (model, device data) alive until a garbage collection.
        self._autocast = functools.partial(self.plan.autocast, self.device)
        # The regime changes the model (CBS adds hooks) before it is compiled.
        self.regime = regime_class(train.regime)(
            config.regime,
            RegimeContext(
                train=train,
                model=self.model,
                groups=layer_groups(self.model, train.granularity),
                data=self.data,
                steps_per_epoch=self.steps_per_epoch,
                device=self.device,
                autocast=self._autocast,
            ),
        )
        if train.compile:
            compile_in_place(self.model)
        self.layer_names = [group["name"] for group in self.regime.optimizer.param_groups]

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        """A batch in the model's memory format (a no-op for batches already in it; token
        batches, which are not images, as they are)."""
        return x.contiguous(memory_format=self.plan.memory_format) if x.dim() == 4 else x

    @property
    def finished(self) -> bool:
        return self.epoch >= self.config.train.epochs

    # -- training ----------------------------------------------------------
    def train_step(self, index: torch.Tensor) -> torch.Tensor:
        """One optimizer step on the training examples at `index` (a tensor on the device).

        Returns the detached batch loss, still on the device: nothing here
        reads a value back to the host.
        """
        train = self.data.train
        x = augment_batch(
            train.x[index], crop_padding=self.data.crop_padding, flip=self.data.flip,
            generator=self.batches,
        )
        if self.data.masking is not None:  # audio: SpecAugment-style masks, per dataset policy
            x = self.data.masking(x, generator=self.batches)
        return self.regime.train_step(self._prepare(x), train.y[index], index)

    def fit_epoch(self) -> float:
        """One epoch of training steps without any evaluation; the mean training loss.

        Reading the loss is the epoch's only wait for the device.
        """
        batch_size = min(self.config.train.batch_size, len(self.data.train))
        self.regime.start_epoch(self.epoch)
        self.model.train()
        order = torch.randperm(len(self.data.train), generator=self.batches, device=self.device)
        batches = order[: self.steps_per_epoch * batch_size].view(self.steps_per_epoch, -1)
        loss_sum = torch.zeros((), device=self.device)
        for index in batches:
            loss_sum += self.train_step(index)
        self.epoch += 1
        return loss_sum.item() / self.steps_per_epoch

    def train_epoch(self, *, test: bool = False) -> EpochReport:
        """Train one epoch, then measure validation accuracy.

        Test accuracy is measured when `test` is True, after the last epoch,
        and when the loss diverged (which ends the run), so a run's last
        report always has it.
        """
        started = time.perf_counter()
        first_step = self.regime.scheduler.step_count
        train_loss = self.fit_epoch()
        diverged = divergence.diverged(train_loss, self.data.num_classes)
        val_acc = self.evaluate(self.data.val)
        test_acc, test_correct = None, None
        if test or self.finished or diverged:
            correct = self._correct(self.data.test)
            test_acc = correct.float().mean().item()
            test_correct = correct.cpu().numpy()
        trace = self.rate_trace(first_step, self.regime.scheduler.step_count)
        return EpochReport(
            epoch=self.epoch,
            train_loss=train_loss,
            val_acc=val_acc,
            test_acc=test_acc,
            epoch_seconds=time.perf_counter() - started,
            layer_rates=trace[-1][1] if trace else {},
            diverged=diverged,
            rate_trace=trace,
            test_correct=test_correct,
        )

    def rate_trace(self, start: int, stop: int) -> list[tuple[int, dict[str, float]]]:
        """(step, {layer: rate}) of steps start..stop-1, read from the pure schedule (no sync).

        About `TRACE_SAMPLES` evenly spaced steps (first and last included) when
        the span starts inside a curriculum; otherwise the last step only.
        """
        if stop <= start:
            return []
        schedule = self.regime.scheduler.schedule
        last = stop - 1
        if schedule.in_curriculum(start):
            count = min(TRACE_SAMPLES, stop - start)
            spacing = (last - start) / max(1, count - 1)
            steps = sorted({start + round(i * spacing) for i in range(count)})
        else:
            steps = [last]
        return [(t, dict(zip(self.layer_names, schedule.rates_at(t), strict=True))) for t in steps]

    # -- evaluation --------------------------------------------------------
    @torch.no_grad()
    def _predictions(self, split: Split) -> torch.Tensor:
        """Predicted class of every example of `split`, on the device."""
        self.model.eval()
        predictions = []
        for start in range(0, len(split), EVAL_BATCH):
            with self._autocast():
                logits = self.model(self._prepare(split.x[start : start + EVAL_BATCH]))
            predictions.append(logits.argmax(dim=1))
        return torch.cat(predictions)

    def _correct(self, split: Split) -> torch.Tensor:
        """Whether each example of `split` is classified correctly (bool, on the device)."""
        return self._predictions(split) == split.y

    def predict(self, split: Split) -> torch.Tensor:
        """Predicted class of every example of `split` (on the CPU), for McNemar."""
        return self._predictions(split).cpu()

    def evaluate(self, split: Split) -> float:
        """Accuracy on `split`, a fraction in [0, 1]."""
        return self._correct(split).float().mean().item()

    # -- checkpoints -------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything a restored run needs to continue exactly.

        Only tensors, numbers, strings and containers of them, so that
        `torch.load(weights_only=True)` reads it back.
        """
        return {
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "regime": self.regime.state_dict(),
            "batches": self.batches.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.model.load_state_dict(state["model"])
        self.regime.load_state_dict(state["regime"])
        self.batches.set_state(state["batches"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"]:
            torch.cuda.set_rng_state_all(state["cuda_rng"])


def layer_rate_curves(
    config: Mapping[str, Any], epochs: int | None = None
) -> tuple[list[int], dict[str, list[float]]]:
    """Every layer's rate at every step of a config's first `epochs` epochs, without training.

    Builds the real regime on the CPU (so the curves are exactly those training
    uses) and reads its pure schedule.
    """
    run = RunConfig.from_dict({**config, "device": "cpu"})
    trainer = Trainer(run)
    steps = range((epochs or run.train.epochs) * trainer.steps_per_epoch)
    schedule = trainer.regime.scheduler.schedule
    names = [group["name"] for group in trainer.regime.optimizer.param_groups]
    table = [schedule.rates_at(t) for t in steps]
    return list(steps), {name: [row[j] for row in table] for j, name in enumerate(names)}
