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
from typing import Any

from pydantic import ValidationError

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from search import schema  # noqa: E402
from search.checks import SweepError  # noqa: E402
from search.options import SweepOptions, first_error  # noqa: E402
from search.sweep import SweepInterrupted, run_sweep  # noqa: E402
from search.sweep_file import SweepFileError, options_with_file  # noqa: E402
from trainables.data import DATASET_NAMES  # noqa: E402
from trainables.models import MODEL_NAMES  # noqa: E402
from trainables.regimes import REGIME_NAMES  # noqa: E402
from trainables.version import version_line  # noqa: E402

DEFAULTS = SweepOptions()


def _settings(pairs: Sequence[str]) -> dict[str, str]:
    fixed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SweepError(f"--set takes KEY=VALUE, got {pair!r}")
        fixed[key] = value
    return fixed


# Flags whose option in SweepOptions has another name; every other flag's dest is its option's name.
OPTION_OF_FLAG = {"trials": "num_trials", "time_budget": "time_budget_s", "set": "fixed"}
NOT_OPTIONS = frozenset({"config", "resume", "help", "version"})


def build_parser(*, defaults: bool = True) -> argparse.ArgumentParser:
    """The CLI; with `defaults=False` a flag not on the command line is absent from the result,
    so a sweep file's value is overridden only by flags that were given."""
    parser = argparse.ArgumentParser(
        prog="lerac-sweep",
        description=(
            "Search learning-rate regimes per dataset with Ray Tune, one Optuna study and one ASHA "
            "per regime and the same budget for each; retrain each regime's best config on fresh "
            "seeds and give a verdict per dataset (a winner only when the tests say so, else a "
            "tie); record everything in MLflow."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    def add(*flags: str, **kwargs: Any) -> None:
        parser.add_argument(*flags, **kwargs if defaults else {**kwargs, "default": argparse.SUPPRESS})

    add("--config", metavar="SWEEP.yaml",
        help="a sweep file: any of the options below by their SweepOptions names (num_trials, "
             "epochs, fixed, ...); flags given on the command line override it")
    parser.add_argument("--version", action="version", version=version_line())
    add("--datasets", nargs="+", default=list(DEFAULTS.datasets),
        help=f"datasets to sweep: {', '.join(DATASET_NAMES)} (digits and mnist1d are embedded; "
             "the others are read from --data-dir, see README)")
    add("--model", default=DEFAULTS.model,
        help=f"{', '.join(MODEL_NAMES)} (the model must read the datasets' kind of data)")
    add("--regimes", nargs="+", default=list(DEFAULTS.regimes),
        help=f"regimes to compare: {', '.join(REGIME_NAMES)}")
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
        fixed=_settings(args.set),
    )


def given_options(argv: Sequence[str] | None) -> dict[str, Any]:
    """The options given as flags on the command line, by their SweepOptions names."""
    given = vars(build_parser(defaults=False).parse_args(argv))
    values = {OPTION_OF_FLAG.get(dest, dest): value for dest, value in given.items() if dest not in NOT_OPTIONS}
    if "fixed" in values:
        values["fixed"] = _settings(values["fixed"])
    return values


def main(argv: Sequence[str] | None = None) -> int:
    from search.progress import summary_table

    args = build_parser().parse_args(argv)
    try:
        options = options_with_file(args.config, given_options(argv)) if args.config else options_from_args(args)
        outcomes = run_sweep(options, resume=args.resume)
    except (SweepError, SweepFileError) as error:
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
