"""`python -m trainables.train`: flags, config files, progress, errors, determinism."""

from __future__ import annotations

import json

import official_formats
import pytest
import yaml

from trainables.config_file import write_config_file
from trainables.train import main


def run(args: list[str], tmp_path, capsys) -> tuple[int, dict, str]:
    output = tmp_path / "result.json"
    code = main([*args, "--output", str(output)])
    printed = capsys.readouterr()
    return code, json.loads(output.read_text()) if output.exists() else {}, printed.out + printed.err


def test_prints_progress_per_epoch_and_final_accuracies(tmp_path, capsys):
    code, result, printed = run(["--regime", "lerac", "--epochs", "2", "--curriculum-epochs", "1"], tmp_path, capsys)
    assert code == 0
    assert printed.count("epoch ") == 2 and "lr[stem]" in printed and "lr[head]" in printed
    assert f"final test accuracy: {100 * result['test_acc']:.2f}%" in printed
    assert result["config"]["regime"] == "lerac" and result["config"]["curriculum_epochs"] == 1.0


def test_deterministic_on_the_cpu_for_a_seed(tmp_path, capsys):
    args = ["--regime", "leap", "--epochs", "2", "--seed", "7", "--quiet"]
    first = run(args, tmp_path, capsys)[1]
    second = run(args, tmp_path, capsys)[1]
    first.pop("epoch_seconds"), second.pop("epoch_seconds")
    assert first == second


def test_config_file_with_flag_overrides(tmp_path, capsys):
    path = write_config_file(
        tmp_path / "best_config.yaml",
        {"regime": "lerac", "epochs": 3, "curriculum_epochs": 1, "shape": "cosine"},
        {"source_run_id": "abc"},
    )
    code, result, _ = run(["--config", str(path), "--epochs", "1", "--quiet"], tmp_path, capsys)
    assert code == 0
    assert result["config"]["shape"] == "cosine" and result["config"]["epochs"] == 1 and result["epoch"] == 1


def test_replay_says_whether_it_reproduced_the_recorded_accuracy(tmp_path, capsys):
    settings = {"regime": "conventional", "epochs": 1, "seed": 3}
    _, result, _ = run(["--regime", "conventional", "--epochs", "1", "--seed", "3"], tmp_path, capsys)
    path = write_config_file(tmp_path / "c.yaml", settings, {"recorded_test_acc": result["test_acc"]})
    assert "reproduced exactly" in run(["--config", str(path)], tmp_path, capsys)[2]
    path = write_config_file(tmp_path / "c.yaml", settings,
                             {"recorded_test_acc": 0.01, "code_version": "0000000"})
    printed = run(["--config", str(path)], tmp_path, capsys)[2]
    assert "differs from" in printed and "code version 0000000" in printed


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--regime", "lerac", "--leap-sigma", "0.3"], "unknown setting 'leap_sigma' for regime 'lerac'"),
        (["--lr", "-1"], "setting 'lr' must be > 0"),
        (["--regime", "nope"], "unknown regime 'nope'"),
        (["--dataset", "cifar10", "--data-dir", "{tmp}/none"], "cifar10: expected"),
        (["--config", "{tmp}/missing.yaml"], "does not exist"),
    ],
)
def test_bad_input_gives_one_clear_line(tmp_path, capsys, args, message):
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in args]
    code, _, printed = run(args, tmp_path, capsys)
    assert code == 2
    assert printed.strip().startswith("error: ") and message in printed and printed.strip().count("\n") == 0


def test_help_lists_every_setting(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    printed = capsys.readouterr().out
    assert exit_info.value.code == 0
    for flag in ("--curriculum-epochs", "--decay-base", "--cbs-sigma", "--leap-sigma",
                 "--multirate-m", "--instance-lr", "--milestones", "--compile", "--tokenizer",
                 "--pretrained", "--max-length", "--test-fold", "--n-mels", "--curriculum-layers"):
        assert flag in printed


def test_config_file_must_be_a_mapping(tmp_path, capsys):
    path = tmp_path / "list.yaml"
    path.write_text(yaml.safe_dump([1, 2]))
    code, _, printed = run(["--config", str(path)], tmp_path, capsys)
    assert code == 2 and "must hold a mapping" in printed


# ---------------------------------------------------------------- text and audio


@pytest.fixture(scope="module")
def official_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("official")
    official_formats.write_rte(root, train=80, val=20)
    official_formats.write_esc50(root, per_class_per_fold=2)
    return root


TEXT_FLAGS = ["--dataset", "rte", "--max-length", "20", "--vocab-size", "120", "--optimizer", "adamw",
              "--lr", "1e-3", "--weight-decay", "0.01", "--batch-size", "16", "--epochs", "1"]
AUDIO_FLAGS = ["--dataset", "esc50", "--sample-rate", "8000", "--n-mels", "16", "--hop-ms", "100",
               "--batch-size", "8", "--epochs", "1", "--lr", "0.02"]


@pytest.mark.parametrize(
    ("flags", "first", "last"),
    [
        ([*TEXT_FLAGS, "--model", "bert", "--regime", "lerac", "--curriculum-epochs", "1",
          "--curriculum-layers", "2"], "embeddings", "classifier"),
        ([*TEXT_FLAGS, "--model", "lstm"], "embed", "head"),
        ([*AUDIO_FLAGS, "--model", "resnet18", "--test-fold", "2"], "stem", "head"),
    ],
)
def test_text_and_audio_runs_from_the_command_line(official_files, tmp_path, capsys, flags, first, last):
    code, result, printed = run([*flags, "--data-dir", str(official_files)], tmp_path, capsys)
    assert code == 0, printed
    assert printed.count("epoch ") == 1 and f"lr[{first}]" in printed and f"lr[{last}]" in printed
    assert f"final test accuracy: {100 * result['test_acc']:.2f}%" in printed
    assert result["config"]["model"] == flags[flags.index("--model") + 1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "bert", "--dataset", "digits"], "setting 'model': 'bert' reads text data"),
        (["--model", "resnet18", "--dataset", "rte"], "models for text: bert, lstm"),
        (["--model", "lstm", "--dataset", "rte", "--regime", "cbs", "--data-dir", "{data}",
          "--max-length", "20", "--vocab-size", "120"], "CBS needs a model with 3x3 convolutions"),
        (["--dataset", "rte", "--model", "bert", "--data-dir", "{tmp}/none"], "rte: expected"),
        (["--dataset", "esc50", "--data-dir", "{tmp}/none"], "esc50: expected"),
        (["--dataset", "rte", "--model", "bert", "--max-length", "1000"], "setting 'max_length'"),
    ],
)
def test_text_and_audio_bad_input_gives_one_clear_line(official_files, tmp_path, capsys, args, message):
    args = [a.replace("{tmp}", str(tmp_path)).replace("{data}", str(official_files)) for a in args]
    code, _, printed = run(args, tmp_path, capsys)
    assert code == 2
    assert printed.strip().startswith("error: ") and message in printed and printed.strip().count("\n") == 0
