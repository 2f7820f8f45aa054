"""Per-example correctness packed into a string and back."""

from __future__ import annotations

import numpy as np
import pytest

from trainables.predictions import pack_correct, unpack_correct


@pytest.mark.parametrize("length", [0, 1, 7, 8, 9, 10_000])
def test_round_trip(length):
    correct = np.random.default_rng(length).random(length) < 0.7
    packed = pack_correct(correct)
    assert isinstance(packed, str) and packed.startswith(f"{length}:")
    unpacked = unpack_correct(packed)
    assert unpacked.dtype == bool and np.array_equal(unpacked, correct)


def test_ten_thousand_examples_take_under_two_kilobytes():
    assert len(pack_correct(np.ones(10_000, dtype=bool))) < 2_000


@pytest.mark.parametrize("bad", ["", "12", "x:AAAA", "9:AA", "8:***", "-1:"])
def test_malformed_strings_are_rejected(bad):
    with pytest.raises(ValueError, match="packed correctness"):
        unpack_correct(bad)


def test_only_bool_vectors_are_packed():
    with pytest.raises(ValueError, match="1-D bool"):
        pack_correct(np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="1-D bool"):
        pack_correct(np.ones((2, 2), dtype=bool))
