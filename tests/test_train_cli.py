"""`python -m trainables.train`: flags, config files, progress, errors, determinism."""

from __future__ import annotations

import json
import subprocess
import sys

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
    first, last = [line for line in printed.splitlines() if line.startswith("epoch ")]
    assert "val " in first and "test " not in first  # test accuracy is measured at the end only
    assert f"test {100 * result['test_acc']:6.2f}%" in last
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
        (["--lr", "-1"], "setting 'lr' must be in (0, 10]"),
        (["--lr", "inf"], "setting 'lr' must be a finite number"),
        (["--seed", "99999999999999999999"], "setting 'seed' must be in [0, 2**63)"),
        (["--device", "cuda"], "setting 'device' is 'cuda' but CUDA is not available here"),
        (["--batch-size", "5000"], "setting 'batch_size' (5000) is larger than the training split"),
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


def test_an_output_that_cannot_be_written_is_refused_before_training(tmp_path, capsys):
    assert main(["--output", str(tmp_path / "none" / "result.json")]) == 2
    printed = capsys.readouterr()
    assert printed.out == "" and printed.err == f"error: --output {tmp_path}/none/result.json must name a file in an existing folder\n"


@pytest.mark.parametrize(("args", "message"), [
    (["--epochs"], "argument --epochs: expected one argument"),
    (["--dataset", "nope"], "argument --dataset: invalid choice: 'nope'"),
])
def test_a_bad_flag_is_one_line_not_the_whole_usage(capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err


HOSTILE_FILES = {
    "syntax.yaml": (b"regime: lerac\nepochs: [1\n", "is not valid YAML (line 3, column 1)"),
    "tag.yaml": (b'x: !!python/object/apply:os.system ["echo pwned"]\n',
                 "contains the tag !!python/object/apply:os.system, which is not allowed"),
    "regime_list.yaml": (b"regime: [lerac, cbs]\n", "setting 'regime' must be one regime name"),
    "device.yaml": (b"device: cuda\n", "setting 'device' is 'cuda' but CUDA is not available"),
    "seed.yaml": (b"seed: 99999999999999999999\n", "setting 'seed' must be in [0, 2**63)"),
    "deep.yaml": (b"[" * 10_000 + b"]" * 10_000, "is nested too deeply"),
    "binary.yaml": (bytes(range(256)) * 4, "is not UTF-8 text, so not YAML"),
    "empty.yaml": (b"", "is empty"),
    "recorded.yaml": (b"recorded_test_acc: high\nconfig: {epochs: 1}\n", "'recorded_test_acc' must be an accuracy"),
    "folder.yaml": (None, "is a directory"),
}


@pytest.mark.parametrize("name", HOSTILE_FILES)
def test_a_hostile_config_file_is_one_line_naming_the_file_or_setting(tmp_path, capsys, name):
    content, message = HOSTILE_FILES[name]
    path = tmp_path / name
    path.mkdir() if content is None else path.write_bytes(content)
    code, _, printed = run(["--config", str(path)], tmp_path, capsys)
    assert code == 2 and printed.startswith("error: ") and printed.count("\n") == 1
    assert message in printed and "Traceback" not in printed
    assert "setting '" in printed or str(path) in printed


def test_no_traceback_from_a_separate_process(tmp_path):
    """The whole process, not just `main`: nothing escapes as a traceback (here RecursionError)."""
    path = tmp_path / "deep.yaml"
    path.write_text("[" * 10_000 + "]" * 10_000)
    done = subprocess.run([sys.executable, "-m", "trainables.train", "--config", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"error: config file {path} is nested too deeply to be a run's settings\n"


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


def test_at_exit_the_heap_is_frozen_and_every_other_exit_handler_still_runs():
    script = (
        "import atexit, gc, sys\n"
        "atexit.register(lambda: print('frozen', gc.get_freeze_count() > 0, flush=True))\n"
        "from trainables.cli import skip_final_collection\n"
        "skip_final_collection()\n"
        "sys.stdout.write('buffered, no newline')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "buffered, no newlinefrozen True\n"  # flushed first, then the earlier handler


def run_exit(body: str) -> subprocess.CompletedProcess:
    script = ("import atexit, sys, threading, time\n"
              "from trainables.cli import exit_without_teardown\n" + body)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)


def test_a_finished_command_exits_with_its_status_after_its_exit_handlers_without_teardown():
    done = run_exit(
        "class Teardown:\n"
        "    def __del__(self):\n"
        "        print('torn down', flush=True)\n"
        "kept = Teardown()  # freed only by the interpreter's teardown\n"
        "atexit.register(lambda: sys.stdout.write('exit handler ran, '))\n"
        "sys.stdout.write('buffered output, ')\n"
        "sys.stderr.write('and its error line')\n"
        "exit_without_teardown(3)\n"
    )
    assert done.returncode == 3
    assert done.stdout == "buffered output, exit handler ran, "  # flushed, the handler ran, no teardown
    assert done.stderr == "and its error line"


def test_a_command_with_a_thread_still_writing_exits_as_usual_after_it(tmp_path):
    done = run_exit(
        "def write():\n"
        "    time.sleep(0.5)\n"
        f"    open({str(tmp_path / 'written')!r}, 'w').write('done')\n"
        "threading.Thread(target=write).start()\n"
        "exit_without_teardown(4)\n"
    )
    assert done.returncode == 4, done.stderr
    assert (tmp_path / "written").read_text() == "done"
