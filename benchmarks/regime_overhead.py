"""Cost of every training regime as a ratio to conventional training: step and full epoch.

LeRaC's claim is that it costs nothing extra: it only changes learning rates.
CBS pays for a blur after every 3x3 conv for all of training, per-instance
rates for a look-ahead hypergradient. Every regime trains the same model on
the same data with the same seed. Two costs are measured for each regime:

- step: an epoch of training steps alone (`Trainer.fit_epoch`: no evaluation),
  where a regime's extra work shows undiluted;
- epoch: a full epoch as a sweep runs it (`Trainer.train_epoch`: training plus
  validation; test accuracy only after the last epoch, which falls in the last
  round for every regime alike).

All measurements are interleaved in rounds (one step-epoch and one full epoch
of each regime per round, in a fresh random order) so the noise of a shared
machine hits all alike; a regime's ratio is the median over rounds of its time
divided by conventional's in the same round, with the interquartile range of
those ratios as its spread. A bare PyTorch loop (same model, data and
augmentation; one parameter group, constant rate, torch's default SGD) is
interleaved too: the Trainer's conventional step over it is the Trainer's own
overhead.

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
from trainables.data import Dataset, load_dataset
from trainables.regimes import REGIME_NAMES
from trainables.schedules import RateScheduler
from trainables.training import Trainer, resolve_device

NAME = "regime_overhead"
BASELINE = "conventional"
BARE = "bare loop"
LERAC_BOUND = 1.02
TRAINER_BOUND = 1.03
KINDS = ("step", "epoch")
# What each regime does beyond a conventional step (printed next to its cost).
EXTRA_WORK = {
    "conventional": "baseline",
    "lerac": "per-layer rates only (rise active in every measured epoch)",
    "cbs": "depthwise 3x3 blur after every 3x3 conv (train and eval)",
    "leap": "copy of the params + one Gaussian draw for all update elements",
    "multirate": "slow layers skip backward on m-1 of m steps (cheaper)",
    "per_instance": "look-ahead hypergradient: double backward + meta batch",
}
HEADERS = ["regime", "step s", "step vs conv.", "IQR", "epoch s", "epoch vs conv.", "IQR",
           "epoch wall ratio", "extra work per step"]


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


def _ratio_summary(times: dict[str, list[float]], wall: dict[str, list[float]], regime: str,
                   kind: str) -> dict[str, Any]:
    key, base = f"{kind}/{regime}", f"{kind}/{BASELINE}"
    ratios = common.paired_ratios(times, base)[key]
    q1, median_ratio, q3 = common.quartiles(ratios)
    return {
        "median_s": common.quartiles(times[key])[1],
        "ratio": median_ratio,
        "ratio_q1": q1,
        "ratio_q3": q3,
        "mean_ratio": statistics.fmean(times[key]) / statistics.fmean(times[base]),
        "wall_ratio": common.quartiles(common.paired_ratios(wall, base)[key])[1],
        "seconds": times[key],
    }


def measure(case: Case, regimes: list[str], args: argparse.Namespace, clock: str) -> dict[str, Any]:
    """Interleaved step-only and full-epoch times of every regime and of a bare loop."""
    device = resolve_device(args.device)
    data = case.data if case.data is not None else load_dataset(case.dataset)
    tasks = {}
    trainers = {}
    for kind in KINDS:
        for regime in regimes:
            trainer = Trainer(regime_config(regime, case, args), data=data)
            trainers[f"{kind}/{regime}"] = trainer
            tasks[f"{kind}/{regime}"] = trainer.fit_epoch if kind == "step" else trainer.train_epoch
    tasks[f"step/{BARE}"] = common.bare_training_epoch(
        data, model=case.model, batch_size=args.batch_size, device=device
    )
    reference = trainers[f"step/{BASELINE}"]
    steps = reference.steps_per_epoch
    print(f"\n{case.label}: {len(regimes)} regimes x 2 kinds + bare loop, ({case.warmup} warm-up + "
          f"{case.rounds}) rounds of {steps}-step epochs", flush=True)
    timings = common.round_robin(tasks, rounds=case.rounds, warmup=case.warmup)
    times = timings.cpu if clock == "cpu" else timings.wall
    rows = {
        regime: {kind: _ratio_summary(times, timings.wall, regime, kind) for kind in KINDS}
        for regime in regimes
    }
    bare_ratios = common.paired_ratios(times, f"step/{BARE}")[f"step/{BASELINE}"]
    q1, median_ratio, q3 = common.quartiles(bare_ratios)
    result: dict[str, Any] = {
        "label": case.label,
        "model": case.model,
        "dataset": case.dataset,
        "train_examples": len(reference.data.train),
        "val_examples": len(reference.data.val),
        "test_examples": len(reference.data.test),
        "steps_per_epoch": steps,
        "warmup_rounds": case.warmup,
        "rounds": case.rounds,
        "clock": clock,
        "regimes": rows,
        "trainer_vs_bare": {"ratio": median_ratio, "ratio_q1": q1, "ratio_q3": q3,
                            "bare_median_s": common.quartiles(times[f"step/{BARE}"])[1]},
    }
    if "lerac" in regimes:
        total_steps = steps * (case.warmup + case.rounds)
        lerac, conventional = trainers["step/lerac"], reference
        extra = bookkeeping_seconds(lerac, total_steps) - bookkeeping_seconds(conventional, total_steps)
        step_s = rows[BASELINE]["step"]["median_s"] / steps
        result["lerac_bookkeeping"] = {"extra_s_per_step": extra, "share_of_step": extra / step_s}
    return result


def table_rows(result: dict[str, Any]) -> list[list[str]]:
    rows = []
    for regime, row in result["regimes"].items():
        step, epoch = row["step"], row["epoch"]
        rows.append([
            regime,
            f"{step['median_s']:.3f}",
            f"{step['ratio']:.3f}x",
            f"{step['ratio_q1']:.2f}-{step['ratio_q3']:.2f}",
            f"{epoch['median_s']:.3f}",
            f"{epoch['ratio']:.3f}x",
            f"{epoch['ratio_q1']:.2f}-{epoch['ratio_q3']:.2f}",
            f"{epoch['wall_ratio']:.2f}x",
            EXTRA_WORK.get(regime, ""),
        ])
    return rows


def trainer_line(result: dict[str, Any]) -> str:
    bare = result["trainer_vs_bare"]
    return (f"Trainer's conventional step vs a bare PyTorch loop: {bare['ratio']:.3f}x "
            f"(IQR {bare['ratio_q1']:.3f}-{bare['ratio_q3']:.3f}; bare loop "
            f"{bare['bare_median_s']:.3f} s per epoch)")


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
        print(bookkeeping_line(result))
        print(trainer_line(result), flush=True)

    targets = []
    for r in results:
        if "lerac" in r["regimes"]:
            for kind in KINDS:
                targets.append(common.Target(
                    f"LeRaC {kind} time / conventional, {r['label']}",
                    r["regimes"]["lerac"][kind]["ratio"], LERAC_BOUND, at_most=True,
                ))
        targets.append(common.Target(f"Trainer step / bare loop, {r['label']}",
                                     r["trainer_vs_bare"]["ratio"], TRAINER_BOUND, at_most=True))
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
        f"Each regime at its default settings, interleaved in rounds ({clock} time"
        f"{' of the process, the wall ratio beside it' if clock == 'cpu' else ''}). "
        "**step** = an epoch of training steps alone (`Trainer.fit_epoch`); **epoch** = a full "
        "epoch as the sweep runs it (`Trainer.train_epoch`: training + validation; test only "
        "after the last epoch, in the last round for every regime). vs conv. = median over "
        "rounds of the regime's time over conventional's in the same round; IQR = the spread "
        "of those ratios over rounds. Where epochs are shorter than multirate's cycle (m = 5 "
        "steps), as in the resnet18 case, its median shows fast steps only.\n",
    ]
    for r in results:
        sections.append(
            f"### {r['label']}\n\n{r['train_examples']} train, {r['val_examples']} validation, "
            f"{r['test_examples']} test examples, batch {args.batch_size} "
            f"({r['steps_per_epoch']} steps/epoch), {r['rounds']} rounds after "
            f"{r['warmup_rounds']} warm-up.\n\n"
            f"{common.markdown_table(HEADERS, table_rows(r))}\n\n{bookkeeping_line(r)}.\n"
            f"{trainer_line(r)}.\n"
        )
    sections.append("\n".join(f"- {t.line()}" for t in targets) + "\n")
    sections.append(common.rerun_line(NAME, seconds))
    common.update_results_md(NAME, "\n".join(sections))


if __name__ == "__main__":
    main()
