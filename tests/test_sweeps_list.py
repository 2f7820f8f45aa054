"""`lerac-analysis sweeps`: the sweeps of an experiment from their parent runs, on a real
sqlite MLflow store (the end-to-end run of the command is in tests/test_researcher_view.py)."""

from __future__ import annotations

import time

from mlflow.tracking import MlflowClient

from analysis.__main__ import main
from search import schema

EXPERIMENT = "list-test"


def parent(client: MlflowClient, experiment: str, sweep_id: str, dataset: str, status: str, **tags: str) -> None:
    run = client.create_run(experiment, run_name=f"{dataset} · x", tags={
        schema.ROLE: schema.PARENT, schema.SWEEP_ID: sweep_id, schema.DATASET: dataset,
        schema.REGIMES: "conventional,lerac", schema.CODE_VERSION: "abc1234", **tags})
    if status != "RUNNING":
        client.set_terminated(run.info.run_id, status=status)


def test_sweeps_are_listed_newest_first_with_their_verdicts_and_states(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment(EXPERIMENT)
    parent(client, experiment, "20260101-000000-aaaaaa", "digits", "FINISHED",
           **{schema.VERDICT: schema.WINNER, schema.WINNER_REGIME: "lerac"})
    parent(client, experiment, "20260101-000000-aaaaaa", "mnist1d", "FINISHED",
           **{schema.VERDICT: schema.TIE, schema.TIED_REGIMES: "lerac,conventional"})
    time.sleep(0.05)  # distinct start times
    parent(client, experiment, "20260102-000000-bbbbbb", "digits", "RUNNING")
    parent(client, experiment, "20260102-000000-bbbbbb", "cifar10", "FINISHED",
           **{schema.VERDICT: schema.NO_RESULT})
    client.create_run(experiment, tags={schema.ROLE: schema.TRIAL, schema.SWEEP_ID: "20260103-000000-cccccc"})

    assert main(["sweeps", "--tracking-uri", uri, "--experiment", EXPERIMENT]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "experiment 'list-test': 2 sweeps, newest first"
    assert lines[1].split() == ["sweep", "id", "started", "state", "regimes", "code", "verdicts"]
    newest, oldest = lines[2], lines[3]
    assert newest.startswith("20260102-000000-bbbbbb") and "running or interrupted" in newest
    assert newest.endswith("digits: pending; cifar10: no result")
    assert oldest.startswith("20260101-000000-aaaaaa") and " finished " in oldest
    assert oldest.endswith("digits: lerac wins; mnist1d: tie (lerac, conventional)")
    assert "conventional, lerac" in oldest and "abc1234" in oldest


def test_an_unknown_experiment_is_one_line(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).create_experiment("other")
    capsys.readouterr()  # MLflow's own lines when it creates the store
    assert main(["sweeps", "--tracking-uri", uri, "--experiment", EXPERIMENT]) == 2
    assert capsys.readouterr().err == f"error: no experiment named '{EXPERIMENT}' at {uri}\n"
