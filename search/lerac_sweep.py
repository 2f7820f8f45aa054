"""Sweep learning-rate regimes per dataset: `python search/lerac_sweep.py`.

With no arguments it runs a real, small sweep of conventional training against
LeRaC on the embedded datasets (digits, MNIST-1D), on this machine, and prints
the winner of each dataset. On a cluster: `--address auto`, real datasets and
`--gpus-per-trial`. See README.md for the whole path.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from search import schema  # noqa: E402
from search.checks import SweepError  # noqa: E402
from search.options import SweepOptions, first_error  # noqa: E402
from search.sweep import SweepInterrupted, run_sweep  # noqa: E402

DEFAULTS = SweepOptions()


def _settings(pairs: Sequence[str]) -> dict[str, str]:
    fixed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SweepError(f"--set takes KEY=VALUE, got {pair!r}")
        fixed[key] = value
    return fixed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lerac_sweep",
        description=(
            "Search learning-rate regimes per dataset with Ray Tune, one Optuna study and one ASHA "
            "per regime and the same budget for each; retrain each regime's best config on fresh "
            "seeds and give a verdict per dataset (a winner only when the tests say so, else a "
            "tie); record everything in MLflow."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--datasets", nargs="+", default=list(DEFAULTS.datasets),
        help="datasets to sweep: digits, mnist1d (embedded), cifar10, cifar100, tinyimagenet")
    add("--model", default=DEFAULTS.model, help="small_cnn, resnet18, wide_resnet50_2 or densenet121")
    add("--regimes", nargs="+", default=list(DEFAULTS.regimes),
        help="regimes to compare: conventional, lerac, cbs, leap, multirate, per_instance")
    add("--trials", type=int, default=DEFAULTS.num_trials,
        help="search trials per dataset and regime: every regime gets the same budget")
    add("--epochs", type=int, default=DEFAULTS.epochs, help="epochs per trial (the budget of every regime)")
    add("--grace-period", type=int, default=DEFAULTS.grace_period,
        help="epochs before ASHA may stop a trial; LeRaC's k and any warm-up end before it")
    add("--confirm-seeds", type=int, default=DEFAULTS.confirm_seeds,
        help="fresh seeds on which each regime's best config is retrained for the verdict")
    add("--top-k", type=int, default=DEFAULTS.top_k,
        help="configs per regime to confirm; the one with the best mean validation accuracy counts")
    add("--cpus-per-trial", type=float, default=DEFAULTS.cpus_per_trial)
    add("--gpus-per-trial", type=float, default=DEFAULTS.gpus_per_trial,
        help="fractions pack trials on one GPU, e.g. 0.25 for four")
    add("--max-concurrent", type=int, default=DEFAULTS.max_concurrent, help="trials running at once")
    add("--address", default=DEFAULTS.address,
        help="Ray address: omitted = a local Ray runtime, 'auto' = join the running cluster")
    add("--storage-path", default=DEFAULTS.storage_path,
        help="where Tune keeps checkpoints and sweep state (shared storage on a cluster)")
    add("--tracking-uri", default=DEFAULTS.tracking_uri, help="MLflow tracking URI")
    add("--experiment", default=DEFAULTS.experiment, help="MLflow experiment name")
    add("--seed", type=int, default=DEFAULTS.seed, help="seed of the search, the data splits and the trials")
    add("--time-budget", type=float, default=DEFAULTS.time_budget_s,
        help="seconds of search: then no new search trial starts (budgets stay equal within one "
             "trial per regime) and the confirmation runs")
    add("--data-dir", default=DEFAULTS.data_dir, help="folder of on-disk datasets")
    add("--set", nargs="*", default=[], metavar="KEY=VALUE",
        help="fix a setting instead of searching it: KEY=VALUE for every regime that has it, "
             "REGIME.KEY=VALUE for one regime, e.g. --set optimizer=adamw lerac.decay_base=0.1")
    add("--searcher", choices=("tpe", "random"), default=DEFAULTS.searcher,
        help="Optuna sampler: TPE (multivariate, constant liar) or random")
    add("--scheduler", choices=("asha", "fifo"), default=DEFAULTS.scheduler,
        help="ASHA stops weak trials at rungs after the grace period; fifo runs every trial to the end")
    add("--checkpoint-every", type=int, default=DEFAULTS.checkpoint_every,
        help="epochs between trial checkpoints (for crash retries and --resume; 0 = only at the end)")
    add("--no-reuse-actors", dest="reuse_actors", action="store_false",
        help="start a fresh worker process for every trial instead of reusing them")
    add("--wait-for-gpus", action="store_true",
        help="allow GPU trials on a cluster with no GPU yet (autoscaling GPU workers)")
    add("--warm-start", metavar="SWEEP_ID", default=DEFAULTS.warm_start,
        help="seed each regime's study with the completed trials of an earlier sweep under "
             "--storage-path whose settings fit this search (they inform the sampler; they are "
             "not re-run and not counted in the budget)")
    add("--resume", action="store_true",
        help="continue the last interrupted sweep under --storage-path (its own options are reused)")
    return parser


def options_from_args(args: argparse.Namespace) -> SweepOptions:
    return SweepOptions(
        datasets=tuple(args.datasets),
        model=args.model,
        regimes=tuple(args.regimes),
        num_trials=args.trials,
        confirm_seeds=args.confirm_seeds,
        top_k=args.top_k,
        epochs=args.epochs,
        grace_period=args.grace_period,
        cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial,
        max_concurrent=args.max_concurrent,
        address=args.address,
        storage_path=args.storage_path,
        tracking_uri=args.tracking_uri,
        experiment=args.experiment,
        seed=args.seed,
        time_budget_s=args.time_budget,
        data_dir=args.data_dir,
        wait_for_gpus=args.wait_for_gpus,
        searcher=args.searcher,
        scheduler=args.scheduler,
        reuse_actors=args.reuse_actors,
        checkpoint_every=args.checkpoint_every,
        warm_start=args.warm_start,
        fixed=_settings(args.set),
    )


def main(argv: Sequence[str] | None = None) -> int:
    from search.progress import summary_table

    args = build_parser().parse_args(argv)
    try:
        options = options_from_args(args)
        outcomes = run_sweep(options, resume=args.resume)
    except SweepError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ValidationError as error:
        print(f"error: {first_error(error)}", file=sys.stderr)
        return 2
    except SweepInterrupted as interrupted:
        print(f"interrupted: {interrupted}", file=sys.stderr)
        return 130
    print(summary_table(outcomes, options.tracking_uri, options.experiment))
    return 0 if all(outcome.verdict.outcome != schema.NO_RESULT for outcome in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
