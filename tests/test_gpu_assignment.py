"""A trial that Ray gave a GPU trains on it, or fails saying why; never on the CPU unseen.

The local runtime declares a GPU that CUDA cannot see (this machine has none),
as a node with a missing or too old NVIDIA driver would. The opt-in
(`device=cpu`) and the MLflow tags it leaves are rehearsed with the whole sweep
in test_cluster_rehearsal.py and test_multinode.py.
"""

from __future__ import annotations

import pytest
import ray
import torch
from ray import tune

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


def test_a_trial_that_asked_for_the_cpu_trains_there_holding_its_gpu(tmp_path):
    result = run_trial(tmp_path, {**CONFIG, "device": "cpu"})
    assert result.error is None and result.metrics["device"] == "cpu"
