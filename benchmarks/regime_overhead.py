"""Epoch time of every training regime as a ratio to conventional training.

LeRaC's claim is that it costs nothing extra: it only changes learning rates.
CBS pays for a blur after every 3x3 conv for all of training, per-instance
rates for a look-ahead hypergradient. Every regime trains the same model on
the same data with the same seed, and the epochs are interleaved in rounds
(one epoch of each regime per round, in a fresh random order) so the noise of
a shared machine hits all regimes alike; a regime's ratio is the median over
rounds of its epoch time divided by conventional's in the same round.

On the CPU the ratios use the process's CPU time (one torch thread, so it is
the work the regime did), not wall time, which also counts the time other
jobs held the cores; both are reported. On a GPU they use wall time.

LeRaC differs from conventional only in its rate bookkeeping, which is also
timed alone (apply + advance of its `RateScheduler`, every step in the rise)
and reported as a share of a conventional step.

Cases: (a) small_cnn on digits; (b) resnet18 on CIFAR-shaped random tensors
(3x32x32, 10 classes) held in memory, kept small because one CPU thread
trains ResNet-18 at ~30 images/s.

Run from the repository root: python benchmarks/regime_overhead.py [--help]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from typing import Any

import common

from trainables.config import RunConfig
from trainables.data import Dataset
from trainables.regimes import REGIME_NAMES
from trainables.schedules import RateScheduler
from trainables.training import Trainer, resolve_device

NAME = "regime_overhead"
BASELINE = "conventional"
LERAC_BOUND = 1.02
# What each regime does beyond a conventional step (printed next to its cost).
EXTRA_WORK = {
    "conventional": "baseline",
    "lerac": "per-layer rates only (rise active in every measured epoch)",
    "cbs": "depthwise 3x3 blur after every 3x3 conv (train and eval)",
    "leap": "copy of the params + Gaussian noise per update element",
    "multirate": "slow layers skip backward on m-1 of m steps (cheaper)",
    "per_instance": "look-ahead hypergradient: double backward + meta batch",
}
HEADERS = ["regime", "median epoch s", "vs conventional", "IQR of ratio", "ratio of means",
           "wall ratio", "extra work per step"]


@dataclass(frozen=True)
class Case:
    """One model and dataset on which all regimes are compared."""

    label: str
    model: str
    dataset: str  # a trainables dataset name, or a description when `data` is given
    rounds: int
    warmup: int
    data: Dataset | None = None


def regime_config(regime: str, case: Case, args: argparse.Namespace) -> RunConfig:
    """The regime at its default settings on the shared base config.

    LeRaC's curriculum spans every epoch of the run, so each measured step pays
    for the per-layer rate rise (after step k its rates are the ordinary ones).
    """
    epochs = case.warmup + case.rounds
    values: dict[str, Any] = {
        "regime": regime,
        "model": case.model,
        "epochs": epochs,
        "batch_size": args.batch_size,
        "device": args.device,
        "cpu_threads": args.threads,
        "seed": 0,
    }
    if case.data is None:
        values["dataset"] = case.dataset
    if regime == "lerac":
        values["curriculum_epochs"] = float(epochs)
    return RunConfig.from_dict(values)


def bookkeeping_seconds(trainer: Trainer, steps: int) -> float:
    """Seconds per step of the regime's rate bookkeeping alone (apply + advance), steps 0..steps-1."""
    scheduler = RateScheduler(trainer.regime.optimizer, trainer.regime.scheduler.schedule)
    started = time.process_time()
    for _ in range(steps):
        scheduler.apply()
        scheduler.advance()
    return (time.process_time() - started) / steps


def measure(case: Case, regimes: list[str], args: argparse.Namespace, clock: str) -> dict[str, Any]:
    """Interleaved epoch times of every regime on one case, and their ratios to the baseline."""
    trainers = {r: Trainer(regime_config(r, case, args), data=case.data) for r in regimes}
    steps = trainers[BASELINE].steps_per_epoch
    print(f"\n{case.label}: {len(regimes)} regimes x ({case.warmup} warm-up + {case.rounds}) "
          f"epochs of {steps} steps", flush=True)
    timings = common.round_robin(
        {r: t.train_epoch for r, t in trainers.items()}, rounds=case.rounds, warmup=case.warmup
    )
    times = timings.cpu if clock == "cpu" else timings.wall
    ratios = common.paired_ratios(times, BASELINE)
    wall_ratios = common.paired_ratios(timings.wall, BASELINE)
    rows = {}
    for regime in regimes:
        q1, median_ratio, q3 = common.quartiles(ratios[regime])
        rows[regime] = {
            "median_epoch_s": common.quartiles(times[regime])[1],
            "ratio": median_ratio,
            "ratio_q1": q1,
            "ratio_q3": q3,
            "mean_ratio": statistics.fmean(times[regime]) / statistics.fmean(times[BASELINE]),
            "wall_ratio": common.quartiles(wall_ratios[regime])[1],
            "epoch_cpu_s": timings.cpu[regime],
            "epoch_wall_s": timings.wall[regime],
        }
    result: dict[str, Any] = {
        "label": case.label,
        "model": case.model,
        "dataset": case.dataset,
        "train_examples": len(trainers[BASELINE].data.train),
        "eval_examples": len(trainers[BASELINE].data.val) + len(trainers[BASELINE].data.test),
        "steps_per_epoch": steps,
        "warmup_rounds": case.warmup,
        "rounds": case.rounds,
        "clock": clock,
        "regimes": rows,
    }
    if "lerac" in trainers:
        total_steps = steps * (case.warmup + case.rounds)
        extra = (bookkeeping_seconds(trainers["lerac"], total_steps)
                 - bookkeeping_seconds(trainers[BASELINE], total_steps))
        step_s = rows[BASELINE]["median_epoch_s"] / steps
        result["lerac_bookkeeping"] = {"extra_s_per_step": extra, "share_of_step": extra / step_s}
    return result


def table_rows(result: dict[str, Any]) -> list[list[str]]:
    return [
        [
            regime,
            f"{row['median_epoch_s']:.3f}",
            f"{row['ratio']:.3f}x",
            f"{row['ratio_q1']:.2f}-{row['ratio_q3']:.2f}",
            f"{row['mean_ratio']:.3f}x",
            f"{row['wall_ratio']:.2f}x",
            EXTRA_WORK.get(regime, ""),
        ]
        for regime, row in result["regimes"].items()
    ]


def bookkeeping_line(result: dict[str, Any]) -> str:
    cost = result.get("lerac_bookkeeping")
    if cost is None:
        return ""
    return (f"LeRaC's rate bookkeeping alone: {cost['extra_s_per_step'] * 1e6:+.1f} us/step vs "
            f"conventional = {100 * cost['share_of_step']:+.4f}% of a conventional step")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--regimes", nargs="+", default=list(REGIME_NAMES), choices=REGIME_NAMES,
                        help="regimes to compare (conventional is always included)")
    parser.add_argument("--device", default="cpu", help="'cpu', 'cuda' or 'auto'")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on the CPU (Trainer's cpu_threads)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--digits-rounds", type=int, default=40, help="measured rounds, small_cnn/digits")
    parser.add_argument("--digits-warmup", type=int, default=2, help="discarded rounds, small_cnn/digits")
    parser.add_argument("--resnet-rounds", type=int, default=5,
                        help="measured rounds, resnet18 (0 skips the case; 5 one-step epochs = "
                             "one multirate cycle)")
    parser.add_argument("--resnet-warmup", type=int, default=1, help="discarded rounds, resnet18")
    parser.add_argument("--resnet-images", type=int, default=64, help="random training images for resnet18")
    parser.add_argument("--resnet-eval", type=int, default=16, help="random validation (and test) images")
    args = parser.parse_args()
    args.regimes = [BASELINE, *(r for r in args.regimes if r != BASELINE)]
    return args


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    device = resolve_device(args.device)
    clock = "wall" if device.type == "cuda" else "cpu"
    cases = [Case("small_cnn / digits", "small_cnn", "digits", args.digits_rounds, args.digits_warmup)]
    if args.resnet_rounds > 0:
        cases.append(Case(
            "resnet18 / random 3x32x32", "resnet18",
            f"random 3x32x32, {args.resnet_images} train + 2x{args.resnet_eval} eval images",
            args.resnet_rounds, args.resnet_warmup,
            common.random_image_dataset(train=args.resnet_images, evaluation=args.resnet_eval),
        ))

    results = []
    for case in cases:
        result = measure(case, args.regimes, args, clock)
        results.append(result)
        print(common.text_table(HEADERS, table_rows(result)))
        print(bookkeeping_line(result), flush=True)

    targets = [
        common.Target(f"LeRaC epoch time / conventional, {r['label']}",
                      r["regimes"]["lerac"]["ratio"], LERAC_BOUND, at_most=True)
        for r in results if "lerac" in r["regimes"]
    ]
    info = common.machine_info(device)
    print(f"\n{common.machine_line(info)}")
    for target in targets:
        print(target.line())
    seconds = time.perf_counter() - started
    print(f"took {seconds:.0f} s")

    common.write_json(NAME, {
        "script": NAME,
        "machine": info,
        "settings": vars(args),
        "cases": results,
        "targets": [t.as_dict() for t in targets],
        "seconds": seconds,
    })
    sections = [
        f"## Regime overhead (`benchmarks/{NAME}.py`)\n",
        f"Machine: {common.machine_line(info)}, {args.threads} torch thread(s).\n",
        f"Epoch time (training plus validation and test evaluation; {clock} time"
        f"{' of the process, the wall ratio beside it' if clock == 'cpu' else ''}) of each "
        "regime at its default settings, interleaved in rounds. vs conventional = median over "
        "rounds of the regime's epoch time over conventional's in the same round (robust to "
        "noise; IQR = its spread); ratio of means = mean epoch time over conventional's, which "
        "averages whole multirate cycles (a slow step every m = 5 steps) where epochs are "
        "shorter than 5 steps, as in the resnet18 case, whose median shows fast steps only.\n",
    ]
    for r in results:
        sections.append(
            f"### {r['label']}\n\n{r['train_examples']} train + {r['eval_examples']} eval "
            f"examples, batch {args.batch_size} ({r['steps_per_epoch']} steps/epoch), "
            f"{r['rounds']} rounds after {r['warmup_rounds']} warm-up.\n\n"
            f"{common.markdown_table(HEADERS, table_rows(r))}\n\n{bookkeeping_line(r)}.\n"
        )
    sections.append("\n".join(f"- {t.line()}" for t in targets) + "\n")
    sections.append(f"Rerun: `python benchmarks/{NAME}.py` ({seconds:.0f} s here).")
    common.update_results_md(NAME, "\n".join(sections))


if __name__ == "__main__":
    main()
