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

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

if __name__ == "__main__":  # Ray's runtime starts while the modules below are imported
    from search.launch import command

    command()

from pydantic import ValidationError  # noqa: E402

from search import schema  # noqa: E402
from search.checks import SweepError  # noqa: E402
from search.local_runtime import EarlyStart  # noqa: E402
from search.options import SweepOptions, first_error  # noqa: E402
from search.sweep import SweepInterrupted, SweepStopped, absolute, run_sweep  # noqa: E402
from search.sweep_file import SweepFileError, options_with_file  # noqa: E402
from trainables.cli import skip_final_collection  # noqa: E402
from trainables.dataset_catalog import DATASET_NAMES  # noqa: E402
from trainables.model_catalog import MODEL_NAMES  # noqa: E402
from trainables.regime_settings import REGIME_NAMES  # noqa: E402
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
OPTION_OF_FLAG = {"trials": "num_trials", "time_budget": "time_budget_s", "set": "fixed",
                  "tracking_timeout": "tracking_timeout_s"}
NOT_OPTIONS = frozenset({"config", "resume", "sweep_id", "restart", "help", "version"})


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
    add("--min-free-mb", type=float, default=DEFAULTS.min_free_mb,
        help="free space the storage path and a sqlite store's folder must keep: the sweep refuses "
             "to start below it and stops (resumably) when it falls below it")
    add("--tracking-timeout", type=float, default=DEFAULTS.tracking_timeout_s,
        help="seconds a failing MLflow store is waited for (records queue up) before the sweep "
             "stops (resumably)")
    add("--warm-start", metavar="SWEEP_ID", default=DEFAULTS.warm_start,
        help="seed each regime's study with the completed trials of an earlier sweep under "
             "--storage-path whose settings fit this search (they inform the sampler; they are "
             "not re-run and not counted in the budget)")
    add("--resume", action="store_true",
        help="continue an interrupted sweep under --storage-path with its own options (the last "
             "one started, or --sweep-id); only --address, --min-free-mb and --tracking-timeout "
             "may change")
    add("--sweep-id", default=None, help="with --resume: the sweep to continue")
    add("--restart", action="store_true",
        help="with --resume: start the sweep again from scratch under the same id when its saved "
             "state cannot be restored (Tune's state is set aside, MLflow records are kept)")
    return parser


def option_values(args: argparse.Namespace) -> dict[str, Any]:
    """The SweepOptions fields the flags give (their defaults included), not yet validated."""
    values = {OPTION_OF_FLAG.get(dest, dest): value for dest, value in vars(args).items()
              if dest not in NOT_OPTIONS}
    values.update(datasets=tuple(args.datasets), regimes=tuple(args.regimes), fixed=_settings(args.set))
    return values


def options_from_args(args: argparse.Namespace) -> SweepOptions:
    return SweepOptions(**option_values(args))


def given_flags(argv: Sequence[str] | None) -> dict[str, Any]:
    """The flags typed on the command line (by argparse dest), defaults left out."""
    return vars(build_parser(defaults=False).parse_args(argv))


def given_options(argv: Sequence[str] | None) -> dict[str, Any]:
    """The options given as flags on the command line, by their SweepOptions names."""
    values = {OPTION_OF_FLAG.get(dest, dest): value for dest, value in given_flags(argv).items()
              if dest not in NOT_OPTIONS}
    if "fixed" in values:
        values["fixed"] = _settings(values["fixed"])
    return values


def resume_options(args: argparse.Namespace, argv: Sequence[str] | None) -> tuple[SweepOptions, SweepOptions]:
    """For --resume: the options to pass (storage path and runtime flags only) and the stored ones.

    A flag the resume would not apply is refused, naming it, unless it repeats the
    sweep's own value ("the same command plus --resume" works).
    """
    from search.sweep import RUNTIME_OPTIONS, resumed_options

    if args.config:
        raise SweepError("--resume continues a sweep with the options it was started with: drop --config")
    given = given_options(argv)
    requested = option_values(args)
    runtime = {name: requested[name] for name in given if name in RUNTIME_OPTIONS}
    passed = SweepOptions(storage_path=args.storage_path, **runtime)
    sweep_id, stored = resumed_options(passed, args.sweep_id)
    paths = absolute(SweepOptions(tracking_uri=requested["tracking_uri"], data_dir=requested["data_dir"]))
    requested.update(tracking_uri=paths.tracking_uri, data_dir=paths.data_dir)
    theirs = absolute(stored)
    ignored = sorted(
        f"--{dest.replace('_', '-')}" for dest in given_flags(argv)
        if dest not in NOT_OPTIONS and (name := OPTION_OF_FLAG.get(dest, dest)) not in (*RUNTIME_OPTIONS, "storage_path")
        and requested[name] != getattr(theirs, name)
    )
    if ignored:
        raise SweepError(f"--resume continues sweep {sweep_id} with the options it was started with; "
                         f"{', '.join(ignored)} would not be applied: drop "
                         f"{'them' if len(ignored) > 1 else 'it'}, or start a new sweep")
    return passed, stored


def main(argv: Sequence[str] | None = None, *, early: EarlyStart | None = None) -> int:
    """Exit 0 with a trustworthy verdict per dataset; 1 when a dataset has none; 2 for bad
    input; 75 when a fault (full disk, failing tracking store) stopped it; 130 when
    interrupted. The last three print one line that says how to continue. `early`: a
    local runtime already starting (`search.launch`), for the sweep to use."""
    from search.progress import summary_table

    skip_final_collection()
    args = build_parser().parse_args(argv)
    try:
        if args.resume:
            options, shown = resume_options(args, argv)
        elif args.config:
            options = shown = options_with_file(args.config, given_options(argv))
        else:
            options = shown = options_from_args(args)
        outcomes = run_sweep(options, resume=args.resume, sweep_id=args.sweep_id, restart=args.restart,
                             early=early)
    except (SweepError, SweepFileError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ValidationError as error:
        print(f"error: {first_error(error)}", file=sys.stderr)
        return 2
    except SweepStopped as stopped:
        print(f"stopped: {stopped}", file=sys.stderr)
        return 75
    except SweepInterrupted as interrupted:
        print(f"interrupted: {interrupted}", file=sys.stderr)
        return 130
    print(summary_table(outcomes, absolute(shown).tracking_uri, shown.experiment))
    trustworthy = (schema.WINNER, schema.TIE)
    return 0 if all(outcome.verdict.outcome in trustworthy for outcome in outcomes) else 1
