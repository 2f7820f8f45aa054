"""The analysis commands on a real small sweep (Ray Tune + Optuna + a sqlite MLflow store).

Expected numbers are computed independently here with MlflowClient, from the
records the sweep wrote, never from analysis/ itself.
"""

from __future__ import annotations

import json
import math
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import pandas as pd
import pytest
import ray
import yaml
from mlflow.tracking import MlflowClient
from statsmodels.stats.contingency_tables import mcnemar

from analysis.__main__ import main
from analysis.plots import rate_curves_figure
from analysis.records import config_from_params
from search.recording import SweepRecorder
from search.sweep import SweepOptions, run_sweep
from trainables.data import load_dataset
from trainables.train import main as train_main

pytestmark = pytest.mark.slow

EXPERIMENT = "analysis-test"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Six trials of conventional and LeRaC on digits, 3 epochs, ASHA rung after epoch 2."""
    tmp = tmp_path_factory.mktemp("analysis")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(uri)
    client.create_experiment(EXPERIMENT, artifact_location=str(tmp / "artifacts"))
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        run_sweep(SweepOptions(
            datasets=("digits",), regimes=("conventional", "lerac"), num_trials=6, epochs=3,
            grace_period=2, max_concurrent=2, seed=0, tracking_uri=uri, experiment=EXPERIMENT,
            storage_path=str(tmp / "ray"), fixed={"device": "cpu"},
        ))
    finally:
        ray.shutdown()
    return {"uri": uri, "tmp": tmp, "client": client}


def flags(sweep: dict, out: str) -> list[str]:
    return ["--tracking-uri", sweep["uri"], "--experiment", EXPERIMENT, "--out", str(sweep["tmp"] / out)]


def parent_run(sweep: dict):
    client = sweep["client"]
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    (parent,) = client.search_runs([experiment], "tags.role = 'parent'")
    return parent


def trial_runs(sweep: dict) -> list:
    client = sweep["client"]
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    return client.search_runs([experiment], "tags.role = 'trial'", max_results=1000)


@pytest.fixture(scope="module")
def confirmed(sweep):
    """`confirm` run once (2 seeds), its printed output kept for the tests that read it."""
    buffer = StringIO()
    with redirect_stdout(buffer):
        status = main(["confirm", *flags(sweep, "confirm"), "--seeds", "2"])
    return status, buffer.getvalue()


def test_leaderboard_equals_what_mlflow_holds(sweep, capsys):
    assert main(["leaderboard", *flags(sweep, "board")]) == 0
    printed = capsys.readouterr().out
    board = pd.read_csv(sweep["tmp"] / "board" / "leaderboard.csv").set_index("regime")
    runs = trial_runs(sweep)
    assert board["trials"].sum() == len(runs) == 6
    winner_id = parent_run(sweep).data.tags["winner_run_id"]
    for regime in ("conventional", "lerac"):
        mine = [run for run in runs if run.data.tags["regime"] == regime]
        done = [run for run in mine if run.data.tags["end_state"] == "completed"]
        row = board.loc[regime]
        assert row["trials"] == len(mine) and row["completed"] == len(done)
        for state in ("stopped_early", "diverged", "errored"):
            share = sum(run.data.tags["end_state"] == state for run in mine) / len(mine) if mine else math.nan
            assert row[state] == pytest.approx(share, nan_ok=True)
        if done:
            val = [run.data.metrics["val_acc"] for run in done]
            test = [run.data.metrics["test_acc"] for run in done]
            best = max(done, key=lambda run: (run.data.metrics["val_acc"], -run.data.metrics["train_loss"]))
            assert row["best_val_acc"] == pytest.approx(max(val), rel=1e-15)
            assert row["test_of_best"] == pytest.approx(best.data.metrics["test_acc"], rel=1e-15)
            assert row["mean_val_acc"] == pytest.approx(sum(val) / len(val), rel=1e-12)
            assert row["mean_test_acc"] == pytest.approx(sum(test) / len(test), rel=1e-12)
        else:
            assert math.isnan(row["best_val_acc"])
        assert bool(row["winner"]) == any(run.info.run_id == winner_id for run in mine)
    assert board["winner"].sum() == 1
    winner_regime = parent_run(sweep).data.tags["winner_regime"]
    winner_line = next(line for line in printed.splitlines() if f" {winner_regime} " in line)
    assert winner_line.rstrip().endswith("*")


def test_export_replays_the_winner_exactly(sweep, capsys):
    assert main(["export", *flags(sweep, "export")]) == 0
    folder = sweep["tmp"] / "export"
    document = yaml.safe_load((folder / "digits.yaml").read_text())
    assert json.loads((folder / "digits.json").read_text()) == document
    parent = parent_run(sweep)
    winner = sweep["client"].get_run(parent.data.tags["winner_run_id"])
    assert document["source_run_id"] == winner.info.run_id
    assert document["recorded_val_acc"] == winner.data.metrics["val_acc"]
    assert document["recorded_test_acc"] == winner.data.metrics["test_acc"]
    assert document["code_version"] == parent.data.tags["code_version"]
    assert (document["dataset"], document["model"], document["seed"]) == ("digits", "small_cnn", 0)
    assert {k: str(v) for k, v in document["config"].items() if not isinstance(v, list)} == {
        k: v for k, v in winner.data.params.items() if k != "milestones"
    }
    capsys.readouterr()
    assert train_main(["--config", str(folder / "digits.yaml"), "--quiet"]) == 0
    assert "(reproduced exactly the recorded run)" in capsys.readouterr().out


def test_confirm_tests_the_winner_and_logs_to_the_parent_run(sweep, confirmed):
    status, printed = confirmed
    assert status == 0
    parent = sweep["client"].get_run(parent_run(sweep).info.run_id)
    metrics, tags = parent.data.metrics, parent.data.tags
    for key in ("confirm_ttest_p", "confirm_wilcoxon_p", "confirm_mean_difference_points", "confirm_cohens_d"):
        assert key in metrics
    assert 0 <= metrics["confirm_ttest_p"] <= 1 and 0 <= metrics["confirm_wilcoxon_p"] <= 1
    assert tags["confirm_significant_0.05"] in ("true", "false")
    significant = tags["confirm_significant_0.05"] == "true"
    assert ("NOT significantly better" in printed) != significant
    assert tags["confirm_verdict"] in printed
    if parent.data.tags["winner_regime"] == "conventional":
        assert "the winner is conventional training itself" in printed
    with open(sweep["client"].download_artifacts(parent.info.run_id, "analysis/confirm.json", str(sweep["tmp"]))) as f:
        result = json.load(f)
    assert [pair["seed"] for pair in result["pairs"]] == [1, 2]  # the sweep's trials used seed 0
    test_size = len(load_dataset("digits", data_dir="data", data_seed=0).test)
    for pair in result["pairs"]:
        table = pair["mcnemar"]
        cells = [[table["both_correct"], table["only_a"]], [table["only_b"], table["both_wrong"]]]
        assert sum(map(sum, cells)) == test_size
        assert table["pvalue"] == pytest.approx(mcnemar(cells, exact=True).pvalue, rel=1e-12)
        assert pair["winner_acc"] == pytest.approx((cells[0][0] + cells[0][1]) / test_size)
        assert pair["baseline_acc"] == pytest.approx((cells[0][0] + cells[1][0]) / test_size)


def test_plots_are_written_and_attached(sweep, capsys):
    assert main(["plots", *flags(sweep, "plots")]) == 0
    pngs = sorted((sweep["tmp"] / "plots").glob("*.png"))
    names = {path.name for path in pngs}
    assert {"digits-rates-winner.png", "digits-learning-curves.png", "digits-importance.png",
            "digits-parallel.png"} <= names
    assert all(path.stat().st_size > 15_000 for path in pngs)
    logged = {Path(a.path).name for a in sweep["client"].list_artifacts(parent_run(sweep).info.run_id, "analysis")}
    assert names <= logged


def test_rate_plot_of_the_winner_has_a_line_per_layer_group(sweep):
    winner = sweep["client"].get_run(parent_run(sweep).data.tags["winner_run_id"])
    (axes,) = rate_curves_figure(config_from_params(winner.data.params)).axes
    assert [line.get_label() for line in axes.get_lines()] == ["stem", "block1", "block2", "head"]
    assert axes.get_xlim() == (0, 3)


def test_report_embeds_pictures_tables_and_confirmation(sweep, confirmed, capsys):
    assert main(["report", *flags(sweep, "report")]) == 0
    (page,) = (sweep["tmp"] / "report").glob("report-*.html")
    text = page.read_text()
    pngs = list((sweep["tmp"] / "report").glob("*.png"))
    assert text.count('src="data:image/png;base64,') == len(pngs) >= 4
    assert "<h2>Leaderboard</h2>" in text and 'class="winner"' in text
    assert "Confirmation over fresh seeds" in text and "paired t-test" in text.lower()
    assert "http://" not in text and "https://" not in text  # self-contained: nothing fetched
    logged = {Path(a.path).name for a in sweep["client"].list_artifacts(parent_run(sweep).info.run_id, "analysis")}
    assert page.name in logged


def test_unknown_experiment_and_sweep_are_one_clear_line(sweep, capsys):
    assert main(["leaderboard", "--tracking-uri", sweep["uri"], "--experiment", "no-such"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: no experiment named 'no-such' at {sweep['uri']}\n"
    assert main(["export", *flags(sweep, "x"), "--sweep-id", "no-such-sweep"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: no sweep 'no-such-sweep'")


def test_sweep_without_finished_trials_is_one_clear_line(sweep, capsys):
    """A sweep killed during its first trial: a parent run and a started, never finished trial."""
    sweep["client"].create_experiment("killed-sweep", artifact_location=str(sweep["tmp"] / "killed"))
    recorder = SweepRecorder(tracking_uri=sweep["uri"], experiment="killed-sweep", sweep_id="killed")
    parent = recorder.parent_run(dataset="digits", model="small_cnn", regimes=("lerac",), code_version="test")
    recorder.trial_run(parent_run_id=parent, dataset="digits", trial_id="t0",
                       config={"regime": "lerac", "dataset": "digits"})
    for command in ("leaderboard", "export", "report"):
        assert main([command, "--tracking-uri", sweep["uri"], "--experiment", "killed-sweep"]) == 2
        err = capsys.readouterr().err
        assert err == "error: sweep 'killed' has no finished trials yet (1 started)\n"
