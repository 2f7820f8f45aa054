"""`--warm-start SWEEP_ID`: a new sweep's studies begin with an earlier sweep's finished trials.

The rules on their own (which trials fit a new space; seeded trials inform the
sampler without taking budget or confirmation places), then two real sweeps
where the second starts from the first's stored studies.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from ray.tune.search import Searcher

from search import schema
from search.balanced_search import (
    CONFIG_ATTR,
    JOURNAL_FILE,
    SWEEP_KEY,
    WARM_STARTED_FROM,
    BalancedSearch,
    Confirmation,
    Group,
    SamplerSettings,
)
from search.lerac_sweep import build_parser, options_from_args
from search.lerac_sweep import main as sweep_main
from search.spaces import Budget, SearchSpace
from search.sweep import groups
from search.warm_start import load_warm_start, refit

EPOCHS = 4


def space(regime: str = "lerac", *, grace: int = 3, epochs: int = EPOCHS, **fixed) -> SearchSpace:
    return SearchSpace(regime=regime, budget=Budget(epochs=epochs, grace_period=grace),
                       fixed={"dataset": "digits", "regime": regime, "epochs": epochs, **fixed})


def finished_trials(search_space: SearchSpace, values: list[float], seed: int = 0) -> list[optuna.trial.FrozenTrial]:
    """Trials as a sweep's study holds them: the searched params, the config, the value."""
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed))
    for value in values:
        trial = study.ask()
        trial.set_user_attr(CONFIG_ATTR, search_space(trial))
        trial.set_user_attr(schema.TRAIN_LOSS, 0.5)
        study.tell(trial, value)
    return study.trials


def test_a_trial_of_the_same_space_fits_with_its_params_and_value():
    (trial,) = finished_trials(space(), [0.8])
    fitted = refit(space(), trial, source="old#0")
    assert fitted.params == trial.params and fitted.value == 0.8
    assert fitted.user_attrs[WARM_STARTED_FROM] == "old#0"
    assert fitted.user_attrs[CONFIG_ATTR] == trial.user_attrs[CONFIG_ATTR]


def test_where_a_trial_ran_does_not_matter_what_it_computed_does():
    (trial,) = finished_trials(space(data_dir="/shared/data", seed=3), [0.8])
    assert refit(space(data_dir="/home/me/data", seed=0), trial, source="old#0") is not None
    assert refit(space(optimizer="adamw"), trial, source="old#0") is None  # another objective
    assert refit(space(epochs=EPOCHS + 4, grace=3), trial, source="old#0") is None  # another budget


def test_values_outside_the_new_ranges_do_not_fit():
    trials = finished_trials(space(grace=4), [0.5] * 30)  # k up to 3.5 epochs
    fitted = [refit(space(grace=2), trial, source="old") for trial in trials]  # k up to 1.5
    ks = [trial.params["curriculum_epochs"] for trial in trials]
    assert [f is not None for f in fitted] == [k <= 1.5 for k in ks]
    assert any(k > 1.5 for k in ks) and any(k <= 1.5 for k in ks)


def test_a_searched_setting_the_new_sweep_fixes_fits_only_at_the_fixed_value():
    trials = finished_trials(space(regime="conventional"), [0.5] * 20)
    fixed = space(regime="conventional", batch_size=64)
    for trial in trials:
        assert (refit(fixed, trial, source="old") is not None) == (trial.params["batch_size"] == 64)


def make_searcher(tmp_path: Path, warm: dict) -> BalancedSearch:
    groups = [Group(dataset="digits", regime=regime, space=space(regime)) for regime in ("conventional", "lerac")]
    return BalancedSearch(
        groups=groups, trials_per_group=2, epochs=EPOCHS,
        sampler=SamplerSettings(kind="tpe", seed=0, startup_trials=2),
        confirmation=Confirmation(seeds=(11, 12)), study_prefix="new",
        journal=tmp_path / JOURNAL_FILE, warm_start=warm,
    )


def test_seeded_trials_inform_the_studies_but_take_no_budget_and_no_confirmation_place(tmp_path):
    seeded = [refit(space("lerac"), trial, source=f"old#{trial.number}")
              for trial in finished_trials(space("lerac"), [0.99, 0.98, 0.97])]
    searcher = make_searcher(tmp_path, {"digits/lerac": seeded})
    assert len(searcher.studies["digits/lerac"].trials) == 3
    started, handed = Counter(), {}
    for number in range(4):
        config = searcher.suggest(f"t{number}")
        started[config["regime"]] += 1
        handed[f"t{number}"] = config
    assert started == {"conventional": 2, "lerac": 2}  # the same budget as without a warm start
    for trial_id in handed:  # every new trial scores below the seeded ones
        for epoch in range(1, EPOCHS + 1):
            searcher.on_trial_result(trial_id, {"epoch": epoch, "val_acc": 0.5, "train_loss": 1.0})
        searcher.on_trial_complete(trial_id, {"epoch": EPOCHS, "val_acc": 0.5, "train_loss": 1.0})
    confirmations = []
    while (config := searcher.suggest(f"c{len(confirmations)}")) is not Searcher.FINISHED:
        confirmations.append(config)
    lerac = [c for c in confirmations if c["regime"] == "lerac"]
    new_configs = [{k: v for k, v in c.items() if k != SWEEP_KEY} for c in handed.values() if c["regime"] == "lerac"]
    assert len(lerac) == 2 and all(
        {k: v for k, v in c.items() if k not in (SWEEP_KEY, "seed")} in
        [{k: v for k, v in n.items() if k != "seed"} for n in new_configs] for c in lerac)
    complete = searcher.studies["digits/lerac"].get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 5 and sum(WARM_STARTED_FROM in t.user_attrs for t in complete) == 3


# -- a real sweep, warm-started from an earlier sweep's stored studies -------------------

def sweep_args(tmp_path: Path, *extra: str) -> list[str]:
    return ["--datasets", "digits", "--regimes", "conventional", "--trials", "2", "--epochs", "1",
            "--grace-period", "1", "--confirm-seeds", "2", "--scheduler", "fifo",
            "--storage-path", str(tmp_path / "ray"), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
            "--experiment", "warm", *extra]


def earlier_sweep(tmp_path: Path, sweep_id: str, values: list[float]) -> None:
    """An earlier sweep's stored studies, written by the sweep's own searcher driven as Tune drives
    it (the trials' results are given, not trained: the warm start only reads the studies)."""
    options = options_from_args(build_parser().parse_args(sweep_args(tmp_path)))
    searcher = BalancedSearch(
        groups=groups(options), trials_per_group=len(values), epochs=options.epochs,
        sampler=SamplerSettings(kind="tpe", seed=1, startup_trials=2), confirmation=Confirmation(seeds=(1, 2)),
        study_prefix=sweep_id, journal=tmp_path / "ray" / sweep_id / JOURNAL_FILE)
    for number, value in enumerate(values):
        searcher.suggest(f"old{number}")
        searcher.on_trial_complete(f"old{number}", {"epoch": 1, "val_acc": value, "train_loss": 0.5})


def study_of(tmp_path: Path, sweep_id: str) -> optuna.Study:
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "ray" / sweep_id / JOURNAL_FILE)))
    return optuna.load_study(study_name=f"{sweep_id}/digits/conventional", storage=storage)


@pytest.mark.slow
def test_a_sweep_warm_started_from_an_earlier_ones_studies(tmp_path):
    from mlflow.tracking import MlflowClient

    earlier_sweep(tmp_path, "earlier", [0.91, 0.95, 0.42])
    assert sweep_main(sweep_args(tmp_path, "--warm-start", "earlier")) == 0
    sweep_id = json.loads((tmp_path / "ray" / "latest_sweep.json").read_text())["sweep_id"]
    trials = study_of(tmp_path, sweep_id).trials
    seeded = [t for t in trials if WARM_STARTED_FROM in t.user_attrs]
    assert sorted(t.value for t in seeded) == [0.42, 0.91, 0.95]
    assert {t.user_attrs[WARM_STARTED_FROM] for t in seeded} == {"earlier#0", "earlier#1", "earlier#2"}
    assert len(trials) - len(seeded) == 2  # its own budget, in full

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("warm")
    (parent,) = client.search_runs([experiment.experiment_id], filter_string=f"tags.{schema.ROLE} = '{schema.PARENT}'")
    assert parent.data.params["protocol.warm_start_from"] == "earlier"
    assert parent.data.params["protocol.warm_start_trials"] == "3"
    protocol = json.loads(Path(client.download_artifacts(parent.info.run_id, schema.PROTOCOL_FILE,
                                                         str(tmp_path))).read_text())
    assert protocol["warm_start"]["added"] == {"digits/conventional": 3}
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.{schema.ROLE} = '{schema.TRIAL}'")
    own = {run.info.run_id for run in runs if run.data.tags[schema.STAGE] == schema.SEARCH}
    confirmed = [run for run in runs if run.data.tags[schema.STAGE] == schema.CONFIRM]
    assert len(own) == 2 and len(confirmed) == 2  # the seeded 0.95 beat them, yet is not confirmed
    assert {run.data.tags[schema.SOURCE_RUN_ID] for run in confirmed} <= own


def test_warm_start_from_an_unknown_sweep_fails_with_one_line_and_writes_nothing(tmp_path, capsys):
    assert sweep_main(sweep_args(tmp_path, "--warm-start", "no-such-sweep")) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: --warm-start no-such-sweep: no sweep") and "\n" not in error
    assert list(tmp_path.iterdir()) == []


def test_load_warm_start_skips_pairs_the_earlier_sweep_did_not_search(tmp_path):
    (tmp_path / "old").mkdir()
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "old" / JOURNAL_FILE)))
    study = optuna.create_study(study_name="old/digits/lerac", storage=storage, direction="maximize")
    for trial in finished_trials(space("lerac"), [0.7, 0.6]):
        study.add_trial(trial)
    groups = [Group(dataset="digits", regime=regime, space=space(regime)) for regime in ("conventional", "lerac")]
    warm = load_warm_start(tmp_path, "old", groups)
    assert {key: len(trials) for key, trials in warm.trials.items()} == {"digits/conventional": 0, "digits/lerac": 2}
    assert warm.protocol()["warm_start_trials"] == 2
