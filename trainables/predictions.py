"""Per-example correctness in a compact text form, for paired tests across processes.

A confirmation run's test predictions travel from the worker to the driver in
its last result (Ray results must be small and JSON-friendly): one bit per
test example, base64 encoded, 1.7 KB for CIFAR's 10,000 images.
"""

from __future__ import annotations

import base64

import numpy as np


def pack_correct(correct: np.ndarray) -> str:
    """`length:base64(packbits(correct))`."""
    correct = np.asarray(correct, dtype=bool)
    return f"{len(correct)}:{base64.b64encode(np.packbits(correct).tobytes()).decode('ascii')}"


def unpack_correct(packed: str) -> np.ndarray:
    """The bool vector `pack_correct` packed."""
    length, _, data = packed.partition(":")
    bits = np.unpackbits(np.frombuffer(base64.b64decode(data), dtype=np.uint8))
    return bits[: int(length)].astype(bool)
