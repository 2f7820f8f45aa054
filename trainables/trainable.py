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


class RegimeTrainable(tune.Trainable):
    """Trains the run described by its flat config dict; reports once per epoch."""

    def setup(self, config: dict[str, Any]) -> None:
        self._build(config)

    def _build(self, config: dict[str, Any]) -> None:
        self.trainer = Trainer(RunConfig.from_dict({k: v for k, v in config.items() if k != "sweep"}))
        self.train_seconds = 0.0
        self.final: dict[str, Any] | None = None  # the result that ended the run

    def step(self) -> dict[str, Any]:
        if self.final is not None:
            # Restored from the checkpoint of its last epoch (a resumed sweep whose driver
            # stopped before Tune saved the trial's end): report that epoch again, train no more.
            return dict(self.final)
        report = self.trainer.train_epoch()
        self.train_seconds += report.epoch_seconds
        done = report.diverged or self.trainer.finished
        extra = {}
        if done:
            test = self.trainer.data.test
            extra["test_correct"] = pack_correct((self.trainer.predict(test) == test.y.cpu()).numpy())
        result = {
            **extra,
            **report.metrics(),
            "train_seconds": self.train_seconds,
            "num_classes": self.trainer.data.num_classes,  # chance = 1 / num_classes, for the verdict
            "device": str(self.trainer.device),
            "node_id": ray.get_runtime_context().get_node_id(),
            "done": done,
        }
        if done:
            self.final = dict(result)  # a copy: Tune adds its own keys to the result it gets
        return result

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        state = {"trainer": self.trainer.state_dict(), "train_seconds": self.train_seconds,
                 "final": self.final}
        torch.save(state, os.path.join(checkpoint_dir, CHECKPOINT_FILE))

    def load_checkpoint(self, checkpoint: str) -> None:
        state = torch.load(os.path.join(checkpoint, CHECKPOINT_FILE), weights_only=False)
        self.trainer.load_state_dict(state["trainer"])
        self.train_seconds = state["train_seconds"]
        self.final = state.get("final")

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        """Reuse this actor for a new trial: rebuild the run from the new config."""
        self._build(new_config)
        self.config = new_config
        return True
