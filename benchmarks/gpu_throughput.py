"""ResNet-18 training throughput through the Trainer, and trials per GPU-hour when packed.

Everything runs through `Trainer` as a sweep trial does: one optimizer group
per ResNet-18 block (ten), validation every epoch, and test accuracy plus a
checkpoint (`trainables.checkpoint.save_checkpoint`, to a local temporary
folder) only at ASHA's rungs and after the last epoch (`TrialPlan`, as the
sweep asks through the config key "sweep"). Data: CIFAR-10-shaped random
tensors resident on the device, by default CIFAR-10's split sizes on a GPU
(45,000 train, 5,000 validation, 10,000 test).

Part 1: images/second of trial epochs (training images over the wall time of
the whole epoch, evaluation and checkpoints included) for
  fp32 (NCHW), bf16 autocast + channels_last (the Trainer's GPU plan) and the
  latter + torch.compile (`compile` setting),
one epoch of each variant per round, interleaved, after a discarded warm-up
epoch (compilation, cuDNN autotuning).
Part 2: what one checkpoint costs (seconds, share of an epoch) and how often a
trial pays it: every epoch (the old per-epoch policy) or at rungs and the end.
Part 3: 1, 2 and 4 trial processes at once on one GPU (each capped at its share
of the GPU memory, as Ray Tune packs fractional-GPU trials); their summed
images/second gives trials per GPU-hour, a trial being `--trial-epochs`
epochs of 45,000 training images.

Without CUDA the script says so plainly and runs a reduced version on the CPU
(small data, compile off), which exercises the same code but measures no GPU
figure; its packing figures are labelled CPU processes.

Run from the repository root: python benchmarks/gpu_throughput.py [--help]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import common
import torch

from trainables.checkpoint import save_checkpoint
from trainables.config import RunConfig
from trainables.data import Dataset
from trainables.training import ExecutionPlan, Trainer
from trainables.trial_plan import TrialPlan

NAME = "gpu_throughput"
CIFAR10_TRAIN = 45_000  # CIFAR-10's 50,000 minus the 10% validation split


@dataclass(frozen=True)
class Variant:
    """A way to run the Trainer: its layout and precision plan, and whether to compile."""

    name: str
    plan: ExecutionPlan
    compile: bool = False


VARIANTS = {
    "fp32": Variant("fp32 NCHW", ExecutionPlan()),
    "bf16_cl": Variant("bf16 autocast + channels_last", ExecutionPlan(channels_last=True, bf16=True)),
    "bf16_cl_compile": Variant("bf16 + channels_last + compile",
                               ExecutionPlan(channels_last=True, bf16=True), compile=True),
}


def trial_plan(args: argparse.Namespace) -> TrialPlan:
    """What the sweep asks of a trial: checkpoint and test at ASHA's rungs (and the end)."""
    rungs = common.asha_rungs(epochs=args.trial_epochs, grace_period=args.grace_period,
                              reduction_factor=args.reduction_factor)
    _, plan = TrialPlan.split({"sweep": {"checkpoint_epochs": rungs, "test_epochs": rungs}})
    return plan


def build_trainer(variant: Variant, data: Dataset, args: argparse.Namespace, seed: int = 0) -> Trainer:
    config = RunConfig.from_dict({
        "regime": "conventional", "model": "resnet18", "device": args.device,
        "batch_size": args.batch_size, "epochs": 10_000, "seed": seed, "compile": variant.compile,
        "cpu_threads": args.threads,
    })
    return Trainer(config, data=data, plan=variant.plan)


def trial_epoch(trainer: Trainer, plan: TrialPlan, args: argparse.Namespace, folder: str
                ) -> Callable[[], None]:
    """A closure running the trainer's next epoch as a trial of `--trial-epochs` epochs would:
    training, validation, and at rung and final epochs test accuracy and a checkpoint."""

    def run() -> None:
        epoch = trainer.epoch % args.trial_epochs + 1
        trainer.train_epoch(test=plan.test_due(epoch) or epoch == args.trial_epochs)
        if plan.checkpoint_due(epoch, last=epoch == args.trial_epochs):
            save_checkpoint(folder, trainer, train_seconds=0.0)
        if trainer.on_gpu:
            torch.cuda.synchronize(trainer.device)

    return run


def measure_variants(args: argparse.Namespace, data: Dataset, folder: str
                     ) -> tuple[dict[str, dict[str, Any]], dict[str, Trainer]]:
    """Images/second of trial epochs of each variant, its warm-up time and peak memory.

    Wall time on a GPU; CPU time of the process on the CPU (wall time there
    also counts the time other jobs held the shared cores).
    """
    plan = trial_plan(args)
    tasks, trainers, first_s, peak_gib = {}, {}, {}, {}
    for key in args.variants:
        variant = VARIANTS[key]
        on_gpu = args.device.startswith("cuda")
        if on_gpu:  # the peak above what earlier variants still hold
            torch.cuda.reset_peak_memory_stats()
            held = torch.cuda.memory_allocated()
        started = time.perf_counter()
        trainers[key] = build_trainer(variant, data, args)
        tasks[key] = trial_epoch(trainers[key], plan, args, folder)
        tasks[key]()  # warm-up epoch: compiles, autotunes, fills caches
        first_s[key] = time.perf_counter() - started
        peak_gib[key] = (torch.cuda.max_memory_allocated() - held) / 2**30 if on_gpu else None
        print(f"  {variant.name}: ready after {first_s[key]:.1f} s", flush=True)
    timings = common.round_robin(tasks, rounds=args.rounds)
    times = timings.wall if args.device.startswith("cuda") else timings.cpu
    train_images = trainers[args.variants[0]].steps_per_epoch * args.batch_size
    results = {}
    for key in args.variants:
        ratios = common.paired_ratios(times, args.variants[0])[key]
        q1, median_ratio, q3 = common.quartiles(ratios)
        results[key] = {
            "name": VARIANTS[key].name,
            # Sum over the rounds, so rung epochs (test + checkpoint) weigh as often as in a trial.
            "images_per_s": train_images * args.rounds / sum(times[key]),
            "speed_vs_first": 1 / median_ratio,
            "speed_vs_first_iqr": (1 / q3, 1 / q1),
            "epoch_s": times[key],
            "warmup_s": first_s[key],
            "peak_memory_gib": peak_gib[key],
        }
    return results, trainers


def checkpoint_cost(trainer: Trainer, folder: str, repeats: int) -> dict[str, float]:
    """Median seconds of `save_checkpoint` (the Trainable's) to a local folder, and its size."""
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        path = save_checkpoint(folder, trainer, train_seconds=0.0)
        seconds.append(time.perf_counter() - started)
    return {"seconds": common.quartiles(seconds)[1], "all_seconds": seconds,
            "mib": os.path.getsize(path) / 2**20}


def validation_epoch_seconds(trainer: Trainer, repeats: int) -> float:
    """Median wall seconds of a training epoch plus validation (no test, no checkpoint)."""
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        trainer.train_epoch()
        seconds.append(time.perf_counter() - started)
    return common.quartiles(seconds)[1]


# -- packing: N trial processes at once ----------------------------------------
def worker(args: argparse.Namespace) -> None:
    """One packed trial: warm up, say 'ready', wait for 'go', run trial epochs, print JSON."""
    device = torch.device(args.device)
    if device.type == "cuda":
        # The cap needs a device index; plain "cuda" means the current device.
        index = torch.cuda.current_device() if device.index is None else device.index
        torch.cuda.set_per_process_memory_fraction(args.memory_fraction, index)
    data = dataset(args)
    with tempfile.TemporaryDirectory(prefix="gpu_throughput_") as folder:
        trainer = build_trainer(VARIANTS[args.pack_variant], data, args, seed=args.seed)
        epoch = trial_epoch(trainer, trial_plan(args), args, folder)
        epoch()
        print("ready", flush=True)
        sys.stdin.readline()
        started, epochs = time.perf_counter(), 0
        while epochs == 0 or time.perf_counter() - started < args.pack_seconds:
            epoch()
            epochs += 1
        seconds = time.perf_counter() - started
    images = epochs * trainer.steps_per_epoch * args.batch_size
    print(json.dumps({"images": images, "seconds": seconds, "epochs": epochs}), flush=True)


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


def measure_packing(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Summed images/second of 1, 2, 4... concurrent trial processes, started together."""
    results = []
    for count in args.pack:
        command = [
            sys.executable, __file__, "--worker", "--device", args.device,
            "--pack-variant", args.pack_variant, "--batch-size", str(args.batch_size),
            "--images", str(args.images), "--val-images", str(args.val_images),
            "--test-images", str(args.test_images), "--trial-epochs", str(args.trial_epochs),
            "--grace-period", str(args.grace_period),
            "--reduction-factor", str(args.reduction_factor),
            "--pack-seconds", str(args.pack_seconds), "--threads", str(args.threads),
            "--memory-fraction", f"{0.95 / count:.4f}",
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
            "epochs": [r["epochs"] for r in reports],
            "trials_per_hour": total * 3600 / (args.trial_epochs * CIFAR10_TRAIN),
        })
        print(f"  {count} process(es): {total:,.0f} images/s", flush=True)
    return results


def dataset(args: argparse.Namespace) -> Dataset:
    """Random CIFAR-shaped data with the requested split sizes."""
    data = common.random_image_dataset(train=args.images, evaluation=args.val_images)
    test = common.random_image_dataset(train=1, evaluation=args.test_images, seed=1).test
    return dataclasses.replace(data, test=test)


def parse_args() -> argparse.Namespace:
    gpu = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if gpu else "cpu")
    parser.add_argument("--batch-size", type=int, default=128 if gpu else 32,
                        help="the largest batch the sweep draws is 128")
    parser.add_argument("--images", type=int, default=CIFAR10_TRAIN if gpu else 64,
                        help="resident random training images (one epoch)")
    parser.add_argument("--val-images", type=int, default=5_000 if gpu else 8)
    parser.add_argument("--test-images", type=int, default=10_000 if gpu else 16)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS),
                        default=list(VARIANTS) if gpu else ["fp32", "bf16_cl"],
                        help="Trainer variants (torch.compile only by default on the GPU)")
    parser.add_argument("--rounds", type=int, default=10 if gpu else 4,
                        help="measured trial epochs per variant (interleaved)")
    parser.add_argument("--trial-epochs", type=int, default=30,
                        help="epochs of a trial: its rungs and end get test + checkpoint")
    parser.add_argument("--grace-period", type=int, default=3, help="ASHA's first rung (sweep default)")
    parser.add_argument("--reduction-factor", type=int, default=2, help="ASHA's factor (sweep default)")
    parser.add_argument("--checkpoint-repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per CPU process")
    parser.add_argument("--pack", type=int, nargs="*", default=[1, 2, 4],
                        help="concurrent trial processes to try (none: skip packing)")
    parser.add_argument("--pack-variant", default="bf16_cl_compile" if gpu else "fp32",
                        choices=list(VARIANTS))
    parser.add_argument("--pack-seconds", type=float, default=60.0 if gpu else 10.0,
                        help="how long the packed processes train together")
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
    notice = None if on_gpu else (
        "NO GPU WAS PRESENT: this ran a reduced version on the CPU; no GPU figure was measured"
    )
    if notice:
        print(notice)
    torch.set_num_threads(args.threads)
    data = dataset(args)
    plan = trial_plan(args)
    rungs = sorted(plan.checkpoint_epochs)
    print(f"Trainer variants on the {where} (batch {args.batch_size}, {args.images} train images; "
          f"test + checkpoint at epochs {rungs} and {args.trial_epochs} of {args.trial_epochs}):",
          flush=True)
    # The checkpoint is timed on the variant the packed trials run (else the first).
    reference_key = args.pack_variant if args.pack_variant in args.variants else args.variants[0]
    with tempfile.TemporaryDirectory(prefix="gpu_throughput_") as folder:
        variants, trainers = measure_variants(args, data, folder)
        reference = trainers[reference_key]
        checkpoint = checkpoint_cost(reference, folder, args.checkpoint_repeats)
        epoch_s = validation_epoch_seconds(reference, repeats=3)
    per_trial_old = args.trial_epochs  # checkpoint_frequency=1: every epoch
    per_trial_new = len(rungs) + 1
    checkpoint.update({
        "epoch_s": epoch_s,
        "share_of_epoch": checkpoint["seconds"] / epoch_s,
        "per_trial_every_epoch": per_trial_old,
        "per_trial_now": per_trial_new,
        "trial_share_every_epoch": checkpoint["seconds"] * per_trial_old
        / (epoch_s * args.trial_epochs),
        "trial_share_now": checkpoint["seconds"] * per_trial_new / (epoch_s * args.trial_epochs),
    })

    base = args.variants[0]
    rate = "images/s" if on_gpu else "images/CPU-s"
    headers = ["variant", rate, f"vs {VARIANTS[base].name} (median, IQR)", "warm-up s", "peak GiB"]
    rows = [
        [v["name"], f"{v['images_per_s']:,.1f}",
         f"{v['speed_vs_first']:.2f}x ({v['speed_vs_first_iqr'][0]:.2f}-"
         f"{v['speed_vs_first_iqr'][1]:.2f})",
         f"{v['warmup_s']:.1f}",
         "-" if v["peak_memory_gib"] is None else f"{v['peak_memory_gib']:.2f}"]
        for v in variants.values()
    ]
    print(common.text_table(headers, rows))
    checkpoint_line = (
        f"Checkpoint ({checkpoint['mib']:.0f} MiB, save_checkpoint to a local temp folder): "
        f"{checkpoint['seconds']:.3f} s = {100 * checkpoint['share_of_epoch']:.1f}% of a "
        f"{epoch_s:.2f} s epoch (train + validation, {VARIANTS[reference_key].name}); paid "
        f"{per_trial_new} times per {args.trial_epochs}-epoch trial (rungs {rungs} and the end) "
        f"instead of {per_trial_old}: {100 * checkpoint['trial_share_now']:.1f}% of the trial's "
        f"time instead of {100 * checkpoint['trial_share_every_epoch']:.1f}%"
    )
    print(checkpoint_line)

    packing, pack_rows = [], []
    pack_headers = ["processes", "images/s (sum)", "per process", f"trials/{where}-hour", "vs 1"]
    if args.pack:
        label = "one GPU" if on_gpu else f"the CPU ({args.threads} thread each), not GPU figures"
        print(f"\npacking trial processes on {label}: {VARIANTS[args.pack_variant].name}, batch "
              f"{args.batch_size}, {args.pack_seconds:.0f} s together", flush=True)
        del trainers, reference
        if on_gpu:
            torch.cuda.empty_cache()  # leave the GPU's memory to the packed processes
        packing = measure_packing(args)
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
        "trial": {"epochs": args.trial_epochs, "rungs": rungs, "images_per_epoch": CIFAR10_TRAIN},
        "variants": variants,
        "checkpoint": checkpoint,
        "packing": packing,
        "seconds": seconds,
    })
    sections = [
        f"## Training throughput (`benchmarks/{NAME}.py`)\n",
        f"Machine: {common.machine_line(info)}.\n",
    ]
    if notice:
        sections.append(f"**{notice}.** The figures below are CPU figures from the reduced run.\n")
    sections += [
        f"ResNet-18 through the Trainer as a sweep trial runs it (ten per-layer optimizer groups, "
        f"validation every epoch, test accuracy and a checkpoint at ASHA rungs {rungs} and "
        f"epoch {args.trial_epochs}) on resident random 3x32x32 data ({args.images} train, "
        f"{args.val_images} validation, {args.test_images} test images), batch "
        f"{args.batch_size}; {args.rounds} interleaved trial epochs per variant after a warm-up "
        f"epoch; images/s = training images over the whole epochs' "
        f"{'wall time' if on_gpu else 'CPU time of the process (1 thread)'}; vs = median and "
        "IQR over rounds of the per-round speed ratio.\n",
        common.markdown_table(headers, rows) + "\n",
        checkpoint_line + ".\n",
    ]
    if packing:
        sections += [
            f"Packing: N trial processes together on one {where} "
            f"({VARIANTS[args.pack_variant].name}, {args.pack_seconds:.0f} s, evaluation and "
            f"checkpoints included); a trial = {args.trial_epochs} epochs x {CIFAR10_TRAIN:,} "
            "images.\n",
            common.markdown_table(pack_headers, pack_rows) + "\n",
        ]
    sections.append(common.rerun_line(NAME, seconds))
    common.update_results_md(NAME, "\n".join(sections))


if __name__ == "__main__":
    main()
