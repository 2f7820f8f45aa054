"""Audio datasets read from ESC-50 and CREMA-D files in their official layouts, written here.

Checks the fold split (ESC-50) and the speaker split (CREMA-D: no speaker on
two sides), labels, the log-mel features (a tone lands in its mel band, also
after resampling), the spectrogram cache, the masking augmentation and the
one-line errors for missing data.
"""

from __future__ import annotations

import shutil

import numpy as np
import official_formats
import pytest
import soundfile
import torch

from trainables import audio_data
from trainables.audio_data import AudioFeatures, esc50_split, load_audio, speaker_split
from trainables.data import load_dataset
from trainables.dataset_catalog import check_dataset_available
from trainables.masking import SpectrogramMasking

FEATURES = {"sample_rate": 8000, "n_mels": 16, "hop_ms": 50.0}


@pytest.fixture(scope="module")
def esc50(tmp_path_factory):
    root = tmp_path_factory.mktemp("esc50")
    return root, official_formats.write_esc50(root, per_class_per_fold=2)


@pytest.fixture(scope="module")
def cremad(tmp_path_factory):
    root = tmp_path_factory.mktemp("cremad")
    return root, official_formats.write_cremad(root, speakers=10, per_emotion=1)


# ---------------------------------------------------------------- ESC-50


def test_esc50_folds_give_test_validation_and_train(esc50):
    root, rows = esc50
    folds = torch.tensor([row["fold"] for row in rows])
    for test_fold in (5, 2):
        seen_val = set()
        for data_seed in range(4):
            train, val, test = esc50_split(folds, test_fold=test_fold, data_seed=data_seed)
            assert set(folds[test].tolist()) == {test_fold}
            (val_fold,) = set(folds[val].tolist())
            seen_val.add(val_fold)
            assert set(folds[train].tolist()) == {1, 2, 3, 4, 5} - {test_fold, val_fold}
            assert len(train) + len(val) + len(test) == len(rows)
        assert seen_val == {1, 2, 3, 4, 5} - {test_fold}  # data_seed picks each other fold


def test_esc50_loads_spectrograms_and_labels_by_fold(esc50):
    root, rows = esc50
    dataset = load_dataset("esc50", data_dir=root, test_fold=3, data_seed=0, **FEATURES)
    frames = 1 + round(8000 * audio_data.CLIP_SECONDS["esc50"]) // 400  # 5 s, 50 ms hop
    assert dataset.modality == "audio" and dataset.num_classes == 50 and dataset.vocab_size is None
    assert dataset.input_shape == (1, 16, frames)
    assert (dataset.crop_padding, dataset.flip) == (0, False)
    assert dataset.masking == SpectrogramMasking(freq_masks=2, freq_width=2, time_masks=2, time_width=frames // 10)
    targets = torch.tensor([row["target"] for row in rows])
    folds = torch.tensor([row["fold"] for row in rows])
    assert torch.equal(dataset.test.y, targets[folds == 3])
    train, val, _ = esc50_split(folds, test_fold=3, data_seed=0)
    assert torch.equal(dataset.train.y, targets[train]) and torch.equal(dataset.val.y, targets[val])
    std, mean = torch.std_mean(dataset.train.x.double())
    assert abs(mean.item()) < 1e-4 and abs(std.item() - 1) < 1e-4


def test_spectrograms_are_cached_by_feature_settings(esc50):
    root, _ = esc50
    first = load_dataset("esc50", data_dir=root, **FEATURES)
    cache = root / "ESC-50-master" / "logmel-8000hz-16mels-50ms.pt"
    saved = torch.load(cache, weights_only=True)
    assert saved["x"].dtype == torch.float16 and saved["x"].shape[:2] == (40, 1)
    assert not list(cache.parent.glob("*.tmp"))
    copy = root / "copy"
    shutil.copytree(root / "ESC-50-master", copy / "ESC-50-master")
    shutil.rmtree(copy / "ESC-50-master" / "audio")  # the cache alone suffices
    again = load_dataset("esc50", data_dir=copy, **FEATURES)
    assert torch.equal(first.train.x, again.train.x) and torch.equal(first.test.y, again.test.y)
    check_dataset_available("esc50", data_dir=copy)  # a cached dataset counts as present
    with pytest.raises(FileNotFoundError, match="audio"):  # other features need the audio
        load_dataset("esc50", data_dir=copy, **{**FEATURES, "n_mels": 8})


def test_a_tone_lands_in_its_mel_band_also_after_resampling(tmp_path):
    """A 1 kHz tone written at 16 kHz and read at 8 kHz peaks in the mel band of 1 kHz."""
    features = AudioFeatures(**FEATURES)
    rng = np.random.default_rng(0)
    clips = [official_formats.tone(rng, 1000.0, 1000.0, 1.0, rate) for rate in (16000, 8000)]
    for rate, clip in zip((16000, 8000), clips, strict=True):
        soundfile.write(tmp_path / f"{rate}.wav", clip, rate, subtype="PCM_16")
    waves = audio_data.read_clips([tmp_path / "16000.wav", tmp_path / "8000.wav"], 8000, 1.0)
    assert waves.shape == (2, 8000)
    spectra = audio_data.log_mel(waves, features)[:, 0].mean(-1)  # (2, mels)
    band = int(audio_data.mel_filters(features)[round(1000 * features.n_fft / 8000)].argmax())
    assert spectra.argmax(1).tolist() == [band, band]
    assert spectra[0, band] - spectra[0].median() > 5  # far above the rest (log scale)


def test_too_many_mel_bands_name_the_setting(esc50):
    root, _ = esc50
    with pytest.raises(ValueError, match="'n_mels'"):
        load_dataset("esc50", data_dir=root, sample_rate=8000, n_mels=200, hop_ms=2)


# ---------------------------------------------------------------- CREMA-D


def test_cremad_speakers_never_share_a_split(cremad):
    root, clips = cremad
    features = AudioFeatures(**FEATURES)
    loaded = load_audio("cremad", data_dir=root, features=features)
    names = sorted(clips)  # the loader reads AudioWAV/ in sorted order
    assert loaded.group.tolist() == [speaker for _, speaker, _ in names]
    assert loaded.y.tolist() == [emotion for _, _, emotion in names]
    splits = []
    for data_seed in (0, 1):
        parts = speaker_split(loaded.group, data_seed=data_seed)
        speakers = [set(loaded.group[idx].tolist()) for idx in parts]
        assert [len(s) for s in speakers] == [7, 1, 2]  # 70/10/20 of 10 speakers
        assert not (speakers[0] & speakers[1] or speakers[0] & speakers[2] or speakers[1] & speakers[2])
        assert sum(len(idx) for idx in parts) == len(clips)
        splits.append(speakers)
    assert splits[0] != splits[1]  # data_seed draws the speakers

    dataset = load_dataset("cremad", data_dir=root, data_seed=1, **FEATURES)
    train, val, test = speaker_split(loaded.group, data_seed=1)
    assert dataset.num_classes == 6 and dataset.input_shape == (1, 16, 81)  # 4 s clips
    assert torch.equal(dataset.test.y, loaded.y[test]) and torch.equal(dataset.val.y, loaded.y[val])


def test_cremad_file_names_must_carry_an_emotion(tmp_path):
    official_formats.write_cremad(tmp_path, speakers=3, per_emotion=1)
    folder = tmp_path / "CREMA-D" / "AudioWAV"
    (folder / "1001_DFA_ANG_XX.wav").rename(folder / "1001_DFA_XYZ_XX.wav")
    with pytest.raises(ValueError, match="1001_DFA_XYZ_XX.wav"):
        load_dataset("cremad", data_dir=tmp_path, **FEATURES)


@pytest.mark.parametrize(
    ("name", "expected", "where"),
    [("esc50", "ESC-50-master/meta/esc50.csv", "karolpiczak/ESC-50"),
     ("cremad", "CREMA-D/AudioWAV", "CheyneyComputerScience/CREMA-D")],
)
def test_missing_audio_dataset_says_where_and_how_in_one_line(tmp_path, name, expected, where):
    for attempt in (lambda: load_dataset(name, data_dir=tmp_path, **FEATURES),
                    lambda: check_dataset_available(name, data_dir=tmp_path)):
        with pytest.raises(FileNotFoundError) as error:
            attempt()
        message = str(error.value)
        assert str(tmp_path / expected) in message and where in message and "\n" not in message


# ---------------------------------------------------------------- masking


def test_masks_are_bands_drawn_per_example_and_reproducible():
    masking = SpectrogramMasking(freq_masks=2, freq_width=4, time_masks=2, time_width=10)
    x = torch.ones(200, 1, 32, 100)
    out = masking(x, generator=torch.Generator().manual_seed(0))
    again = masking(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again) and out.shape == x.shape
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    freq_masked = (out[:, 0] == 0).all(dim=2).sum(1)  # whole mel rows set to 0
    time_masked = (out[:, 0] == 0).all(dim=1).sum(1)  # whole frames set to 0
    assert freq_masked.max() <= 8 and time_masked.max() <= 20
    assert len(set(freq_masked.tolist())) > 3 and len(set(time_masked.tolist())) > 5
    # Every zero lies in a masked row or a masked column (nothing else is touched).
    zero = out[:, 0] == 0
    rows, cols = zero.all(dim=2, keepdim=True), zero.all(dim=1, keepdim=True)
    assert torch.equal(zero, rows | cols)


def test_masking_without_masks_is_identity_and_draws_nothing():
    masking = SpectrogramMasking(freq_masks=0, freq_width=4, time_masks=2, time_width=0)
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    x = torch.randn(4, 1, 8, 20)
    assert torch.equal(masking(x, generator=generator), x)
    assert torch.equal(generator.get_state(), state)
