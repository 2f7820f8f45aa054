"""An earlier commit's Trainer against the working tree's, on one device, interleaved.

For each regime, two worker processes (`trial_worker.py`) hold a warm
ResNet-18 trial each on CIFAR-10-shaped random data resident on the device:
one imports `trainables` from the earlier tree ("before", by default b03053e,
main when the issue "Fast where users pay" was filed), the other from this
working tree ("after"). The script sends them the same work in turns, one
worker at a time on the device, in rounds of random order:

- training steps: seconds per step, and (profiled once) GPU ops, kernel
  launches, host-device syncs and async memcpy calls per step;
- trial epochs as each version's Trainable ran a trial: before, every epoch
  measured validation and test accuracy and wrote a checkpoint; after, an
  epoch measures validation only, and ASHA's rungs and the last epoch add
  test accuracy and a checkpoint. A checkpoint is torch.save to a local
  folder and a copy of it to a second folder, as Tune persists it.

A trial of `--trial-epochs` epochs is priced from those epochs, per round:
before = epochs x every-epoch time; after = plain epochs x plain time + (rungs
+ 1) x rung time. Speed-ups are medians (and IQR) of per-round ratios.

Without CUDA it says so and runs a reduced version on the CPU (small data),
which exercises the same code but measures no GPU figure.

Run from the repository root: python benchmarks/gpu_before_after.py [--help]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import common
import torch

NAME = "gpu_before_after"
BEFORE_COMMIT = "b03053e"
WORKER = Path(__file__).with_name("trial_worker.py")


class WorkerProcess:
    """A `trial_worker.py` process importing `trainables` from `tree`."""

    def __init__(self, tree: Path, args: argparse.Namespace, regime: str):
        command = [
            sys.executable, str(WORKER), "--regime", regime, "--device", args.device,
            "--batch-size", str(args.batch_size), "--images", str(args.images),
            "--val-images", str(args.val_images), "--test-images", str(args.test_images),
        ]
        environment = {**os.environ, "PYTHONPATH": str(tree)}
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True, env=environment)

    def answer(self) -> dict[str, Any]:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"worker exited with {self.process.wait()}: {self.process.args}")
        return json.loads(line)

    def ask(self, command: str) -> dict[str, Any]:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.answer()

    def close(self) -> None:
        """Ask the worker to quit; one that died meanwhile or does not quit within a minute is
        killed, so no worker outlives the script."""
        if self.process.poll() is not None:
            return
        try:
            self.process.stdin.write("quit\n")
            self.process.stdin.close()
            self.process.wait(timeout=60)
        except (BrokenPipeError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()


def before_tree(args: argparse.Namespace, scratch: str) -> Path:
    """The earlier tree: `--before-tree`, or `--before-commit` exported with git archive."""
    if args.before_tree:
        return Path(args.before_tree).resolve()
    tree = Path(scratch) / "before"
    tree.mkdir()
    archive = subprocess.run(["git", "archive", args.before_commit, "trainables"],
                             cwd=common.ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


def compare_regime(regime: str, trees: dict[str, Path], args: argparse.Namespace
                   ) -> dict[str, Any]:
    """Both versions of one regime: profile counts, and interleaved steps and trial epochs."""
    workers = {name: WorkerProcess(tree, args, regime) for name, tree in trees.items()}
    try:
        for worker in workers.values():
            worker.answer()  # ready: warmed up
        counts = {name: w.ask(f"profile {args.profile_steps}") for name, w in workers.items()}
        checkpoint = workers["after"].ask("checkpoint")

        def task(name: str, command: str) -> Callable[[], None]:
            return lambda: workers[name].ask(command)

        tasks = {
            "before_steps": task("before", f"steps {args.steps}"),
            "after_steps": task("after", f"steps {args.steps}"),
            "before_epoch": task("before", "epoch every"),
            "after_plain": task("after", "epoch plain"),
            "after_rung": task("after", "epoch rung"),
        }
        times = common.round_robin(tasks, rounds=args.rounds).wall
    finally:
        for worker in workers.values():
            worker.close()
    epochs, rung_epochs = args.trial_epochs, len(trial_rungs(args)) + 1
    trials = {
        "before": [epochs * t for t in times["before_epoch"]],
        "after": [(epochs - rung_epochs) * p + rung_epochs * r
                  for p, r in zip(times["after_plain"], times["after_rung"], strict=True)],
    }
    return {
        "counts": counts,
        "checkpoint": checkpoint,
        "times": times,
        "step_ms": {name: 1000 * common.quartiles(times[f"{name}_steps"])[1] / args.steps
                    for name in trees},
        "step_speedup": common.quartiles(
            common.paired_ratios(times, "after_steps")["before_steps"]),
        "trial_s": {name: common.quartiles(series)[1] for name, series in trials.items()},
        "trial_speedup": common.quartiles(common.paired_ratios(trials, "after")["before"]),
    }


def trial_rungs(args: argparse.Namespace) -> list[int]:
    return common.asha_rungs(epochs=args.trial_epochs, grace_period=args.grace_period,
                             reduction_factor=args.reduction_factor)


def parse_args() -> argparse.Namespace:
    gpu = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before-commit", default=BEFORE_COMMIT,
                        help="the earlier commit, exported with git archive")
    parser.add_argument("--before-tree", help="a folder holding --before-commit's `trainables`, "
                        "exported beforehand (where the checkout has no git history; the "
                        "results are labelled with --before-commit, unchecked)")
    parser.add_argument("--device", default="cuda" if gpu else "cpu")
    parser.add_argument("--regimes", nargs="+", default=["conventional", "lerac", "leap", "cbs"])
    parser.add_argument("--batch-size", type=int, default=128 if gpu else 32)
    parser.add_argument("--images", type=int, default=45_000 if gpu else 128)
    parser.add_argument("--val-images", type=int, default=5_000 if gpu else 32)
    parser.add_argument("--test-images", type=int, default=10_000 if gpu else 32)
    parser.add_argument("--rounds", type=int, default=4 if gpu else 2)
    parser.add_argument("--steps", type=int, default=100 if gpu else 2,
                        help="training steps per timed step task")
    parser.add_argument("--profile-steps", type=int, default=10 if gpu else 2)
    parser.add_argument("--trial-epochs", type=int, default=30)
    parser.add_argument("--grace-period", type=int, default=3)
    parser.add_argument("--reduction-factor", type=int, default=2)
    return parser.parse_args()


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace, on_gpu: bool
           ) -> tuple[list[str], list[list[Any]]]:
    """One row per regime and version: per-step counts and time, epochs and the trial."""
    unit = "GPU-hour" if on_gpu else "CPU-hour"
    headers = ["regime", "version", "ms/step", "GPU ops/step" if on_gpu else "aten ops/step",
               "launches/step", "syncs/step", "async memcpy/step", "host reads/step",
               "30-epoch trial s" if args.trial_epochs == 30 else "trial s", f"trials/{unit}",
               "speed-up: step", "speed-up: trial"]
    rows = []
    for regime, result in results.items():
        for version in ("before", "after"):
            c = result["counts"][version]
            trial = result["trial_s"][version]
            after = version == "after"
            rows.append([
                regime, version, f"{result['step_ms'][version]:.2f}",
                f"{c['gpu_ops'] if on_gpu else c['aten_ops']:.0f}", f"{c['launches']:.0f}",
                f"{c['syncs']:.1f}", f"{c['async_copies']:.1f}", f"{c['host_reads']:.1f}",
                f"{trial:.1f}", f"{3600 / trial:.2f}",
                _speedup(result["step_speedup"]) if after else "",
                _speedup(result["trial_speedup"]) if after else "",
            ])
    return headers, rows


def _speedup(quartiles: tuple[float, float, float]) -> str:
    q1, median, q3 = quartiles
    return f"{median:.2f}x ({q1:.2f}-{q3:.2f})"


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    on_gpu = args.device.startswith("cuda")
    notice = None if on_gpu else (
        "NO GPU WAS PRESENT: this ran a reduced version on the CPU; no GPU figure was measured"
    )
    if notice:
        print(notice)
    with tempfile.TemporaryDirectory(prefix=f"{NAME}_") as scratch:
        trees = {"before": before_tree(args, scratch), "after": common.ROOT}
        results = {}
        for regime in args.regimes:
            print(f"{regime}: before ({args.before_commit}) and after, "
                  f"{args.rounds} interleaved rounds", flush=True)
            results[regime] = compare_regime(regime, trees, args)
    headers, rows = report(results, args, on_gpu)
    print(common.text_table(headers, rows))
    info = common.machine_info(args.device)
    seconds = time.perf_counter() - started
    print(f"\n{common.machine_line(info)}")
    if notice:
        print(notice)
    print(f"took {seconds:.0f} s")
    checkpoint = next(iter(results.values()))["checkpoint"]
    common.write_json(NAME, {
        "script": NAME, "machine": info, "notice": notice, "settings": vars(args),
        "rungs": trial_rungs(args), "results": results, "seconds": seconds,
    })
    body = [
        f"## Before and after, through the Trainer (`benchmarks/{NAME}.py`)\n",
        f"Machine: {common.machine_line(info)}.\n",
    ]
    if notice:
        body.append(f"**{notice}.**\n")
    body += [
        f"ResNet-18, batch {args.batch_size}, on resident random 3x32x32 data ({args.images} "
        f"train, {args.val_images} validation, {args.test_images} test images). Before: the "
        f"Trainer of {args.before_commit} (validation, test accuracy and a "
        f"checkpoint every epoch); after: this tree's (validation every epoch; test accuracy and a "
        f"checkpoint at rungs {trial_rungs(args)} and epoch {args.trial_epochs}). Both in their own "
        f"process, given the same work in {args.rounds} interleaved rounds; a trial is priced "
        f"from its epochs; speed-ups are the median (IQR) of per-round ratios. Counts are per "
        f"training step over {args.profile_steps} profiled steps: GPU ops are kernels, copies and "
        f"memsets; syncs are CUDA synchronize calls and blocking copies seen while "
        f"profiling (the profiler's own stop may add one); async memcpy counts "
        f"cudaMemcpyAsync calls in any direction; host reads are `item`-like ops. "
        f"A checkpoint (torch.save and a copy, {checkpoint['mib']:.0f} MiB) took "
        f"{checkpoint['seconds']:.3f} s.\n",
        common.markdown_table(headers, rows) + "\n",
        common.rerun_line(NAME, seconds),
    ]
    common.update_results_md(NAME, "\n".join(body))


if __name__ == "__main__":
    main()
