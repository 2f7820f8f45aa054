"""Tests of trainables.data: real loading, fixed splits, label noise and batch augmentation.

CIFAR and Tiny ImageNet are tested on small files in their real on-disk formats,
written here into tmp_path (no network in tests).
"""

from __future__ import annotations

import pickle
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainables import mnist1d_file
from trainables.data import Dataset, Split, augment_batch, load_dataset
from trainables.dataset_catalog import DATASET_NAMES

# ---------------------------------------------------------------- helpers


def affine_to_raw(normalised: torch.Tensor, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (scale, shift) with raw == normalised * scale + shift, fitted on paired values.

    Asserts the fit is exact, i.e. `normalised` is `raw` under one affine map per channel.
    """
    channels = normalised.shape[1]
    scale, shift = (
        torch.empty(channels, dtype=torch.float64),
        torch.empty(channels, dtype=torch.float64),
    )
    for c in range(channels):
        n = normalised[:, c].reshape(-1).double().numpy()
        r = raw[:, c].reshape(-1).double().numpy()
        slope, intercept = np.polyfit(n, r, 1)
        assert np.abs(n * slope + intercept - r).max() < 1e-3 * max(1.0, np.abs(r).max())
        assert slope > 0
        scale[c], shift[c] = slope, intercept
    return scale, shift


def to_raw(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    return x.double() * scale[None, :, None, None] + shift[None, :, None, None]


def match_rows(recovered: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
    """Index into `raw` of each recovered example (asserting an exact match exists)."""
    distance = torch.cdist(
        recovered.reshape(len(recovered), -1), raw.reshape(len(raw), -1).double()
    )
    nearest, index = distance.min(dim=1)
    assert nearest.max() < 1e-3
    return index


def assert_normalised(split: Split) -> None:
    std, mean = torch.std_mean(split.x.double(), dim=(0, 2, 3), correction=0)
    assert torch.allclose(mean, torch.zeros_like(mean), atol=1e-4)
    assert torch.allclose(std, torch.ones_like(std), atol=1e-4)


def write_pickle(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump(content, handle)


def write_cifar10(root: Path, per_file: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    """Five train batches and a test batch in the real python-pickle format."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    xs, ys = [], []
    for i in range(1, 6):
        x = rng.integers(0, 256, (per_file, 3072), dtype=np.uint8)
        y = rng.integers(0, 10, per_file).tolist()
        write_pickle(folder / f"data_batch_{i}", {b"batch_label": b"x", b"data": x, b"labels": y})
        xs.append(x)
        ys += y
    test_x = rng.integers(0, 256, (per_file, 3072), dtype=np.uint8)
    test_y = rng.integers(0, 10, per_file).tolist()
    write_pickle(folder / "test_batch", {b"batch_label": b"x", b"data": test_x, b"labels": test_y})
    return {
        "x": np.concatenate(xs).reshape(-1, 3, 32, 32),
        "y": np.array(ys),
        "test_x": test_x.reshape(-1, 3, 32, 32),
        "test_y": np.array(test_y),
    }


def write_cifar100(root: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """`train` and `test` files of the real CIFAR-100 format (fine and coarse labels)."""
    rng = np.random.default_rng(seed)
    fine_classes = np.array([0, 7, 42, 99])  # few classes, so each has several validation images
    out = {}
    for name, n in (("train", 80), ("test", 16)):
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = rng.choice(fine_classes, n)
        coarse = rng.integers(0, 20, n)
        write_pickle(
            root / "cifar-100-python" / name,
            {b"data": x, b"fine_labels": fine.tolist(), b"coarse_labels": coarse.tolist()},
        )
        prefix = "" if name == "train" else "test_"
        out[prefix + "x"], out[prefix + "y"] = x.reshape(-1, 3, 32, 32), fine
    return out


def check_cifar_roundtrip(dataset: Dataset, written: dict[str, np.ndarray]) -> None:
    """Pixels and labels read back equal those written; train/val partition the train files."""
    raw_test = torch.from_numpy(written["test_x"])
    scale, shift = affine_to_raw(dataset.test.x, raw_test)  # same map for every split
    assert torch.equal(dataset.test.y, torch.from_numpy(written["test_y"]).long())
    assert dataset.test.y.dtype == torch.int64

    indices = []
    for split in (dataset.train, dataset.val):
        recovered = to_raw(split.x, scale, shift)
        assert torch.allclose(recovered, recovered.round(), atol=1e-3)
        index = match_rows(recovered.round(), torch.from_numpy(written["x"]))
        assert torch.equal(index, index.sort().values)  # original order kept
        assert torch.equal(split.y, torch.from_numpy(written["y"][index.numpy()]).long())
        indices.append(index)
    assert len(dataset.val) > 0
    assert torch.equal(torch.cat(indices).sort().values, torch.arange(len(written["y"])))
    assert_normalised(dataset.train)


# ---------------------------------------------------------------- digits and MNIST-1D


def test_digits_shapes_partition_and_stratification():
    from sklearn.datasets import load_digits

    dataset = load_dataset("digits", data_seed=0)
    assert dataset.name == "digits" and dataset.num_classes == 10
    assert dataset.input_shape == (1, 8, 8)
    assert (dataset.crop_padding, dataset.flip) == (1, False)
    for split in (dataset.train, dataset.val, dataset.test):
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert split.x.shape[1:] == (1, 8, 8) and split.x.shape[0] == len(split) == split.y.shape[0]
        assert set(split.y.tolist()) == set(range(10))
    assert (len(dataset.train), len(dataset.val), len(dataset.test)) == pytest.approx(
        (1078, 359, 359), abs=6
    )
    assert dataset.noisy.dtype == torch.bool and not dataset.noisy.any()
    assert dataset.noisy.shape == (len(dataset.train),)
    assert_normalised(dataset.train)

    # The three splits partition the 1797 digits, with their labels.
    digits = load_digits()
    raw = torch.from_numpy(digits.images).unsqueeze(1)
    everything = torch.cat([dataset.train.x, dataset.val.x, dataset.test.x])
    scale, shift = affine_to_raw(everything.sort(dim=0).values, raw.sort(dim=0).values)
    index = torch.cat(
        [
            match_rows(to_raw(s.x, scale, shift), raw)
            for s in (dataset.train, dataset.val, dataset.test)
        ]
    )
    assert torch.equal(index.sort().values, torch.arange(1797))
    labels = torch.cat([dataset.train.y, dataset.val.y, dataset.test.y])
    assert torch.equal(labels, torch.from_numpy(digits.target)[index].long())

    # Stratified: every class keeps its 20% share in validation, to within one image.
    full = torch.bincount(torch.from_numpy(digits.target), minlength=10).double()
    val = torch.bincount(dataset.val.y, minlength=10).double()
    assert (val - 0.2 * full).abs().max() <= 1


@pytest.mark.parametrize(("name", "heavy", "control"), [
    ("digits", ("scipy", "sklearn"), "import sklearn.datasets; "),
    ("mnist1d", ("mnist1d", "scipy"), "import mnist1d.data; "),
])
def test_embedded_datasets_load_without_their_heavy_imports(name, heavy, control):
    """Every trial worker loads these at its first trial; importing scikit-learn (digits) or
    building MNIST-1D with its package cost each worker 1.6 s and 2 s. The control shows
    the check sees an import when there is one."""
    script = (f"import sys; from trainables.data import load_dataset; load_dataset({name!r}, data_seed=0); "
              f"{{extra}}print(sorted(m for m in {heavy!r} if m in sys.modules))")
    root = Path(__file__).resolve().parent.parent

    def imported(extra: str = "") -> str:
        done = subprocess.run([sys.executable, "-c", script.format(extra=extra)], cwd=root,
                              capture_output=True, text=True, check=True)
        return done.stdout.strip()

    assert imported() == "[]"
    assert imported(control) == str(sorted(heavy))


def test_shipped_mnist1d_file_equals_a_fresh_build():
    shipped, built = mnist1d_file.load(), mnist1d_file.build()
    for key in mnist1d_file.KEYS:
        assert shipped[key].dtype == built[key].dtype and np.array_equal(shipped[key], built[key]), key


def test_digits_split_is_fixed_by_data_seed():
    first, again = load_dataset("digits", data_seed=3), load_dataset("digits", data_seed=3)
    other = load_dataset("digits", data_seed=4)
    for name in ("train", "val", "test"):
        assert torch.equal(getattr(first, name).x, getattr(again, name).x)
        assert torch.equal(getattr(first, name).y, getattr(again, name).y)
    assert first.train.x.shape == other.train.x.shape
    assert not torch.equal(first.val.x, other.val.x)


def test_mnist1d_shapes_partition_and_seed():
    from mnist1d.data import get_dataset_args, make_dataset

    dataset = load_dataset("mnist1d", data_seed=0)
    assert dataset.num_classes == 10 and dataset.input_shape == (1, 1, 40)
    assert (dataset.crop_padding, dataset.flip) == (0, False)
    assert len(dataset.test) == 1000
    assert len(dataset.train) + len(dataset.val) == 4000
    assert len(dataset.val) == pytest.approx(500, abs=10)
    for split in (dataset.train, dataset.val, dataset.test):
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert set(split.y.tolist()) == set(range(10))
    assert_normalised(dataset.train)

    built = make_dataset(get_dataset_args())
    raw_x = torch.from_numpy(built["x"]).reshape(-1, 1, 1, 40)
    raw_test = torch.from_numpy(built["x_test"]).reshape(-1, 1, 1, 40)
    scale, shift = affine_to_raw(dataset.test.x, raw_test)  # the test set, in order
    assert torch.equal(dataset.test.y, torch.from_numpy(built["y_test"]))
    index = torch.cat(
        [match_rows(to_raw(s.x, scale, shift), raw_x) for s in (dataset.train, dataset.val)]
    )
    assert torch.equal(index.sort().values, torch.arange(4000))
    assert torch.equal(
        torch.cat([dataset.train.y, dataset.val.y]), torch.from_numpy(built["y"])[index]
    )

    again, other = load_dataset("mnist1d", data_seed=0), load_dataset("mnist1d", data_seed=1)
    assert torch.equal(again.val.x, dataset.val.x) and torch.equal(again.train.y, dataset.train.y)
    assert not torch.equal(other.val.x, dataset.val.x)


def test_mnist1d_build_leaves_global_random_state_alone():
    random.seed(5)
    np.random.seed(5)
    expected = (random.random(), np.random.rand())
    random.seed(5)
    np.random.seed(5)
    mnist1d_file.build()  # make_dataset reseeds random and numpy internally
    assert (random.random(), np.random.rand()) == expected


def test_dataset_to_moves_every_tensor():
    dataset = load_dataset("digits").to("meta")
    for split in (dataset.train, dataset.val, dataset.test):
        assert split.x.device.type == "meta" and split.y.device.type == "meta"
    assert dataset.noisy.device.type == "meta" and dataset.trusted.device.type == "meta"
    assert dataset.input_shape == (1, 8, 8) and len(dataset.train) > 0


# ---------------------------------------------------------------- label noise


def test_label_noise_flips_the_right_share_of_train_labels_only():
    clean = load_dataset("digits", data_seed=2)
    noisy = load_dataset("digits", data_seed=2, label_noise=0.3)
    mask = noisy.noisy
    assert mask.dtype == torch.bool and mask.shape == (len(noisy.train),)
    assert int(mask.sum()) == round(0.3 * len(noisy.train))
    assert (noisy.train.y[mask] != clean.train.y[mask]).all()
    assert torch.equal(noisy.train.y[~mask], clean.train.y[~mask])
    assert ((noisy.train.y >= 0) & (noisy.train.y < 10)).all()
    assert torch.equal(noisy.train.x, clean.train.x)  # same split whatever the noise
    for name in ("val", "test"):
        assert torch.equal(getattr(noisy, name).y, getattr(clean, name).y)
        assert torch.equal(getattr(noisy, name).x, getattr(clean, name).x)
    again = load_dataset("digits", data_seed=2, label_noise=0.3)
    assert torch.equal(again.noisy, mask) and torch.equal(again.train.y, noisy.train.y)


def test_label_noise_picks_wrong_classes_uniformly():
    clean = load_dataset("mnist1d")
    noisy = load_dataset("mnist1d", label_noise=0.5)
    shift = (noisy.train.y - clean.train.y)[noisy.noisy] % 10
    counts = torch.bincount(shift, minlength=10)
    expected = len(shift) / 9
    assert counts[0] == 0
    assert ((counts[1:] - expected).abs() < 0.3 * expected).all()


def test_a_trusted_tenth_keeps_its_true_labels():
    clean = load_dataset("digits", data_seed=2)
    noisy = load_dataset("digits", data_seed=2, label_noise=0.3)
    assert int(noisy.trusted.sum()) == round(0.1 * len(noisy.train))
    assert not (noisy.trusted & noisy.noisy).any()
    assert torch.equal(noisy.train.y[noisy.trusted], clean.train.y[noisy.trusted])
    assert clean.trusted.all()  # without noise every example is trusted


@pytest.mark.parametrize("share", [-0.1, 0.95, 1.0])
def test_label_noise_out_of_range_is_rejected(share):
    with pytest.raises(ValueError, match="label_noise"):
        load_dataset("digits", label_noise=share)


# ---------------------------------------------------------------- CIFAR


def test_cifar10_reads_the_pickles_back(tmp_path):
    written = write_cifar10(tmp_path)
    dataset = load_dataset("cifar10", data_dir=tmp_path, data_seed=0)
    assert dataset.num_classes == 10 and dataset.input_shape == (3, 32, 32)
    assert (dataset.crop_padding, dataset.flip) == (4, True)
    check_cifar_roundtrip(dataset, written)
    other = load_dataset("cifar10", data_dir=tmp_path, data_seed=1)
    assert not torch.equal(other.val.x, dataset.val.x)


def test_cifar100_reads_fine_labels(tmp_path):
    written = write_cifar100(tmp_path)
    dataset = load_dataset("cifar100", data_dir=str(tmp_path))
    assert dataset.num_classes == 100 and dataset.input_shape == (3, 32, 32)
    check_cifar_roundtrip(dataset, written)


@pytest.mark.parametrize(
    ("name", "folder", "archive"),
    [
        ("cifar10", "cifar-10-batches-py", "cifar-10-python.tar.gz"),
        ("cifar100", "cifar-100-python", "cifar-100-python.tar.gz"),
    ],
)
def test_missing_cifar_says_where_and_how(tmp_path, name, folder, archive):
    with pytest.raises(FileNotFoundError) as error:
        load_dataset(name, data_dir=tmp_path)
    message = str(error.value)
    assert str(tmp_path / folder) in message
    assert "--download" in message and archive in message


def test_missing_cifar_is_downloaded_when_asked(tmp_path, monkeypatch):
    import torchvision.datasets

    calls = []

    def fake_cifar10(root, train, download):
        calls.append((root, download))
        write_cifar10(Path(root))

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", fake_cifar10)
    dataset = load_dataset("cifar10", data_dir=tmp_path, download=True)
    assert calls == [(str(tmp_path), True)]
    assert len(dataset.train) + len(dataset.val) == 100
    load_dataset("cifar10", data_dir=tmp_path, download=True)
    assert len(calls) == 1  # present now: not fetched again


# ---------------------------------------------------------------- Tiny ImageNet


def write_tiny_imagenet(
    root: Path, classes=("n01", "n02", "n03"), train_per_class=10, val_per_class=2
):
    """A tiny ImageFolder tree shaped like the reorganised Tiny ImageNet."""
    rng = np.random.default_rng(0)
    base = root / "tiny-imagenet-200"
    test_x = []
    for wnid in classes:
        for i in range(train_per_class):
            folder = base / "train" / wnid / "images"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
            if i == 0:
                Image.fromarray(pixels).save(
                    folder / f"{wnid}_{i}.JPEG"
                )  # upper-case, like the real files
            elif i == 1:
                Image.fromarray(pixels[..., 0]).save(
                    folder / f"{wnid}_{i}.png"
                )  # a greyscale image
            else:
                Image.fromarray(pixels).save(folder / f"{wnid}_{i}.png")
        for i in range(val_per_class):
            folder = base / "val" / wnid
            folder.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"val_{wnid}_{i}.png")
            test_x.append(pixels.transpose(2, 0, 1))
    return np.stack(test_x)


def test_tinyimagenet_loads_the_folder_tree_and_caches_it(tmp_path):
    test_x = write_tiny_imagenet(tmp_path)
    dataset = load_dataset("tinyimagenet", data_dir=tmp_path, data_seed=0)
    assert dataset.num_classes == 3 and dataset.input_shape == (3, 64, 64)
    assert (dataset.crop_padding, dataset.flip) == (8, True)
    assert len(dataset.train) + len(dataset.val) == 30 and len(dataset.val) == 3
    assert len(dataset.test) == 6
    assert dataset.train.x.dtype == torch.float32 and dataset.train.y.dtype == torch.int64
    assert torch.equal(dataset.test.y, torch.tensor([0, 0, 1, 1, 2, 2]))
    assert torch.equal(torch.bincount(dataset.val.y), torch.ones(3, dtype=torch.int64))
    affine_to_raw(dataset.test.x, torch.from_numpy(test_x))  # PNG pixels read back exactly
    assert_normalised(dataset.train)

    cache = tmp_path / "tiny-imagenet-200" / "decoded_uint8.pt"
    assert cache.is_file()
    shutil.rmtree(tmp_path / "tiny-imagenet-200" / "train")
    shutil.rmtree(tmp_path / "tiny-imagenet-200" / "val")
    cached = load_dataset("tinyimagenet", data_dir=tmp_path, data_seed=0)  # images gone: cache only
    for name in ("train", "val", "test"):
        assert torch.equal(getattr(cached, name).x, getattr(dataset, name).x)
        assert torch.equal(getattr(cached, name).y, getattr(dataset, name).y)


def test_missing_tinyimagenet_says_where_and_how(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        load_dataset("tinyimagenet", data_dir=tmp_path)
    message = str(error.value)
    assert str(tmp_path / "tiny-imagenet-200" / "train") in message
    assert "tiny-imagenet-200.zip" in message


def test_tinyimagenet_official_val_layout_is_rejected(tmp_path):
    write_tiny_imagenet(tmp_path)
    val = tmp_path / "tiny-imagenet-200" / "val"
    (val / "images").mkdir()
    annotations = []
    for folder in sorted(p for p in val.iterdir() if p.name != "images"):
        for image in folder.iterdir():
            image.rename(val / "images" / image.name)
            annotations.append(f"{image.name}\t{folder.name}\t0\t0\t63\t63\n")
        folder.rmdir()
    (val / "val_annotations.txt").write_text("".join(annotations))
    with pytest.raises(ValueError, match="reorganise"):
        load_dataset("tinyimagenet", data_dir=tmp_path)


# ---------------------------------------------------------------- augment_batch


def numbered_batch(
    batch: int = 64, channels: int = 2, height: int = 6, width: int = 7
) -> torch.Tensor:
    """Distinct positive values everywhere, so any shift or flip is visible."""
    return torch.arange(1, batch * channels * height * width + 1, dtype=torch.float32).reshape(
        batch, channels, height, width
    )


def test_augment_is_deterministic_for_a_generator_seed():
    x = numbered_batch()
    a = augment_batch(x, crop_padding=2, flip=True, generator=torch.Generator().manual_seed(7))
    b = augment_batch(x, crop_padding=2, flip=True, generator=torch.Generator().manual_seed(7))
    c = augment_batch(x, crop_padding=2, flip=True, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    generator = torch.Generator().manual_seed(7)
    first = augment_batch(x, crop_padding=2, flip=True, generator=generator)
    second = augment_batch(x, crop_padding=2, flip=True, generator=generator)
    assert not torch.equal(first, second)  # the generator advances


def test_augment_crop_is_a_shifted_window_of_the_zero_padded_image():
    padding = 2
    x = numbered_batch()
    out = augment_batch(
        x, crop_padding=padding, flip=False, generator=torch.Generator().manual_seed(0)
    )
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    height, width = x.shape[2:]
    shifts = set()
    for i in range(len(x)):
        found = [
            (dy, dx)
            for dy in range(2 * padding + 1)
            for dx in range(2 * padding + 1)
            if torch.equal(out[i], padded[i, :, dy : dy + height, dx : dx + width])
        ]
        assert len(found) == 1
        shifts.add(found[0])
    assert len(shifts) > 10  # offsets drawn per example, over the whole range
    assert {dy for dy, _ in shifts} == set(range(5)) and {dx for _, dx in shifts} == set(range(5))


def test_augment_flip_mirrors_about_half_the_examples():
    x = numbered_batch(batch=400)
    out = augment_batch(x, crop_padding=0, flip=True, generator=torch.Generator().manual_seed(0))
    mirrored = torch.tensor([torch.equal(o, xi.flip(-1)) for o, xi in zip(out, x, strict=True)])
    unchanged = torch.tensor([torch.equal(o, xi) for o, xi in zip(out, x, strict=True)])
    assert (mirrored ^ unchanged).all()
    assert 150 < int(mirrored.sum()) < 250


def test_augment_disabled_is_a_no_op_and_draws_nothing():
    x = numbered_batch()
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    out = augment_batch(x, crop_padding=0, flip=False, generator=generator)
    assert torch.equal(out, x)
    assert torch.equal(generator.get_state(), state)


def test_augment_keeps_the_shape_of_height_one_signals():
    x = numbered_batch(batch=16, channels=1, height=1, width=40)
    out = augment_batch(x, crop_padding=0, flip=True, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape


def test_augment_of_a_loaded_batch_keeps_dtype_and_shape():
    dataset = load_dataset("digits")
    batch = dataset.train.x[:32]
    out = augment_batch(
        batch,
        crop_padding=dataset.crop_padding,
        flip=dataset.flip,
        generator=torch.Generator().manual_seed(0),
    )
    assert out.shape == batch.shape and out.dtype == torch.float32
    assert not torch.equal(out, batch)


# ---------------------------------------------------------------- names


def test_unknown_dataset_name_lists_the_known_ones():
    with pytest.raises(ValueError) as error:
        load_dataset("imagenet")
    message = str(error.value)
    assert "imagenet" in message
    assert all(name in message for name in DATASET_NAMES)


def test_augment_of_a_channels_last_batch_is_the_same_crop_in_the_same_layout():
    x = numbered_batch(batch=32, channels=3)
    nchw = augment_batch(x, crop_padding=2, flip=True, generator=torch.Generator().manual_seed(3))
    for dtype in (torch.float32, torch.bfloat16):
        batch = x.to(dtype=dtype, memory_format=torch.channels_last)
        out = augment_batch(batch, crop_padding=2, flip=True, generator=torch.Generator().manual_seed(3))
        assert out.dtype == dtype and out.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(out, nchw.to(dtype))
