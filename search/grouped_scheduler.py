"""Early stopping that compares a trial only with trials of its own dataset and regime.

One ASHA per (dataset, regime) group: a LeRaC trial is judged against other
LeRaC trials at the same rung, never against conventional training, which is
ahead early by design. Confirmation runs are never stopped: they exist to
measure a fixed config over its whole budget.
"""

from __future__ import annotations

from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from search import schema
from search.balanced_search import SWEEP_KEY


def trial_group(trial: Trial) -> str | None:
    """The group a search trial belongs to; None for confirmation runs."""
    notes = trial.config.get(SWEEP_KEY, {})
    return notes.get("group") if notes.get("stage") == schema.SEARCH else None


class GroupedAsha(FIFOScheduler):
    """ASHA brackets kept per group; everything else behaves as FIFO."""

    def __init__(self, *, metric: str, mode: str, max_t: int, grace_period: int,
                 reduction_factor: int):
        super().__init__()
        self._settings = {"metric": metric, "mode": mode, "max_t": max_t,
                          "grace_period": grace_period, "reduction_factor": reduction_factor,
                          "time_attr": "training_iteration"}
        self._metric, self._mode = metric, mode
        self._asha: dict[str, ASHAScheduler] = {}
        self._members: dict[str, set[str]] = {}  # trial ids each group's ASHA knows
        self.stopped: dict[str, int] = {}

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True  # fixed at construction

    def _scheduler(self, tune_controller: Any, trial: Trial) -> ASHAScheduler | None:
        """The trial's group ASHA, told about the trial on first sight (also after a resume,
        since Tune does not save scheduler state)."""
        group = trial_group(trial)
        if group is None:
            return None
        if group not in self._asha:
            self._asha[group] = ASHAScheduler(**self._settings)
            self._members[group], self.stopped[group] = set(), 0
        if trial.trial_id not in self._members[group]:
            self._asha[group].on_trial_add(tune_controller, trial)
            self._members[group].add(trial.trial_id)
        return self._asha[group]

    def _forget(self, trial: Trial) -> None:
        group = trial_group(trial)
        if group is not None:
            self._members.get(group, set()).discard(trial.trial_id)

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        self._scheduler(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        scheduler = self._scheduler(tune_controller, trial)
        if scheduler is None:
            return TrialScheduler.CONTINUE
        action = scheduler.on_trial_result(tune_controller, trial, result)
        if action == TrialScheduler.STOP and result.get("epoch", 0) < self._settings["max_t"]:
            self.stopped[trial_group(trial)] += 1
        return action

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict) -> None:
        scheduler = self._scheduler(tune_controller, trial)
        if scheduler is not None:
            scheduler.on_trial_complete(tune_controller, trial, result)
            self._forget(trial)

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        scheduler = self._scheduler(tune_controller, trial)
        if scheduler is not None:
            scheduler.on_trial_remove(tune_controller, trial)
            self._forget(trial)

    def on_trial_error(self, tune_controller: Any, trial: Trial) -> None:
        self.on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return "Early stopping per dataset and regime: " + ", ".join(
            f"{group} {count} stopped" for group, count in sorted(self.stopped.items())
        )
