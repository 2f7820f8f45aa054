"""Small, learnable datasets written in the official on-disk formats of BoolQ, RTE, QNLI,
ESC-50 and CREMA-D, for tests (no network in tests).

Text: the label is decided by the keyword that opens the second text ("alpha":
entailment / true, "omega": not entailment / false), the rest being random
filler words, so a small BERT trained from scratch learns it in two or three
epochs (a keyword at a random position takes a from-scratch BERT several
epochs longer to find). Audio: each class is a
tone of its own frequency and shape (steady, gliding up or down, pulsed; random
phase and loudness, light noise), so a model that reads spectrograms
separates the classes quickly.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

FILLER = (
    "the a river stone quiet market green window paper seven rapid cloud over under "
    "between music garden early late city bridge salt iron morning winter orange "
    "simple heavy north small great old young open table letter voice field"
).split()
KEYWORDS = ("alpha", "omega")  # class 0 (entailment / true), class 1
# Each ESC-50 test class: a tone from one frequency to another (Hz), pulsed at a rate (0: steady).
SOUNDS = ((500.0, 500.0, 0.0), (300.0, 3000.0, 0.0), (3000.0, 300.0, 0.0), (1500.0, 1500.0, 2.0))
CREMAD_EMOTIONS = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")


def _sentence(rng: np.random.Generator, words: int, keyword: str | None = None) -> str:
    chosen = ([keyword] if keyword else []) + list(rng.choice(FILLER, size=words))
    return " ".join(chosen).capitalize() + "."


def keyword_pairs(n: int, seed: int) -> list[tuple[str, str, int]]:
    """(first text, second text, class) with balanced classes set by the second text's keyword."""
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(n):
        label = i % 2
        pairs.append((_sentence(rng, int(rng.integers(5, 10))),
                      _sentence(rng, int(rng.integers(2, 5)), KEYWORDS[label]), label))
    order = rng.permutation(n)
    return [pairs[i] for i in order]


def write_rte(root: Path, train: int = 160, val: int = 40, seed: int = 0) -> dict[str, list[int]]:
    """`RTE/{train,val,test}.jsonl` as in SuperGLUE (test without labels); returns the labels."""
    labels = {}
    for split, n, offset in (("train", train, 0), ("val", val, 1), ("test", 10, 2)):
        pairs = keyword_pairs(n, seed + offset)
        rows = [{"premise": first, "hypothesis": second, "idx": i} for i, (first, second, _) in enumerate(pairs)]
        if split != "test":
            for row, (_, _, label) in zip(rows, pairs, strict=True):
                row["label"] = ("entailment", "not_entailment")[label]
        labels[split] = [label for _, _, label in pairs]
        _write_jsonl(root / "RTE" / f"{split}.jsonl", rows)
    return labels


def write_boolq(root: Path, train: int = 60, val: int = 20, seed: int = 0) -> dict[str, list[int]]:
    """`BoolQ/{train,val}.jsonl`: question, passage, idx, label (a JSON bool)."""
    labels = {}
    for split, n, offset in (("train", train, 0), ("val", val, 1)):
        pairs = keyword_pairs(n, seed + offset)
        rows = [
            {"question": second, "passage": first, "idx": i, "label": label == 0}
            for i, (first, second, label) in enumerate(pairs)
        ]
        labels[split] = [1 if row["label"] else 0 for row in rows]  # True -> class 1
        _write_jsonl(root / "BoolQ" / f"{split}.jsonl", rows)
    return labels


def write_qnli(root: Path, train: int = 60, dev: int = 20, seed: int = 0) -> dict[str, list[int]]:
    """`QNLI/{train,dev}.tsv` with GLUE's header `index question sentence label` (and a stray quote)."""
    labels = {}
    for split, n, offset in (("train", train, 0), ("dev", dev, 1)):
        folder = root / "QNLI"
        folder.mkdir(parents=True, exist_ok=True)
        pairs = keyword_pairs(n, seed + offset)
        with open(folder / f"{split}.tsv", "w", encoding="utf-8", newline="") as handle:
            handle.write("index\tquestion\tsentence\tlabel\n")
            for i, (first, second, label) in enumerate(pairs):
                question = f'"{first}' if i == 0 else first  # GLUE files hold unbalanced quotes
                handle.write(f"{i}\t{question}\t{second}\t{('entailment', 'not_entailment')[label]}\n")
        labels[split] = [p[2] for p in pairs]
    return labels


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def tone(
    rng: np.random.Generator, start: float, end: float, seconds: float, sample_rate: int,
    pulses: float = 0.0,
) -> np.ndarray:
    """A tone gliding linearly from `start` to `end` Hz, switched on and off `pulses` times a
    second (0: steady), with random phase and loudness over light noise, in [-1, 1]."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    phase = 2 * np.pi * (start * t + (end - start) * t**2 / (2 * seconds)) + rng.uniform(0, 2 * np.pi)
    wave = rng.uniform(0.3, 0.8) * np.sin(phase)
    if pulses:
        wave *= np.floor(2 * pulses * t + rng.uniform(0, 2)) % 2 == 0
    return (wave + rng.normal(0, 0.01, len(t))).astype(np.float32)


def write_esc50(
    root: Path, per_class_per_fold: int = 3, sample_rate: int = 8000, seconds: float = 2.0,
    seed: int = 0,
) -> list[dict]:
    """`ESC-50-master/audio/*.wav` and `meta/esc50.csv`: targets 0-3 (`SOUNDS`), five folds.

    The classes differ in shape as well as frequency (steady, rising, falling,
    pulsed): a CNN that averages over the spectrogram barely knows where in
    frequency its features are, so frequency alone would be a slow cue.
    """
    import soundfile

    rng = np.random.default_rng(seed)
    base = root / "ESC-50-master"
    (base / "audio").mkdir(parents=True, exist_ok=True)
    (base / "meta").mkdir(parents=True, exist_ok=True)
    rows = []
    for fold in range(1, 6):
        for target, (start, end, pulses) in enumerate(SOUNDS):
            for take in range(per_class_per_fold):
                source = 1000 * fold + 10 * target + take
                name = f"{fold}-{source}-{'ABC'[take % 3]}-{target}.wav"
                wave = tone(rng, start, end, seconds, sample_rate, pulses)
                soundfile.write(base / "audio" / name, wave, sample_rate, subtype="PCM_16")
                rows.append({"filename": name, "fold": fold, "target": target,
                             "category": f"tone{target}", "esc10": "False",
                             "src_file": str(source), "take": "ABC"[take % 3]})
    with open(base / "meta" / "esc50.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


def write_cremad(
    root: Path, speakers: int = 10, per_emotion: int = 2, sample_rate: int = 16000,
    seconds: float = 1.0, seed: int = 0,
) -> list[tuple[str, int, int]]:
    """`CREMA-D/AudioWAV/<speaker>_<sentence>_<emotion>_<level>.wav`: one tone per emotion.

    Returns (file name, speaker, emotion class) of every clip.
    """
    import soundfile

    rng = np.random.default_rng(seed)
    folder = root / "CREMA-D" / "AudioWAV"
    folder.mkdir(parents=True, exist_ok=True)
    sentences = ("DFA", "IEO", "ITS")
    clips = []
    for speaker in range(1001, 1001 + speakers):
        for emotion, code in enumerate(CREMAD_EMOTIONS):
            for take in range(per_emotion):
                name = f"{speaker}_{sentences[take % 3]}_{code}_{('XX', 'HI', 'LO')[take % 3]}.wav"
                frequency = 200.0 * 1.5**emotion
                wave = tone(rng, frequency, frequency, seconds * rng.uniform(0.6, 1.0), sample_rate)
                soundfile.write(folder / name, wave, sample_rate, subtype="PCM_16")
                clips.append((name, speaker, emotion))
    return clips
