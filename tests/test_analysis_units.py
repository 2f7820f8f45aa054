"""Unit tests of analysis/ that need no training: the statistics, the inferred space, the rate plot,
the CLI, the ablation baseline, and every command on sweep records planted through the real recorder."""

from __future__ import annotations

import html
import json
import zlib

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar

from analysis.__main__ import main
from analysis.confirm import OUTCOME_WORDS, ablation_config, choose_arms
from analysis.errors import AnalysisError
from analysis.export import SUMMARIES, Exported
from analysis.importance import infer_space
from analysis.leaderboard import leaderboard
from analysis.plots import interactive_parallel, rate_curves_figure, save
from analysis.records import load_sweep
from analysis.report import NOTES, reconfirmations_html, verdict_html
from analysis.stats import contingency, mcnemar_exact, paired_tests
from analysis.sweeps import VERDICT_TEXTS, verdict_text
from analysis.verdict import SeedResult
from analysis.winners import PENDING, TITLES, DatasetVerdict, Pick, confirmed_runs, dataset_verdict
from search import schema
from search.run_labels import parent_run_name
from trainables.config import RunConfig
from trainables.config_file import read_config_file, write_config_file
from trainables.regimes import regime_class
from trainables.training import layer_rate_curves


def correctness(table: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Per-example correctness vectors (a, b) whose 2x2 table is `table`."""
    (both, only_a), (only_b, neither) = table
    a = [1] * both + [1] * only_a + [0] * only_b + [0] * neither
    b = [1] * both + [0] * only_a + [1] * only_b + [0] * neither
    return np.array(a, dtype=bool), np.array(b, dtype=bool)


class TestMcNemar:
    @pytest.mark.parametrize("table", [[[50, 9], [2, 39]], [[300, 14], [5, 40]], [[10, 3], [12, 1]],
                                       [[90, 1], [1, 8]]])
    def test_p_value_is_the_exact_binomial_test_on_the_discordant_pairs(self, table):
        a, b = correctness(table)
        result = mcnemar_exact(a, b)
        only_a, only_b = table[0][1], table[1][0]
        assert result.table == table
        assert result.pvalue == pytest.approx(mcnemar(np.array(table), exact=True).pvalue, rel=1e-12)
        assert result.pvalue == pytest.approx(stats.binomtest(only_b, only_a + only_b, 0.5).pvalue, rel=1e-12)

    def test_known_value_by_hand(self):
        # 5 discordant examples, all won by a: p = 2 * 0.5**5.
        result = mcnemar_exact(*correctness([[20, 5], [0, 3]]))
        assert result.pvalue == pytest.approx(0.0625, rel=1e-12)

    def test_no_disagreement_means_no_evidence(self):
        assert mcnemar_exact(*correctness([[20, 0], [0, 3]])).pvalue == 1.0

    def test_contingency_counts_each_cell(self):
        a = np.array([1, 1, 0, 0, 1], dtype=bool)
        b = np.array([1, 0, 1, 0, 1], dtype=bool)
        assert contingency(a, b).tolist() == [[2, 1], [1, 1]]

    def test_vectors_of_different_length_are_refused(self):
        with pytest.raises(ValueError, match="length"):
            contingency(np.ones(3, dtype=bool), np.ones(4, dtype=bool))


class TestPairedTests:
    def test_matches_scipy_and_cohens_d_by_hand(self):
        a, b = np.array([0.91, 0.93, 0.95, 0.90]), np.array([0.90, 0.90, 0.94, 0.91])
        result = paired_tests(a, b)
        differences = 100 * (a - b)
        assert result.mean_difference == pytest.approx(differences.mean())
        assert result.cohens_d == pytest.approx(differences.mean() / differences.std(ddof=1))
        assert result.ttest_pvalue == pytest.approx(stats.ttest_rel(a, b).pvalue)
        assert result.wilcoxon_pvalue == pytest.approx(stats.wilcoxon(a, b).pvalue)

    def test_identical_accuracies_give_p_one(self):
        result = paired_tests(np.array([0.9, 0.8]), np.array([0.9, 0.8]))
        assert (result.ttest_pvalue, result.wilcoxon_pvalue, result.mean_difference) == (1.0, 1.0, 0.0)

    def test_one_seed_is_refused(self):
        with pytest.raises(ValueError, match="two seeds"):
            paired_tests(np.array([0.9]), np.array([0.8]))


def test_inferred_space_keeps_varied_settings_with_their_scale():
    configs = [
        {"regime": "conventional", "lr": 0.001, "batch_size": 32, "epochs": 3, "milestones": []},
        {"regime": "lerac", "lr": 0.3, "batch_size": 128, "epochs": 3, "milestones": [], "decay_base": 0.1},
        {"regime": "lerac", "lr": 0.01, "batch_size": 64, "epochs": 3, "milestones": [], "decay_base": 0.5},
    ]
    space = infer_space(configs)
    assert set(space) == {"regime", "lr", "batch_size", "decay_base"}  # epochs never varied
    assert space["lr"] == FloatDistribution(0.001, 0.3, log=True)
    assert space["batch_size"] == IntDistribution(32, 128)
    assert space["regime"] == CategoricalDistribution(("conventional", "lerac"))
    assert space["decay_base"] == FloatDistribution(0.1, 0.5)  # conditional: only lerac trials have it


LERAC_RESNET = {"regime": "lerac", "model": "resnet18", "dataset": "digits", "lr": 0.1, "decay_base": 0.1,
                "eta_min": 1e-6, "curriculum_epochs": 5, "epochs": 200, "device": "cpu"}


def test_rate_plot_has_one_line_per_layer_group_on_a_log_scale(tmp_path):
    figure = rate_curves_figure(LERAC_RESNET, epochs=8)
    (axes,) = figure.axes
    labels = [line.get_label() for line in axes.get_lines()]
    assert labels == ["stem", "layer1.0", "layer1.1", "layer2.0", "layer2.1",
                      "layer3.0", "layer3.1", "layer4.0", "layer4.1", "head"]
    assert axes.get_yscale() == "log"
    assert axes.get_xlim() == (0, 8)
    rates = {line.get_label(): line.get_ydata() for line in axes.get_lines()}
    assert rates["stem"][0] == pytest.approx(0.1) and rates["layer1.0"][0] == pytest.approx(0.01)
    assert rates["head"][0] == pytest.approx(1e-6)
    assert save(figure, tmp_path / "rates.png").stat().st_size > 20_000


def test_rates_command_draws_a_config_file(tmp_path, capsys):
    config = write_config_file(tmp_path / "lerac.yaml", LERAC_RESNET, {"note": "test"})
    png = tmp_path / "curriculum.png"
    assert main(["rates", "--config", str(config), "--epochs", "8", "--png", str(png)]) == 0
    assert png.stat().st_size > 20_000


@pytest.mark.parametrize("command", ["sweeps", "leaderboard", "export", "confirm", "plots", "report", "rates"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: lerac-analysis " + command in capsys.readouterr().out


def test_missing_database_is_one_clear_line(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'missing.db'}"
    assert main(["leaderboard", "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: no MLflow database")
    assert not (tmp_path / "missing.db").exists()


def test_bad_config_file_is_one_clear_line(tmp_path, capsys):
    config = write_config_file(tmp_path / "bad.yaml", {"regime": "lerac", "decay_base": 2.0}, {})
    assert main(["rates", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "decay_base" in err


# -- the analysis of recorded sweeps ------------------------------------------------------------
# The records are written by the sweep's own recorder and verdict code (search.recording,
# search.verdicts) from planted trial results, without training or a Ray runtime; the expected
# numbers below come from the planted values, never from analysis/.

EPOCHS = 3
N_TEST = 400
NUM_CLASSES = 10  # digits: chance 10%, so a winner needs a mean confirmed test accuracy of 19%
REGIMES = ("conventional", "lerac")


def planted_correct(count: int, key: int) -> np.ndarray:
    """A test-set correctness vector with exactly `count` of N_TEST examples right."""
    correct = np.zeros(N_TEST, dtype=bool)
    correct[np.random.default_rng(key).permutation(N_TEST)[:count]] = True
    return correct


def settings(regime: str, **extra) -> dict:
    base = {"regime": regime, "dataset": "digits", "model": "small_cnn", "epochs": EPOCHS, "seed": 0,
            "data_seed": 0, "batch_size": 32, "lr": 0.05, "cpu_threads": 1}
    if regime == "lerac":
        base |= {"curriculum_epochs": 1.0, "decay_base": 0.1}
    return {**base, **extra}


class PlantedSweep:
    """Writes one sweep's records through the real recorder, trial by trial."""

    def __init__(self, uri: str, experiment: str, sweep_id: str):
        from search.recording import SweepRecorder
        from search.sweep import SweepOptions, protocol

        self.recorder = SweepRecorder(tracking_uri=uri, experiment=experiment, sweep_id=sweep_id)
        self.parent = self.recorder.parent_run(
            dataset="digits", model="small_cnn", regimes=REGIMES, code_version="test",
            protocol=protocol(SweepOptions(datasets=("digits",), regimes=REGIMES, num_trials=4, epochs=EPOCHS)))
        self.outcomes = []
        self.configs: dict[str, dict] = {}
        self.states: dict[str, str] = {}

    def run(self, trial_id: str, config: dict, notes: dict, *, val: float, test: float, loss: float = 0.3,
            epochs: int = EPOCHS, diverged: bool = False, errored: bool = False,
            correct: np.ndarray | None = None, lost: bool = False) -> None:
        """One trial's run; a `lost` one is left open, as when the driver died before Tune saved the
        trial: Tune never reports it, and only `reconcile` closes it."""
        from search.balanced_search import SWEEP_KEY, end_state
        from search.verdicts import TrialOutcome
        from trainables.predictions import pack_correct

        full = {**config, SWEEP_KEY: notes}
        self.recorder.start_trial(parent_run_id=self.parent, trial_id=trial_id, config=full)
        self.configs[trial_id] = config
        result: dict = {}
        for epoch in range(1, epochs + 1):
            behind = epochs - epoch
            result = {"epoch": epoch, "train_loss": loss + 0.1 * behind, "val_acc": val - 0.05 * behind,
                      "diverged": diverged and behind == 0, "num_classes": NUM_CLASSES}
            if behind == 0:  # test accuracy only at the last epoch reached
                result["test_acc"] = test
            self.recorder.log_result(trial_id, result)
        if lost:
            return
        if correct is not None:
            result["test_correct"] = pack_correct(correct)
        self.states[trial_id] = "errored" if errored else end_state(result, EPOCHS)
        self.recorder.finish_trial(trial_id, self.states[trial_id])
        self.outcomes.append(TrialOutcome(trial_id=trial_id, config=full, result=result, errored=errored))

    def search(self, trial_id: str, regime: str, **planted) -> None:
        self.run(trial_id, settings(regime, lr=0.01 + 0.01 * len(self.configs)),
                 {"stage": "search", "group": f"digits/{regime}"}, **planted)

    def confirm(self, source: str, rank: int, seed: int, *, val: float, count: int, lost: bool = False) -> None:
        config = {**self.configs[source], "seed": seed}
        notes = {"stage": "confirm", "group": f"digits/{config['regime']}", "rank": rank, "source_trial": source}
        trial_id = f"{source}-r{rank}-s{seed}" + ("-lost" if lost else "")
        self.run(trial_id, config, notes, val=val, test=count / N_TEST, lost=lost,
                 correct=planted_correct(count, zlib.crc32(f"{source}-{seed}".encode())))

    def reconcile(self) -> None:
        """What a resume does first: the runs of trials Tune's restored state lacks are closed `lost`."""
        from search.recording import TrialRecord

        self.recorder.reconcile([TrialRecord(trial_id=o.trial_id, config=o.config, finished=True,
                                             end_state=self.states[o.trial_id]) for o in self.outcomes],
                                {"digits": self.parent})

    def decide(self) -> None:
        from search.verdicts import dataset_outcomes

        (outcome,) = dataset_outcomes(self.outcomes, datasets=("digits",), regimes=REGIMES,
                                      parents={"digits": self.parent}, epochs=EPOCHS)
        self.recorder.record_verdict(outcome, code_version="test")

    def finish(self) -> None:
        self.recorder.flush()


# Planted confirmation test counts (of N_TEST) per seed 1, 2, 3.
WIN_CONVENTIONAL = (360, 365, 362)
WIN_LERAC_RANK1 = (370, 372, 371)
WIN_LERAC_RANK2 = (380, 384, 382)  # the config with the better mean validation accuracy: it counts
TIE_CONVENTIONAL = (360, 368)
TIE_LERAC = (364, 360)
# Near chance: lerac leads every seed by 2.25-2.5 points (the paired test alone would name it the
# winner), but its mean, 12%, is below the trust floor: chance 10% + 10% of the way to 100% = 19%.
CHANCE_CONVENTIONAL = (40, 37, 38)
CHANCE_LERAC = (50, 46, 48)


def plant_searches(sweep: PlantedSweep) -> None:
    sweep.search("c0", "conventional", val=0.90, test=0.93, loss=0.30)
    sweep.search("c1", "conventional", val=0.90, test=0.89, loss=0.20)  # same val, lower loss: best
    sweep.search("c2", "conventional", val=0.95, test=0.96, epochs=2)  # higher val, stopped early
    sweep.search("c3", "conventional", val=0.85, test=0.97)  # best test, never chosen on it
    sweep.search("l0", "lerac", val=0.92, test=0.91)
    sweep.search("l1", "lerac", val=0.91, test=0.90)
    sweep.search("l2", "lerac", val=0.10, test=0.10, loss=float("nan"), epochs=1, diverged=True)
    sweep.search("l3", "lerac", val=0.50, test=0.50, epochs=1, errored=True)


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> dict:
    """Three sweeps in one store: a winner, a tie, and one whose verdict is not recorded yet."""
    tmp = tmp_path_factory.mktemp("planted")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"

    win = PlantedSweep(uri, "winner", "s-win")
    plant_searches(win)
    for seed, (c, r1, r2) in enumerate(zip(WIN_CONVENTIONAL, WIN_LERAC_RANK1, WIN_LERAC_RANK2,
                                           strict=True), start=1):
        win.confirm("c1", 1, seed, val=0.90, count=c)
        win.confirm("l0", 1, seed, val=0.90, count=r1)
        win.confirm("l1", 2, seed, val=0.95, count=r2)
    win.decide()
    win.finish()

    tie = PlantedSweep(uri, "tie", "s-tie")
    plant_searches(tie)
    for seed, (c, r) in enumerate(zip(TIE_CONVENTIONAL, TIE_LERAC, strict=True), start=1):
        tie.confirm("c1", 1, seed, val=0.90, count=c)
        tie.confirm("l0", 1, seed, val=0.90, count=r)
    tie.decide()
    tie.finish()

    pending = PlantedSweep(uri, "pending", "s-pend")
    plant_searches(pending)
    for seed, (c, r1, r2) in enumerate(zip(WIN_CONVENTIONAL, WIN_LERAC_RANK1, WIN_LERAC_RANK2,
                                           strict=True), start=1):
        pending.confirm("c1", 1, seed, val=0.90, count=c)
        pending.confirm("l0", 1, seed, val=0.90, count=r1)
        pending.confirm("l1", 2, seed, val=0.95, count=r2)
    pending.finish()  # interrupted before its verdict

    chance = PlantedSweep(uri, "chance", "s-chance")
    plant_chance(chance)
    chance.finish()
    return {"uri": uri, "tmp": tmp}


def plant_chance(sweep: PlantedSweep) -> None:
    """A sweep whose leader is near chance, with a lost search run and a lost confirmation run
    whose numbers would change every count and accuracy if a reader took them in."""
    sweep.search("c0", "conventional", val=0.13, test=0.11)
    sweep.search("c1", "conventional", val=0.12, test=0.10)
    sweep.search("c2", "conventional", val=0.11, test=0.12, epochs=2)  # stopped early
    sweep.search("l0", "lerac", val=0.14, test=0.12)
    sweep.search("l1", "lerac", val=0.12, test=0.13)
    sweep.search("lx", "lerac", val=0.60, test=0.61, loss=0.1, lost=True)  # would be lerac's best
    for seed, (c, r) in enumerate(zip(CHANCE_CONVENTIONAL, CHANCE_LERAC, strict=True), start=1):
        sweep.confirm("c0", 1, seed, val=0.12, count=c)
        sweep.confirm("l0", 1, seed, val=0.13, count=r)
    sweep.confirm("l0", 1, 1, val=0.90, count=380, lost=True)  # a second "seed 1" of lerac
    sweep.reconcile()
    sweep.decide()


def run_ids(planted: dict, experiment: str) -> dict[str, str]:
    """trial_id -> run id, read straight from MLflow."""
    client = MlflowClient(planted["uri"])
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    return {run.data.tags["trial_id"]: run.info.run_id
            for run in client.search_runs([experiment_id], "tags.role = 'trial'", max_results=1000)}


def board_of(planted: dict, experiment: str) -> pd.DataFrame:
    return leaderboard(load_sweep(planted["uri"], experiment)).set_index("regime")


def interval(points: np.ndarray) -> tuple[float, float, float]:
    half = stats.t.ppf(0.975, len(points) - 1) * points.std(ddof=1) / np.sqrt(len(points))
    return points.mean(), points.mean() - half, points.mean() + half


class TestRecords:
    def test_search_trials_and_confirmation_runs_are_apart(self, planted):
        sweep = load_sweep(planted["uri"], "winner")
        ids = run_ids(planted, "winner")
        assert sorted(sweep.trials_of("digits")["trial_id"]) == ["c0", "c1", "c2", "c3", "l0", "l1", "l2", "l3"]
        confirmations = sweep.confirmations_of("digits")
        assert len(confirmations) == 9
        for _, run in confirmations.iterrows():
            source, rank, seed = run["trial_id"].split("-")
            assert run["source_run_id"] == ids[source]
            assert (run["rank"], run["seed"]) == (int(rank[1:]), int(seed[1:]))

    def test_epochs_come_from_the_last_validation_step(self, planted):
        trials = load_sweep(planted["uri"], "winner").trials_of("digits").set_index("trial_id")
        assert trials["epochs"].to_dict() == {"c0": 3, "c1": 3, "c2": 2, "c3": 3, "l0": 3, "l1": 3, "l2": 1, "l3": 1}


class TestLeaderboard:
    def test_search_columns_rank_on_validation_then_loss(self, planted):
        row = board_of(planted, "winner").loc["conventional"]
        assert (row["trials"], row["completed"], row["stopped_early"], row["diverged"], row["errored"]) == (4, 3, 1, 0, 0)
        assert row["trial_epochs"] == 3 + 3 + 2 + 3
        assert row["best_val_acc"] == pytest.approx(0.90)  # not c2's 0.95: it stopped early
        assert row["test_of_best"] == pytest.approx(0.89)  # c1: same validation as c0, lower loss
        assert row["mean_val_acc"] == pytest.approx((0.90 + 0.90 + 0.85) / 3)
        lerac = board_of(planted, "winner").loc["lerac"]
        assert (lerac["completed"], lerac["diverged"], lerac["errored"], lerac["trial_epochs"]) == (2, 1, 1, 8)

    def test_the_winner_is_marked_only_because_the_verdict_names_it(self, planted):
        board = board_of(planted, "winner")
        assert board["verdict"].to_dict() == {"conventional": "worse", "lerac": "winner"}
        lerac, conventional = np.array(WIN_LERAC_RANK2) / N_TEST, np.array(WIN_CONVENTIONAL) / N_TEST
        mean, low, high = interval(100 * lerac)
        row = board.loc["lerac"]
        assert row["seeds"] == 3 and row["gap_points"] == 0.0
        assert (row["confirm_test_acc"], row["confirm_ci_low"], row["confirm_ci_high"]) == pytest.approx(
            (mean / 100, low / 100, high / 100), rel=1e-12)
        gap, gap_low, gap_high = interval(100 * (lerac - conventional))
        row = board.loc["conventional"]
        assert (row["gap_points"], row["gap_ci_low"], row["gap_ci_high"]) == pytest.approx((gap, gap_low, gap_high),
                                                                                          rel=1e-9)
        assert row["p_holm"] == pytest.approx(stats.ttest_rel(lerac, conventional).pvalue, rel=1e-9)
        assert row["confirm_test_acc"] == pytest.approx(conventional.mean(), rel=1e-12)

    def test_a_tie_marks_no_winner(self, planted, capsys):
        board = board_of(planted, "tie")
        assert board["verdict"].to_dict() == {"conventional": "tie", "lerac": "tie"}
        conventional, lerac = np.array(TIE_CONVENTIONAL) / N_TEST, np.array(TIE_LERAC) / N_TEST
        assert board.loc["lerac", "p_holm"] == pytest.approx(stats.ttest_rel(conventional, lerac).pvalue, rel=1e-9)
        assert main(["leaderboard", "--tracking-uri", planted["uri"], "--experiment", "tie",
                     "--out", str(planted["tmp"] / "tie-board")]) == 0
        printed = capsys.readouterr().out
        assert "* winner" not in printed
        assert "digits: TIE (conventional, lerac within noise; conventional leads)" in printed

    def test_an_unfinished_sweep_is_provisional_and_names_no_winner(self, planted, capsys):
        board = board_of(planted, "pending")
        assert set(board["verdict"]) == {"pending"}
        row = board.loc["lerac"]  # the provisional numbers count the rank-2 config, as the sweep will
        assert row["confirm_test_acc"] == pytest.approx(np.mean(WIN_LERAC_RANK2) / N_TEST, rel=1e-12)
        assert main(["leaderboard", "--tracking-uri", planted["uri"], "--experiment", "pending",
                     "--out", str(planted["tmp"] / "pending-board")]) == 0
        assert "digits: PENDING (the sweep has recorded no verdict yet; lerac leads so far)" in capsys.readouterr().out


class TestExport:
    def test_a_tie_exports_the_leaders_config_and_says_it_is_no_winner(self, planted, capsys):
        out = planted["tmp"] / "tie-export"
        assert main(["export", "--tracking-uri", planted["uri"], "--experiment", "tie", "--out", str(out)]) == 0
        printed = capsys.readouterr().out
        assert ("digits: the verdict is a TIE (conventional, lerac within noise; conventional leads): "
                "best_config.yaml is the config of the leader, conventional, NOT a winner") in printed
        best = read_config_file(out / "digits" / "best_config.yaml")
        ids = run_ids(planted, "tie")
        assert best.metadata["source_run_id"] == ids["c1"]
        assert (best.metadata["recorded_val_acc"], best.metadata["recorded_test_acc"]) == (0.90, 0.89)
        assert best.metadata["verdict"]["outcome"] == "tie" and best.metadata["verdict"]["winner"] is None
        assert best.settings["lr"] == pytest.approx(0.02)  # c1's own settings
        lerac = read_config_file(out / "digits" / "configs" / "lerac.yaml")
        assert lerac.metadata["source_run_id"] == ids["l0"]
        assert lerac.metadata["confirmation"]["seeds"] == [1, 2]

    def test_a_winner_exports_the_confirmed_rank(self, planted, capsys):
        out = planted["tmp"] / "win-export"
        assert main(["export", "--tracking-uri", planted["uri"], "--experiment", "winner", "--out", str(out)]) == 0
        assert "digits: lerac wins (significantly better than every other regime)" in capsys.readouterr().out
        best = read_config_file(out / "digits" / "best_config.yaml")
        assert best.metadata["source_run_id"] == run_ids(planted, "winner")["l1"]  # rank 2 counted

    def test_an_unfinished_sweep_has_nothing_to_export(self, planted, capsys):
        assert main(["export", "--tracking-uri", planted["uri"], "--experiment", "pending",
                     "--out", str(planted["tmp"] / "pending-export")]) == 2
        err = capsys.readouterr().err
        assert "skipped: dataset 'digits' of sweep 's-pend' has no verdict yet" in err
        assert err.splitlines()[-1] == "error: sweep 's-pend' has no leading config to export"


class TestConfirmArms:
    """Which configs `python -m analysis confirm` retrains (the training itself: tests/test_analysis.py)."""

    def planted_config(self, planted: dict, experiment: str, trial_id: str) -> dict:
        run = MlflowClient(planted["uri"]).get_run(run_ids(planted, experiment)[trial_id])
        return RunConfig.from_params(run.data.params).to_dict()

    def test_all_is_every_regimes_confirmed_config(self, planted):
        arms = choose_arms(load_sweep(planted["uri"], "winner"), "digits", "all")
        assert [arm.label for arm in arms] == ["conventional", "lerac"]
        assert arms[0].config == self.planted_config(planted, "winner", "c1")
        assert arms[1].config == self.planted_config(planted, "winner", "l1")  # the rank that counted

    def test_tuned_puts_the_leader_against_conventional(self, planted):
        arms = choose_arms(load_sweep(planted["uri"], "winner"), "digits", "tuned")
        assert [(arm.label, arm.config) for arm in arms] == [
            ("lerac", self.planted_config(planted, "winner", "l1")),
            ("conventional", self.planted_config(planted, "winner", "c1"))]

    def test_ablation_puts_the_leader_against_its_warmup_twin(self, planted):
        leader, ablation = choose_arms(load_sweep(planted["uri"], "winner"), "digits", "ablation")
        assert ablation.label == "ablation" and ablation.config == ablation_config(leader.config)
        assert ablation.config["warmup_epochs"] == leader.config["curriculum_epochs"]

    def test_a_baseline_needs_a_recorded_leader(self, planted):
        with pytest.raises(AnalysisError, match="no recorded leader"):
            choose_arms(load_sweep(planted["uri"], "pending"), "digits", "tuned")


def test_report_verdict_shows_the_planted_mcnemar_tables(planted):
    sweep = load_sweep(planted["uri"], "winner")
    page = verdict_html(sweep, "digits", dataset_verdict(sweep, "digits"))
    for seed, (lerac, conventional) in enumerate(zip(WIN_LERAC_RANK2, WIN_CONVENTIONAL, strict=True), start=1):
        a = planted_correct(lerac, zlib.crc32(f"l1-{seed}".encode()))
        b = planted_correct(conventional, zlib.crc32(f"c1-{seed}".encode()))
        cells = [seed, np.sum(a & b), np.sum(a & ~b), np.sum(~a & b), np.sum(~a & ~b)]
        p = mcnemar([[cells[1], cells[2]], [cells[3], cells[4]]], exact=True).pvalue
        row = "".join(f"<td>{value}</td>" for value in cells) + f"<td>{p:.3g}</td>"
        assert row in page
    assert "<h3>digits: WINNER lerac</h3>" in page


def test_report_verdict_of_an_unfinished_sweep_is_provisional(planted):
    sweep = load_sweep(planted["uri"], "pending")
    page = verdict_html(sweep, "digits", dataset_verdict(sweep, "digits"))
    assert "<h3>digits: PENDING (the sweep has recorded no verdict yet; lerac leads so far)</h3>" in page
    assert "provisional, from the confirmation runs so far: lerac wins" in page  # decide's words, qualified
    assert 'class="winner"' not in page and "No McNemar tables" in page


def test_a_sweep_killed_in_its_first_trial_is_one_clear_line(planted, capsys):
    """A parent run and a started, never finished trial."""
    uri = planted["uri"]
    killed = PlantedSweep(uri, "killed-sweep", "killed")
    killed.recorder.start_trial(parent_run_id=killed.parent, trial_id="t0", config=settings("lerac"))
    killed.recorder.flush()
    for command in ("leaderboard", "export", "report"):
        assert main([command, "--tracking-uri", uri, "--experiment", "killed-sweep"]) == 2
        assert capsys.readouterr().err == "error: sweep 'killed' has no finished trials yet (1 started)\n"


# -- a leader near chance, and lost runs ---------------------------------------------------------------
CHANCE_FLOOR = 0.1 + 0.1 * (1 - 0.1)  # chance + 10% of the way to 100%, with NUM_CLASSES = 10
CHANCE_REASON = (f"no trustworthy winner: the leader lerac reaches only {100 * np.mean(CHANCE_LERAC) / N_TEST:.2f}% "
                 f"mean test accuracy over 3 fresh seeds, below the {100 * CHANCE_FLOOR:.2f}% a result needs "
                 f"(chance is 10.00% with 10 classes)")
CHANCE_TITLE = "NO TRUSTWORTHY WINNER (lerac leads at 12.00%, below the trust floor 19.00%: not a result)"


def flags(planted: dict, experiment: str, out: str) -> list[str]:
    return ["--tracking-uri", planted["uri"], "--experiment", experiment, "--out", str(planted["tmp"] / out)]


class TestNearChanceAndLostRuns:
    def test_the_sweep_recorded_what_the_readers_rely_on(self, planted):
        """The planted records themselves, read with MlflowClient: the verdict and two lost runs."""
        client = MlflowClient(planted["uri"])
        experiment = client.get_experiment_by_name("chance").experiment_id
        (parent,) = client.search_runs([experiment], "tags.role = 'parent'")
        assert parent.data.tags["verdict"] == "no_trustworthy_winner"
        assert parent.data.tags["verdict_reason"] == CHANCE_REASON
        assert parent.data.metrics["chance_acc"] == pytest.approx(0.1)
        assert parent.data.metrics["trust_floor_acc"] == pytest.approx(CHANCE_FLOOR)
        lost = client.search_runs([experiment], "tags.end_state = 'lost'")
        assert sorted(run.data.tags["trial_id"] for run in lost) == ["l0-r1-s1-lost", "lx"]
        assert {run.info.status for run in lost} == {"KILLED"}

    def test_lost_runs_are_in_neither_stage(self, planted):
        sweep = load_sweep(planted["uri"], "chance")
        assert sorted(sweep.trials_of("digits")["trial_id"]) == ["c0", "c1", "c2", "l0", "l1"]
        confirmations = sweep.confirmations_of("digits")
        assert len(confirmations) == 6 and "l0-r1-s1-lost" not in set(confirmations["trial_id"])
        assert sorted(sweep.lost_of("digits")["trial_id"]) == ["l0-r1-s1-lost", "lx"]
        assert list(sweep.lost_of("digits", "search")["trial_id"]) == ["lx"]
        by_regime = confirmed_runs(confirmations)  # what a pending sweep's provisional verdict reads
        assert by_regime["lerac"][["seed", "test_acc"]].values.tolist() == [
            [seed, count / N_TEST] for seed, count in enumerate(CHANCE_LERAC, start=1)]

    def test_leaderboard_counts_no_lost_run_and_marks_no_winner(self, planted):
        board = board_of(planted, "chance")
        assert board["verdict"].to_dict() == {"conventional": "near chance", "lerac": "near chance"}
        lerac = board.loc["lerac"]
        assert (lerac["trials"], lerac["completed"], lerac["trial_epochs"], lerac["lost"]) == (2, 2, 6, 2)
        assert lerac["best_val_acc"] == pytest.approx(0.14) and lerac["test_of_best"] == pytest.approx(0.12)
        assert lerac["mean_val_acc"] == pytest.approx((0.14 + 0.12) / 2)
        assert lerac["confirm_test_acc"] == pytest.approx(np.mean(CHANCE_LERAC) / N_TEST, rel=1e-12)
        conventional = board.loc["conventional"]
        assert (conventional["trials"], conventional["stopped_early"], conventional["lost"]) == (3, 1, 0)
        gap = 100 * (np.array(CHANCE_LERAC) - np.array(CHANCE_CONVENTIONAL)) / N_TEST
        assert conventional["gap_points"] == pytest.approx(gap.mean(), rel=1e-9)
        assert stats.ttest_rel(CHANCE_LERAC, CHANCE_CONVENTIONAL).pvalue < 0.05  # the test alone: a winner
        assert board["chance_acc"].tolist() == pytest.approx([0.1, 0.1])
        assert board["trust_floor_acc"].tolist() == pytest.approx([CHANCE_FLOOR, CHANCE_FLOOR])

    def test_leaderboard_prints_the_verdict_with_its_reason_and_the_bar(self, planted, capsys):
        assert main(["leaderboard", *flags(planted, "chance", "chance-board")]) == 0
        printed = capsys.readouterr().out
        assert f"digits: {CHANCE_TITLE}\n  {CHANCE_REASON}\n" in printed
        assert ("  chance 10.00%, trust floor 19.00% (a winner's mean confirmed test accuracy must reach it; "
                "the leader lerac reaches 12.00%)") in printed
        assert "* winner" not in printed and "= tie" not in printed and "! near chance" in printed
        assert "lost (not counted)" in printed and "lost: 2 runs" in printed
        written = pd.read_csv(planted["tmp"] / "chance-board" / "leaderboard.csv").set_index("regime")
        assert written.loc["lerac", "lost"] == 2 and written.loc["lerac", "verdict"] == "near chance"

    def test_export_refuses_by_default(self, planted, capsys):
        out = planted["tmp"] / "chance-export"
        assert main(["export", *flags(planted, "chance", "chance-export")]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        skipped, error = captured.err.splitlines()
        assert skipped.startswith(f"skipped: dataset 'digits' of sweep 's-chance' NOT EXPORTED: {CHANCE_REASON}; "
                                  "its leading config is not a result (--allow-untrustworthy writes it anyway")
        assert error == ("error: sweep 's-chance' has no leading config to export that is a result "
                         "(near-chance leaders are written only with --allow-untrustworthy)")
        assert not (out / "digits").exists()

    def test_export_anyway_warns_in_the_output_and_in_every_file(self, planted, capsys):
        out = planted["tmp"] / "chance-export-anyway"
        assert main(["export", *flags(planted, "chance", "chance-export-anyway"), "--allow-untrustworthy"]) == 0
        printed = capsys.readouterr().out
        assert printed.startswith(f"WARNING: digits: {CHANCE_REASON}. best_config.yaml is the config of the "
                                  "leader, lerac, NOT A RESULT")
        ids = run_ids(planted, "chance")
        for path in ("best_config.yaml", "configs/lerac.yaml", "configs/conventional.yaml"):
            first_line = (out / "digits" / path).read_text().splitlines()[0]
            assert first_line.startswith("warning: 'NOT A RESULT: no trustworthy winner: the leader lerac"), path
            found = read_config_file(out / "digits" / path)
            assert found.metadata["warning"] == (f"NOT A RESULT: {CHANCE_REASON}. Exported with "
                                                 "--allow-untrustworthy; do not report this config or use it "
                                                 "as a winner's.")
            assert found.metadata["verdict"]["outcome"] == "no_trustworthy_winner"
            assert found.metadata["verdict"]["trustworthy"] is False and found.metadata["verdict"]["winner"] is None
            twin = json.loads((out / "digits" / path).with_suffix(".json").read_text())
            assert twin["warning"] == found.metadata["warning"]
        best = read_config_file(out / "digits" / "best_config.yaml")
        assert best.metadata["source_run_id"] == ids["l0"] and best.settings["regime"] == "lerac"

    def test_report_puts_it_at_the_top_and_never_calls_the_leader_a_winner(self, planted, capsys):
        assert main(["report", *flags(planted, "chance", "chance-report")]) == 0
        page = (planted["tmp"] / "chance-report" / "report-s-chance.html").read_text()
        alarm = page.index('<p class="alarm">digits: ' + html.escape(CHANCE_REASON))
        assert alarm < page.index("<h2>Verdicts</h2>")
        assert f"<h3>digits: {html.escape(CHANCE_TITLE)}</h3>" in page
        assert '<p class="verdict no_trustworthy_winner">' in page
        assert "the leading config, NOT a result: near chance (best_config.yaml)" in page
        assert "WINNER lerac" not in page and 'class="winner"' not in page and "winner&#x27;s (" not in page
        # The summary: 5 search trials, 6 confirmation runs, 2 lost runs (counted nowhere else).
        assert "<td>5</td><td>6</td><td>2</td>" in page

    def test_plots_leave_lost_runs_out(self, planted, monkeypatch, capsys):
        import analysis.plots as plots

        figures, save_file = {}, plots.save

        def keep(figure, path):  # every picture is still written and attached
            figures[path.name] = figure
            return save_file(figure, path)

        monkeypatch.setattr(plots, "save", keep)
        assert main(["plots", *flags(planted, "chance", "chance-plots")]) == 0
        ids = run_ids(planted, "chance")
        (curves,) = figures["digits-learning-curves.png"].axes
        drawn = {line.get_gid() for line in curves.get_lines()} - {None}
        assert drawn == {ids[trial] for trial in ("c0", "c1", "c2", "l0", "l1")}
        assert curves.get_title() == "digits: learning curves of 5 search trials (1 lost run left out)"
        titles = [ax.get_title().splitlines()[0] for ax in figures["digits-importance.png"].axes]
        assert titles == ["conventional: 2 completed search trials", "lerac: 2 completed search trials"]
        confirmation = {line.get_gid() for line in figures["digits-confirmation-curves.png"].axes[0].get_lines()}
        assert ids["l0-r1-s1-lost"] not in confirmation and ids["l0-r1-s1"] in confirmation
        parallel = interactive_parallel(load_sweep(planted["uri"], "chance"), "digits")
        accuracies = sorted(parallel.data[0].dimensions[-1].values)
        assert accuracies == pytest.approx([11.0, 12.0, 12.0, 13.0, 14.0])  # not the lost run's 60

    def test_sweeps_lists_it(self, planted, capsys):
        assert main(["sweeps", "--tracking-uri", planted["uri"], "--experiment", "chance"]) == 0
        assert capsys.readouterr().out.splitlines()[2].endswith("digits: no trustworthy winner (lerac leads near chance)")

    def test_confirming_by_hand_applies_the_same_floor(self, planted, monkeypatch):
        """`confirm` with training replaced by planted results: near chance, its verdict says so."""
        import analysis.confirm as confirming

        planted_tests = {"lerac": CHANCE_LERAC, "conventional": CHANCE_CONVENTIONAL}

        def run_seed(config, seed):
            count = planted_tests[config["regime"]][seed - 1]
            correct = planted_correct(count, seed)
            return SeedResult(seed=seed, val_acc=0.1, test_acc=count / N_TEST, correct=correct), NUM_CLASSES

        monkeypatch.setattr(confirming, "run_seed", run_seed)
        sweep = load_sweep(planted["uri"], "chance")
        result = confirming.confirm(choose_arms(sweep, "digits", "all"), dataset="digits", seeds=[1, 2, 3],
                                    mode="all")
        assert result.verdict.outcome == "no_trustworthy_winner" and result.verdict.winner is None
        assert result.headline() == CHANCE_REASON
        assert confirming.describe(result).splitlines()[-1] == (
            "  verdict: NO TRUSTWORTHY WINNER (the leader is near chance: not a result): " + CHANCE_REASON)
        recorded = result.to_dict()
        assert recorded["verdict"]["headline"] == CHANCE_REASON
        assert (recorded["chance_acc"], recorded["trust_floor_acc"]) == pytest.approx((0.1, CHANCE_FLOOR))
        confirming.log_confirmation(sweep, result)
        page = reconfirmations_html(load_sweep(planted["uri"], "chance"), "digits")
        assert f'<p class="verdict no_trustworthy_winner">{html.escape(CHANCE_REASON)}</p>' in page

    def test_a_sweep_with_only_lost_runs_has_nothing_finished(self, planted, capsys):
        only_lost = PlantedSweep(planted["uri"], "only-lost", "s-lost")
        only_lost.search("l0", "lerac", val=0.9, test=0.9, lost=True)
        only_lost.reconcile()
        only_lost.finish()
        assert main(["leaderboard", "--tracking-uri", planted["uri"], "--experiment", "only-lost"]) == 2
        assert capsys.readouterr().err == "error: sweep 's-lost' has no finished trials yet (1 started, 1 of them lost)\n"


@pytest.mark.parametrize("outcome", schema.VERDICTS)
def test_every_command_has_words_for_every_outcome(outcome):
    """A future outcome in schema.VERDICTS fails here until every command can say it."""
    leader = None if outcome == schema.NO_RESULT else "lerac"
    arm = {"regime": "lerac", "seeds": [1, 2], "test": {"mean": 12.0, "low": 10.0, "high": 14.0},
           "mean_val": 12.0, "test_by_seed": [11.0, 13.0]}
    verdict = DatasetVerdict(dataset="digits", status=outcome, winner="lerac" if outcome == schema.WINNER else None,
                             leader=leader, leading_run_id=None, tied=("lerac",) if leader else (),
                             detail={"arms": [arm] if leader else [], "comparisons": [], "leader": leader},
                             recorded=True, reason="why", chance_acc=0.1, trust_floor_acc=0.19)
    assert {outcome, PENDING} <= set(TITLES) and outcome in NOTES and outcome in VERDICT_TEXTS
    assert outcome in OUTCOME_WORDS and (outcome in SUMMARIES or leader is None)
    assert "does not know" not in verdict.title() and not verdict.title().startswith("PENDING")
    assert (verdict.mark("lerac") == schema.WINNER) == (outcome == schema.WINNER)
    assert verdict.trustworthy == (outcome != schema.NO_TRUSTWORTHY_WINNER)
    assert "_" not in verdict_text({schema.VERDICT: outcome, schema.WINNER_REGIME: "lerac",
                                    schema.LEADING_REGIME: "lerac", schema.TIED_REGIMES: "lerac"})
    assert "_" not in parent_run_name("digits", "20261123-235401-3fa2c1", verdict=outcome, winner=leader)
    if leader is not None:
        pick = Pick(run_id="r", regime="lerac", config={}, val_acc=0.1, test_acc=0.1)
        summary = Exported(dataset="digits", verdict=verdict, leading=pick).summary()
        assert ("winner's config" in summary) == (outcome == schema.WINNER)


# -- the ablation baseline ------------------------------------------------------------------------
LERAC_DIGITS = {"regime": "lerac", "dataset": "digits", "model": "small_cnn", "epochs": 4, "lr": 0.08,
                "batch_size": 64, "curriculum_epochs": 1.5, "decay_base": 0.2, "eta_min": 1e-6, "shape": "exp",
                "device": "cpu"}


@pytest.mark.parametrize("schedule", ["cosine", "step", "constant"])
def test_ablation_of_lerac_is_a_warmup_of_length_k_with_the_same_rates_from_k(schedule):
    lerac = {**LERAC_DIGITS, "schedule": schedule}
    ablation = ablation_config(lerac)
    assert ablation["regime"] == "conventional" and ablation["warmup_epochs"] == lerac["curriculum_epochs"]
    own = set(regime_class("lerac").Settings.__dataclass_fields__)
    assert not own & set(ablation)
    shared = RunConfig.from_dict(lerac).to_dict()
    assert {k: v for k, v in ablation.items() if k not in ("regime", "warmup_epochs")} == {
        k: v for k, v in shared.items() if k not in own | {"regime", "warmup_epochs"}}

    steps, curriculum = layer_rate_curves(lerac)
    _, warmup = layer_rate_curves(ablation)
    assert list(curriculum) == list(warmup)
    per_epoch = len(steps) // lerac["epochs"]
    k = round(lerac["curriculum_epochs"] * per_epoch)
    for group in curriculum:
        assert curriculum[group][k:] == warmup[group][k:]  # identical from step k on, every layer
        assert warmup[group][:k] == pytest.approx([lerac["lr"] * (t + 1) / k for t in range(k)], rel=1e-12)
    first, last = list(curriculum)[0], list(curriculum)[-1]
    assert curriculum[last][0] < curriculum[first][0]  # only the rise before k differs: per layer


def test_ablation_of_another_regime_drops_its_own_settings():
    cbs = {"regime": "cbs", "dataset": "digits", "lr": 0.05, "cbs_sigma": 1.5, "warmup_epochs": 0.5}
    ablation = ablation_config(cbs)
    assert ablation["regime"] == "conventional" and ablation["lr"] == 0.05 and ablation["warmup_epochs"] == 0.5
    assert not any(key.startswith("cbs_") for key in ablation)


def test_conventional_has_no_curriculum_to_ablate():
    with pytest.raises(AnalysisError, match="no curriculum to ablate"):
        ablation_config({"regime": "conventional"})
