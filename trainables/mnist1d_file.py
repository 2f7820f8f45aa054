"""MNIST-1D as a file of plain arrays shipped beside this module (`mnist1d.npz`).

Building MNIST-1D with the `mnist1d` package costs about 2 s (its imports pull
in SciPy and matplotlib, then it draws 5,000 series in Python), and every
trial worker of a sweep paid it at its first MNIST-1D trial. The arrays are
fixed (the package's default arguments and seed), so they ship as a file:
loading it takes milliseconds and runs no code (`allow_pickle=False`).
`python -m trainables.mnist1d_file` writes the file again from the package;
a test checks that the file equals a fresh build.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

FILE = Path(__file__).with_name("mnist1d.npz")
KEYS = ("x", "y", "x_test", "y_test")


def build() -> dict[str, np.ndarray]:
    """MNIST-1D from the `mnist1d` package: series as float32, labels as int64.

    `make_dataset` reseeds Python's and NumPy's global generators with its own
    fixed seed; their states are restored so building never changes the
    caller's other random streams.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        built = make_dataset(get_dataset_args())
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return {key: built[key].astype(np.int64 if key.startswith("y") else np.float32) for key in KEYS}


def load() -> dict[str, np.ndarray]:
    """The shipped arrays, read without unpickling anything."""
    with np.load(FILE, allow_pickle=False) as arrays:
        return {key: arrays[key] for key in KEYS}


def main() -> None:
    np.savez_compressed(FILE, **build())
    print(f"wrote {FILE}")


if __name__ == "__main__":
    main()
