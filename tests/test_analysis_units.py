"""Unit tests of analysis/ that need no sweep: the statistics, the inferred space, the rate plot, the CLI."""

from __future__ import annotations

import numpy as np
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar

from analysis.__main__ import main
from analysis.confirm import Arm, Confirmation, SeedPair, ablation_config
from analysis.importance import infer_space
from analysis.plots import rate_curves_figure, save
from analysis.stats import McNemar, Paired, contingency, mcnemar_exact, paired_tests
from trainables.config_file import write_config_file


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


def confirmation(gaps: list[tuple[int, int, float]], ttest_p: float, mean: float) -> Confirmation:
    """A Confirmation with given McNemar (only_a, only_b, p) per seed and a given paired result."""
    pairs = [SeedPair(seed, 0.9, 0.9, McNemar(100, a, b, 10, p)) for seed, (a, b, p) in enumerate(gaps)]
    arm = Arm("x", None, {})
    return Confirmation("digits", arm, arm, "test", pairs, Paired(len(pairs), mean, 1.0, ttest_p, 0.25))


class TestVerdict:
    def test_significant_only_when_paired_test_and_most_mcnemar_agree(self):
        strong = confirmation([(20, 2, 1e-4), (18, 3, 5e-4), (25, 1, 1e-5)], ttest_p=2e-4, mean=2.0)
        assert strong.significant(0.05) and strong.significant(0.001)
        assert "IS significantly better" in strong.verdict() and "0.001" in strong.verdict()

    def test_mcnemar_majority_is_required(self):
        split = confirmation([(20, 2, 1e-4), (8, 6, 0.8), (9, 7, 0.8)], ttest_p=0.01, mean=1.0)
        assert not split.significant(0.05)
        assert "NOT significantly better" in split.verdict()

    def test_a_baseline_ahead_is_never_a_win(self):
        behind = confirmation([(2, 20, 1e-4), (3, 18, 1e-4), (1, 25, 1e-5)], ttest_p=1e-4, mean=-2.0)
        assert not behind.significant(0.05)
        assert "baseline is ahead" in behind.verdict()


def test_ablation_drops_the_regime_settings():
    config = {"regime": "lerac", "dataset": "digits", "lr": 0.05, "decay_base": 0.2, "curriculum_epochs": 2.0}
    baseline = ablation_config(config)
    assert baseline["regime"] == "conventional" and baseline["lr"] == 0.05
    assert "decay_base" not in baseline and "curriculum_epochs" not in baseline


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


@pytest.mark.parametrize("command", ["leaderboard", "export", "confirm", "plots", "report", "rates"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: python -m analysis " + command in capsys.readouterr().out


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
