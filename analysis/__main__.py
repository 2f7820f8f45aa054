"""`lerac-analysis <command>` (or `python -m analysis`): look at a sweep's results.

Commands: sweeps (the sweeps of an experiment), leaderboard, export, confirm,
plots, report (all read a sweep from MLflow), and rates (the per-layer rate
curves of any config file, no sweep needed). Bad input ends with one `error:` line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

import optuna
from mlflow.exceptions import MlflowException

from analysis.errors import AnalysisError
from analysis.records import Sweep, load_sweep
from trainables.cli import OneLineParser, exit_without_teardown, skip_final_collection
from trainables.version import version_line

DEFAULT_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "lerac-sweep"


def _sweep(args: argparse.Namespace) -> Sweep:
    return load_sweep(args.tracking_uri, args.experiment, args.sweep_id)


def _out(args: argparse.Namespace, sweep: Sweep, root: str) -> Path:
    """The output folder: --out, else `<root>/<sweep_id>` (both gitignored roots)."""
    out = (args.out or Path(root) / sweep.sweep_id).resolve()  # printed paths open from anywhere
    out.mkdir(parents=True, exist_ok=True)
    return out


def cmd_sweeps(args: argparse.Namespace) -> int:
    from analysis.sweeps import format_sweeps, list_sweeps

    rows = list_sweeps(args.tracking_uri, args.experiment)
    print(f"experiment {args.experiment!r}: {len(rows)} sweep{'s' if len(rows) != 1 else ''}, newest first")
    if rows:
        print(format_sweeps(rows))
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from analysis.leaderboard import LOST, format_table, leaderboard
    from analysis.winners import dataset_verdict

    sweep = _sweep(args)
    board = leaderboard(sweep)
    path = _out(args, sweep, "reports") / "leaderboard.csv"
    board.to_csv(path, index=False)
    print(f"sweep {sweep.sweep_id} ({sweep.experiment})")
    print("search: each regime's own trials; best = best final validation accuracy (test only reported)")
    print("confirmation: each regime's best config retrained on fresh seeds; gap = leader - this regime")
    print(format_table(board))
    if board[LOST].any():
        print(f"lost: {board[LOST].sum()} runs of trials the sweep's saved state never recorded (another trial "
              "ran in each one's place); counted in no other column")
    print()
    for dataset in sweep.datasets:
        verdict = dataset_verdict(sweep, dataset)
        print(f"{dataset}: {verdict.title()}")
        if verdict.headline():
            print(f"  {verdict.headline()}")
        if verdict.chance_text():
            print(f"  {verdict.chance_text()}")
        if not verdict.trustworthy:
            print("  nothing here is a result: no regime is marked winner, and `export` writes the leading "
                  "config only with --allow-untrustworthy")
    print(f"written: {path}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from analysis.export import export_all
    from search.next_steps import replay_command

    sweep = _sweep(args)
    for exported in export_all(sweep, _out(args, sweep, "exports"), allow_untrustworthy=args.allow_untrustworthy):
        print(exported.summary())
        for path in exported.paths:
            print(f"  written: {path}")
        print(f"  replay:  {replay_command(exported.best_config)}")
    return 0


def cmd_confirm(args: argparse.Namespace) -> int:
    from analysis.confirm import choose_arms, confirm, describe, fresh_seeds, log_confirmation
    from analysis.winners import dataset_verdict

    if args.seeds < 2:
        raise AnalysisError("--seeds must be at least 2: a paired test across seeds needs two")
    if args.first_seed is not None and args.first_seed < 0:
        raise AnalysisError("--first-seed must be >= 0")
    sweep = _sweep(args)
    datasets = args.dataset or sweep.datasets
    unknown = sorted(set(datasets) - set(sweep.datasets))
    if unknown:
        raise AnalysisError(f"sweep {sweep.sweep_id!r} has no dataset {unknown[0]!r}")
    # Every dataset's configs are chosen before anything trains: a bad request fails at once.
    arms = {dataset: choose_arms(sweep, dataset, args.baseline) for dataset in datasets}
    for dataset in datasets:
        seeds = (list(range(args.first_seed, args.first_seed + args.seeds)) if args.first_seed is not None
                 else fresh_seeds(sweep, dataset, args.seeds))
        print(f"{dataset}: retraining on seeds {seeds} (baseline: {args.baseline})", flush=True)
        recorded = dataset_verdict(sweep, dataset)
        if not recorded.trustworthy:
            print(f"  the sweep's verdict: {recorded.title()}: {recorded.headline()}", flush=True)
        result = confirm(arms[dataset], dataset=dataset, seeds=seeds, mode=args.baseline,
                         on_run=lambda label, run: print(f"  {label} seed {run.seed}: test "
                                                         f"{100 * run.test_acc:.2f}%", flush=True))
        log_confirmation(sweep, result)
        print(describe(result))
    return 0


def cmd_plots(args: argparse.Namespace) -> int:
    from analysis.plots import write_plots

    sweep = _sweep(args)
    for paths in write_plots(sweep, _out(args, sweep, "reports")).values():
        for path in paths:
            print(f"written: {path}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from analysis.report import write_report

    sweep = _sweep(args)
    print(f"written: {write_report(sweep, _out(args, sweep, 'reports'))}")
    return 0


def cmd_rates(args: argparse.Namespace) -> int:
    from analysis.plots import rate_curves_figure, save
    from trainables.config_file import read_config_file

    try:
        figure = rate_curves_figure(read_config_file(args.config).settings, args.epochs)
    except (ValueError, FileNotFoundError) as error:
        raise AnalysisError(str(error)) from None
    print(f"written: {save(figure, args.png)}")
    return 0


def _common(parser: argparse.ArgumentParser, *, one_sweep: bool = True) -> None:
    parser.add_argument("--tracking-uri", default=DEFAULT_URI, help=f"MLflow tracking URI (default: {DEFAULT_URI})")
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT,
                        help=f"MLflow experiment of the sweep (default: {DEFAULT_EXPERIMENT})")
    if not one_sweep:
        return
    parser.add_argument("--sweep-id", help="sweep to analyse (default: the experiment's latest)")
    parser.add_argument("--out", type=Path, help="output folder (default: reports/<sweep_id> or exports/<sweep_id>)")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="lerac-analysis", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=version_line())
    commands = parser.add_subparsers(dest="command", required=True)

    def add(name: str, handler: Callable[[argparse.Namespace], int], text: str) -> argparse.ArgumentParser:
        # argparse %-formats help (not descriptions): a literal % must be doubled there only.
        sub = commands.add_parser(name, help=text.replace("%", "%%"), description=text)
        sub.set_defaults(handler=handler)
        if name != "rates":
            _common(sub, one_sweep=name != "sweeps")
        return sub

    add("sweeps", cmd_sweeps, "the sweeps of an experiment, newest first: start, state, regimes, code "
        "version and each dataset's verdict")
    add("leaderboard", cmd_leaderboard,
        "per dataset and regime: the search (trials, end states, trial-epochs, best and mean validation, "
        "test of the best) and the confirmation on fresh seeds (mean test with 95% CI, gap to the leader, "
        "Holm p), the verdict marked (table and CSV)")
    export = add("export", cmd_export, "each dataset's leading config (best_config.yaml) and every regime's "
                 "confirmed config, replayable, with the verdict; a dataset whose leader is near chance (no "
                 "trustworthy winner) is skipped unless --allow-untrustworthy")
    export.add_argument("--allow-untrustworthy", action="store_true",
                        help="also export datasets with no trustworthy winner (leader near chance); their files "
                             "carry a warning and verdict.trustworthy: false")
    confirm = add("confirm", cmd_confirm,
                  "retrain configs on fresh seeds by hand and decide as the sweep does: 95% CIs, paired "
                  "t-tests with Holm's correction, McNemar per seed pair")
    confirm.add_argument("--seeds", type=int, default=3, help="number of seeds (default: 3)")
    confirm.add_argument("--first-seed", type=int,
                         help="first seed (default: one above every seed the sweep's runs used)")
    confirm.add_argument("--baseline", choices=("all", "tuned", "ablation"), default="all",
                         help="all: every regime's confirmed config (default); tuned: the leader against "
                              "conventional training's confirmed config; ablation: the leader against its "
                              "own settings without the curriculum (for LeRaC: conventional with a warm-up "
                              "of length k, the same decay from k)")
    confirm.add_argument("--dataset", action="append", help="confirm only this dataset (repeatable)")
    add("plots", cmd_plots, "PNG pictures per dataset, attached to its parent run")
    add("report", cmd_report, "one self-contained HTML page of the sweep, attached to every parent run")
    rates = add("rates", cmd_rates, "per-layer learning-rate curves of a config file (no sweep needed)")
    rates.add_argument("--config", type=Path, required=True, help="YAML config (e.g. an exported winner)")
    rates.add_argument("--epochs", type=int, help="epochs to draw (default: the config's epochs)")
    rates.add_argument("--png", type=Path, default=Path("curriculum.png"), help="output file (default: curriculum.png)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    skip_final_collection()
    args = build_parser().parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one INFO line per rebuilt study otherwise
    try:
        return args.handler(args)
    except MlflowException as error:  # e.g. a server that stops answering halfway
        message = f"MLflow at {getattr(args, 'tracking_uri', '?')}: {error.message}"
    except (AnalysisError, OSError, ValueError) as error:  # OSError: unwritable --out, vanished files
        message = str(error)
    print("error: " + " ".join(message.split()), file=sys.stderr)  # one line, however it was raised
    return 2


def command() -> NoReturn:
    """The command line: `main`, then exit without the interpreter's teardown."""
    exit_without_teardown(main())


if __name__ == "__main__":
    command()
