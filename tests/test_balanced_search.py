"""The searcher on its own, driven the way Ray Tune drives it (no Ray runtime needed).

Equal budgets handed out in turn, stopped trials reaching Optuna as pruned with
their per-epoch values, confirmation queued only once a pair's search is over,
and a saved searcher that continues where it stopped.
"""

from __future__ import annotations

import itertools
import pickle
import time
from collections import Counter

import optuna
import pytest
from optuna.trial import TrialState
from ray.tune.search import Searcher

from search import schema
from search.balanced_search import SWEEP_KEY, BalancedSearch, Confirmation, Group, SamplerSettings
from search.grouped_scheduler import GroupedAsha
from search.spaces import Budget, SearchSpace

EPOCHS = 4
SEEDS = (11, 12, 13)


def make_searcher(tmp_path, *, regimes=("conventional", "lerac", "cbs"), trials=4, **overrides) -> BalancedSearch:
    budget = Budget(epochs=EPOCHS, grace_period=2)
    groups = [Group(dataset="digits", regime=regime,
                    space=SearchSpace(regime=regime, budget=budget, fixed={"dataset": "digits", "regime": regime}))
              for regime in regimes]
    settings = {
        "groups": groups, "trials_per_group": trials, "epochs": EPOCHS,
        "sampler": SamplerSettings(kind="tpe", seed=0, startup_trials=2),
        "confirmation": Confirmation(seeds=SEEDS), "study_prefix": "sweep-1",
        "journal": tmp_path / "journal.log", "search_test_epochs": (2,),
        **overrides,
    }
    return BalancedSearch(**settings)


_ids = (f"t{i:03d}" for i in itertools.count())


def finish(searcher: BalancedSearch, trial_id: str, config: dict, *, epochs: int, val: float,
           diverged: bool = False) -> None:
    """Report `epochs` epochs (val rising to `val`) and end the trial as Tune would."""
    result = {}
    for epoch in range(1, epochs + 1):
        result = {"epoch": epoch, "val_acc": val * epoch / epochs, "train_loss": 1.0 / epoch,
                  "diverged": diverged and epoch == epochs}
        searcher.on_trial_result(trial_id, result)
    searcher.on_trial_complete(trial_id, result)


def test_budgets_stay_equal_within_one_trial_at_every_moment(tmp_path):
    searcher = make_searcher(tmp_path)
    started: Counter[str] = Counter()
    live = []
    for _ in range(12):
        trial_id = next(_ids)
        config = searcher.suggest(trial_id)
        started[config["regime"]] += 1
        live.append((trial_id, config))
        assert max(started.values()) - min(started.values(), default=0) <= 1
        if len(live) == 2:  # two slots, the older trial ends first
            finish(searcher, *live.pop(0), epochs=EPOCHS, val=0.9)
    assert started == {"conventional": 4, "lerac": 4, "cbs": 4}


def test_regime_is_not_a_searched_parameter_and_each_study_holds_only_its_regime(tmp_path):
    searcher = make_searcher(tmp_path)
    for _ in range(6):
        trial_id = next(_ids)
        config = searcher.suggest(trial_id)
        finish(searcher, trial_id, config, epochs=EPOCHS, val=0.9)
    for key, study in searcher.studies.items():
        assert "regime" not in study.trials[0].params
        assert {trial.user_attrs["config"]["regime"] for trial in study.trials} == {key.split("/")[1]}


def test_stopped_trials_reach_optuna_as_pruned_with_their_epochs(tmp_path):
    searcher = make_searcher(tmp_path, regimes=("lerac",))
    first, second, third = (next(_ids) for _ in range(3))
    finish(searcher, first, searcher.suggest(first), epochs=EPOCHS, val=0.95)
    finish(searcher, second, searcher.suggest(second), epochs=2, val=0.5)  # stopped at the rung
    finish(searcher, third, searcher.suggest(third), epochs=1, val=0.7, diverged=True)
    complete, pruned, diverged = searcher.studies["digits/lerac"].trials
    assert complete.state == TrialState.COMPLETE and complete.value == pytest.approx(0.95)
    assert pruned.state == TrialState.PRUNED  # Optuna keeps the last epoch's value as its value
    assert pruned.intermediate_values == pytest.approx({1: 0.25, 2: 0.5})
    assert pruned.user_attrs[schema.END_STATE] == schema.STOPPED_EARLY
    assert diverged.state == TrialState.PRUNED and diverged.user_attrs[schema.END_STATE] == schema.DIVERGED


def test_errored_trials_fail_in_optuna(tmp_path):
    searcher = make_searcher(tmp_path, regimes=("lerac",))
    trial_id = next(_ids)
    searcher.suggest(trial_id)
    searcher.on_trial_complete(trial_id, None, error=True)
    assert searcher.studies["digits/lerac"].trials[0].state == TrialState.FAIL


def test_confirmation_retrains_each_regimes_best_on_fresh_seeds_after_its_search(tmp_path):
    searcher = make_searcher(tmp_path, regimes=("conventional", "lerac"), trials=2)
    handed = {next(_ids): None for _ in range(4)}
    for trial_id in handed:
        handed[trial_id] = searcher.suggest(trial_id)
    assert searcher.suggest(next(_ids)) is None  # both searches still running: nothing to confirm
    values = iter([0.80, 0.90, 0.85, 0.70])
    for trial_id, config in handed.items():
        finish(searcher, trial_id, config, epochs=EPOCHS, val=next(values))
    confirmations = []
    while (config := searcher.suggest(next(_ids))) is not Searcher.FINISHED:
        confirmations.append(config)
    assert len(confirmations) == 2 * len(SEEDS)
    configs = list(handed.values())  # handed out in turn: conventional, lerac, conventional, lerac
    best = {"conventional": configs[2], "lerac": configs[1]}
    for config in confirmations:
        notes = config[SWEEP_KEY]
        assert notes["stage"] == schema.CONFIRM and notes["rank"] == 1
        expected = {key: value for key, value in best[config["regime"]].items() if key != SWEEP_KEY}
        assert {k: v for k, v in config.items() if k not in (SWEEP_KEY, "seed")} == \
               {k: v for k, v in expected.items() if k != "seed"}
    assert sorted(c["seed"] for c in confirmations) == sorted(SEEDS * 2)
    # Queued seed by seed across regimes, so the pairs of a dataset finish together.
    assert [c["regime"] for c in confirmations[:2]] == ["conventional", "lerac"]


def test_time_budget_stops_the_search_with_equal_budgets_and_still_confirms(tmp_path):
    searcher = make_searcher(tmp_path, regimes=("conventional", "lerac"), trials=50, time_budget_s=0.5)
    started = Counter()
    for _ in range(3):
        trial_id = next(_ids)
        config = searcher.suggest(trial_id)
        started[config["regime"]] += 1
        finish(searcher, trial_id, config, epochs=EPOCHS, val=0.9)
    time.sleep(0.6)
    after = [searcher.suggest(next(_ids)) for _ in range(2 * len(SEEDS))]
    assert {config[SWEEP_KEY]["stage"] for config in after} == {schema.CONFIRM}
    assert started == {"conventional": 2, "lerac": 1}
    assert searcher.suggest(next(_ids)) is Searcher.FINISHED


def test_saved_searcher_continues_where_it_stopped(tmp_path):
    searcher = make_searcher(tmp_path, regimes=("conventional", "lerac"), trials=3)
    for _ in range(3):
        trial_id = next(_ids)
        finish(searcher, trial_id, searcher.suggest(trial_id), epochs=EPOCHS, val=0.9)
    running = next(_ids)
    running_config = searcher.suggest(running)
    searcher.save(str(tmp_path / "searcher.pkl"))

    restored = make_searcher(tmp_path, regimes=("conventional", "lerac"), trials=3)
    restored.restore(str(tmp_path / "searcher.pkl"))
    finish(restored, running, running_config, epochs=EPOCHS, val=0.8)  # the resumed trial ends
    regimes = Counter()
    while (config := restored.suggest(next(_ids))) not in (None, Searcher.FINISHED) and \
            config[SWEEP_KEY]["stage"] == schema.SEARCH:
        regimes[config["regime"]] += 1
        finish(restored, next(_ids), config, epochs=EPOCHS, val=0.9)
    assert sum(regimes.values()) == 2  # 6 in all, 4 before the save
    assert sum(len(study.trials) for study in restored.studies.values()) == 6
    assert pickle.loads(pickle.dumps(restored)).studies.keys() == restored.studies.keys()


def test_studies_live_in_the_journal_for_optuna_dashboard(tmp_path):
    searcher = make_searcher(tmp_path, regimes=("lerac",), trials=1)
    trial_id = next(_ids)
    finish(searcher, trial_id, searcher.suggest(trial_id), epochs=EPOCHS, val=0.9)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "journal.log")))
    study = optuna.load_study(study_name="sweep-1/digits/lerac", storage=storage)
    assert study.best_value == pytest.approx(0.9)


class _Trial:
    """What the scheduler reads of a Tune trial: its id and config."""

    def __init__(self, trial_id: str, regime: str, stage: str = schema.SEARCH):
        self.trial_id = trial_id
        self.config = {"regime": regime, SWEEP_KEY: {"stage": stage, "group": f"digits/{regime}"}}


def test_rungs_compare_a_trial_only_with_its_own_regime():
    scheduler = GroupedAsha(metric="val_acc", mode="max", max_t=8, grace_period=2, reduction_factor=2)
    conventional = [_Trial(f"c{i}", "conventional") for i in range(3)]
    lerac = [_Trial(f"l{i}", "lerac") for i in range(3)]
    for trial in conventional + lerac:
        scheduler.on_trial_add(None, trial)
    for trial, value in zip(conventional, (0.9, 0.95, 0.97), strict=True):
        scheduler.on_trial_result(None, trial, {"training_iteration": 2, "val_acc": value, "epoch": 2})
    # LeRaC trials are far behind conventional at the rung, by design: judged among themselves,
    # the rising one continues.
    decisions = [scheduler.on_trial_result(None, trial, {"training_iteration": 2, "val_acc": value, "epoch": 2})
                 for trial, value in zip(lerac, (0.5, 0.6, 0.7), strict=True)]
    assert decisions == ["CONTINUE", "CONTINUE", "CONTINUE"]
    late = scheduler.on_trial_result(None, _Trial("c9", "conventional"),
                                     {"training_iteration": 2, "val_acc": 0.8, "epoch": 2})
    assert late == "STOP"  # below its own regime's rung


def test_confirmation_runs_are_never_stopped():
    scheduler = GroupedAsha(metric="val_acc", mode="max", max_t=8, grace_period=1, reduction_factor=2)
    for i, value in enumerate((0.9, 0.95)):
        scheduler.on_trial_result(None, _Trial(f"s{i}", "lerac"), {"training_iteration": 1, "val_acc": value, "epoch": 1})
    confirm = _Trial("x", "lerac", stage=schema.CONFIRM)
    assert scheduler.on_trial_result(None, confirm, {"training_iteration": 1, "val_acc": 0.1, "epoch": 1}) == "CONTINUE"
