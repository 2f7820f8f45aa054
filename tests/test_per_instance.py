"""Per-instance rates find mislabelled examples: the check REGIMES.md says matters."""

from __future__ import annotations

import pytest
from sklearn.metrics import roc_auc_score

from trainables.config import RunConfig
from trainables.training import Trainer


@pytest.fixture(scope="module")
def trained_on_noisy_digits() -> Trainer:
    trainer = Trainer(RunConfig.from_dict({
        "regime": "per_instance", "dataset": "digits", "label_noise": 0.3,
        "epochs": 8, "instance_lr": 0.1, "seed": 0,
    }))
    while not trainer.finished:
        trainer.train_epoch()
    return trainer


def test_flipped_examples_end_with_clearly_lower_rates(trained_on_noisy_digits):
    trainer = trained_on_noisy_digits
    rates = trainer.regime.instance_rates().cpu()
    noisy = trainer.data.noisy.cpu()
    assert noisy.float().mean().item() == pytest.approx(0.3, abs=0.01)
    flipped, clean = rates[noisy].mean().item(), rates[~noisy].mean().item()
    assert flipped < 0.75 * clean, (flipped, clean)


def test_rates_rank_flipped_examples_below_clean_ones(trained_on_noisy_digits):
    trainer = trained_on_noisy_digits
    rates = trainer.regime.instance_rates().cpu().numpy()
    clean = (~trainer.data.noisy.cpu()).numpy()
    assert roc_auc_score(clean, rates) > 0.85


def test_still_learns_the_true_labels(trained_on_noisy_digits):
    assert trained_on_noisy_digits.evaluate(trained_on_noisy_digits.data.val) > 0.85
