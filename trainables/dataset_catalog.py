"""The dataset catalog: names, what kind of input each holds, and where its files are expected.

Torch-free on purpose: a sweep's driver validates datasets and configs with it and never
imports torch (about 1.5 s of one core before the first trial); the loading itself is
`trainables.data`.
"""

from __future__ import annotations

from pathlib import Path

IMAGE_DATASETS: tuple[str, ...] = ("digits", "mnist1d", "cifar10", "cifar100", "tinyimagenet")
TEXT_DATASETS: tuple[str, ...] = ("boolq", "qnli", "rte")
AUDIO_DATASETS: tuple[str, ...] = ("esc50", "cremad")
DATASET_NAMES: tuple[str, ...] = IMAGE_DATASETS + TEXT_DATASETS + AUDIO_DATASETS

# (folder, training files, test file, label key, classes, download URL) of each CIFAR pickle set.
CIFAR_FILES: dict[str, tuple] = {
    "cifar10": (
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test_batch",
        b"labels",
        10,
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    ),
    "cifar100": (
        "cifar-100-python",
        ("train",),
        "test",
        b"fine_labels",
        100,
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    ),
}
TINY_DIR = "tiny-imagenet-200"
TINY_CACHE = "decoded_uint8.pt"
TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"


def dataset_modality(name: str) -> str:
    """'image', 'text' or 'audio': what kind of input the dataset's examples are."""
    if name in TEXT_DATASETS:
        return "text"
    return "audio" if name in AUDIO_DATASETS else "image"


def missing_cifar_files(name: str, data_dir: Path) -> list[Path]:
    """The pickle files of CIFAR set `name` that are not under `data_dir` (empty: all there)."""
    folder, train_files, test_file, *_ = CIFAR_FILES[name]
    root = data_dir / folder
    return [root / f for f in (*train_files, test_file) if not (root / f).is_file()]


def check_dataset_available(name: str, *, data_dir: str | Path = "data", download: bool = False) -> None:
    """Fail fast, without loading anything, when a dataset's files are absent.

    Raises ValueError for an unknown name and FileNotFoundError (saying how to
    get the data) for missing files, so a sweep can refuse to start.
    """
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASET_NAMES)}")
    data_dir = Path(data_dir)
    if name in CIFAR_FILES:
        missing = missing_cifar_files(name, data_dir)
        if missing and not download:
            folder, *_, url = CIFAR_FILES[name]
            raise FileNotFoundError(
                f"{name}: expected {missing[0]} (the python version of the dataset in "
                f"{data_dir / folder}/) but it is missing. Pass --download (download=True) to "
                f"fetch it into {data_dir}, or download {url} and unpack it into {data_dir}."
            )
    elif name in TEXT_DATASETS:
        from trainables.text_data import missing_text_file

        problem = missing_text_file(name, data_dir)
        if problem:
            raise FileNotFoundError(problem)
    elif name in AUDIO_DATASETS:
        from trainables.audio_data import missing_audio_files

        problem = missing_audio_files(name, data_dir)
        if problem:
            raise FileNotFoundError(problem)
    elif name == "tinyimagenet":
        root = data_dir / TINY_DIR
        if not (root / TINY_CACHE).is_file() and not (root / "train").is_dir():
            raise FileNotFoundError(
                f"tinyimagenet: expected {root}/train/ (ImageFolder layout) but it is missing. "
                f"Download {TINY_URL}, unpack it into {data_dir} and sort val/ into class folders."
            )
