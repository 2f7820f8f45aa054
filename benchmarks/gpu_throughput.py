"""ResNet-18 training throughput per precision setting, and trials per GPU-hour when packed.

Part 1: images/second of training steps (resident CIFAR-shaped batches,
`augment_batch`, forward, backward, SGD step) for
  fp32 (NCHW), fp32 + channels_last, bf16 autocast + channels_last (what the
  Trainer does on CUDA), and optionally the latter + torch.compile,
interleaved in rounds.
Part 2: 1, 2 and 4 training processes at once on one GPU (each capped at its
share of the GPU memory, as Ray Tune packs fractional-GPU trials); their
summed images/second gives trials per GPU-hour, a trial being
`--trial-epochs` epochs of CIFAR-10's 45,000 training images.

Without CUDA the script runs a reduced version on the CPU, says so, and
labels its packing figures as CPU processes.

Run from the repository root: python benchmarks/gpu_throughput.py [--help]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import common
import torch
import torch.nn.functional as F

from trainables.data import Dataset, augment_batch
from trainables.models import build_model

NAME = "gpu_throughput"
CIFAR10_TRAIN = 45_000  # CIFAR-10's 50,000 minus the 10% validation split


@dataclass(frozen=True)
class Variant:
    """A way to run the training step."""

    name: str
    channels_last: bool = False
    bf16: bool = False
    compile: bool = False


VARIANTS = {
    "fp32": Variant("fp32"),
    "fp32_cl": Variant("fp32 + channels_last", channels_last=True),
    "bf16_cl": Variant("bf16 autocast + channels_last", channels_last=True, bf16=True),
    "bf16_cl_compile": Variant("bf16 + channels_last + compile", channels_last=True, bf16=True,
                               compile=True),
}


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def training_step(variant: Variant, data: Dataset, batch_size: int, device: torch.device,
                  seed: int = 0) -> Callable[[], None]:
    """A closure doing one training step of a fresh ResNet-18 as `variant` says (no sync)."""
    torch.manual_seed(seed)
    model = build_model("resnet18", num_classes=data.num_classes, in_channels=data.input_shape[0])
    memory_format = torch.channels_last if variant.channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    forward = torch.compile(model) if variant.compile else model
    draws = torch.Generator().manual_seed(seed)
    train = data.train

    def step() -> None:
        index = torch.randint(len(train), (batch_size,), generator=draws).to(device)
        x = augment_batch(train.x[index], crop_padding=data.crop_padding, flip=data.flip,
                          generator=draws)
        x = x.contiguous(memory_format=memory_format)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=variant.bf16):
            logits = forward(x)
        loss = F.cross_entropy(logits.float(), train.y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def steps_task(step: Callable[[], None], steps: int, device: torch.device) -> Callable[[], None]:
    def run() -> None:
        for _ in range(steps):
            step()
        synchronise(device)

    return run


def measure_variants(args: argparse.Namespace, device: torch.device, data: Dataset
                     ) -> dict[str, dict[str, Any]]:
    """Images/second of each variant, its first-steps time (compilation) and peak memory.

    Seconds are wall time on a GPU and CPU time of the process on the CPU.
    """
    tasks, first_s, peak_gib = {}, {}, {}
    for key in args.variants:
        variant = VARIANTS[key]
        if device.type == "cuda":  # the peak above what earlier variants still hold
            torch.cuda.reset_peak_memory_stats(device)
            held = torch.cuda.memory_allocated(device)
        started = time.perf_counter()
        step = training_step(variant, data, args.batch_size, device)
        steps_task(step, args.warmup_steps, device)()  # compiles, autotunes, fills caches
        first_s[key] = time.perf_counter() - started
        peak_gib[key] = ((torch.cuda.max_memory_allocated(device) - held) / 2**30
                         if device.type == "cuda" else None)
        tasks[key] = steps_task(step, args.steps, device)
        print(f"  {variant.name}: ready after {first_s[key]:.1f} s", flush=True)
    timings = common.round_robin(tasks, rounds=args.rounds)
    # On the CPU (one thread), the process's CPU time: wall time there also counts the
    # time other jobs held the shared cores.
    times = timings.wall if device.type == "cuda" else timings.cpu
    return {
        key: {
            "name": VARIANTS[key].name,
            "images_per_s": args.batch_size * args.steps / common.quartiles(times[key])[1],
            "round_s": times[key],
            "first_steps_s": first_s[key],
            "peak_memory_gib": peak_gib[key],
        }
        for key in args.variants
    }


# -- packing: N training processes at once -------------------------------------
def worker(args: argparse.Namespace) -> None:
    """One packed trial: warm up, say 'ready', wait for 'go', train for a while, print JSON."""
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.set_per_process_memory_fraction(args.memory_fraction, device)
    else:
        torch.set_num_threads(args.threads)
    data = common.random_image_dataset(train=args.images, evaluation=1).to(device)
    step = training_step(VARIANTS[args.pack_variant], data, args.batch_size, device, seed=args.seed)
    steps_task(step, args.warmup_steps, device)()
    print("ready", flush=True)
    sys.stdin.readline()
    started, steps = time.perf_counter(), 0
    while time.perf_counter() - started < args.pack_seconds:
        steps_task(step, args.sync_every, device)()
        steps += args.sync_every
    seconds = time.perf_counter() - started
    print(json.dumps({"images": steps * args.batch_size, "seconds": seconds}), flush=True)


def _run_together(processes: list[subprocess.Popen], timeout: float) -> list[dict[str, Any]]:
    """Wait until every worker is warm, start them at once, and collect their reports."""
    for process in processes:
        if process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"packed worker failed before training: {process.args}")
    for process in processes:
        process.stdin.write("go\n")
        process.stdin.flush()
    reports = []
    for process in processes:
        out, _ = process.communicate(timeout=timeout)
        if process.returncode:
            raise RuntimeError(f"packed worker exited with {process.returncode}")
        reports.append(json.loads(out.strip().splitlines()[-1]))
    return reports


def measure_packing(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    """Summed images/second of 1, 2, 4... concurrent training processes, started together."""
    results = []
    for count in args.pack:
        command = [
            sys.executable, __file__, "--worker", "--device", str(device),
            "--pack-variant", args.pack_variant, "--batch-size", str(args.batch_size),
            "--images", str(args.images), "--warmup-steps", str(args.warmup_steps),
            "--pack-seconds", str(args.pack_seconds), "--sync-every", str(args.sync_every),
            "--threads", str(args.threads), "--memory-fraction", f"{0.95 / count:.4f}",
        ]
        processes = [
            subprocess.Popen([*command, "--seed", str(i)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
            for i in range(count)
        ]
        try:
            reports = _run_together(processes, timeout=args.pack_seconds * 10 + 600)
        finally:
            for process in processes:  # only left running when something failed
                if process.poll() is None:
                    process.kill()
        per_process = [r["images"] / r["seconds"] for r in reports]
        total = sum(per_process)
        results.append({
            "processes": count,
            "images_per_s": total,
            "per_process_images_per_s": per_process,
            "trials_per_hour": total * 3600 / (args.trial_epochs * CIFAR10_TRAIN),
        })
        print(f"  {count} process(es): {total:,.0f} images/s", flush=True)
    return results


def parse_args() -> argparse.Namespace:
    gpu = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if gpu else "cpu")
    parser.add_argument("--batch-size", type=int, default=256 if gpu else 32)
    parser.add_argument("--images", type=int, default=8192 if gpu else 512,
                        help="resident random training images batches are drawn from")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS),
                        default=list(VARIANTS) if gpu else ["fp32", "fp32_cl", "bf16_cl"],
                        help="step variants (torch.compile only by default on the GPU)")
    parser.add_argument("--steps", type=int, default=50 if gpu else 2, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=5 if gpu else 3)
    parser.add_argument("--warmup-steps", type=int, default=10 if gpu else 1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per CPU process")
    parser.add_argument("--pack", type=int, nargs="*", default=[1, 2, 4],
                        help="concurrent processes to try (none: skip packing)")
    parser.add_argument("--pack-variant", default="bf16_cl_compile" if gpu else "fp32_cl",
                        choices=list(VARIANTS))
    parser.add_argument("--pack-seconds", type=float, default=30.0 if gpu else 10.0,
                        help="how long the packed processes train together")
    parser.add_argument("--sync-every", type=int, default=10 if gpu else 1,
                        help="steps between clock checks of a packed process")
    parser.add_argument("--trial-epochs", type=int, default=30,
                        help="epochs of a trial (45,000 images each) for trials per GPU-hour")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--memory-fraction", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(args)
        return
    started = time.perf_counter()
    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    where = "GPU" if on_gpu else "CPU"
    notice = None if on_gpu else "no GPU: ran on the CPU, GPU figures not measured"
    if notice:
        print(notice)
    torch.set_num_threads(args.threads)
    data = common.random_image_dataset(train=args.images, evaluation=1).to(device)

    print(f"step variants on the {where} (batch {args.batch_size}):", flush=True)
    variants = measure_variants(args, device, data)
    base = variants[args.variants[0]]["images_per_s"]
    rate = "images/s" if on_gpu else "images/CPU-s"
    headers = ["variant", rate, f"vs {VARIANTS[args.variants[0]].name}", "warm-up s", "peak GiB"]
    rows = [
        [v["name"], f"{v['images_per_s']:,.1f}", f"{v['images_per_s'] / base:.2f}x",
         f"{v['first_steps_s']:.1f}",
         "-" if v["peak_memory_gib"] is None else f"{v['peak_memory_gib']:.2f}"]
        for v in variants.values()
    ]
    print(common.text_table(headers, rows))

    packing, pack_rows = [], []
    pack_headers = ["processes", "images/s (sum)", "per process", f"trials/{where}-hour", "vs 1"]
    if args.pack:
        label = "one GPU" if on_gpu else f"the CPU ({args.threads} thread each), not GPU figures"
        print(f"\npacking processes on {label}: {VARIANTS[args.pack_variant].name}, batch "
              f"{args.batch_size}, {args.pack_seconds:.0f} s together", flush=True)
        if on_gpu:
            torch.cuda.empty_cache()  # leave the GPU's memory to the packed processes
        packing = measure_packing(args, device)
        single = packing[0]["images_per_s"]
        pack_rows = [
            [p["processes"], f"{p['images_per_s']:,.1f}",
             " / ".join(f"{r:,.1f}" for r in p["per_process_images_per_s"]),
             f"{p['trials_per_hour']:.3f}", f"{p['images_per_s'] / single:.2f}x"]
            for p in packing
        ]
        print(common.text_table(pack_headers, pack_rows))

    info = common.machine_info(device)
    print(f"\n{common.machine_line(info)}")
    if notice:
        print(notice)
    seconds = time.perf_counter() - started
    print(f"took {seconds:.0f} s")
    common.write_json(NAME, {
        "script": NAME,
        "machine": info,
        "measured_on": where,
        "notice": notice,
        "settings": vars(args),
        "variants": variants,
        "packing": packing,
        "trial": {"epochs": args.trial_epochs, "images_per_epoch": CIFAR10_TRAIN},
        "seconds": seconds,
    })
    sections = [
        f"## Training throughput (`benchmarks/{NAME}.py`)\n",
        f"Machine: {common.machine_line(info)}.\n",
    ]
    if notice:
        sections.append(f"**{notice}.** The CPU figures below come from the reduced CPU run.\n")
    sections += [
        f"ResNet-18 on resident random 3x32x32 batches ({args.images} images, batch "
        f"{args.batch_size}, augment_batch + forward + backward + SGD), {args.steps} steps x "
        f"{args.rounds} interleaved rounds per variant; median images/s"
        f"{'' if on_gpu else ' per CPU-second of the process (1 thread)'}. Warm-up: the "
        "first steps (compilation where enabled).\n",
        common.markdown_table(headers, rows) + "\n",
    ]
    if packing:
        sections += [
            f"Packing: N processes training together on one {where} "
            f"({VARIANTS[args.pack_variant].name}, {args.pack_seconds:.0f} s); a trial = "
            f"{args.trial_epochs} epochs x {CIFAR10_TRAIN:,} images.\n",
            common.markdown_table(pack_headers, pack_rows) + "\n",
        ]
    sections.append(f"Rerun: `python benchmarks/{NAME}.py` ({seconds:.0f} s here).")
    common.update_results_md(NAME, "\n".join(sections))


if __name__ == "__main__":
    main()
