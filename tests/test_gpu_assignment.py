"""A trial that Ray gave a GPU trains on it, or fails saying why; never on the CPU unseen.

The local runtime declares a GPU that CUDA cannot see (this machine has none),
as a node with a missing or too old NVIDIA driver would.
"""

from __future__ import annotations

import pytest
import ray
import torch
from mlflow.tracking import MlflowClient
from ray import tune

from search import schema
from search.options import SweepOptions
from search.sweep import run_sweep
from trainables import RegimeTrainable

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine where CUDA is absent")]

CONFIG = {"regime": "conventional", "dataset": "digits", "epochs": 1}


@pytest.fixture(scope="module", autouse=True)
def ray_runtime():
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def run_trial(tmp_path, config: dict) -> tune.Result:
    tuner = tune.Tuner(
        tune.with_resources(RegimeTrainable, {"cpu": 1, "gpu": 0.5}), param_space=config,
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="gpu", verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=0)),
    )
    (result,) = tuner.fit()
    return result


def test_a_trial_given_a_gpu_that_cuda_cannot_see_fails_saying_why(tmp_path):
    result = run_trial(tmp_path, CONFIG)
    assert result.error is not None
    message = str(result.error)
    assert "was given GPU 0" in message and "finds no CUDA device" in message
    assert "device=cpu" in message  # and how to train on the CPU on purpose


def test_opted_in_sweep_trials_are_tagged_with_their_device_and_the_gpu_they_held(tmp_path):
    options = SweepOptions(datasets=("digits",), regimes=("conventional",), num_trials=1, confirm_seeds=2,
                           epochs=1, grace_period=1, gpus_per_trial=0.5, fixed={"device": "cpu"},
                           storage_path=str(tmp_path / "ray"), tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                           experiment="gpu")
    run_sweep(options)
    client = MlflowClient(options.tracking_uri)
    experiment = client.get_experiment_by_name("gpu")
    trials = client.search_runs([experiment.experiment_id], filter_string=f"tags.{schema.ROLE} = '{schema.TRIAL}'")
    assert len(trials) == 3
    node = ray.get_runtime_context().get_node_id()
    for run in trials:
        assert run.data.tags[schema.DEVICE] == "cpu"
        assert run.data.tags[schema.RESOURCES] == "CPU=1, GPU=0.5"
        assert run.data.tags[schema.NODE_ID] == node
