"""Trial-epochs that TPE + ASHA needs to find a near-best configuration, against random search.

The sweep's claim is that Optuna's TPE with ASHA early stopping finds good
settings for less compute than plain random search. The yardstick is the best
final validation accuracy of a large random search with every trial run to the
end (the reference); a search "finds" it when a trial that ran all its epochs
ends within `--tolerance` points of it. Its cost is the trial-epochs reported up
to and including that trial's last epoch, counted in the order the sweep's
driver logged them (MLflow metric timestamps), stopped-early trials included.

Methods, each a real sweep (`search.sweep.run_sweep`, regimes conventional +
lerac, 2 slots) per seed of its sampler:
  (a) TPE + ASHA, (b) random + ASHA;
  (c) plain random search (FIFO): the reference's own trials in a seeded random
      order, replayed on 2 slots with their recorded epoch times. Random search
      draws its trials independently, so any order of them is an equally likely
      random search; its budget is given per seed and as the median over many
      orders, the denominator of the ratios.
Training seed and data split are fixed for every trial (only the sampler's seed
varies), so a configuration scores the same in every search. Each regime has
its own study and half the trials; TPE draws a third of them at random first
(n_startup_trials), so (a) and (b) share those and differ only after. The
confirmation runs the sweep adds after its search are not counted.

Run from the repository root: python benchmarks/search_efficiency.py [--help]
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import common
from sweep_runs import output_to, start_ray, trial_runs

from search.sweep import SweepOptions, run_sweep

NAME = "search_efficiency"
SLOTS = 2
REFERENCE_SEED = 1000  # sampler seed of the reference search, apart from the methods' seeds
REGIMES = ("conventional", "lerac")
METHODS = {"tpe+asha": ("tpe", "asha"), "random+asha": ("random", "asha")}
PLAIN = "random (fifo)"
FIXED = {"seed": 0, "data_seed": 0}  # same split and initialisation for every trial of every search


@dataclass(frozen=True)
class Trial:
    """One trial's epoch results as the driver logged them."""

    run_id: str
    completed: bool
    val_acc: list[float]  # per epoch
    logged_at: list[float]  # MLflow timestamp (s) of each epoch's metrics
    epoch_seconds: list[float]

    @property
    def final(self) -> float:
        return self.val_acc[-1] if self.val_acc else math.nan


def load_trials(uri: str, parent_run_id: str) -> list[Trial]:
    """Every trial of one dataset's sweep with its per-epoch history."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    trials = []
    for run in trial_runs(uri, parent_run_id):
        val = sorted(client.get_metric_history(run.run_id, "val_acc"), key=lambda m: m.step)
        seconds = sorted(client.get_metric_history(run.run_id, "epoch_seconds"), key=lambda m: m.step)
        trials.append(Trial(
            run_id=run.run_id,
            completed=run.end_state == "completed",
            val_acc=[m.value for m in val],
            logged_at=[m.timestamp / 1000 for m in val],
            epoch_seconds=[m.value for m in seconds],
        ))
    return trials


def epochs_to_find(events: list[tuple[float, int, Trial]], threshold: float) -> tuple[float, int]:
    """(trial-epochs up to the first completed trial's last epoch at >= threshold, epochs in all).

    `events` are (time, epoch index, trial), one per reported epoch; the first
    value is inf when no trial got there.
    """
    events = sorted(events, key=lambda e: (e[0], e[1]))
    for count, (_, index, trial) in enumerate(events, start=1):
        if trial.completed and index == len(trial.val_acc) - 1 and trial.final >= threshold:
            return float(count), len(events)
    return math.inf, len(events)


def logged_events(trials: list[Trial]) -> list[tuple[float, int, Trial]]:
    """The epochs in the order a real sweep's driver logged them."""
    return [(t.logged_at[i], i, t) for t in trials for i in range(len(t.val_acc))]


def replayed_events(trials: list[Trial], order: list[int], slots: int) -> list[tuple[float, int, Trial]]:
    """The epochs a FIFO search running `trials` in `order` on `slots` slots would report."""
    free = [0.0] * slots
    events = []
    for position in order:
        trial = trials[position]
        slot = min(range(slots), key=free.__getitem__)
        clock = free[slot]
        for index, seconds in enumerate(trial.epoch_seconds):
            clock += seconds
            events.append((clock, index, trial))
        free[slot] = clock
    return events


def plain_random(pool: list[Trial], threshold: float, seeds: list[int], orders: int) -> dict[str, Any]:
    """Plain random search's budget: per seed (one order each), and the median over `orders` orders."""

    def budget(rng: random.Random) -> float:
        order = list(range(len(pool)))
        rng.shuffle(order)
        return epochs_to_find(replayed_events(pool, order, SLOTS), threshold)[0]

    spread = sorted(budget(random.Random(f"orders-{i}")) for i in range(orders))
    return {
        "per_seed": [budget(random.Random(seed)) for seed in seeds],
        "median": statistics.median(spread),
        "mean": statistics.fmean(spread),
        "q1_q3": [spread[len(spread) // 4], spread[3 * len(spread) // 4]],
        "orders": orders,
    }


def tracking_uri(folder: Path) -> str:
    return f"sqlite:///{folder / 'mlflow.db'}"


def sweep(args: argparse.Namespace, folder: Path, *, searcher: str, scheduler: str,
          trials: int, seed: int) -> dict[str, str]:
    """One real sweep over every dataset; returns each dataset's MLflow parent run id."""
    options = SweepOptions(
        datasets=tuple(args.datasets),
        model=args.model,
        regimes=REGIMES,
        num_trials=max(1, trials // len(REGIMES)),  # the sweep's budget is per regime
        confirm_seeds=2,  # the confirmation runs are not counted here
        epochs=args.epochs,
        grace_period=args.grace_period,
        reduction_factor=args.reduction_factor,
        max_concurrent=SLOTS,
        cpus_per_trial=1.0,
        searcher=searcher,
        scheduler=scheduler,
        seed=seed,
        storage_path=str(folder / "ray_results"),
        tracking_uri=tracking_uri(folder),
        fixed=dict(FIXED),
    )
    started = time.perf_counter()
    with output_to(folder / "tune.log"):
        outcomes = run_sweep(options)
    print(f"  {searcher}+{scheduler}, seed {seed}, {trials} trials: "
          f"{time.perf_counter() - started:.0f} s", flush=True)
    return {outcome.dataset: outcome.parent_run_id for outcome in outcomes}


def show(value: float, spent: float = math.inf) -> str:
    """A budget; one never reached is shown as more than the epochs the search spent."""
    return f"> {spent:.0f}" if math.isinf(value) else f"{value:.0f}"


def budget_summary(found: list[float], spent: list[int], plain_median: float) -> dict[str, Any]:
    """Median budget over seeds and its ratio to plain random's.

    A search that never got there counts as infinite; `median_at_least` puts
    its spent epochs in instead, a lower bound that the table shows as "> N".
    """
    median = statistics.median(found)
    at_least = statistics.median(f if math.isfinite(f) else s for f, s in zip(found, spent, strict=True))
    return {"per_seed": found, "spent": spent, "median": median, "median_at_least": at_least,
            "ratio": median / plain_median, "ratio_at_least": at_least / plain_median}


HEADERS = ["dataset", "method", "trial-epochs per seed", "median", "vs plain random",
           "epochs spent per search", "best val acc (median)"]


def table_rows(results: dict[str, dict[str, Any]]) -> list[list[str]]:
    rows = []
    for dataset, r in results.items():
        plain = r["methods"][PLAIN]
        rows.append([
            dataset, f"{PLAIN}, {plain['orders']} orders",
            " / ".join(show(v) for v in plain["per_seed"]), show(plain["median"]), "1.00x",
            f"{plain['spent']} (pool)", f"{100 * r['reference_best']:.2f}% (ref)",
        ])
        for method in METHODS:
            m = r["methods"][method]
            censored = math.isinf(m["median"])
            rows.append([
                dataset, method,
                " / ".join(show(v, s) for v, s in zip(m["per_seed"], m["spent"], strict=True)),
                show(m["median"], m["median_at_least"]),
                ("> " if censored else "") + f"{m['ratio_at_least']:.2f}x",
                f"{statistics.median(m['spent']):.0f}",
                f"{100 * statistics.median(m['best']):.2f}%",
            ])
    return rows


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["digits", "mnist1d"])
    parser.add_argument("--model", default="small_cnn")
    parser.add_argument("--epochs", type=int, default=4, help="epochs of a trial that runs to the end")
    parser.add_argument("--grace-period", type=int, default=2,
                        help="ASHA's first rung; LeRaC's k is drawn below it (1 cuts on noisy epoch-1 ranks)")
    parser.add_argument("--reduction-factor", type=int, default=2)
    parser.add_argument("--trials", type=int, default=24,
                        help="trials per ASHA search (enough to spend about plain random's median budget)")
    parser.add_argument("--reference-trials", type=int, default=32,
                        help="trials of the reference random search (also plain random's pool)")
    parser.add_argument("--seeds", type=int, default=3, help="sampler seeds per ASHA method")
    parser.add_argument("--orders", type=int, default=2000, help="random orders of the pool for plain random")
    parser.add_argument("--tolerance", type=float, default=0.5, help="points below the reference best")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    began = time.perf_counter()
    seeds = list(range(args.seeds))
    with tempfile.TemporaryDirectory(prefix="search_efficiency-") as tmp:
        folder = Path(tmp)
        with output_to(folder / "tune.log"):
            start_ray(SLOTS)
        print("reference: random search, FIFO", flush=True)
        reference = sweep(args, folder, searcher="random", scheduler="fifo",
                          trials=args.reference_trials, seed=REFERENCE_SEED)
        parents: dict[str, dict[int, dict[str, str]]] = {method: {} for method in METHODS}
        for seed in seeds:
            for method, (searcher, scheduler) in METHODS.items():
                parents[method][seed] = sweep(args, folder, searcher=searcher, scheduler=scheduler,
                                              trials=args.trials, seed=seed)
        results = {}
        for dataset in args.datasets:
            pool = load_trials(tracking_uri(folder), reference[dataset])
            best = max(t.final for t in pool if t.completed)
            threshold = best - args.tolerance / 100 - 1e-9
            plain = plain_random(pool, threshold, seeds, args.orders)
            plain["spent"] = sum(len(t.val_acc) for t in pool)
            methods: dict[str, Any] = {PLAIN: plain}
            for method in METHODS:
                found, spent, best_found = [], [], []
                for seed in seeds:
                    trials = load_trials(tracking_uri(folder), parents[method][seed][dataset])
                    epochs, total = epochs_to_find(logged_events(trials), threshold)
                    found.append(epochs)
                    spent.append(total)
                    best_found.append(max((t.final for t in trials if t.completed), default=math.nan))
                methods[method] = {**budget_summary(found, spent, plain["median"]), "best": best_found}
            results[dataset] = {
                "reference_best": best,
                "reference_trials": len(pool),
                "reference_hits": sum(t.completed and t.final >= threshold for t in pool),
                "reference_own_order": epochs_to_find(logged_events(pool), threshold)[0],
                "methods": methods,
            }

    info = common.machine_info("cpu")
    rows = table_rows(results)
    print()
    print(common.text_table(HEADERS, rows))
    notes = [
        f"{dataset}: reference best {100 * r['reference_best']:.2f}% from {r['reference_trials']} trials, "
        f"{r['reference_hits']} within {args.tolerance} points; the reference search itself, in "
        f"its real order, got there after {show(r['reference_own_order'])} trial-epochs"
        for dataset, r in results.items()
    ]
    print("\n" + "\n".join(notes))
    targets = [
        common.Target(f"TPE+ASHA / plain random trial-epochs, {dataset}{label}",
                      r["methods"]["tpe+asha"]["ratio"], bound, at_most=True)
        for dataset, r in results.items()
        for bound, label in ((1.0, ""), (0.5, " (ideal)"))
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
        "seeds": seeds,
        "reference_seed": REFERENCE_SEED,
        "results": results,
        "targets": [t.as_dict() for t in targets],
        "seconds": seconds,
    })
    common.update_results_md(NAME, "\n".join([
        f"## Search efficiency (`benchmarks/{NAME}.py`)\n",
        f"Machine: {common.machine_line(info)}.\n",
        f"{args.model}, regimes conventional + lerac, {args.epochs} epochs per trial, ASHA grace "
        f"period {args.grace_period}, reduction factor {args.reduction_factor}, {SLOTS} slots; "
        f"{args.trials} trials per ASHA search, seeds {seeds}. Reference: random search (FIFO) of "
        f"{args.reference_trials} trials. Budget: trial-epochs reported until the first completed "
        f"trial within {args.tolerance} points of the reference best (stopped-early epochs count). "
        f"Plain random: the reference's trials in random orders replayed on {SLOTS} slots; its "
        f"median over {args.orders} orders is the denominator. \"> N\": not reached after N "
        "epochs (a lower bound; infinite for the targets). TPE's first 10 trials are the same "
        "random draws as random+ASHA's of the same seed.\n",
        common.markdown_table(HEADERS, rows) + "\n",
        "\n".join(f"- {note}" for note in notes) + "\n",
        "\n".join(f"- {t.line()}" for t in targets) + "\n",
        common.rerun_line(NAME, seconds),
    ]))


if __name__ == "__main__":
    main()
