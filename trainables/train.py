"""Train one configuration: `lerac-train --regime lerac --dataset digits` (or `python -m trainables.train`).

Every shared and regime setting is a flag; `--config FILE.yaml` supplies them
from a file (flags given on the command line win). Prints one line per epoch
(validation accuracy every epoch; test accuracy is measured after the last
epoch only) and the final validation and test accuracy; deterministic on the
CPU for a seed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from trainables.cli import OneLineParser, exit_without_teardown, skip_final_collection
from trainables.config import RunConfig, TrainSettings
from trainables.config_file import CODE_VERSION, RECORDED_TEST_ACC, read_config_file
from trainables.divergence import loss_limit
from trainables.regimes import REGIMES
from trainables.training import EpochReport, Trainer
from trainables.version import code_version, version_line


def _add_setting_flags(parser: argparse.ArgumentParser, settings_type: type, title: str) -> None:
    group = parser.add_argument_group(title)
    hints = typing.get_type_hints(settings_type)
    for field in dataclasses.fields(settings_type):
        flag = "--" + field.name.replace("_", "-")
        kind = hints[field.name]
        help_text = f"{field.metadata['help']} (default: {field.default})".replace("%", "%%")
        if kind is bool:
            group.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction,
                               default=None, help=help_text)
        elif typing.get_origin(kind) is tuple:
            group.add_argument(flag, dest=field.name, nargs="*", default=None, help=help_text)
        else:
            group.add_argument(flag, dest=field.name, default=None,
                               choices=field.metadata.get("choices"), help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="lerac-train",
        description="Train one configuration of a learning-rate regime and report its accuracy.",
    )
    parser.add_argument("--version", action="version", version=version_line())
    parser.add_argument("--config", type=Path, help="YAML file of settings (e.g. an exported best_config.yaml)")
    parser.add_argument("--output", type=Path, help="write the final result as JSON to this file")
    parser.add_argument("--quiet", action="store_true", help="print only the final result")
    _add_setting_flags(parser, TrainSettings, "training settings")
    for name, regime in REGIMES.items():
        if dataclasses.fields(regime.Settings):
            _add_setting_flags(parser, regime.Settings, f"{name} settings")
    return parser


def resolve_settings(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """Settings from the config file, overridden by flags given on the command line."""
    settings: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    if args.config is not None:
        config_file = read_config_file(args.config)
        settings, metadata = config_file.settings, config_file.metadata
    reserved = {"config", "output", "quiet"}
    flags = {k: v for k, v in vars(args).items() if k not in reserved and v is not None}
    return {**settings, **flags}, metadata


def format_epoch(report: EpochReport, epochs: int) -> str:
    """One progress line; test accuracy appears only on epochs where it was measured."""
    rates = list(report.layer_rates.items())
    (first, first_rate), (last, last_rate) = rates[0], rates[-1]
    test = "" if report.test_acc is None else f"  test {100 * report.test_acc:6.2f}%"
    return (
        f"epoch {report.epoch:>3}/{epochs}  loss {report.train_loss:.4f}  "
        f"val {100 * report.val_acc:6.2f}%{test}  "
        f"lr[{first}] {first_rate:.2e}  lr[{last}] {last_rate:.2e}  {report.epoch_seconds:.2f}s"
    )


def recorded_test_acc(metadata: dict[str, Any], path: Path | None) -> float | None:
    """The accuracy a replayed config was recorded with, checked before training rather than
    failing after it."""
    value = metadata.get(RECORDED_TEST_ACC)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"config file {path}: '{RECORDED_TEST_ACC}' must be an accuracy in [0, 1], got {value!r}")
    return float(value)


def check_output(path: Path | None) -> None:
    """Refuse an --output that cannot be written before training, not after it."""
    if path is not None and (path.is_dir() or not path.parent.is_dir()):
        raise ValueError(f"--output {path} must name a file in an existing folder")


def run(trainer: Trainer, *, quiet: bool = False) -> EpochReport:
    """Train to the end (or divergence), printing progress; returns the last report."""
    config = trainer.config
    train = config.train
    if not quiet:
        print(f"{train.regime} on {train.dataset} with {train.model}, {train.epochs} epochs, "
              f"device {trainer.device}, seed {train.seed}", flush=True)
    while True:
        report = trainer.train_epoch()
        if not quiet:
            print(format_epoch(report, train.epochs), flush=True)
        if report.diverged:
            loss, classes = report.train_loss, trainer.data.num_classes
            why = (f"mean loss {loss:.4g} is above {loss_limit(classes):.1f}, far beyond any sane run "
                   f"with {classes} classes" if math.isfinite(loss) else f"the loss is {loss}")
            print(f"training diverged in epoch {report.epoch}: {why}", file=sys.stderr)
            return report
        if trainer.finished:
            return report


def main(argv: Sequence[str] | None = None) -> int:
    skip_final_collection()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings, metadata = resolve_settings(args)
        config = RunConfig.from_dict(settings)
        recorded = recorded_test_acc(metadata, args.config)
        check_output(args.output)
        # Building the Trainer is where the data, the device and the regime meet the settings
        # (a missing data folder, no CUDA, a batch larger than the split); training itself is
        # not wrapped, so a bug there keeps its traceback.
        trainer = Trainer(config)
    except (ValueError, OSError) as error:
        print("error: " + " ".join(str(error).split()), file=sys.stderr)  # one line, whatever raised it
        return 2
    report = run(trainer, quiet=args.quiet)
    print(f"final validation accuracy: {100 * report.val_acc:.2f}%")
    print(f"final test accuracy: {100 * report.test_acc:.2f}%")
    if recorded is not None:
        verdict = "reproduced exactly" if report.test_acc == recorded else "differs from"
        print(f"recorded test accuracy: {100 * recorded:.2f}% ({verdict} the recorded run)")
        recorded_version = metadata.get(CODE_VERSION)
        if verdict == "differs from" and recorded_version:
            print(f"the run was recorded with code version {recorded_version}; "
                  f"this is {code_version()}: numerics can differ between versions")
    if args.output is not None:
        result = {"config": config.to_dict(), **report.metrics()}
        args.output.write_text(json.dumps(result, indent=2))
    return 1 if report.diverged else 0


def command() -> NoReturn:
    """The command line: `main`, then exit without the interpreter's teardown."""
    exit_without_teardown(main())


if __name__ == "__main__":
    command()
