"""Run names in MLflow's runs table: short, distinct, with how each trial ended."""

from __future__ import annotations

from search import schema
from search.run_labels import (
    ended_run_name,
    leader_run_name,
    parent_run_name,
    short_sweep,
    trial_run_name,
)


def test_parent_names_lead_with_the_dataset_and_the_sweeps_date_then_the_verdict():
    assert short_sweep("20261123-235401-3fa2c1") == "1123-2354"
    assert short_sweep("my-ablation") == "my-ablation"  # an id chosen by hand is kept whole
    assert parent_run_name("digits", "20261123-235401-3fa2c1") == "digits · 1123-2354"
    assert parent_run_name("digits", "20261123-235401-3fa2c1", verdict=schema.TIE) == "digits · 1123-2354 · tie"
    assert parent_run_name("mnist1d", "20261123-235401-3fa2c1", verdict=schema.WINNER,
                           winner="lerac") == "mnist1d · 1123-2354 · lerac wins"


def test_trial_names_say_the_regime_and_trial_number_or_seed():
    search = {"stage": schema.SEARCH, "number": 4}
    assert trial_run_name(regime="lerac", trial_id="ab12cd34", notes=search, seed=0) == "lerac · trial 4"
    confirm = {"stage": schema.CONFIRM, "rank": 1}
    assert trial_run_name(regime="cbs", trial_id="x", notes=confirm, seed=3) == "cbs · seed 3"
    assert trial_run_name(regime="cbs", trial_id="x", notes={**confirm, "rank": 2}, seed=3) == "cbs · seed 3 · config 2"
    assert trial_run_name(regime="lerac", trial_id="ab12cd34", notes={}, seed=0) == "lerac · ab12cd34"


def test_end_states_other_than_completed_show_in_the_name_once():
    assert ended_run_name("lerac · trial 4", schema.STOPPED_EARLY, 3) == "lerac · trial 4 (stopped@3)"
    assert ended_run_name("lerac · trial 4", schema.DIVERGED, 2) == "lerac · trial 4 (diverged@2)"
    assert ended_run_name("lerac · trial 4", schema.COMPLETED, 8) == "lerac · trial 4"
    assert ended_run_name("lerac · trial 4 (stopped@3)", schema.STOPPED_EARLY, 3) == "lerac · trial 4 (stopped@3)"
    assert leader_run_name(leader_run_name("lerac · trial 4")) == "★ lerac · trial 4"
