"""The Ray Tune class Trainable: one regime run, one epoch per `step()`.

Kept apart from the rest of `trainables` so that the library imports and
tests without Ray; `trainables.RegimeTrainable` loads this module on demand.
"""

from __future__ import annotations

import os
from typing import Any

import ray
import torch
from ray import tune

from trainables.config import RunConfig
from trainables.predictions import pack_correct
from trainables.training import Trainer

CHECKPOINT_FILE = "trainer.pt"


def check_gpus_usable(device: str) -> None:
    """A trial that Ray gave a GPU must find one: fail rather than train on the CPU unseen.

    `device=auto` falls back to the CPU when torch sees no CUDA device (no
    driver, a driver too old for torch's CUDA build, a CPU-only torch): on a
    cluster that would bill GPU hours for CPU trials. `device=cpu` is the
    explicit opt-in to train on the CPU anyway; the run's MLflow tags then say
    `device=cpu` beside the GPU it held.
    """
    gpu_ids = ray.get_gpu_ids() if ray.is_initialized() else []
    if gpu_ids and device == "auto" and not torch.cuda.is_available():
        raise RuntimeError(
            f"this trial was given GPU {', '.join(map(str, gpu_ids))} on node "
            f"{ray.util.get_node_ip_address()} but torch {torch.__version__} (CUDA build "
            f"{torch.version.cuda}) finds no CUDA device: check the NVIDIA driver there "
            "(`nvidia-smi`), or set device=cpu (--set device=cpu) to train on the CPU on purpose"
        )


class RegimeTrainable(tune.Trainable):
    """Trains the run described by its flat config dict; reports once per epoch."""

    def setup(self, config: dict[str, Any]) -> None:
        self._build(config)

    def _build(self, config: dict[str, Any]) -> None:
        check_gpus_usable(str(config.get("device", "auto")))
        self.trainer = Trainer(RunConfig.from_dict({k: v for k, v in config.items() if k != "sweep"}))
        self.train_seconds = 0.0

    def step(self) -> dict[str, Any]:
        report = self.trainer.train_epoch()
        self.train_seconds += report.epoch_seconds
        done = report.diverged or self.trainer.finished
        extra = {}
        if done:
            test = self.trainer.data.test
            extra["test_correct"] = pack_correct((self.trainer.predict(test) == test.y.cpu()).numpy())
        return {
            **extra,
            **report.metrics(),
            "train_seconds": self.train_seconds,
            "device": str(self.trainer.device),
            "node_id": ray.get_runtime_context().get_node_id(),
            "done": done,
        }

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        state = {"trainer": self.trainer.state_dict(), "train_seconds": self.train_seconds}
        torch.save(state, os.path.join(checkpoint_dir, CHECKPOINT_FILE))

    def load_checkpoint(self, checkpoint: str) -> None:
        state = torch.load(os.path.join(checkpoint, CHECKPOINT_FILE), weights_only=False)
        self.trainer.load_state_dict(state["trainer"])
        self.train_seconds = state["train_seconds"]

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        """Reuse this actor for a new trial: rebuild the run from the new config."""
        self._build(new_config)
        self.config = new_config
        return True
