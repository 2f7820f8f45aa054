"""Datasets as whole tensors on the training device, with batch augmentation there.

Airbench-style: each dataset is loaded once into float32 tensors (normalised
with the train split's per-channel statistics), moved to the device whole, and
augmented a batch at a time with vectorised ops, so the training loop runs no
per-example Python. Splits are fixed by `data_seed` alone, so every trial of a
sweep (whatever its training seed) sees the same train/validation/test split.

Datasets:
- digits: scikit-learn's 8x8 digits (ships offline), stratified 60/20/20 split.
- mnist1d: MNIST-1D (the `mnist1d` package's fixed build, shipped as a file),
  shaped (N, 1, 1, 40); its own test set is the test split, validation carved
  from its train part.
- cifar10 / cifar100: the python-pickle files under `data_dir`
  (`cifar-10-batches-py/`, `cifar-100-python/`), read directly.
- tinyimagenet: an ImageFolder tree under `data_dir/tiny-imagenet-200/`; see
  `_load_tinyimagenet` for the layout it expects and the decode cache.
- boolq / rte / qnli (text): the official SuperGLUE / GLUE files, tokenised
  into (N, 3, max_length) int64 ids, attention masks and segment ids
  (`trainables.text_data`); the official validation file is the test split.
- esc50 / cremad (audio): the official layouts as (N, 1, mels, frames)
  log-mel spectrograms (`trainables.audio_data`), masked SpecAugment-style
  per batch (`Dataset.masking`).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import pickle
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from trainables import mnist1d_file
from trainables.dataset_catalog import (
    AUDIO_DATASETS,
    CIFAR_FILES,
    DATASET_NAMES,
    TEXT_DATASETS,
    TINY_CACHE,
    TINY_DIR,
    TINY_URL,
    check_dataset_available,
    missing_cifar_files,
)
from trainables.masking import SpectrogramMasking

_Pair = tuple[torch.Tensor, torch.Tensor]  # (x, y) of one split

# Share of the original training set held out for validation (CIFAR: 5000 of
# 50000, Tiny ImageNet: 10000 of 100000, MNIST-1D: 500 of 4000).
# With label noise, this share of the training split keeps its true labels.
TRUSTED_SHARE = 0.1
MAX_LABEL_NOISE = 1.0 - TRUSTED_SHARE
_VAL_SHARE = {"mnist1d": 0.125, "cifar10": 0.1, "cifar100": 0.1, "tinyimagenet": 0.1}
# Text: the official validation file is the test split; this share of the
# official training file (stratified, fixed by data_seed) is the validation split.
_TEXT_VAL_SHARE = 0.1
# digits has no official test set: train/val/test shares of all 1797 images.
_DIGITS_SHARES = (0.6, 0.2, 0.2)
# Training augmentation per dataset: (crop_padding, flip). Digits are never
# flipped (a mirrored 2 or 5 is not the same digit); MNIST-1D is a signal.
_AUGMENT = {
    "digits": (1, False),
    "mnist1d": (0, False),
    "cifar10": (4, True),
    "cifar100": (4, True),
    "tinyimagenet": (8, True),
}
# Audio is augmented by masking instead (Dataset.masking): per example, this many
# bands of up to 1/8 of the mel bins and spans of up to 1/10 of the frames.
_AUDIO_MASKS = 2

@dataclass(frozen=True, eq=False)
class Split:
    """One split: inputs `x` and labels `y` (int64, N).

    `x` is float32 N x C x H x W, normalised, for images and spectrograms, and
    int64 N x 3 x L (token ids, attention mask, segment ids) for text.
    """

    x: torch.Tensor
    y: torch.Tensor

    def to(self, device: torch.device | str) -> Split:
        """The same split with both tensors on `device`."""
        return Split(self.x.to(device), self.y.to(device))

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True, eq=False)
class Dataset:
    """A loaded dataset: its three splits and what training needs to know about it."""

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    input_shape: tuple[int, ...]  # (C, H, W); text: (3, max_length)
    crop_padding: int
    flip: bool
    noisy: torch.Tensor
    trusted: torch.Tensor
    modality: str = "image"  # image | text | audio: which models can read it
    vocab_size: int | None = None  # text: token ids are in [0, vocab_size)
    masking: SpectrogramMasking | None = None  # audio: SpecAugment policy per batch

    def to(self, device: torch.device | str) -> Dataset:
        """The same dataset with every tensor on `device` (done once, before training)."""
        return replace(
            self,
            train=self.train.to(device),
            val=self.val.to(device),
            test=self.test.to(device),
            noisy=self.noisy.to(device),
            trusted=self.trusted.to(device),
        )


def load_dataset(
    name: str,
    *,
    data_dir: str | Path = "data",
    data_seed: int = 0,
    download: bool = False,
    label_noise: float = 0.0,
    tokenizer: str = "",
    vocab_size: int = 8000,
    max_length: int = 128,
    test_fold: int = 5,
    sample_rate: int = 16000,
    n_mels: int = 128,
    hop_ms: float = 10.0,
) -> Dataset:
    """Load `name` on the CPU with its split fixed by `data_seed`.

    `label_noise` flips that share of the training labels (chosen with
    `data_seed`) to a uniformly drawn wrong class; `Dataset.noisy` marks them.
    A tenth of the training split is never flipped: `Dataset.trusted` marks
    it, the small trusted set that learning-to-reweight methods (the
    per-instance regime) draw their held-out batches from. Every regime
    trains on the same labels.
    Validation and test labels are never changed. `download` only matters for
    CIFAR; the others are built offline or must already be on disk.
    Text datasets read `tokenizer` (a local folder; empty: a WordPiece
    vocabulary of `vocab_size` trained on the training file) and `max_length`;
    audio datasets `sample_rate`, `n_mels`, `hop_ms` and (ESC-50) `test_fold`.
    """
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASET_NAMES)}")
    if not 0.0 <= label_noise <= MAX_LABEL_NOISE:
        raise ValueError(f"label_noise must be in [0, {MAX_LABEL_NOISE}], got {label_noise}")
    data_dir = Path(data_dir).expanduser()
    generator = torch.Generator().manual_seed(data_seed)
    extra: dict = {}

    if name in TEXT_DATASETS:
        from trainables.text_data import NUM_CLASSES, load_text

        text = load_text(
            name, data_dir=data_dir, tokenizer=tokenizer, vocab_size=vocab_size, max_length=max_length
        )
        train_idx, val_idx = _stratified_split(
            text.train_y, (1.0 - _TEXT_VAL_SHARE, _TEXT_VAL_SHARE), generator
        )
        x, y = text.train_x, text.train_y
        train, val, test = (x[train_idx], y[train_idx]), (x[val_idx], y[val_idx]), (text.test_x, text.test_y)
        num_classes = NUM_CLASSES
        extra = {"modality": "text", "vocab_size": text.vocab_size}
    elif name in AUDIO_DATASETS:
        train, val, test, num_classes = _audio_splits(
            name, data_dir, data_seed=data_seed, test_fold=test_fold,
            sample_rate=sample_rate, n_mels=n_mels, hop_ms=hop_ms,
        )
        mels, frames = train[0].shape[2:]
        extra = {
            "modality": "audio",
            "masking": SpectrogramMasking(
                freq_masks=_AUDIO_MASKS, freq_width=mels // 8,
                time_masks=_AUDIO_MASKS, time_width=frames // 10,
            ),
        }
    elif name == "digits":
        x, y = _digits()
        parts = _stratified_split(y, _DIGITS_SHARES, generator)
        train, val, test = ((x[idx], y[idx]) for idx in parts)
        num_classes = 10
    else:
        if name == "mnist1d":
            x, y, x_test, y_test = _mnist1d()
            num_classes = 10
        elif name in CIFAR_FILES:
            x, y, x_test, y_test = _load_cifar(name, data_dir, download)
            num_classes = CIFAR_FILES[name][4]
        else:
            x, y, x_test, y_test, num_classes = _load_tinyimagenet(data_dir)
        share = _VAL_SHARE[name]
        train_idx, val_idx = _stratified_split(y, (1.0 - share, share), generator)
        train, val, test = (x[train_idx], y[train_idx]), (x[val_idx], y[val_idx]), (x_test, y_test)

    if name in TEXT_DATASETS:
        train_x, val_x, test_x = train[0], val[0], test[0]  # token ids: nothing to normalise
    else:
        train_x, val_x, test_x = _normalise(train[0], val[0], test[0])
    train_y, noisy, trusted = _flip_labels(train[1], label_noise, num_classes, generator)
    crop_padding, flip = _AUGMENT.get(name, (0, False))
    return Dataset(
        name=name,
        train=Split(train_x, train_y),
        val=Split(val_x, val[1]),
        test=Split(test_x, test[1]),
        num_classes=num_classes,
        input_shape=tuple(train_x.shape[1:]),
        crop_padding=crop_padding,
        flip=flip,
        noisy=noisy,
        trusted=trusted,
        **extra,
    )


def _audio_splits(
    name: str, data_dir: Path, *, data_seed: int, test_fold: int, sample_rate: int,
    n_mels: int, hop_ms: float,
) -> tuple[_Pair, _Pair, _Pair, int]:
    """(x, y) of train, validation and test, and the class count, split as the protocol demands."""
    from trainables import audio_data

    features = audio_data.AudioFeatures(sample_rate=sample_rate, n_mels=n_mels, hop_ms=hop_ms)
    clips = audio_data.load_audio(name, data_dir=data_dir, features=features)
    if name == "esc50":
        parts = audio_data.esc50_split(clips.group, test_fold=test_fold, data_seed=data_seed)
        num_classes = audio_data.ESC50_CLASSES
    else:
        parts = audio_data.speaker_split(clips.group, data_seed=data_seed)
        num_classes = len(audio_data.CREMAD_EMOTIONS)
    empty = [part for part, idx in zip(("train", "validation", "test"), parts, strict=True) if not len(idx)]
    if empty:
        raise ValueError(f"{name}: the {empty[0]} split is empty; are all the official folds present?")
    train, val, test = ((clips.x[idx], clips.y[idx]) for idx in parts)
    return train, val, test, num_classes


def augment_batch(
    x: torch.Tensor, *, crop_padding: int, flip: bool, generator: torch.Generator
) -> torch.Tensor:
    """Random crop (zero padding) and horizontal flip of a batch, per example, on x's device.

    Random numbers are drawn on x's device from `generator`, which must live
    there: nothing crosses between host and device, so on a GPU the step never
    waits for a copy (a CPU generator would need a blocking transfer per
    draw). The run stays reproducible, and the augmentation state is
    checkpointed with the generator. The result keeps x's dtype and memory
    format (NCHW or channels_last). Returns `x` itself when nothing is enabled.
    """
    if crop_padding == 0 and not flip:
        return x
    batch, channels, height, width = x.shape
    device = x.device
    if crop_padding > 0:
        offsets = torch.randint(
            0, 2 * crop_padding + 1, (2, batch), generator=generator, device=device
        )
    else:
        offsets = torch.zeros(2, batch, dtype=torch.int64, device=device)
    cols = torch.arange(width, device=device).expand(batch, width)
    if flip:
        mirrored = torch.rand(batch, generator=generator, device=device) < 0.5
        cols = torch.where(mirrored[:, None], cols.flip(-1), cols)
    # One gather over each padded image's flattened pixels does crop and flip:
    # the window's positions per example (columns reversed when mirrored),
    # shared by its channels. A third faster on the CPU than cropping, then
    # flipping and selecting, and fewer kernels on the GPU.
    rows = offsets[0, :, None] + torch.arange(height, device=device)
    cols = offsets[1, :, None] + cols
    window = (rows[:, :, None] * (width + 2 * crop_padding) + cols[:, None, :]).reshape(batch, -1)
    padded = F.pad(x, (crop_padding,) * 4) if crop_padding > 0 else x
    if _is_channels_last(x):
        # Pixels are rows of `channels` values in memory: gather whole pixels (NHWC).
        pixels = padded.permute(0, 2, 3, 1).reshape(batch, -1, channels)
        picked = pixels.gather(1, window[:, :, None].expand(-1, -1, channels))
        return picked.view(batch, height, width, channels).permute(0, 3, 1, 2)
    picked = padded.flatten(2).gather(2, window[:, None, :].expand(-1, channels, -1))
    return picked.view(batch, channels, height, width)


def _is_channels_last(x: torch.Tensor) -> bool:
    """True for a channels_last batch with more than one channel (one channel is both layouts)."""
    return x.shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def _stratified_split(
    y: torch.Tensor, shares: tuple[float, ...], generator: torch.Generator
) -> list[torch.Tensor]:
    """Indices of each part, splitting every class by `shares` in a random order.

    Stratified so small validation sets keep the class balance; each part's
    indices come back sorted, keeping the original order of the examples.
    """
    order = torch.randperm(len(y), generator=generator)
    order = order[torch.argsort(y[order], stable=True)]
    labels = y[order]
    counts = torch.bincount(labels)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(y)) - starts[labels]
    cumulative = torch.tensor(np.cumsum(shares[:-1]), dtype=torch.float64)
    cuts = torch.round(counts[:, None].double() * cumulative).long()
    part = (rank[:, None] >= cuts[labels]).sum(1)
    return [torch.sort(order[part == k]).values for k in range(len(shares))]


def _normalise(train: torch.Tensor, *others: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Float32 copies of all splits, normalised with the train split's channel mean/std."""
    splits = [s.to(torch.float32, copy=True) for s in (train, *others)]
    std, mean = torch.std_mean(splits[0], dim=(0, 2, 3), correction=0, keepdim=True)
    std = std.clamp_min(1e-8)
    return tuple(s.sub_(mean).div_(std) for s in splits)


def _flip_labels(
    y: torch.Tensor, share: float, num_classes: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Labels with round(share * N) of them moved to a uniformly random wrong class.

    Returns the labels, the mask of flipped ones and the mask of trusted ones
    (a tenth kept clean when there is noise; all of them when there is none).
    """
    noisy = torch.zeros(len(y), dtype=torch.bool)
    if share == 0:
        return y, noisy, torch.ones(len(y), dtype=torch.bool)
    order = torch.randperm(len(y), generator=generator)
    num_trusted = max(1, round(TRUSTED_SHARE * len(y)))
    trusted = torch.zeros(len(y), dtype=torch.bool)
    trusted[order[:num_trusted]] = True
    chosen = order[num_trusted:][: round(share * len(y))]
    noisy[chosen] = True
    shift = torch.randint(1, num_classes, (len(chosen),), generator=generator)
    y = y.clone()
    y[chosen] = (y[chosen] + shift) % num_classes
    return y, noisy, trusted


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits as (N, 1, 8, 8) float32 and int64 labels (cached: callers index copies).

    Read from the file scikit-learn ships, as `sklearn.datasets.load_digits` reads
    it (64 pixel columns, then the label), without importing scikit-learn: that
    import (with SciPy) took 1.6 s of every trial worker's start-up.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("digits ships with scikit-learn, which is not installed: pip install scikit-learn")
    rows = np.loadtxt(Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz", delimiter=",")
    x = torch.from_numpy(rows[:, :-1]).to(torch.float32).reshape(-1, 1, 8, 8)
    return x, torch.from_numpy(rows[:, -1]).long()


@functools.lru_cache(maxsize=1)
def _mnist1d() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """MNIST-1D train (4000) and test (1000) as (N, 1, 1, 40) float32, from the shipped file
    (`trainables.mnist1d_file`: the `mnist1d` package's fixed build, without its 2 s)."""
    arrays = mnist1d_file.load()

    def images(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).reshape(len(a), 1, 1, -1)

    labels = torch.from_numpy
    return images(arrays["x"]), labels(arrays["y"]), images(arrays["x_test"]), labels(arrays["y_test"])


def _load_cifar(
    name: str, data_dir: Path, download: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """CIFAR train and test as uint8 (N, 3, 32, 32) and int64 labels, read from the pickles."""
    folder, train_files, test_file, label_key, _, _ = CIFAR_FILES[name]
    root = data_dir / folder
    if missing_cifar_files(name, data_dir) and download:
        import torchvision.datasets  # only needed to fetch the archive

        fetch = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
        fetch(root=str(data_dir), train=True, download=True)
    else:
        check_dataset_available(name, data_dir=data_dir)

    def read(files: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for file in files:
            with open(root / file, "rb") as handle:
                batch = pickle.load(handle, encoding="bytes")
            xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(batch[label_key], dtype=np.int64))
        return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))

    return *read(train_files), *read((test_file,))


def _load_tinyimagenet(
    data_dir: Path,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Tiny ImageNet train and test as uint8 (N, 3, 64, 64), int64 labels and the class count.

    Expects `data_dir/tiny-imagenet-200/train/<class>/**/*.JPEG` and
    `data_dir/tiny-imagenet-200/val/<class>/*.JPEG`. The official archive's
    `val/` holds `images/` plus `val_annotations.txt`: move each image into a
    folder named by its class (the annotation's second column) first. `val/`
    becomes the test split. Decoding 110,000 JPEGs takes about a minute, so the
    decoded tensors are saved to `tiny-imagenet-200/decoded_uint8.pt` and later
    loads read only that file (delete it after changing the images).
    """
    root = data_dir / TINY_DIR
    cache = root / TINY_CACHE
    if cache.is_file():
        saved = torch.load(cache, weights_only=True)
    else:
        saved = _decode_tinyimagenet(root)
        # Written under a private name then renamed, so trials building the cache
        # at the same time never read a half-written file.
        partial = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
        torch.save(saved, partial)
        os.replace(partial, cache)
    return (
        saved["train_x"],
        saved["train_y"],
        saved["test_x"],
        saved["test_y"],
        len(saved["classes"]),
    )


def _decode_tinyimagenet(root: Path) -> dict[str, torch.Tensor | list[str]]:
    """Decode every image of the ImageFolder tree under `root` once (uint8 RGB)."""
    from PIL import Image
    from torchvision.datasets import ImageFolder

    for part in ("train", "val"):
        if not (root / part).is_dir():
            raise FileNotFoundError(
                f"tinyimagenet: expected the folder {root / part} (ImageFolder layout, one "
                f"sub-folder per class). Download {TINY_URL}, unzip it into {root.parent}, and "
                f"move the images of val/images/ into val/<class>/ using val/val_annotations.txt."
            )
    train, test = ImageFolder(str(root / "train")), ImageFolder(str(root / "val"))
    if test.classes != train.classes:
        raise ValueError(
            f"tinyimagenet: the class folders of {root / 'val'} differ from those of "
            f"{root / 'train'}; reorganise val/ into val/<class>/ (see val/val_annotations.txt)"
        )

    def decode(samples: list[tuple[str, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        images = []
        for path, _ in samples:
            with Image.open(path) as image:
                images.append(np.asarray(image.convert("RGB"), dtype=np.uint8))
        x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
        return x, torch.tensor([label for _, label in samples], dtype=torch.int64)

    train_x, train_y = decode(train.samples)
    test_x, test_y = decode(test.samples)
    return {
        "train_x": train_x,
        "train_y": train_y,
        "test_x": test_x,
        "test_y": test_y,
        "classes": train.classes,
    }
