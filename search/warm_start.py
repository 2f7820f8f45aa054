"""Warm starts: a new sweep's studies begin with what an earlier sweep learnt.

`--warm-start SWEEP_ID` seeds each (dataset, regime) study of the new sweep
with the COMPLETE trials of the earlier sweep's study of the same pair (read
from its Optuna journal under the storage path) whose settings fit the new
space: every searched value inside the new ranges, and every other setting
that decides the result (model, epochs, optimizer, fixed values, ...) equal.
Where and how a trial ran (data folder, device, threads, seeds) may differ.

Why `study.add_trial` and not `study.enqueue_trial`: an enqueued trial asks
for those parameters to be evaluated again. It would be handed out as one of
the sweep's own trials, spend the budget re-running known points, and leave
regimes with different numbers of new trials. `add_trial` records the
finished trial with its value: TPE learns from it at once (and leaves its
random start-up sooner), nothing is re-run, and the new sweep's budgets stay
equal. Seeded trials are never confirmation candidates either: each regime's
candidates come from its own `num_trials` new trials. The parent runs'
protocol says what was seeded.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from search import schema
from search.balanced_search import CONFIG_ATTR, JOURNAL_FILE, WARM_STARTED_FROM, Group, study_name
from search.checks import SweepError
from search.spaces import SearchSpace
from trainables.config import RunConfig

# Settings that say where or how a trial ran, not what it computed.
RUN_LOCAL = frozenset({"data_dir", "download", "device", "compile", "cpu_threads", "seed", "data_seed"})


@dataclass(frozen=True, kw_only=True)
class WarmStart:
    """The trials an earlier sweep hands to each study of a new one."""

    sweep_id: str
    trials: Mapping[str, Sequence[FrozenTrial]]
    not_fitting: Mapping[str, int]

    def protocol(self) -> dict[str, Any]:
        """What the parent runs record about the warm start."""
        return {
            "warm_start_from": self.sweep_id,
            "warm_start_trials": sum(map(len, self.trials.values())),
            "warm_start": {
                "from_sweep": self.sweep_id,
                "added": {key: len(trials) for key, trials in self.trials.items()},
                "not_fitting": dict(self.not_fitting),
                "rule": ("COMPLETE trials of the earlier sweep's study of the same (dataset, regime) "
                         "whose settings fit this sweep's space, added with their values "
                         "(Optuna add_trial): the sampler learns from them; they are not re-run, "
                         "not counted in the budget and never confirmation candidates"),
            },
        }


def journal_path(storage_path: Path, sweep_id: str) -> Path:
    return storage_path / sweep_id / JOURNAL_FILE


def load_warm_start(storage_path: Path, sweep_id: str, groups: Sequence[Group]) -> WarmStart:
    """The earlier sweep's fitting trials per group; SweepError if that sweep has no studies."""
    journal = journal_path(storage_path, sweep_id)
    if Path(sweep_id).name != sweep_id or not journal.is_file():
        raise SweepError(f"--warm-start {sweep_id}: no sweep with that id under {storage_path} "
                         f"(expected its Optuna journal at {journal})")
    storage = JournalStorage(JournalFileBackend(str(journal)))
    known = {summary.study_name for summary in optuna.get_all_study_summaries(storage)}
    trials: dict[str, list[FrozenTrial]] = {}
    not_fitting: dict[str, int] = {}
    for group in groups:
        name = study_name(sweep_id, group.key)
        earlier = (optuna.load_study(study_name=name, storage=storage).get_trials(
            deepcopy=False, states=(TrialState.COMPLETE,)) if name in known else [])
        fitted = [refit(group.space, trial, source=f"{sweep_id}#{trial.number}") for trial in earlier]
        trials[group.key] = [trial for trial in fitted if trial is not None]
        not_fitting[group.key] = len(earlier) - len(trials[group.key])
    return WarmStart(sweep_id=sweep_id, trials=trials, not_fitting=not_fitting)


def refit(space: SearchSpace, trial: FrozenTrial, *, source: str) -> FrozenTrial | None:
    """`trial` as a finished trial of `space`, or None when its settings do not fit it.

    The new space is replayed on the old trial's values: every parameter it
    asks for must be there and inside its new range (`create_trial` checks),
    and the config it builds must equal the old one in every setting that
    decides the result.
    """
    old = trial.user_attrs.get(CONFIG_ATTR)
    if old is None or trial.value is None:
        return None
    replay = optuna.trial.FixedTrial({**old, **trial.params})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # out-of-range values are refused below, not warned
            config = space(replay)  # type: ignore[arg-type]
        if _outcome_settings(config) != _outcome_settings(old):
            return None
        return optuna.trial.create_trial(
            params=replay.params, distributions=replay.distributions, value=trial.value,
            user_attrs={CONFIG_ATTR: config, WARM_STARTED_FROM: source,
                        **{key: trial.user_attrs[key] for key in (schema.TRAIN_LOSS, schema.END_STATE)
                           if key in trial.user_attrs}},
        )
    except ValueError:  # a parameter missing, out of range, or not among the choices
        return None


def _outcome_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """Every setting of a run that decides its result, defaults filled in."""
    full = RunConfig.from_dict({key: value for key, value in config.items() if key != "sweep"}).to_dict()
    return {key: value for key, value in full.items() if key not in RUN_LOCAL}
