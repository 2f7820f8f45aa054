"""Audio datasets (ESC-50, CREMA-D) read from their official layouts as log-mel spectrograms.

Each clip is read with `soundfile`, mixed to mono, resampled to `sample_rate`
(scipy's polyphase filter), padded with silence or cut to the dataset's clip
length, and turned into a log-mel spectrogram: a Hann window of 2.5 hops
(25 ms at the default 10 ms hop, the AST/Kaldi convention), `torch.stft`,
the Slaney mel filterbank of `transformers.audio_utils`, log(mel + 1e-6). The
spectrograms of a whole dataset are computed once and cached beside the data,
keyed by the three feature settings (`logmel-16000hz-128mels-10ms.pt`: float16,
labels and each clip's fold or speaker; read with `weights_only=True`).
Delete the cache after changing the audio files.

Splits never share what the official protocol keeps apart:
- ESC-50: the official folds keep the fragments of one recording together.
  The test fold is a setting (`test_fold`, default 5, as in the official
  5-fold protocol); the validation split is one whole other fold, chosen by
  `data_seed` (a random slice of the other folds would put fragments of one
  recording on both sides); the remaining three folds train.
- CREMA-D: speakers (the first field of `1001_DFA_ANG_XX.wav`) are shuffled
  with `data_seed` and split 70/10/20 into train/validation/test speakers, so
  no speaker is on two sides. The class is the emotion (third field).
"""

from __future__ import annotations

import csv
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ESC50_DIR = "ESC-50-master"
ESC50_URL = "https://github.com/karolpiczak/ESC-50/archive/master.zip"
ESC50_CLASSES = 50
ESC50_FOLDS = (1, 2, 3, 4, 5)
CREMAD_DIR = "CREMA-D"
CREMAD_URL = "https://github.com/CheyneyComputerScience/CREMA-D (the AudioWAV folder, via git lfs)"
CREMAD_EMOTIONS = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")
CREMAD_SPEAKER_SHARES = (0.7, 0.1, 0.2)
# Clips are cut or padded to this length: every ESC-50 clip is 5 s; CREMA-D clips
# last 1-5 s (mostly 2-3 s), so 4 s keeps nearly all speech with little padding.
CLIP_SECONDS = {"esc50": 5.0, "cremad": 4.0}
_CREMAD_NAME = re.compile(r"^(\d+)_([A-Z]+)_([A-Z]+)_([A-Z]+)\.wav$", re.IGNORECASE)
_LOG_OFFSET = 1e-6
_STFT_CHUNK = 64


@dataclass(frozen=True, kw_only=True)
class AudioFeatures:
    """How clips become spectrograms: the three settings and what follows from them."""

    sample_rate: int
    n_mels: int
    hop_ms: float

    @property
    def hop_length(self) -> int:
        return max(1, round(self.sample_rate * self.hop_ms / 1000))

    @property
    def win_length(self) -> int:
        return max(2, round(2.5 * self.hop_length))

    @property
    def n_fft(self) -> int:
        return 1 << math.ceil(math.log2(self.win_length))

    def cache_name(self) -> str:
        return f"logmel-{self.sample_rate}hz-{self.n_mels}mels-{self.hop_ms:g}ms.pt"

    def check(self) -> None:
        """ValueError naming the setting when the settings cannot make a spectrogram."""
        bins = self.n_fft // 2 + 1
        if self.n_mels > bins:
            raise ValueError(
                f"setting 'n_mels' ({self.n_mels}) must not exceed the {bins} frequency bins of a "
                f"{self.n_fft}-point FFT (raise 'hop_ms' or lower 'n_mels')"
            )


@dataclass(frozen=True)
class AudioClips:
    """A dataset's log-mel spectrograms (N, 1, mels, frames), labels and grouping (fold or speaker)."""

    x: torch.Tensor
    y: torch.Tensor
    group: torch.Tensor


def missing_audio_files(name: str, data_dir: Path) -> str | None:
    """A one-line explanation when the dataset's files are absent, else None.

    A folder holding only cached spectrograms counts as present (as Tiny
    ImageNet's decode cache does); loading other features then names the files.
    """
    if next((data_dir / (ESC50_DIR if name == "esc50" else CREMAD_DIR)).glob("logmel-*.pt"), None):
        return None
    return _missing_raw_files(name, data_dir)


def _missing_raw_files(name: str, data_dir: Path) -> str | None:
    """A one-line explanation when the official audio files are absent, else None."""
    if name == "esc50":
        root = data_dir / ESC50_DIR
        for needed in (root / "meta" / "esc50.csv", root / "audio"):
            if not needed.exists():
                return (
                    f"esc50: expected {needed} (the official ESC-50 layout) but it is missing. "
                    f"Download {ESC50_URL} and unzip it into {data_dir}."
                )
        return None
    folder = data_dir / CREMAD_DIR / "AudioWAV"
    if not folder.is_dir():
        return (
            f"cremad: expected {folder}/ (the official CREMA-D layout) but it is missing. "
            f"Get it from {CREMAD_URL} into {data_dir / CREMAD_DIR}."
        )
    return None


def load_audio(name: str, *, data_dir: Path, features: AudioFeatures) -> AudioClips:
    """Every clip of `name` as a log-mel spectrogram, from the cache when there is one."""
    features.check()
    root = data_dir / (ESC50_DIR if name == "esc50" else CREMAD_DIR)
    cache = root / features.cache_name()
    if cache.is_file():
        saved = torch.load(cache, weights_only=True)
        return AudioClips(saved["x"].float(), saved["y"], saved["group"])
    problem = _missing_raw_files(name, data_dir)
    if problem:
        raise FileNotFoundError(problem)
    files, labels, groups = _esc50_index(root) if name == "esc50" else _cremad_index(root)
    x = log_mel(read_clips(files, features.sample_rate, CLIP_SECONDS[name]), features)
    saved = {
        "x": x.to(torch.float16),
        "y": torch.tensor(labels, dtype=torch.int64),
        "group": torch.tensor(groups, dtype=torch.int64),
    }
    # Written under a private name then renamed, so trials building the cache at the
    # same time never read a half-written file (the content is deterministic).
    partial = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
    torch.save(saved, partial)
    os.replace(partial, cache)
    return AudioClips(saved["x"].float(), saved["y"], saved["group"])


# -- the official layouts ----------------------------------------------------------
def _esc50_index(root: Path) -> tuple[list[Path], list[int], list[int]]:
    """Files, class targets and folds from `meta/esc50.csv`."""
    files, labels, folds = [], [], []
    meta = root / "meta" / "esc50.csv"
    with open(meta, newline="", encoding="utf-8") as handle:
        for number, row in enumerate(csv.DictReader(handle), start=2):
            try:
                fold, target = int(row["fold"]), int(row["target"])
                file = root / "audio" / row["filename"]
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"{meta}:{number}: expected columns filename, fold, target") from None
            if fold not in ESC50_FOLDS or not 0 <= target < ESC50_CLASSES:
                raise ValueError(f"{meta}:{number}: fold {fold} or target {target} out of range")
            files.append(file)
            labels.append(target)
            folds.append(fold)
    if not files:
        raise ValueError(f"{meta} lists no clips")
    return files, labels, folds


def _cremad_index(root: Path) -> tuple[list[Path], list[int], list[int]]:
    """Files, emotion classes and speaker ids parsed from `AudioWAV/<speaker>_<sentence>_<emotion>_<level>.wav`."""
    files, labels, speakers = [], [], []
    for file in sorted((root / "AudioWAV").glob("*.wav")):
        match = _CREMAD_NAME.match(file.name)
        emotion = match.group(3).upper() if match else None
        if emotion not in CREMAD_EMOTIONS:
            raise ValueError(
                f"cremad: cannot read speaker and emotion from {file.name}; expected names like "
                f"1001_DFA_ANG_XX.wav with an emotion in {', '.join(CREMAD_EMOTIONS)}"
            )
        files.append(file)
        labels.append(CREMAD_EMOTIONS.index(emotion))
        speakers.append(int(match.group(1)))
    if not files:
        raise ValueError(f"cremad: no .wav files in {root / 'AudioWAV'}")
    return files, labels, speakers


# -- waveforms to spectrograms -----------------------------------------------------
def read_clips(files: list[Path], sample_rate: int, seconds: float) -> torch.Tensor:
    """(N, samples) float32: each file mono, at `sample_rate`, cut or zero-padded to `seconds`."""
    import soundfile
    from scipy.signal import resample_poly

    length = round(sample_rate * seconds)
    clips = np.zeros((len(files), length), dtype=np.float32)
    for row, file in enumerate(files):
        try:
            wave, rate = soundfile.read(file, dtype="float32", always_2d=True)
        except (OSError, RuntimeError) as error:  # soundfile.LibsndfileError is a RuntimeError
            raise ValueError(f"cannot read {file}: {error}") from None
        wave = wave.mean(axis=1)
        if rate != sample_rate and len(wave):
            divisor = math.gcd(rate, sample_rate)
            wave = resample_poly(wave, sample_rate // divisor, rate // divisor).astype(np.float32)
        clips[row, : min(length, len(wave))] = wave[:length]
    return torch.from_numpy(clips)


def mel_filters(features: AudioFeatures) -> torch.Tensor:
    """(frequency bins, mels) Slaney-scale, Slaney-normalised mel filterbank (as librosa's default)."""
    from transformers.audio_utils import mel_filter_bank

    bank = mel_filter_bank(
        num_frequency_bins=features.n_fft // 2 + 1,
        num_mel_filters=features.n_mels,
        min_frequency=0.0,
        max_frequency=features.sample_rate / 2,
        sampling_rate=features.sample_rate,
        norm="slaney",
        mel_scale="slaney",
    )
    return torch.from_numpy(bank).to(torch.float32)


def log_mel(clips: torch.Tensor, features: AudioFeatures) -> torch.Tensor:
    """(N, 1, mels, frames) log-mel spectrograms of (N, samples) waveforms, in chunks."""
    window = torch.hann_window(features.win_length)
    filters = mel_filters(features)
    out = []
    for chunk in clips.split(_STFT_CHUNK):
        spectrum = torch.stft(
            chunk, n_fft=features.n_fft, hop_length=features.hop_length,
            win_length=features.win_length, window=window, center=True, return_complex=True,
        )
        power = spectrum.abs().square()  # (chunk, bins, frames)
        mel = torch.einsum("bft,fm->bmt", power, filters)
        out.append(torch.log(mel + _LOG_OFFSET).unsqueeze(1))
    return torch.cat(out)


# -- splits -----------------------------------------------------------------------
def esc50_split(
    folds: torch.Tensor, *, test_fold: int, data_seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Indices of train, validation and test: test = `test_fold`, validation = another whole fold."""
    others = [fold for fold in ESC50_FOLDS if fold != test_fold]
    val_fold = others[data_seed % len(others)]
    train = ~torch.isin(folds, torch.tensor([test_fold, val_fold]))
    return train.nonzero().squeeze(1), (folds == val_fold).nonzero().squeeze(1), (
        folds == test_fold
    ).nonzero().squeeze(1)


def speaker_split(
    speakers: torch.Tensor, *, data_seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Indices of train, validation and test with every speaker on exactly one side (70/10/20)."""
    unique = torch.unique(speakers)
    if len(unique) < 3:
        raise ValueError(f"cremad: {len(unique)} speaker(s) found; a speaker-disjoint split needs 3")
    order = unique[torch.randperm(len(unique), generator=torch.Generator().manual_seed(data_seed))]
    n_val = max(1, round(CREMAD_SPEAKER_SHARES[1] * len(unique)))
    n_test = max(1, round(CREMAD_SPEAKER_SHARES[2] * len(unique)))
    parts = (order[n_val + n_test :], order[:n_val], order[n_val : n_val + n_test])
    return tuple(torch.isin(speakers, part).nonzero().squeeze(1) for part in parts)
