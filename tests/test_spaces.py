"""Search spaces: each regime's own, bounded so nothing behind by design meets a rung, holding
the original authors' defaults, and shaped by the model family."""

from __future__ import annotations

import optuna
import pytest

from search.options import SweepOptions
from search.spaces import Budget, SearchSpace, describe_space
from trainables.config import RunConfig
from trainables.regimes import REGIME_NAMES

optuna.logging.set_verbosity(optuna.logging.WARNING)


def draws(space: SearchSpace, count: int = 40) -> list[dict]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    return [space(study.ask()) for _ in range(count)]


def distributions(space: SearchSpace) -> dict:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    found = {}
    for _ in range(64):
        trial = study.ask()
        space(trial)
        found.update(trial.distributions)
        study.tell(trial, 0.0)
    return found


@pytest.mark.parametrize("regime", REGIME_NAMES)
def test_every_draw_is_a_valid_config(regime):
    options = SweepOptions(regimes=(regime,))
    space = SearchSpace(regime=regime, budget=options.budget(), fixed=options.trial_settings("digits", regime))
    for config in draws(space):
        assert "regime" not in distributions(space)
        RunConfig.from_dict(config)


def test_rises_and_warmups_end_before_the_first_rung():
    budget = Budget(epochs=8, grace_period=3)
    for regime, key in (("lerac", "curriculum_epochs"), ("conventional", "warmup_epochs")):
        found = distributions(SearchSpace(regime=regime, budget=budget))
        assert found[key].high < budget.grace_period
        assert found[key].low > 0


def test_spaces_hold_the_authors_defaults():
    budget = Budget(epochs=8, grace_period=3)
    lerac = distributions(SearchSpace(regime="lerac", budget=budget))
    assert lerac["decay_base"].low <= 0.1 <= lerac["decay_base"].high
    assert lerac["eta_min"].low <= 1e-8 and 1e-6 <= lerac["eta_min"].high
    assert "stepped" in lerac["rule"].choices and "exp" in lerac["shape"].choices
    cbs = distributions(SearchSpace(regime="cbs", budget=budget))
    assert cbs["cbs_sigma"].low <= 1 <= cbs["cbs_sigma"].high
    assert cbs["cbs_decay"].low <= 0.9 <= cbs["cbs_decay"].high
    assert cbs["cbs_every"].low <= 5 <= cbs["cbs_every"].high


def test_a_fixed_setting_is_not_searched_and_a_fixed_warmup_needs_no_switch():
    space = SearchSpace(regime="conventional", budget=Budget(epochs=8, grace_period=3),
                        fixed={"lr": 0.05, "warmup_epochs": 1.0})
    found = distributions(space)
    assert "lr" not in found and "warmup" not in found and "warmup_epochs" not in found
    assert {config["warmup_epochs"] for config in draws(space, 5)} == {1.0}


@pytest.mark.parametrize(("model", "optimizers"), [("bert", {"adamw", "adamax"}), ("cvt13", {"adamw", "adamax"}),
                                                   ("lstm", {"adam", "adamw"})])
def test_transformers_and_lstms_search_their_own_optimizers(model, optimizers):
    found = distributions(SearchSpace(regime="lerac", budget=Budget(epochs=8, grace_period=3, model=model)))
    assert set(found["optimizer"].choices) == optimizers
    assert found["lr"].high <= 0.01
    assert ("curriculum_layers" in found) == (model == "bert")


def test_on_a_gpu_larger_batches_come_with_a_linearly_scaled_rate():
    space = SearchSpace(regime="conventional", budget=Budget(epochs=8, grace_period=3, gpu=True))
    assert "lr_per_128" in describe_space(space)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(10):
        trial = study.ask()
        config = space(trial)
        assert config["lr"] == pytest.approx(trial.params["lr_per_128"] * config["batch_size"] / 128)
        assert "lr_per_128" not in config
