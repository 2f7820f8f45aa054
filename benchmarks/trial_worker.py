"""One Trainer in its own process, driven line by line over stdin by `gpu_before_after.py`.

It imports `trainables` from whatever tree comes first on PYTHONPATH, so one
worker drives an earlier commit's Trainer and the working tree's alike. It
uses only what both have: `RunConfig.from_dict`, `Dataset` and `Split` (their
fields up to `trusted`), `Trainer(config, data=...)` with its `data`,
`batches`, `_prepare`, `train_epoch` and `state_dict`, the regime's
`train_step` and `augment_batch`. It must not import `benchmarks/common.py`, which puts this
repository's root first on `sys.path`.

Commands (one per line; each answer is one JSON line, sent after the device
finished the work):
  steps N        N training steps; their seconds
  profile N      counts of N profiled training steps (GPU ops, launches, syncs)
  epoch KIND     one trial epoch: `every` (train_epoch as the tree's default
                 evaluates, then a checkpoint: the old Trainable's policy),
                 `plain` (training and validation) or `rung` (plus test
                 accuracy and a checkpoint); its seconds
  checkpoint     one checkpoint: torch.save to a local folder, then a copy of
                 that folder to a second one, as Tune persists it to storage
"""

from __future__ import annotations

import argparse
import collections
import inspect
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from trainables.config import RunConfig
from trainables.data import Dataset, Split, augment_batch
from trainables.training import Trainer

HOST_READS = ("aten::item", "aten::_local_scalar_dense", "aten::nonzero", "aten::is_nonzero")


def random_dataset(*, train: int, evaluation: int, test: int) -> Dataset:
    """CIFAR-shaped random data, augmented like CIFAR; the same tensors in every worker."""
    generator = torch.Generator().manual_seed(0)

    def split(n: int) -> Split:
        return Split(torch.randn(n, 3, 32, 32, generator=generator),
                     torch.randint(0, 10, (n,), generator=generator))

    return Dataset(
        name="random", train=split(train), val=split(evaluation), test=split(test),
        num_classes=10, input_shape=(3, 32, 32), crop_padding=4, flip=True,
        noisy=torch.zeros(train, dtype=torch.bool), trusted=torch.ones(train, dtype=torch.bool),
    )


class Worker:
    """A ResNet-18 trial of one regime, warmed up, ready to time steps and epochs."""

    def __init__(self, args: argparse.Namespace):
        config = RunConfig.from_dict({
            "regime": args.regime, "model": "resnet18", "device": args.device,
            "batch_size": args.batch_size, "epochs": 10_000, "seed": 0, "cpu_threads": 1,
        })
        data = random_dataset(train=args.images, evaluation=args.val_images, test=args.test_images)
        self.trainer = Trainer(config, data=data)
        self.on_gpu = self.trainer.device.type == "cuda"
        self.folder = Path(tempfile.mkdtemp(prefix="trial_worker_"))
        # Before test accuracy moved to rungs, every epoch measured it.
        self.tests_on_request = "test" in inspect.signature(Trainer.train_epoch).parameters

    def sync(self) -> None:
        if self.on_gpu:
            torch.cuda.synchronize(self.trainer.device)

    def step(self, index: torch.Tensor) -> None:
        """One training step as the tree's own epoch loop takes it."""
        trainer = self.trainer
        if hasattr(trainer, "train_step"):
            trainer.train_step(index)
            return
        data = trainer.data  # before train_step existed: the loop body of train_epoch
        x = augment_batch(data.train.x[index], crop_padding=data.crop_padding, flip=data.flip,
                          generator=trainer.batches)
        trainer.regime.train_step(trainer._prepare(x), data.train.y[index], index)

    def batches(self, steps: int) -> torch.Tensor:
        batch = self.trainer.config.train.batch_size
        order = torch.randperm(len(self.trainer.data.train), device=self.trainer.device)
        return order[: steps * batch].view(steps, batch)

    def steps(self, steps: int) -> dict[str, Any]:
        index = self.batches(steps)
        self.trainer.model.train()
        self.sync()
        started = time.perf_counter()
        for row in index:
            self.step(row)
        self.sync()
        return {"seconds": time.perf_counter() - started}

    def profile(self, steps: int) -> dict[str, Any]:
        """Per step: GPU ops (kernels, copies, memsets), launch calls, syncs (synchronize
        calls and blocking copies; the profiler's own stop may add one), async memcpy
        calls (any direction) and host reads."""
        index = self.batches(steps)
        self.trainer.model.train()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.on_gpu else [])
        self.sync()
        with profile(activities=activities) as prof:
            for row in index:
                self.step(row)
        self.sync()
        events = prof.events()
        names = collections.Counter(e.name for e in events)
        gpu_ops = sum(1 for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
        launches = sum(n for name, n in names.items() if "LaunchKernel" in name)
        syncs = sum(n for name, n in names.items()
                    if "Synchronize" in name or name == "cudaMemcpy")
        return {
            "gpu_ops": gpu_ops / steps,
            "launches": launches / steps,
            "syncs": syncs / steps,
            "async_copies": names["cudaMemcpyAsync"] / steps,
            "aten_ops": sum(n for name, n in names.items() if name.startswith("aten::")) / steps,
            "host_reads": sum(names[name] for name in HOST_READS) / steps,
        }

    def epoch(self, kind: str) -> dict[str, Any]:
        started = time.perf_counter()
        if kind == "every" or not self.tests_on_request:
            self.trainer.train_epoch()
        else:
            self.trainer.train_epoch(test=kind == "rung")
        if kind in ("every", "rung"):
            self.save_checkpoint()
        self.sync()
        return {"seconds": time.perf_counter() - started}

    def save_checkpoint(self) -> None:
        local, storage = self.folder / "local", self.folder / "storage"
        shutil.rmtree(local, ignore_errors=True)
        local.mkdir()
        torch.save({"trainer": self.trainer.state_dict()}, local / "trainer.pt")
        shutil.copytree(local, storage, dirs_exist_ok=True)

    def checkpoint(self) -> dict[str, Any]:
        self.sync()
        started = time.perf_counter()
        self.save_checkpoint()
        seconds = time.perf_counter() - started
        return {"seconds": seconds, "mib": (self.folder / "local" / "trainer.pt").stat().st_size / 2**20}

    def serve(self) -> None:
        self.epoch("rung")  # warm-up: cuDNN's autotuning, allocator, first checkpoint
        self.steps(2)
        print(json.dumps({"ready": True, "tests_on_request": self.tests_on_request}), flush=True)
        for line in sys.stdin:
            command, *rest = line.split()
            if command == "quit":
                break
            answer = getattr(self, command)(*(int(a) if a.isdigit() else a for a in rest))
            print(json.dumps(answer), flush=True)
        shutil.rmtree(self.folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--regime", required=True)
    parser.add_argument("--device", required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--images", type=int, required=True)
    parser.add_argument("--val-images", type=int, required=True)
    parser.add_argument("--test-images", type=int, required=True)
    args = parser.parse_args()
    if not args.device.startswith("cuda"):
        torch.set_num_threads(1)
    Worker(args).serve()


if __name__ == "__main__":
    main()
