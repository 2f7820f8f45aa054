"""The reserved config key "sweep": when a trial checkpoints and measures test accuracy."""

from __future__ import annotations

import pytest

from trainables.config import RunConfig
from trainables.trial_plan import TrialPlan


def test_the_sweep_key_is_split_off_the_run_config():
    config = {"regime": "lerac", "epochs": 9,
              "sweep": {"checkpoint_epochs": [3, 9], "test_epochs": [3], "stage": "search"}}
    run_config, plan = TrialPlan.split(config)
    assert "sweep" not in run_config and "sweep" in config
    RunConfig.from_dict(run_config)  # valid: only run settings are left
    assert [e for e in range(1, 10) if plan.checkpoint_due(e, last=e == 9)] == [3, 9]
    assert [e for e in range(1, 10) if plan.test_due(e)] == [3]


def test_without_the_key_only_the_end_checkpoints():
    run_config, plan = TrialPlan.split({"epochs": 4})
    assert run_config == {"epochs": 4}
    assert [e for e in range(1, 5) if plan.checkpoint_due(e, last=e == 4)] == [4]
    assert not any(plan.test_due(e) for e in range(1, 5))


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        ([3], "must be a dict"),
        ({"checkpoint_epochs": 3}, "'sweep.checkpoint_epochs' must be a list"),
        ({"test_epochs": ["x"]}, "'sweep.test_epochs' must be a list"),
        ({"test_epochs": [0, 2]}, "1-based"),
    ],
)
def test_bad_sweep_values_are_rejected_by_name(sweep, message):
    with pytest.raises(ValueError, match=message):
        TrialPlan.split({"sweep": sweep})
