"""The sweep's options validate at construction, in Python exactly as on the command line."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from search.options import SweepOptions, first_error


def error_of(**options) -> str:
    with pytest.raises(ValidationError) as caught:
        SweepOptions(**options)
    return first_error(caught.value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"datasets": ("imagenet",)}, "bad value for datasets: unknown dataset 'imagenet'"),
        ({"regimes": ("lerac", "lerac")}, "a regime is named twice"),
        ({"model": "vgg"}, "unknown model 'vgg'"),
        ({"num_trials": "many"}, "bad value for num_trials: Input should be a valid integer"),
        ({"num_trials": 0}, "bad value for num_trials"),
        ({"confirm_seeds": 1}, "bad value for confirm_seeds"),
        ({"grace_period": 9, "epochs": 8}, "grace_period (9) must be between 1 and epochs (8)"),
        ({"top_k": 3, "num_trials": 2}, "top_k (3) must not exceed"),
        ({"searcher": "grid"}, "bad value for searcher"),
        ({"tracking_uri": "file:///tmp/x"}, "unsupported MLflow tracking URI"),
        ({"fixed": {"no_such": 1}}, "--set no_such: unknown setting; known settings: shared"),
        ({"fixed": {"cbs.cbs_sigma": 1}}, "regime 'cbs' is not compared"),
        ({"trials": 3}, "unknown option 'trials'"),
    ],
)
def test_bad_options_fail_at_construction_naming_the_field(options, message):
    assert message in error_of(**options)


def test_a_single_name_is_one_dataset_not_its_letters():
    assert SweepOptions(datasets="digits", regimes="lerac").datasets == ("digits",)


def test_numbers_given_as_text_are_read_as_the_cli_reads_them():
    assert SweepOptions(num_trials="12").num_trials == 12


def test_options_are_frozen_and_round_trip_through_json():
    options = SweepOptions(fixed={"lerac.decay_base": 0.1})
    with pytest.raises(ValidationError):
        options.num_trials = 3
    assert SweepOptions(**options.model_dump(mode="json")) == options


def test_rungs_follow_rays_asha_rule():
    assert SweepOptions(epochs=8, grace_period=3).rungs() == [3, 6]
    assert SweepOptions(epochs=6, grace_period=3).rungs() == [3]
    assert SweepOptions(scheduler="fifo").rungs() == []
