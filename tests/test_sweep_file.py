"""The sweep file (`lerac-sweep --config sweep.yaml`), flags over it, and `--version`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from analysis.__main__ import main as analysis_main
from search.lerac_sweep import NOT_OPTIONS, OPTION_OF_FLAG, build_parser, given_options
from search.lerac_sweep import main as sweep_main
from search.options import SweepOptions
from search.sweep_file import SweepFileError, options_with_file, read_sweep_file, sweep_yaml
from trainables.train import main as train_main
from trainables.version import package_version

ROOT = Path(__file__).resolve().parent.parent


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_sweep_file_sets_every_option_and_reads_back_what_it_wrote(tmp_path):
    options = SweepOptions(datasets=("mnist1d",), regimes=("conventional", "lerac", "cbs"), num_trials=7,
                           epochs=5, grace_period=2, reduction_factor=3, confirm_seeds=3, top_k=2,
                           time_budget_s=600.0, searcher="random", reuse_actors=False,
                           fixed={"lr": 0.1, "lerac.shape": "exp"})
    path = write(tmp_path / "sweep.yaml", sweep_yaml(options))
    assert options_with_file(path, {}) == options
    assert set(yaml.safe_load(path.read_text())) == set(SweepOptions.model_fields)


def test_flags_given_on_the_command_line_override_the_file(tmp_path):
    path = write(tmp_path / "sweep.yaml", "num_trials: 20\nepochs: 12\ngrace_period: 4\n"
                                          "fixed: {lr: 0.1, lerac: {shape: exp, decay_base: 0.2}}\n")
    given = given_options(["--config", str(path), "--epochs", "6", "--set", "lerac.shape=linear",
                           "--no-reuse-actors"])
    assert given == {"epochs": 6, "fixed": {"lerac.shape": "linear"}, "reuse_actors": False}
    options = options_with_file(path, given)
    assert (options.num_trials, options.epochs, options.grace_period, options.reuse_actors) == (20, 6, 4, False)
    assert options.fixed == {"lr": 0.1, "lerac.shape": "linear", "lerac.decay_base": 0.2}


def test_a_flag_equal_to_its_default_still_overrides_the_file(tmp_path):
    path = write(tmp_path / "sweep.yaml", "num_trials: 20\n")
    default = str(SweepOptions().num_trials)
    assert options_with_file(path, given_options(["--trials", default])).num_trials == int(default)


def test_every_flag_is_an_option_of_the_sweep():
    """A new flag must reach SweepOptions under its name (or OPTION_OF_FLAG), else --config
    could not be overridden by it."""
    dests = {action.dest for action in build_parser()._actions}
    fields = {OPTION_OF_FLAG.get(dest, dest) for dest in dests - NOT_OPTIONS}
    assert fields <= set(SweepOptions.model_fields)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("num_trails: 5\n", "unknown option 'num_trails'; known options: datasets,"),
        ("- digits\n", "must hold a mapping of options"),
        ("epochs: [1\n", "is not valid YAML (line 2, column 1)"),
        ("epochs: !!python/object:os.system {}\n", "contains the tag !!python/object:os.system"),
        ("epochs: 0\n", "bad value for epochs: Input should be greater than or equal to 1"),
        ("datasets: [imagenet]\n", "bad value for datasets: unknown dataset 'imagenet'"),
        ("fixed: 3\n", "'fixed' must map settings to values"),
    ],
)
def test_a_bad_sweep_file_is_one_line_naming_the_file_and_key(tmp_path, capsys, text, message):
    path = write(tmp_path / "sweep.yaml", text)
    assert sweep_main(["--config", str(path), "--storage-path", str(tmp_path / "ray")]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: sweep file {path}") and message in error
    assert error.count("\n") == 1
    assert not (tmp_path / "ray").exists()


def test_a_bad_flag_over_a_good_file_is_blamed_on_the_flag(tmp_path):
    path = write(tmp_path / "sweep.yaml", "epochs: 4\n")
    with pytest.raises(Exception) as raised:
        options_with_file(path, {"num_trials": 0})
    assert not isinstance(raised.value, SweepFileError) and "num_trials" in str(raised.value)


def test_a_missing_sweep_file_is_named():
    with pytest.raises(SweepFileError, match="sweep file /no/such.yaml does not exist"):
        read_sweep_file("/no/such.yaml")


@pytest.mark.parametrize("command", [sweep_main, analysis_main, train_main])
def test_every_command_prints_its_version_and_commit(command, capsys):
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.strip()
    with pytest.raises(SystemExit) as exit_info:
        command(["--version"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"lerac-search {package_version()} (code ") and commit in out
