"""Per-example test correctness as a short string, for results that must stay scalar-like.

A confirmation run's McNemar test needs which test examples each model got
right, not just the accuracy. Ray Tune results and MLflow params carry
strings well, so the bool vector travels bit-packed and base64-encoded
(10,000 examples: about 1.7 kB) with its length in front.
"""

from __future__ import annotations

import base64

import numpy as np


def pack_correct(correct: np.ndarray) -> str:
    """`"<length>:<base64 of numpy.packbits(correct)>"` for a 1-D bool array."""
    correct = np.asarray(correct)
    if correct.ndim != 1 or correct.dtype != np.bool_:
        raise ValueError(f"expected a 1-D bool array, got {correct.dtype} of shape {correct.shape}")
    return f"{len(correct)}:{base64.b64encode(np.packbits(correct)).decode('ascii')}"


def unpack_correct(packed: str) -> np.ndarray:
    """The bool array `pack_correct` encoded; ValueError for a malformed string."""
    length, sep, encoded = packed.partition(":")
    try:
        size = int(length)
        bits = np.frombuffer(base64.b64decode(encoded, validate=True), dtype=np.uint8)
    except ValueError as error:
        raise ValueError(f"not a packed correctness vector: {packed[:40]!r}") from error
    if not sep or size < 0 or len(bits) != (size + 7) // 8:
        raise ValueError(f"not a packed correctness vector: {packed[:40]!r}")
    return np.unpackbits(bits, count=size).astype(bool)
