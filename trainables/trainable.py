"""The Ray Tune class Trainable: one regime run, one epoch per `step()`.

Kept apart from the rest of `trainables` so that the library imports and
tests without Ray; `trainables.RegimeTrainable` loads this module on demand.

Checkpoints are written only when the result asks for them
(`should_checkpoint`): at the epochs the sweep names under the config key
`"sweep"` (ASHA's rungs) and on the trial's last result (its last epoch, or
the epoch it diverged), never by a per-epoch frequency. A ResNet-18
checkpoint (about 85 MiB) would otherwise stall a fast GPU epoch; a trial
restored after a crash continues exactly from its last one.

The sweep's driver imports this module only to hand the class to Tune: what trains
(torch, the Trainer, checkpoints) is imported by the methods, in the trial's own
process, so the driver never pays torch's import (about 1.5 s of one core, on the
path to the first trial).
"""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING, Any

import ray
from ray import tune

from trainables.config import RunConfig
from trainables.predictions import pack_correct
from trainables.trial_plan import TrialPlan

if TYPE_CHECKING:
    from trainables.training import EpochReport


def rate_trace_columns(report: EpochReport) -> dict[str, Any]:
    """The epoch's rate samples as `{"steps": [t, ...], "rates": {layer: [rate, ...]}}`."""
    return {
        "steps": [step for step, _ in report.rate_trace],
        "rates": {
            name: [rates[name] for _, rates in report.rate_trace] for name in report.layer_rates
        },
    }


def check_gpus_usable(device: str) -> None:
    """A trial that Ray gave a GPU must find one: fail rather than train on the CPU unseen.

    `device=auto` falls back to the CPU when torch sees no CUDA device (no
    driver, a driver too old for torch's CUDA build, a CPU-only torch): on a
    cluster that would bill GPU hours for CPU trials. `device=cpu` is the
    explicit opt-in to train on the CPU anyway; the run's MLflow tags then say
    `device=cpu` beside the GPU it held.
    """
    import torch

    gpu_ids = ray.get_gpu_ids() if ray.is_initialized() else []
    if gpu_ids and device == "auto" and not torch.cuda.is_available():
        raise RuntimeError(
            f"this trial was given GPU {', '.join(map(str, gpu_ids))} on node "
            f"{ray.util.get_node_ip_address()} but torch {torch.__version__} (CUDA build "
            f"{torch.version.cuda}) finds no CUDA device: check the NVIDIA driver there "
            "(`nvidia-smi`), or set device=cpu (--set device=cpu) to train on the CPU on purpose"
        )


class RegimeTrainable(tune.Trainable):
    """Trains the run described by its flat config dict; reports once per epoch.

    The config's reserved key `"sweep"` (see `trainables.trial_plan`) says at
    which epochs to checkpoint and to measure test accuracy; it is not part of
    the run config.
    """

    def setup(self, config: dict[str, Any]) -> None:
        self._build(config)

    def _build(self, config: dict[str, Any]) -> None:
        from trainables.training import Trainer

        run_config, self.plan = TrialPlan.split(config)
        check_gpus_usable(str(run_config.get("device", "auto")))
        self.trainer = Trainer(RunConfig.from_dict(run_config))
        self.train_seconds = 0.0
        self.final: dict[str, Any] | None = None  # the result that ended the run

    def step(self) -> dict[str, Any]:
        if self.final is not None:
            # Restored from the checkpoint of its last epoch (a resumed sweep whose driver
            # stopped before Tune saved the trial's end): report that epoch again, train no more.
            return dict(self.final)
        epoch = self.trainer.epoch + 1
        report = self.trainer.train_epoch(test=self.plan.test_due(epoch))
        self.train_seconds += report.epoch_seconds
        done = report.diverged or self.trainer.finished
        result = {
            **report.metrics(),
            "rate_trace": rate_trace_columns(report),
            "train_seconds": self.train_seconds,
            "num_classes": self.trainer.data.num_classes,  # chance = 1 / num_classes, for the verdict
            "device": str(self.trainer.device),
            "node_id": ray.get_runtime_context().get_node_id(),
            "should_checkpoint": self.plan.checkpoint_due(epoch, last=done),
            "done": done,
        }
        if report.test_correct is not None:
            result["test_correct"] = pack_correct(report.test_correct)
        if result["done"]:
            self.final = dict(result)  # a copy: Tune adds its own keys to the result it gets
        return result

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        from trainables.checkpoint import save_checkpoint

        save_checkpoint(checkpoint_dir, self.trainer, train_seconds=self.train_seconds, final=self.final)

    def load_checkpoint(self, checkpoint: str) -> None:
        """Restore from `checkpoint`; tensors and plain data only, so a file planted in the
        storage path cannot run code (unpickling anything else raises)."""
        from trainables.checkpoint import load_checkpoint

        state = load_checkpoint(checkpoint)
        self.trainer.load_state_dict(state["trainer"])
        self.train_seconds = state["train_seconds"]
        self.final = state.get("final")

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        """Reuse this actor for a new trial: release the finished run, then build the new one.

        Released first, so that a reused actor never holds two runs' models, optimizer states
        and device-resident data at once (on a GPU packed with trials that is what runs out).
        A Trainer holds no reference cycle (the regime contract suite checks it), so releasing
        it frees that memory at once. A compiled model does form one, with its compiled
        forward (`compile_in_place`): only then is a collection run (about 0.1 s here, next to
        the minutes of a compiled GPU run), rather than waiting for Python's next full one.
        """
        compiled = self.trainer.config.train.compile
        del self.trainer
        if compiled:
            gc.collect()
        self._build(new_config)
        self.config = new_config
        return True
