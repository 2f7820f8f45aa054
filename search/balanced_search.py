"""The searcher: one Optuna study per (dataset, regime), equal budgets, then confirmation.

One Ray Tune searcher serves the whole sweep. Every (dataset, regime) pair is
a `Group` with its own Optuna study and the same number of search trials;
trials are handed out in turn (always to the group with the fewest started
trials), so an interruption or the time budget leaves budgets equal within one
trial. Trials stopped early by the scheduler reach Optuna as PRUNED with their
per-epoch values, never as COMPLETE with a rung value (which would teach TPE
that curricula score low). When a group's search is over, its best `top_k`
configs are queued for retraining on the sweep's fresh seeds (the confirmation
stage): those are ordinary Tune trials too, so they run on the workers, in
parallel with other groups still searching.
"""

from __future__ import annotations

import pickle
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, InMemoryStorage, JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from ray.tune.search import Searcher

from search import schema
from search.spaces import SearchSpace

SWEEP_KEY = "sweep"  # the config key the Trainable strips: the searcher's notes on a trial
JOURNAL_FILE = "optuna-journal.log"  # a sweep's studies, in its folder under the storage path
CONFIG_ATTR = "config"  # user attr of a study's trial: the complete run config it trained
WARM_STARTED_FROM = "warm_started_from"  # user attr of a seeded trial: "<earlier sweep>#<number>"


def study_name(sweep_id: str, group: str) -> str:
    """A study's name in the journal: `<sweep_id>/<dataset>/<regime>`."""
    return f"{sweep_id}/{group}"


@dataclass(frozen=True, kw_only=True)
class Group:
    """A (dataset, regime) pair: one study, one budget, one set of ASHA rungs."""

    dataset: str
    regime: str
    space: SearchSpace

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.regime}"


@dataclass(frozen=True, kw_only=True)
class SamplerSettings:
    """How each study samples: TPE (multivariate, grouped, constant liar) or random."""

    kind: str = "tpe"
    seed: int = 0
    startup_trials: int = 4

    def build(self, offset: int) -> optuna.samplers.BaseSampler:
        """A fresh sampler; `offset` keeps the groups' random streams apart."""
        if self.kind == "random":
            return optuna.samplers.RandomSampler(seed=self.seed + offset)
        # Passed explicitly: Optuna 4 and 5 differ in these defaults (STACK.md). `group`
        # samples conditional branches (LeRaC's rule, the warm-up switch) jointly.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                seed=self.seed + offset, n_startup_trials=self.startup_trials,
                multivariate=True, group=True, constant_liar=True,
            )


@dataclass(frozen=True, kw_only=True)
class Confirmation:
    """The confirmation stage: each group's best `top_k` configs on each of `seeds`."""

    seeds: tuple[int, ...]
    top_k: int = 1
    test_epochs: tuple[int, ...] = ()
    checkpoint_epochs: tuple[int, ...] = ()


@dataclass(kw_only=True)
class _Live:
    """What the searcher knows of a trial it handed out and that has not ended."""

    group: str
    stage: str
    optuna_number: int | None = None


@dataclass(kw_only=True)
class _State:
    """Everything the searcher must remember across a resume (picklable)."""

    started: dict[str, int] = field(default_factory=dict)
    numbers: dict[str, list[int]] = field(default_factory=dict)  # Optuna trials each group started
    live: dict[str, _Live] = field(default_factory=dict)
    planned: set[str] = field(default_factory=set)
    queue: list[dict[str, Any]] = field(default_factory=list)
    search_seconds: float = 0.0
    samplers: dict[str, optuna.samplers.BaseSampler] = field(default_factory=dict)
    memory_storage: InMemoryStorage | None = None


class BalancedSearch(Searcher):
    """Ray Tune searcher over several groups, each with its own Optuna study."""

    def __init__(
        self,
        *,
        groups: Sequence[Group],
        trials_per_group: int,
        epochs: int,
        sampler: SamplerSettings,
        confirmation: Confirmation,
        study_prefix: str,
        journal: Path | None = None,
        search_test_epochs: Sequence[int] = (),
        search_checkpoint_epochs: Sequence[int] = (),
        time_budget_s: float | None = None,
        warm_start: Mapping[str, Sequence[optuna.trial.FrozenTrial]] | None = None,
    ):
        super().__init__(metric=schema.VAL_ACC, mode="max")
        self.groups = {group.key: group for group in groups}
        self.trials_per_group = trials_per_group
        self.epochs = epochs
        self.sampler = sampler
        self.confirmation = confirmation
        self.study_prefix = study_prefix
        self.journal = journal
        self.search_test_epochs = tuple(search_test_epochs)
        self.search_checkpoint_epochs = tuple(search_checkpoint_epochs)
        self.time_budget_s = time_budget_s
        self._state = _State(started=dict.fromkeys(self.groups, 0))
        self._open()
        for key, trials in (warm_start or {}).items():
            for trial in trials:  # finished elsewhere: in the study, not in the budget
                self.studies[key].add_trial(trial)

    # -- studies ---------------------------------------------------------------------
    def _storage(self) -> BaseStorage:
        if self.journal is not None:
            self.journal.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(self.journal)))
        if self._state.memory_storage is None:
            self._state.memory_storage = InMemoryStorage()
        return self._state.memory_storage

    def study_name(self, group: str) -> str:
        return study_name(self.study_prefix, group)

    def _open(self) -> None:
        """(Re)connect every group's study; samplers carry over from the saved state."""
        storage = self._storage()
        self.studies: dict[str, optuna.Study] = {}
        for offset, key in enumerate(self.groups):
            sampler = self._state.samplers.setdefault(key, self.sampler.build(offset))
            self.studies[key] = optuna.create_study(
                study_name=self.study_name(key), storage=storage, sampler=sampler,
                direction="maximize", load_if_exists=True,
            )
        self._session_start = time.monotonic()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_state"] = self._state_with_clock()
        del state["studies"], state["_session_start"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._open()

    def _state_with_clock(self) -> _State:
        now = time.monotonic()
        self._state.search_seconds += now - self._session_start
        self._session_start = now
        return self._state

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as handle:
            pickle.dump(self.__getstate__(), handle)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as handle:
            # Written by save() above; a resume unpickles it only after search.integrity
            # has checked it against the sweep's seal.
            self.__setstate__(pickle.load(handle))
        self._close_orphans()

    def _close_orphans(self) -> None:
        """Fail the Optuna trials this state never recorded.

        The journal is written at once, this state only when Tune saves: a
        driver killed in between leaves trials in the study that no Tune trial
        will ever report to. Left RUNNING, constant liar would count them for
        ever; finished ones are never confirmed (`best_configs` skips them).
        """
        for key, study in self.studies.items():
            live = {live.optuna_number for live in self._state.live.values() if live.group == key}
            for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if frozen.number not in live:
                    trial = optuna.Trial(study, frozen._trial_id)
                    trial.set_user_attr(schema.END_STATE, schema.LOST)
                    study.tell(trial, state=TrialState.FAIL)

    # -- handing out trials -------------------------------------------------------------
    def _search_open(self) -> bool:
        if self.time_budget_s is None:
            return True
        return self._state_with_clock().search_seconds < self.time_budget_s

    def _next_group(self) -> str | None:
        """The group with the fewest started trials and budget left (in the sweep's order)."""
        open_groups = [key for key, count in self._state.started.items()
                       if count < self.trials_per_group]
        if not open_groups or not self._search_open():
            return None
        return min(open_groups, key=lambda key: self._state.started[key])

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        key = self._next_group()
        if key is not None:
            return self._start_search_trial(trial_id, key)
        self._plan_confirmations()
        if self._state.queue:
            config = self._state.queue.pop(0)
            self._state.live[trial_id] = _Live(group=config[SWEEP_KEY]["group"], stage=schema.CONFIRM)
            return config
        if len(self._state.planned) == len(self.groups):
            return Searcher.FINISHED
        return None

    def _start_search_trial(self, trial_id: str, key: str) -> dict[str, Any]:
        study = self.studies[key]
        trial = study.ask()
        config = self.groups[key].space(trial)
        trial.set_user_attr(CONFIG_ATTR, config)
        trial.set_user_attr("tune_trial_id", trial_id)
        self._state.started[key] += 1
        self._state.numbers.setdefault(key, []).append(trial.number)
        self._state.live[trial_id] = _Live(group=key, stage=schema.SEARCH, optuna_number=trial.number)
        return {**config, SWEEP_KEY: {
            "stage": schema.SEARCH, "group": key, "number": trial.number + 1,
            "test_epochs": list(self.search_test_epochs),
            "checkpoint_epochs": list(self.search_checkpoint_epochs),
        }}

    def _search_over(self, key: str) -> bool:
        """No search trial of the group will start or is running."""
        exhausted = self._state.started[key] >= self.trials_per_group or not self._search_open()
        running = any(live.group == key and live.stage == schema.SEARCH
                      for live in self._state.live.values())
        return exhausted and not running

    def _plan_confirmations(self) -> None:
        """Queue the confirmation runs of every group whose search just ended.

        Queued seed by seed across groups, so the regimes of a dataset finish
        their paired runs at about the same time.
        """
        newly = [key for key in self.groups if key not in self._state.planned and self._search_over(key)]
        runs = [self._confirmation_runs(key) for key in newly]
        self._state.planned.update(newly)
        for position in range(max(map(len, runs), default=0)):
            self._state.queue.extend(group_runs[position] for group_runs in runs
                                     if position < len(group_runs))

    def best_configs(self, key: str) -> list[optuna.trial.FrozenTrial]:
        """The group's completed search trials, best first by the schema's rule (only trials
        this state started: an orphan of a killed driver has no Tune trial to confirm)."""
        mine = set(self._state.numbers.get(key, []))
        completed = [trial for trial in self.studies[key].get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                     if trial.number in mine]
        return sorted(completed, reverse=True, key=lambda trial: schema.rank_key(
            trial.value, trial.user_attrs.get(schema.TRAIN_LOSS, float("nan"))))

    def _confirmation_runs(self, key: str) -> list[dict[str, Any]]:
        confirmation = self.confirmation
        runs = []
        for seed in confirmation.seeds:
            for rank, trial in enumerate(self.best_configs(key)[: confirmation.top_k], start=1):
                runs.append({**trial.user_attrs[CONFIG_ATTR], "seed": seed, SWEEP_KEY: {
                    "stage": schema.CONFIRM, "group": key, "rank": rank,
                    "source_trial": trial.user_attrs["tune_trial_id"],
                    "test_epochs": list(confirmation.test_epochs),
                    "checkpoint_epochs": list(confirmation.checkpoint_epochs),
                }})
        return runs

    # -- what trials report --------------------------------------------------------------
    def _search_trial(self, trial_id: str) -> tuple[optuna.Study, optuna.Trial] | None:
        live = self._state.live.get(trial_id)
        if live is None or live.stage != schema.SEARCH:
            return None
        study = self.studies[live.group]
        frozen = study.get_trials(deepcopy=False)[live.optuna_number]
        if frozen.state.is_finished():
            # Told before the driver stopped, after Tune last saved this state: the study
            # already holds its outcome, and the replayed trial reaches the same one.
            return None
        return study, optuna.Trial(study, frozen._trial_id)

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        found = self._search_trial(trial_id)
        if found is not None and schema.VAL_ACC in result:
            study, trial = found
            epoch = int(result["epoch"])
            if epoch not in study.get_trials(deepcopy=False)[trial.number].intermediate_values:
                trial.report(float(result[schema.VAL_ACC]), step=epoch)  # a replay reports again

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        found = self._search_trial(trial_id)
        self._state.live.pop(trial_id, None)
        if found is None:
            return
        study, trial = found
        state = end_state(result, self.epochs, error=error)
        trial.set_user_attr(schema.END_STATE, state)
        if state == schema.COMPLETED:
            trial.set_user_attr(schema.TRAIN_LOSS, float(result[schema.TRAIN_LOSS]))
            study.tell(trial, float(result[schema.VAL_ACC]))
        elif state == schema.ERRORED:
            study.tell(trial, state=TrialState.FAIL)
        else:  # stopped early or diverged: TPE ranks it by its last reported epoch
            study.tell(trial, state=TrialState.PRUNED)


def end_state(result: dict[str, Any] | None, epochs: int, *, error: bool = False) -> str:
    """How a trial ended, from its last reported result."""
    if error or not result:
        return schema.ERRORED
    if result.get("diverged"):
        return schema.DIVERGED
    if result.get("epoch", 0) >= epochs:
        return schema.COMPLETED
    return schema.STOPPED_EARLY
