"""The analysis commands on a real small sweep (Ray Tune + Optuna + a sqlite MLflow store).

One sweep: digits, conventional against LeRaC, 3 search trials each of 3
epochs (ASHA rung at epoch 2), each regime's best config confirmed on 2 fresh
seeds. Expected numbers are computed here with MlflowClient and scipy from the
records the sweep wrote, never from analysis/ itself.
"""

from __future__ import annotations

import html
import json
import math
import re
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray
from mlflow.tracking import MlflowClient
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar

from analysis.__main__ import main
from analysis.export import portable_data_dir
from analysis.importance import build_study
from analysis.plots import confirmation_curves_figure, learning_curves_figure, rate_curves_figure
from analysis.records import config_from_params, histories, load_sweep
from search.sweep import SweepOptions, run_sweep
from trainables.config import RunConfig
from trainables.config_file import read_config_file
from trainables.data import load_dataset
from trainables.train import main as train_main

pytestmark = pytest.mark.slow

EXPERIMENT = "analysis-test"
REGIMES = ("conventional", "lerac")
END_STATES = ("completed", "stopped_early", "diverged", "errored")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """The sweep, in one local Ray runtime for the module."""
    tmp = tmp_path_factory.mktemp("analysis")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(uri)
    client.create_experiment(EXPERIMENT, artifact_location=str(tmp / "artifacts"))
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        run_sweep(SweepOptions(
            datasets=("digits",), regimes=REGIMES, num_trials=3, epochs=3, grace_period=2, confirm_seeds=2,
            max_concurrent=2, seed=0, tracking_uri=uri, experiment=EXPERIMENT,
            storage_path=str(tmp / "ray"), fixed={"device": "cpu"},
        ))
    finally:
        ray.shutdown()
    return {"uri": uri, "tmp": tmp, "client": client}


def flags(sweep: dict, out: str) -> list[str]:
    return ["--tracking-uri", sweep["uri"], "--experiment", EXPERIMENT, "--out", str(sweep["tmp"] / out)]


def runs(sweep: dict, role: str = "trial", **tags: str) -> list:
    client = sweep["client"]
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    query = " and ".join([f"tags.role = '{role}'", *(f"tags.{key} = '{value}'" for key, value in tags.items())])
    return client.search_runs([experiment], query, max_results=1000)


def parent_run(sweep: dict):
    (parent,) = runs(sweep, "parent")
    return sweep["client"].get_run(parent.info.run_id)


def parent_json(sweep: dict, path: str) -> dict:
    folder = sweep["tmp"] / "downloads"
    folder.mkdir(exist_ok=True)
    return json.loads(Path(sweep["client"].download_artifacts(parent_run(sweep).info.run_id, path,
                                                              str(folder))).read_text())


def confirmation_accuracies(sweep: dict, regime: str) -> dict[int, float]:
    """seed -> final test accuracy of the regime's confirmation runs."""
    return {int(run.data.tags["seed"]): run.data.metrics["test_acc"]
            for run in runs(sweep, stage="confirm", regime=regime)}


@pytest.fixture(scope="module")
def confirmed(sweep):
    """`confirm` run once (every regime, 2 seeds), its printed output kept for the tests that read it."""
    buffer = StringIO()
    with redirect_stdout(buffer):
        status = main(["confirm", *flags(sweep, "confirm"), "--seeds", "2"])
    return status, buffer.getvalue()


def test_leaderboard_equals_what_mlflow_holds(sweep, capsys):
    assert main(["leaderboard", *flags(sweep, "board")]) == 0
    printed = capsys.readouterr().out
    board = pd.read_csv(sweep["tmp"] / "board" / "leaderboard.csv").set_index("regime")
    parent = parent_run(sweep)
    tags, metrics = parent.data.tags, parent.data.metrics
    leader = tags["leading_regime"]
    leader_tests = confirmation_accuracies(sweep, leader)
    for regime in REGIMES:
        row = board.loc[regime]
        search = runs(sweep, stage="search", regime=regime)
        assert row["trials"] == len(search) == 3
        for state in END_STATES:
            assert row[state] == sum(run.data.tags["end_state"] == state for run in search)
        epochs = sum(max(m.step for m in sweep["client"].get_metric_history(run.info.run_id, "val_acc"))
                     for run in search)
        assert row["trial_epochs"] == epochs
        done = [run for run in search if run.data.tags["end_state"] == "completed"]
        if done:
            best = max(done, key=lambda run: (run.data.metrics["val_acc"], -run.data.metrics["train_loss"]))
            assert row["best_val_acc"] == best.data.metrics["val_acc"]
            assert row["test_of_best"] == best.data.metrics["test_acc"]
            assert row["mean_val_acc"] == pytest.approx(np.mean([r.data.metrics["val_acc"] for r in done]), rel=1e-12)
        tests = confirmation_accuracies(sweep, regime)
        assert row["seeds"] == len(tests)
        if not tests:
            assert row["verdict"] == "no result"
            continue
        points = 100 * np.array([tests[seed] for seed in sorted(tests)])
        half = stats.t.ppf(0.975, len(points) - 1) * points.std(ddof=1) / math.sqrt(len(points))
        assert row["confirm_test_acc"] == pytest.approx(metrics[f"confirm_test_acc/{regime}"], rel=1e-12)
        assert row["confirm_test_acc"] == pytest.approx(points.mean() / 100, rel=1e-12)
        assert (row["confirm_ci_low"], row["confirm_ci_high"]) == pytest.approx(  # clipped to [0, 1]
            (max(0, (points.mean() - half) / 100), min(1, (points.mean() + half) / 100)), rel=1e-9)
        if regime == leader:
            assert row["gap_points"] == 0 and math.isnan(row["p_holm"])
        else:
            mine = [(leader_tests[seed], tests[seed]) for seed in sorted(tests) if seed in leader_tests]
            gaps = [100 * (a - b) for a, b in mine]
            assert row["gap_points"] == pytest.approx(np.mean(gaps), rel=1e-9)
            assert row["gap_points"] == pytest.approx(metrics[f"gap_points/{regime}"], rel=1e-9)
            assert row["p_holm"] == pytest.approx(metrics[f"p_holm/{regime}"], rel=1e-12)
            assert row["p_holm"] == pytest.approx(stats.ttest_rel(*zip(*mine, strict=True)).pvalue, rel=1e-6)
        if tags["verdict"] == "winner":
            assert row["verdict"] == ("winner" if regime == tags["winner_regime"] else "worse")
        else:
            assert row["verdict"] == ("tie" if regime in tags["tied_regimes"].split(",") else "worse")
    assert (board["verdict"] == "winner").sum() == (tags["verdict"] == "winner")
    headline = parent_json(sweep, "verdict.json")["headline"]
    assert headline in printed


def test_export_replays_the_leading_config_exactly(sweep, capsys):
    assert main(["export", *flags(sweep, "export")]) == 0
    printed = capsys.readouterr().out
    parent = parent_run(sweep)
    tags = parent.data.tags
    assert ("NOT a winner" in printed) == (tags["verdict"] == "tie")
    assert ("wins (significantly better" in printed) == (tags["verdict"] == "winner")
    folder = sweep["tmp"] / "export" / "digits"
    best = read_config_file(folder / "best_config.yaml")
    assert json.loads((folder / "best_config.json").read_text()) == {**best.metadata, "config": best.settings}
    leading = sweep["client"].get_run(tags["leading_run_id"])
    assert leading.data.tags["stage"] == "search" and leading.data.tags["regime"] == tags["leading_regime"]
    assert best.metadata["source_run_id"] == leading.info.run_id
    assert best.metadata["recorded_val_acc"] == leading.data.metrics["val_acc"]
    assert best.metadata["recorded_test_acc"] == leading.data.metrics["test_acc"]
    assert best.metadata["code_version"] == tags["code_version"]
    assert best.metadata["verdict"]["outcome"] == tags["verdict"]
    recorded = RunConfig.from_params(leading.data.params).to_dict()
    assert best.settings == portable_data_dir(recorded, Path.cwd().resolve())[0]  # data_dir made portable
    for regime in REGIMES:
        sources = {run.data.tags["source_run_id"] for run in runs(sweep, stage="confirm", regime=regime)}
        if sources:
            confirmed = read_config_file(folder / "configs" / f"{regime}.yaml")
            assert {confirmed.metadata["source_run_id"]} == sources
    assert train_main(["--config", str(folder / "best_config.yaml"), "--quiet"]) == 0
    assert "(reproduced exactly the recorded run)" in capsys.readouterr().out


def test_confirm_retrains_every_regime_on_fresh_seeds_and_decides(sweep, confirmed):
    status, printed = confirmed
    assert status == 0
    result = parent_json(sweep, "analysis/confirm-all.json")
    used = [int(run.data.params["seed"]) for run in runs(sweep)]
    assert result["seeds"] == [max(used) + 1, max(used) + 2] == [3, 4]  # the sweep used 0, 1 and 2
    confirmed_regimes = [regime for regime in REGIMES if runs(sweep, stage="confirm", regime=regime)]
    assert [arm["label"] for arm in result["arms"]] == confirmed_regimes
    verdict = result["verdict"]
    assert f"verdict: {verdict['outcome'].upper().replace('_', ' ')}" in printed
    test_size = len(load_dataset("digits", data_dir="data", data_seed=0).test)
    by_regime = {arm["regime"]: arm for arm in verdict["arms"]}
    for comparison in verdict["comparisons"]:
        leader, other = by_regime[verdict["leader"]], by_regime[comparison["regime"]]
        accuracies = []
        for seed, table in zip(comparison["seeds"], comparison["mcnemar"], strict=True):
            cells = [[table["both_correct"], table["only_a"]], [table["only_b"], table["both_wrong"]]]
            assert sum(map(sum, cells)) == test_size
            assert table["pvalue"] == pytest.approx(mcnemar(cells, exact=True).pvalue, rel=1e-12)
            a = (cells[0][0] + cells[0][1]) / test_size
            b = (cells[0][0] + cells[1][0]) / test_size
            assert 100 * a == pytest.approx(leader["test_by_seed"][leader["seeds"].index(seed)], rel=1e-12)
            assert 100 * b == pytest.approx(other["test_by_seed"][other["seeds"].index(seed)], rel=1e-12)
            accuracies.append((a, b))
        p = stats.ttest_rel(*zip(*accuracies, strict=True)).pvalue
        assert comparison["pvalue"] == pytest.approx(p, rel=1e-6)
        assert comparison["pvalue_holm"] == comparison["pvalue"]  # one comparison: Holm changes nothing
    assert parent_run(sweep).data.tags["verdict"] in ("winner", "tie")  # the sweep's verdict stays


def test_plots_read_search_trials_and_show_each_confirmation_seed(sweep, capsys):
    assert main(["plots", *flags(sweep, "plots")]) == 0
    names = {path.name for path in (sweep["tmp"] / "plots").glob("*.png")}
    assert {"digits-rates-leading.png", "digits-learning-curves.png", "digits-confirmation-curves.png",
            "digits-importance.png", "digits-parallel.png"} <= names
    logged = {Path(a.path).name for a in sweep["client"].list_artifacts(parent_run(sweep).info.run_id, "analysis")}
    assert names <= logged

    analysed = load_sweep(sweep["uri"], EXPERIMENT)
    search = runs(sweep, stage="search")
    trials = analysed.trials_of("digits")
    (axes,) = learning_curves_figure(histories(analysed.client, trials["run_id"], "val_acc"), trials, None).axes
    assert {line.get_gid() for line in axes.get_lines() if line.get_gid()} == {run.info.run_id for run in search}
    confirmations = analysed.confirmations_of("digits")
    history = histories(analysed.client, confirmations["run_id"], "val_acc")
    (axes,) = confirmation_curves_figure(history, confirmations).axes
    expected = {f"{run.data.tags['regime']} seed {run.data.tags['seed']}" for run in runs(sweep, stage="confirm")}
    assert {line.get_label() for line in axes.get_lines() if line.get_gid()} == expected
    for regime in REGIMES:
        study, _ = build_study(trials[trials["regime"] == regime])
        assert len(study.trials) == len(runs(sweep, stage="search", regime=regime))


def test_rate_plot_of_the_leading_config_has_a_line_per_layer_group(sweep):
    leading = sweep["client"].get_run(parent_run(sweep).data.tags["leading_run_id"])
    (axes,) = rate_curves_figure(config_from_params(leading.data.params)).axes
    assert [line.get_label() for line in axes.get_lines()] == ["stem", "block1", "block2", "head"]
    assert axes.get_xlim() == (0, 3)


def test_report_puts_the_verdict_first_with_its_evidence(sweep, confirmed, capsys):
    assert main(["report", *flags(sweep, "report")]) == 0
    (page,) = (sweep["tmp"] / "report").glob("report-*.html")
    text = page.read_text()
    verdict = parent_json(sweep, "verdict.json")
    assert html.escape(verdict["headline"]) in text
    order = [text.index(heading) for heading in ("<h2>Verdicts</h2>", "<h2>The protocol</h2>",
                                                 "<h2>Leaderboard</h2>", "<h3>Pictures</h3>")]
    assert order == sorted(order)
    verdict_part = text[order[0]:order[1]]
    for comparison in verdict["comparisons"]:
        for seed, table in zip(comparison["seeds"], comparison["mcnemar"], strict=True):
            cells = [seed, table["both_correct"], table["only_a"], table["only_b"], table["both_wrong"]]
            assert "".join(f"<td>{value}</td>" for value in cells) in verdict_part
    protocol = parent_json(sweep, "protocol.json")
    assert protocol["trials_per_regime"] == 3
    assert "search trials per regime (each its own Optuna study)</td><td>3</td>" in text
    assert "By hand, baseline all" in text  # the confirmation re-run by hand
    pngs = list((sweep["tmp"] / "report").glob("*.png"))
    outside_scripts = re.sub(r"<script[^>]*>.*?</script>", "", text, flags=re.DOTALL)  # plotly.js inlined
    assert outside_scripts.count('src="data:image/png;base64,') == len(pngs) >= 5
    assert "<script src=" not in text and "<link " not in text  # self-contained: nothing fetched
    assert "http://" not in outside_scripts and "https://" not in outside_scripts
    assert text.count('class="plotly-graph-div"') == 1  # the interactive parallel coordinates
    logged = {Path(a.path).name for a in sweep["client"].list_artifacts(parent_run(sweep).info.run_id, "analysis")}
    assert page.name in logged


def test_unknown_experiment_and_sweep_are_one_clear_line(sweep, capsys):
    assert main(["leaderboard", "--tracking-uri", sweep["uri"], "--experiment", "no-such"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: no experiment named 'no-such' at {sweep['uri']}\n"
    assert main(["export", *flags(sweep, "x"), "--sweep-id", "no-such-sweep"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: no sweep 'no-such-sweep'")
