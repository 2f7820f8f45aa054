"""Samples/second of the device-resident tensor pipeline vs torchvision's DataLoader.

The Trainer keeps a whole dataset as one normalised tensor on the training
device and, per step, indexes it with a slice of an epoch permutation and
augments the batch there (`augment_batch`: random crop with padding 4, flip).
The usual alternative is torchvision's `CIFAR10` dataset in a `DataLoader`
that decodes every image to PIL and runs RandomCrop(32, padding=4),
RandomHorizontalFlip, ToTensor and Normalize per example. Both read the same
CIFAR-10 files, written here in the real on-disk format (Python-2 pickles,
random images); an epoch of batches is drawn without any model, epochs of the
pipelines interleaved in rounds.

Run from the repository root: python benchmarks/data_pipeline.py [--help]
"""

from __future__ import annotations

import argparse
import hashlib
import pickle
import struct
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import common
import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from trainables.data import Dataset, augment_batch, load_dataset
from trainables.training import resolve_device

NAME = "data_pipeline"
SPEEDUP_BOUND = 3.0
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


class _Py2Pickler(pickle._Pickler):
    """Writes `bytes` as Python 2 `str` opcodes, as the official CIFAR pickles do.

    Such strings load as bytes with `encoding="bytes"` (what trainables reads)
    and as str with `encoding="latin1"` (what torchvision reads), so one set of
    files serves both. The C pickler cannot be told to do this; the pure-Python
    one can.
    """

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def _dump(path: Path, content: dict[bytes, Any]) -> str:
    """Write one pickle file as Python 2 did and return its MD5 (torchvision checks it)."""
    with open(path, "wb") as handle:
        _Py2Pickler(handle, protocol=2).dump(content)
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_cifar10(root: Path, *, batches: int, per_batch: int, test: int, seed: int = 0
                  ) -> type[datasets.CIFAR10]:
    """CIFAR-10 files of random images under `root`, and a `CIFAR10` class that accepts them.

    The class is torchvision's own with the file list and checksums of these
    files, so its integrity checks and loading code run unchanged.
    """
    rng = np.random.default_rng(seed)
    folder = root / CIFAR_FOLDER
    folder.mkdir(parents=True)

    def batch(n: int, label: bytes) -> dict[bytes, Any]:
        return {
            b"batch_label": label,
            b"data": rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8),
            b"labels": rng.integers(0, 10, n).tolist(),
        }

    train_list = [
        [f"data_batch_{i}", _dump(folder / f"data_batch_{i}", batch(per_batch, b"training batch"))]
        for i in range(1, batches + 1)
    ]
    test_list = [["test_batch", _dump(folder / "test_batch", batch(test, b"testing batch"))]]
    meta = {b"label_names": [f"class{i}".encode() for i in range(10)],
            b"num_cases_per_batch": per_batch, b"num_vis": 3 * 32 * 32}
    meta_md5 = _dump(folder / "batches.meta", meta)
    return type("WrittenCIFAR10", (datasets.CIFAR10,), {
        "train_list": train_list,
        "test_list": test_list,
        "meta": {"filename": "batches.meta", "key": "label_names", "md5": meta_md5},
    })


def resident_epoch(data: Dataset, batch_size: int, generator: torch.Generator,
                   device: torch.device) -> Callable[[], int]:
    """One epoch of the Trainer's input pipeline (no model); returns the samples drawn."""
    train = data.train
    steps = len(train) // batch_size

    def epoch() -> int:
        samples = 0
        order = torch.randperm(len(train), generator=generator)[: steps * batch_size]
        for index in order.to(device).view(steps, batch_size):
            x = augment_batch(train.x[index], crop_padding=data.crop_padding, flip=data.flip,
                              generator=generator)
            if device.type == "cuda":  # as the Trainer feeds its model
                x = x.contiguous(memory_format=torch.channels_last)
            samples += len(train.y[index])
        _synchronise(device)
        return samples

    return epoch


def loader_epoch(loader: DataLoader, device: torch.device) -> Callable[[], int]:
    """One epoch of a DataLoader, each batch moved to `device`; returns the samples drawn."""

    def epoch() -> int:
        samples = 0
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            samples += len(y)
        _synchronise(device)
        return samples

    return epoch


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=5, help="training files (data_batch_N)")
    parser.add_argument("--per-batch", type=int, default=2000, help="images per training file")
    parser.add_argument("--test", type=int, default=1000, help="images in test_batch")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader num_workers to try")
    parser.add_argument("--rounds", type=int, default=5, help="measured epochs per pipeline")
    parser.add_argument("--warmup", type=int, default=1, help="discarded epochs per pipeline (starts workers)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the Trainer uses 1 on the CPU)")
    parser.add_argument("--device", default="auto", help="'auto' (CUDA when present), 'cpu' or 'cuda'")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cifar_class = write_cifar10(root, batches=args.batches, per_batch=args.per_batch, test=args.test)

        setup_started = time.perf_counter()
        data = load_dataset("cifar10", data_dir=root).to(device)
        _synchronise(device)
        setup = {"resident": time.perf_counter() - setup_started}
        epochs = {"resident": resident_epoch(data, args.batch_size, torch.Generator().manual_seed(0), device)}

        augment = transforms.Compose([
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(CIFAR_MEAN, CIFAR_STD),
        ])
        for workers in args.workers:
            name = f"DataLoader, {workers} workers"
            setup_started = time.perf_counter()
            loader = DataLoader(
                cifar_class(str(root), train=True, transform=augment),
                batch_size=args.batch_size, shuffle=True, drop_last=True, num_workers=workers,
                persistent_workers=workers > 0, pin_memory=device.type == "cuda",
                generator=torch.Generator().manual_seed(0),
            )
            setup[name] = time.perf_counter() - setup_started
            epochs[name] = loader_epoch(loader, device)

        samples = {name: epoch() for name, epoch in epochs.items()}  # also checks each one runs
        # Wall time: the DataLoader's workers are other processes.
        times = common.round_robin(epochs, rounds=args.rounds, warmup=args.warmup).wall

    rates = {name: samples[name] / common.quartiles(t)[1] for name, t in times.items()}
    best_loader = max((n for n in rates if n != "resident"), key=rates.__getitem__)
    headers = ["pipeline", "samples/epoch", "median epoch s", "samples/s", "resident is", "setup s"]
    rows = [
        [name, samples[name], f"{common.quartiles(times[name])[1]:.3f}", f"{rates[name]:,.0f}",
         f"{rates['resident'] / rates[name]:.1f}x", f"{setup[name]:.2f}"]
        for name in times
    ]
    print(common.text_table(headers, rows))
    target = common.Target(f"resident samples/s / best DataLoader ({best_loader})",
                           rates["resident"] / rates[best_loader], SPEEDUP_BOUND, at_most=False)
    info = common.machine_info(device)
    print(f"\n{common.machine_line(info)}\n{target.line()}")
    seconds = time.perf_counter() - started
    print(f"took {seconds:.0f} s")

    common.write_json(NAME, {
        "script": NAME,
        "machine": info,
        "settings": vars(args),
        "samples_per_epoch": samples,
        "epoch_s": times,
        "samples_per_s": rates,
        "setup_s": setup,
        "targets": [target.as_dict()],
        "seconds": seconds,
    })
    common.update_results_md(NAME, "\n".join([
        f"## Data pipeline (`benchmarks/{NAME}.py`)\n",
        f"Machine: {common.machine_line(info)}, {args.threads} torch thread(s).\n",
        f"CIFAR-10 files in the real pickle format ({args.batches} x {args.per_batch} random "
        f"train images); batch {args.batch_size}, no model; median of {args.rounds} epochs per "
        f"pipeline, interleaved, after {args.warmup} warm-up. Resident: `load_dataset` (90% "
        "train split) indexed by a permutation slice + `augment_batch`; DataLoader: torchvision "
        "`CIFAR10` with RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize "
        "(persistent workers). Setup: loading and normalising the files (resident) or building "
        "the dataset (DataLoader), paid once per trial.\n",
        common.markdown_table(headers, rows) + "\n",
        f"- {target.line()}\n",
        common.rerun_line(NAME, seconds),
    ]))


if __name__ == "__main__":
    main()
