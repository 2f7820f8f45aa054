"""Share of a sweep's worker time spent training, and what each trial costs on top.

A sweep pays for more than training: Tune starts (or resets) an actor per trial,
builds its data and model, checkpoints, and the driver logs every epoch to
MLflow. With short trials that overhead can dominate, so this runs real sweeps
(`search.sweep.run_sweep`) of identical trials (conventional small_cnn on
digits, every setting fixed, FIFO so each trial runs all its epochs, 2 slots of
1 CPU) whose trials last about 5 s and about 0.5 s (epochs per trial set from an
epoch timed at the start: a shared machine's speed drifts), each with and
without actor reuse, and the 5 s case with and without per-epoch checkpoints.
Ray is started once beforehand, so its start-up is never counted.

    efficiency = sum of the trials' training seconds / (wall seconds x slots)
    overhead per trial = (wall seconds x slots - training seconds) / trials

A trial's training seconds are its last `train_seconds` (epochs including their
validation and test evaluation). Two walls are reported: `call`, the whole
`run_sweep` call (Tuner set-up, first actors' start-up, MLflow parent run and
winner marking included), and `trials`, from the first trial's start to the
last trial's end as its MLflow child run records them.

Run from the repository root: python benchmarks/sweep_efficiency.py [--help]
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import common
from sweep_runs import output_to, start_ray, trial_runs

from search.sweep import SweepOptions, run_sweep
from trainables.config import RunConfig
from trainables.training import Trainer

NAME = "sweep_efficiency"
EFFICIENCY_BOUND = 0.85
# Everything fixed: all trials are the same run, so only the sweep's overhead differs.
FIXED = {"lr": 0.05, "weight_decay": 1e-4}


# -- this benchmark -----------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One sweep configuration."""

    length: str  # "long" or "short"
    epochs: int
    trials: int
    reuse_actors: bool
    checkpoint_every: int

    @property
    def key(self) -> str:
        return f"{self.length}-reuse{int(self.reuse_actors)}-ckpt{self.checkpoint_every}"


def measure(case: Case, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """Run one sweep and derive both walls, efficiency and overhead from its records."""
    tracking_uri = f"sqlite:///{folder / 'mlflow.db'}"
    options = SweepOptions(
        datasets=(args.dataset,),
        model=args.model,
        regimes=("conventional",),
        num_trials=case.trials,
        epochs=case.epochs,
        grace_period=1,
        scheduler="fifo",
        searcher="random",
        reuse_actors=case.reuse_actors,
        checkpoint_every=case.checkpoint_every,
        max_concurrent=args.slots,
        cpus_per_trial=1.0,
        storage_path=str(folder / "ray_results"),
        tracking_uri=tracking_uri,
        fixed={**FIXED, "batch_size": args.batch_size},
    )
    started = time.time()
    with output_to(folder / "tune.log"):
        (outcome,) = run_sweep(options)
    ended = time.time()
    runs = trial_runs(tracking_uri, outcome.parent_run_id)
    train = sum(run.train_seconds for run in runs)
    first_start, last_end = min(run.start for run in runs), max(run.end for run in runs)
    walls = {"call": ended - started, "trials": last_end - first_start}
    result: dict[str, Any] = {
        "case": case.key,
        "trials": len(runs),
        "end_states": outcome.end_states,
        "train_s": train,
        "train_s_per_trial": train / len(runs),
        "startup_s": first_start - started,
        "in_trial_overhead_ms": 1000 * sum(r.end - r.start - r.train_seconds for r in runs) / len(runs),
        "tail_s": ended - last_end,
    }
    for wall, seconds in walls.items():
        result[f"wall_s_{wall}"] = seconds
        result[f"efficiency_{wall}"] = train / (seconds * args.slots)
        result[f"overhead_ms_per_trial_{wall}"] = 1000 * (seconds * args.slots - train) / len(runs)
    return result


def median_by_case(rounds: list[list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Each case's numbers, the median over rounds (rounds pair up machine noise)."""
    merged: dict[str, dict[str, Any]] = {}
    for key in (r["case"] for r in rounds[0]):
        samples = [r for one_round in rounds for r in one_round if r["case"] == key]
        merged[key] = {
            name: statistics.median(s[name] for s in samples)
            if isinstance(value, float) else value
            for name, value in samples[0].items()
        }
    return merged


HEADERS = ["case", "reuse", "ckpt", "trials x epochs", "train s/trial",
           "wall s (call)", "wall s (trials)", "eff (call)", "eff (trials)",
           "overhead ms/trial (call)", "overhead ms/trial (trials)"]
WHERE_HEADERS = ["case", "reuse", "ckpt", "start-up s", "in-trial ms/trial", "between-trial ms/trial",
                 "tail s"]


def table_rows(cases: list[Case], merged: dict[str, dict[str, Any]]) -> list[list[str]]:
    rows = []
    for case in cases:
        r = merged[case.key]
        rows.append([
            f"{case.length} trials", "yes" if case.reuse_actors else "no", str(case.checkpoint_every),
            f"{r['trials']} x {case.epochs}", f"{r['train_s_per_trial']:.2f}",
            f"{r['wall_s_call']:.1f}", f"{r['wall_s_trials']:.1f}",
            f"{100 * r['efficiency_call']:.1f}%", f"{100 * r['efficiency_trials']:.1f}%",
            f"{r['overhead_ms_per_trial_call']:.0f}", f"{r['overhead_ms_per_trial_trials']:.0f}",
        ])
    return rows


def where_rows(cases: list[Case], merged: dict[str, dict[str, Any]]) -> list[list[str]]:
    """Where the trial-wall overhead goes: inside trial runs, or between them."""
    rows = []
    for case in cases:
        r = merged[case.key]
        between = r["overhead_ms_per_trial_trials"] - r["in_trial_overhead_ms"]
        rows.append([
            f"{case.length} trials", "yes" if case.reuse_actors else "no", str(case.checkpoint_every),
            f"{r['startup_s']:.1f}", f"{r['in_trial_overhead_ms']:.0f}", f"{between:.0f}",
            f"{r['tail_s']:.1f}",
        ])
    return rows


def import_sweep_modules() -> None:
    """Import what run_sweep imports on its first call (~3 s), so the first case is not charged."""
    for name in ("optuna", "mlflow", "ray.tune.search.optuna", "ray.tune.schedulers",
                 "search.recording", "search.progress", "search.spaces", "trainables.trainable"):
        importlib.import_module(name)


def epoch_seconds(args: argparse.Namespace) -> float:
    """Median time of one trial epoch, measured here and now (a shared machine's speed drifts).

    One trainer in this process, 1 thread like a 1-CPU trial; 1 warm-up epoch, median of 3.
    """
    trainer = Trainer(RunConfig.from_dict({
        "regime": "conventional", "dataset": args.dataset, "model": args.model, "epochs": 4,
        "batch_size": args.batch_size, "cpu_threads": 1, **FIXED,
    }))
    times = [trainer.train_epoch().epoch_seconds for _ in range(4)]
    return statistics.median(times[1:])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--model", default="small_cnn")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--long-seconds", type=float, default=5.0, help="target length of a long trial")
    parser.add_argument("--short-seconds", type=float, default=0.5, help="target length of a short trial")
    parser.add_argument("--long-epochs", type=int,
                        help="epochs of a long trial (default: --long-seconds / measured epoch time)")
    parser.add_argument("--short-epochs", type=int,
                        help="epochs of a short trial (default: --short-seconds / measured epoch time)")
    parser.add_argument("--long-trials", type=int, default=8)
    parser.add_argument("--short-trials", type=int, default=16)
    parser.add_argument("--slots", type=int, default=2, help="Ray CPUs = max concurrent trials (1 CPU each)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat every case this many times, order rotating; medians are reported")
    parser.add_argument("--skip-checkpoint-case", action="store_true",
                        help="leave out the long-trial sweep without per-epoch checkpoints")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    began = time.perf_counter()
    args.measured_epoch_s = epoch_seconds(args)
    for length in ("long", "short"):
        if getattr(args, f"{length}_epochs") is None:
            target = getattr(args, f"{length}_seconds")
            setattr(args, f"{length}_epochs", max(1, round(target / args.measured_epoch_s)))
    print(f"one epoch takes {args.measured_epoch_s:.3f} s here now: {args.long_epochs} epochs per long "
          f"trial, {args.short_epochs} per short trial", flush=True)
    cases = [
        Case("long", args.long_epochs, args.long_trials, reuse_actors=True, checkpoint_every=1),
        Case("long", args.long_epochs, args.long_trials, reuse_actors=False, checkpoint_every=1),
        Case("short", args.short_epochs, args.short_trials, reuse_actors=True, checkpoint_every=1),
        Case("short", args.short_epochs, args.short_trials, reuse_actors=False, checkpoint_every=1),
    ]
    if not args.skip_checkpoint_case:
        cases.insert(1, Case("long", args.long_epochs, args.long_trials, reuse_actors=True, checkpoint_every=0))

    with tempfile.TemporaryDirectory(prefix="sweep_efficiency-") as tmp:
        folder = Path(tmp)
        with output_to(folder / "tune.log"):
            start_ray(args.slots)
            import_sweep_modules()
        rounds = []
        for index in range(args.rounds):
            shift = index % len(cases)
            results = []
            for case in cases[shift:] + cases[:shift]:
                print(f"round {index + 1}/{args.rounds}: {case.key} ({case.trials} trials x "
                      f"{case.epochs} epochs) ...", flush=True)
                results.append(measure(case, args, folder))
                print(f"  call {results[-1]['wall_s_call']:.1f} s, trials "
                      f"{results[-1]['wall_s_trials']:.1f} s", flush=True)
            rounds.append(results)

    merged = median_by_case(rounds)
    info = common.machine_info("cpu")
    print()
    print(common.text_table(HEADERS, table_rows(cases, merged)))
    print()
    print(common.text_table(WHERE_HEADERS, where_rows(cases, merged)))
    default = merged[cases[0].key]  # long trials with the product's defaults: reuse, checkpoint every epoch
    targets = [
        common.Target(f"efficiency, {default['train_s_per_trial']:.1f} s trials, reuse + checkpoints, "
                      f"wall = {wall}",
                      default[f"efficiency_{wall}"], EFFICIENCY_BOUND, at_most=False)
        for wall in ("trials", "call")
    ]
    print(f"\n{common.machine_line(info)}")
    for target in targets:
        print(target.line())
    seconds = time.perf_counter() - began
    print(f"took {seconds:.0f} s")

    common.write_json(NAME, {
        "script": NAME,
        "machine": info,
        "settings": vars(args),
        "fixed": {**FIXED, "batch_size": args.batch_size},
        "cases": merged,
        "rounds": rounds,
        "targets": [t.as_dict() for t in targets],
        "seconds": seconds,
    })
    common.update_results_md(NAME, "\n".join([
        f"## Sweep efficiency (`benchmarks/{NAME}.py`)\n",
        f"Machine: {common.machine_line(info)}.\n",
        f"Real sweeps of identical trials ({args.model} on {args.dataset}, conventional, batch "
        f"{args.batch_size}, every setting fixed; one epoch measured {args.measured_epoch_s:.3f} s "
        f"alone at the start), FIFO, {args.slots} slots of 1 CPU, Ray started "
        f"beforehand; median of {args.rounds} round(s). Efficiency = training seconds / (wall x "
        "slots); overhead = (wall x slots - training seconds) / trials. Wall `call`: the whole "
        "`run_sweep` call; wall `trials`: first trial start to last trial end (MLflow child runs).\n",
        common.markdown_table(HEADERS, table_rows(cases, merged)) + "\n",
        "Where the overhead goes: start-up = call start to first trial start (Tuner, first actors); "
        "in-trial = a trial run's span minus its training seconds (result round-trips, checkpoints, "
        "logging); between-trial = the rest of the trials-wall overhead (actor start or reset, "
        "scheduling); tail = last trial end to call end (winner marking).\n",
        common.markdown_table(WHERE_HEADERS, where_rows(cases, merged)) + "\n",
        "\n".join(f"- {t.line()}" for t in targets) + "\n",
        f"Rerun: `python benchmarks/{NAME}.py` ({seconds:.0f} s here).",
    ]))


if __name__ == "__main__":
    main()
