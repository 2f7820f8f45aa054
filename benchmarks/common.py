"""Shared helpers of the benchmark scripts: timing, machine info, tables and result files.

Importing this module puts the repository root on `sys.path`, so every script
runs as `python benchmarks/<name>.py` from a plain checkout (no editable
install needed); scripts import it before `trainables`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import random
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from trainables.data import Dataset, Split, augment_batch  # noqa: E402  (needs ROOT on sys.path)
from trainables.models import build_model  # noqa: E402

RESULTS_DIR = ROOT / "benchmarks" / "results"
RESULTS_MD = ROOT / "benchmarks" / "RESULTS.md"


# -- timing ----------------------------------------------------------------
@dataclass(frozen=True)
class Timings:
    """Seconds per call of each task: wall-clock, and CPU time of this process.

    On a shared machine wall time includes the time other jobs held the cores;
    the process's CPU time counts only its own work (its worker processes,
    such as DataLoader workers, are not included).
    """

    wall: dict[str, list[float]]
    cpu: dict[str, list[float]]


def round_robin(
    tasks: Mapping[str, Callable[[], Any]], *, rounds: int, warmup: int = 0, seed: int = 0
) -> Timings:
    """Time every task, interleaved in rounds so machine noise hits all alike.

    Each round calls every task once, in a fresh random order (seeded): a
    fixed cycle would always run the same task right after the same
    neighbour, whose leftovers (freed memory, cold caches) would bias it.
    The first `warmup` rounds are run and discarded. A task that needs its
    work finished before the clock stops (CUDA) must synchronise itself.
    """
    names = list(tasks)
    order = random.Random(seed)
    timings = Timings({name: [] for name in names}, {name: [] for name in names})
    for round_index in range(warmup + rounds):
        for name in order.sample(names, len(names)):
            wall, cpu = time.perf_counter(), time.process_time()
            tasks[name]()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            if round_index >= warmup:
                timings.wall[name].append(wall)
                timings.cpu[name].append(cpu)
    return timings


def paired_ratios(times: Mapping[str, list[float]], baseline: str) -> dict[str, list[float]]:
    """Per-round time ratio of every task to `baseline` (rounds pair up noise)."""
    return {
        name: [t / b for t, b in zip(series, times[baseline], strict=True)]
        for name, series in times.items()
    }


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """(25th percentile, median, 75th percentile); all three equal for one value."""
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


# -- data ------------------------------------------------------------------
def random_image_dataset(
    *, train: int, evaluation: int, shape: tuple[int, int, int] = (3, 32, 32),
    num_classes: int = 10, seed: int = 0,
) -> Dataset:
    """A CIFAR-shaped `Dataset` of random normalised tensors (no image files needed).

    Augmented like CIFAR (crop padding 4, flips); validation and test splits
    hold `evaluation` examples each; no label noise, as `load_dataset` marks it.
    """
    generator = torch.Generator().manual_seed(seed)

    def split(n: int) -> Split:
        return Split(
            torch.randn(n, *shape, generator=generator),
            torch.randint(0, num_classes, (n,), generator=generator),
        )

    return Dataset(
        name="random",
        train=split(train),
        val=split(evaluation),
        test=split(evaluation),
        num_classes=num_classes,
        input_shape=shape,
        crop_padding=4,
        flip=True,
        noisy=torch.zeros(train, dtype=torch.bool),
        trusted=torch.ones(train, dtype=torch.bool),  # no label noise: every label is clean
    )


def bare_training_epoch(
    data: Dataset, *, model: str, batch_size: int, device: torch.device, seed: int = 0,
    lr: float = 0.05,
) -> Callable[[], None]:
    """One epoch of a plain PyTorch loop, as a reference for the Trainer's loop overhead.

    Same data on the device, same model and augmentation, but one parameter
    group, a constant rate, torch's default SGD implementation and nothing the
    Trainer adds (regime, rate schedule, per-layer groups). Each call trains
    one epoch and reads the summed loss once.
    """
    torch.manual_seed(seed)
    net = build_model(model, num_classes=data.num_classes, in_channels=data.input_shape[0])
    net = net.to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    train = data.to(device).train
    steps = max(1, len(train) // batch_size)

    def epoch() -> None:
        net.train()
        order = torch.randperm(len(train), generator=generator, device=device)
        total = torch.zeros((), device=device)
        for index in order[: steps * min(batch_size, len(train))].view(steps, -1):
            x = augment_batch(train.x[index], crop_padding=data.crop_padding, flip=data.flip,
                              generator=generator)
            loss = F.cross_entropy(net(x), train.y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach()
        total.item()

    return epoch


def asha_rungs(*, epochs: int, grace_period: int, reduction_factor: int) -> list[int]:
    """The epochs at which ASHA judges trials: grace_period * reduction_factor**k below `epochs`."""
    rungs, rung = [], grace_period
    while rung < epochs:
        rungs.append(rung)
        rung *= reduction_factor
    return rungs


# -- machine and results ---------------------------------------------------
def cpu_model() -> str:
    """The CPU's marketing name (Linux /proc/cpuinfo; platform's guess elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device | str) -> dict[str, Any]:
    """What the figures depend on: hardware, load, library versions, device and date."""
    device = torch.device(device)
    info: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "git_commit": _git_commit(),
    }
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:
        info["torchvision"] = None
    return info


def _git_commit() -> str | None:
    """The checkout's commit (read-only), `-dirty` when the tree differs from it, so a figure
    can be traced to its code."""
    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True,
            timeout=10, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def machine_line(info: Mapping[str, Any]) -> str:
    """One line naming the machine, for the top of a printed or Markdown report."""
    gpu = f", GPU {info['gpu']}" if info.get("gpu") else ""
    return (
        f"{info['date']} | {info['cpu']} ({info['cpu_cores']} cores, load {info['load_average_1m']})"
        f"{gpu} | device {info['device']} | torch {info['torch']}, python {info['python']}"
    )


def write_json(name: str, payload: Mapping[str, Any]) -> Path:
    """Write `benchmarks/results/<name>.json` (atomically) and return its path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    os.replace(partial, path)
    return path


def update_results_md(name: str, body: str) -> Path:
    """Replace this script's section of RESULTS.md (between its markers), leaving the others.

    The section is appended when the file or its markers do not exist yet.
    """
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    section = f"{start}\n{body.strip()}\n{end}"
    text = RESULTS_MD.read_text() if RESULTS_MD.exists() else (
        "# Benchmark results\n\nEach section is rewritten by its script "
        "(`python benchmarks/<script>.py`); figures in `benchmarks/results/<script>.json`.\n"
    )
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    partial = RESULTS_MD.with_name(f"{RESULTS_MD.name}.{os.getpid()}.tmp")
    partial.write_text(text)
    os.replace(partial, RESULTS_MD)
    return RESULTS_MD


# -- tables and targets ----------------------------------------------------
def text_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A fixed-width table for the terminal: text left-aligned, numbers right-aligned."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    numeric = [bool(rows) and all(_is_number(row[i]) for row in rows) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if num else c.ljust(w) for c, w, num in zip(row, widths, numeric, strict=True)
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])


def rerun_line(name: str, seconds: float) -> str:
    """How to reproduce a section: the command exactly as it was run (its arguments too)."""
    arguments = shlex.join(sys.argv[1:])
    command = f"python benchmarks/{name}.py" + (f" {arguments}" if arguments else "")
    return f"Rerun: `{command}` ({seconds:.0f} s here)."


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """The same table in GitHub Markdown, numbers right-aligned."""
    align = ["---:" if rows and all(_is_number(row[i]) for row in rows) else "---"
             for i in range(len(headers))]
    lines = [headers, align, *rows]
    return "\n".join("| " + " | ".join(str(c) for c in row) + " |" for row in lines)


def _is_number(value: Any) -> bool:
    if isinstance(value, int | float):
        return True
    try:
        float(str(value).replace(",", "").rstrip("x%"))
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Target:
    """A claim a benchmark checks, e.g. 'LeRaC epoch time <= 1.02x conventional'."""

    name: str
    value: float
    bound: float
    at_most: bool  # True: holds when value <= bound; False: when value >= bound

    @property
    def held(self) -> bool:
        return self.value <= self.bound if self.at_most else self.value >= self.bound

    def line(self) -> str:
        sign = "<=" if self.at_most else ">="
        return f"{'PASS' if self.held else 'FAIL'}: {self.name}: {self.value:.3f} (target {sign} {self.bound:g})"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "bound": self.bound,
                "at_most": self.at_most, "held": self.held}
