"""Which searched settings mattered: an Optuna study rebuilt from a regime's search trials.

Each (dataset, regime) pair was searched by its own Optuna study, so
importances are computed per regime, from search trials only (confirmation
runs repeat one config on other seeds: they say nothing about the space). The
searched space is inferred from the values the trials took (a setting that
never varied was not searched). Stopped-early trials enter as pruned and
diverged or errored ones as failed, so only full-budget trials are compared,
as Optuna itself would.

The evaluator is named, not left to Optuna's default: PED-ANOVA, because the
spaces are conditional (LeRaC's `shape` is drawn only with rule eq9, a
warm-up's length only when the warm-up is on) and Optuna 5's PED-ANOVA scores
a conditional setting within the trials that have it (Conditional PED-ANOVA),
where fANOVA and mean decrease impurity (and Optuna 4's default, fANOVA)
drop every setting that some completed trial lacks. Hence `optuna>=5.0`.
With few completed trials the estimate is rough (Optuna asks for at least 5
above its top-10% cut); the pictures say so (`FEW_TRIALS`).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import optuna
import pandas as pd
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

from analysis.records import trial_config
from search import schema

# A numeric setting spread over at least this ratio is treated as searched on a log scale.
LOG_SPAN = 10.0
# Below this many completed trials, importances are shown with a caveat: PED-ANOVA compares
# the top 10% with the rest, and under 20 trials the top 10% is one or two trials.
FEW_TRIALS = 20


def _numeric(values: list[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _distribution(values: list[Any]) -> BaseDistribution:
    if not _numeric(values):
        return CategoricalDistribution(sorted(set(values), key=str))
    low, high = min(values), max(values)
    log = low > 0 and high / low >= LOG_SPAN
    if all(isinstance(v, int) for v in values):
        return IntDistribution(int(low), int(high), log=log and low >= 1)
    return FloatDistribution(float(low), float(high), log=log)


def infer_space(configs: list[dict[str, Any]]) -> dict[str, BaseDistribution]:
    """Settings that took at least two values (list-valued ones left out), each with its range."""
    space = {}
    for key in sorted({key for config in configs for key in config}):
        values = [config[key] for config in configs if key in config]
        if any(isinstance(v, list) for v in values) or len(set(values)) < 2:
            continue
        space[key] = _distribution(values)
    return space


def _state(trial: pd.Series) -> TrialState:
    if trial[schema.END_STATE] == schema.COMPLETED and math.isfinite(trial[schema.VAL_ACC]):
        return TrialState.COMPLETE
    return TrialState.PRUNED if trial[schema.END_STATE] == schema.STOPPED_EARLY else TrialState.FAIL


def build_study(trials: pd.DataFrame) -> tuple[optuna.Study, dict[str, BaseDistribution]]:
    """An in-memory study holding search trials (value: final val_acc), and its space."""
    configs = [trial_config(row) for _, row in trials.iterrows()]
    space = infer_space(configs)
    study = optuna.create_study(direction="maximize")
    for (_, row), config in zip(trials.iterrows(), configs, strict=True):
        params = {key: config[key] for key in space if key in config}
        state = _state(row)
        study.add_trial(optuna.trial.create_trial(
            state=state,
            value=float(row[schema.VAL_ACC]) if state == TrialState.COMPLETE else None,
            params=params,
            distributions={key: space[key] for key in params},
        ))
    return study, space


def param_importances(study: optuna.Study) -> dict[str, float]:
    """Normalised importances, most important first; empty with fewer than 2 completed trials."""
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    if len(complete) < 2 or not any(trial.params for trial in complete):
        return {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PED-ANOVA warns that few trials make rough estimates
        return optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
