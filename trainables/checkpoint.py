"""A run's checkpoint on disk: what the Ray Trainable writes and reads back.

Ray-free, so benchmarks can time exactly what a trial pays per checkpoint.
Loading uses `torch.load(weights_only=True)`: a checkpoint holds tensors,
numbers, strings and containers of them only, so nothing read from a storage
path can run code (a file that would is refused with `pickle.UnpicklingError`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from trainables.training import Trainer

CHECKPOINT_FILE = "trainer.pt"


def save_checkpoint(directory: str | os.PathLike, trainer: Trainer, **extra: Any) -> Path:
    """Write the trainer's state (and `extra` plain values) to `directory/trainer.pt`."""
    path = Path(directory) / CHECKPOINT_FILE
    torch.save({"trainer": trainer.state_dict(), **extra}, path)
    return path


def load_checkpoint(directory: str | os.PathLike) -> dict[str, Any]:
    """The saved dict: `"trainer"` (for `Trainer.load_state_dict`) and the extra values."""
    return torch.load(Path(directory) / CHECKPOINT_FILE, weights_only=True)
