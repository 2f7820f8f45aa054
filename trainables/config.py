"""The configuration of one training run: shared settings plus the regime's own.

A run is described by one flat dict (what Ray Tune, Optuna, MLflow params and
YAML files all handle naturally). `RunConfig.from_dict` splits it into the
shared `TrainSettings` and the chosen regime's settings, validating both.
"""

from __future__ import annotations

import json
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainables.dataset_catalog import DATASET_NAMES
from trainables.model_catalog import MODEL_NAMES, check_model_fits
from trainables.settings import build_settings, setting, settings_dict

if TYPE_CHECKING:
    from trainables.regime_settings import RegimeSettings  # it imports this module

OPTIMIZERS = ("sgd", "adam", "adamw", "adamax")
SCHEDULES = ("constant", "step", "cosine")
GRANULARITIES = ("block", "module")  # how `trainables.layers` groups parameters into layers


# Upper bounds that no real run reaches: a value beyond one can only be a mistake (a typo, a
# unit slip), and failing at once beats a sweep of diverged or never-ending trials.
MAX_EPOCHS = 10_000
MAX_BATCH_SIZE = 65_536
MAX_LR = 10.0
# Fixed rather than this machine's CPU count: a config is validated on one machine (the sweep's
# driver, the machine that exported it) and trained on others with more cores.
MAX_CPU_THREADS = 256
SEED_LIMIT = 2**63  # torch seeds are 64-bit; the regimes seed their own generators with seed + 1, + 2


@dataclass(frozen=True, kw_only=True)
class TrainSettings:
    """Settings every regime shares: data, model, optimizer and ordinary schedule."""

    regime: str = setting("conventional", "training regime (see trainables.regimes)")
    dataset: str = setting("digits", "dataset name", choices=DATASET_NAMES)
    model: str = setting("small_cnn", "model name", choices=MODEL_NAMES)
    data_dir: str = setting("data", "folder holding on-disk datasets (CIFAR, Tiny ImageNet)")
    download: bool = setting(False, "download CIFAR data into data_dir if missing")
    data_seed: int = setting(0, "seed of the fixed train/validation/test split",
                             check=lambda v: 0 <= v < SEED_LIMIT, rule="in [0, 2**63)")
    label_noise: float = setting(
        0.0, "share of training labels flipped to a wrong class (a trusted tenth stays clean)",
        check=lambda v: 0 <= v <= 0.9, rule="in [0, 0.9]",
    )
    seed: int = setting(0, "seed of initialisation, shuffling and augmentation",
                        check=lambda v: 0 <= v < SEED_LIMIT, rule="in [0, 2**63)")
    epochs: int = setting(10, "training epochs", check=lambda v: 1 <= v <= MAX_EPOCHS, rule=f"in [1, {MAX_EPOCHS}]")
    batch_size: int = setting(
        64, "mini-batch size (at most the training split)",
        check=lambda v: 1 <= v <= MAX_BATCH_SIZE, rule=f"in [1, {MAX_BATCH_SIZE}]",
    )
    optimizer: str = setting("sgd", "optimizer", choices=OPTIMIZERS)
    lr: float = setting(0.05, "base learning rate eta0", check=lambda v: 0 < v <= MAX_LR, rule=f"in (0, {MAX_LR:g}]")
    momentum: float = setting(0.9, "SGD momentum", check=lambda v: 0 <= v < 1, rule="in [0, 1)")
    nesterov: bool = setting(False, "Nesterov momentum (SGD)")
    weight_decay: float = setting(5e-4, "weight decay", check=lambda v: 0 <= v <= 1, rule="in [0, 1]")
    schedule: str = setting(
        "cosine", "ordinary schedule after any warm-up or curriculum", choices=SCHEDULES
    )
    warmup_epochs: float = setting(
        0.0, "linear warm-up epochs before the schedule (0 = none); the decay starts when it "
        "ends, as LeRaC's starts at k (LeRaC replaces the warm-up)",
        check=lambda v: 0 <= v <= MAX_EPOCHS, rule=f"in [0, {MAX_EPOCHS}]",
    )
    milestones: tuple[int, ...] = setting(
        (), "epochs at which the step schedule multiplies the rate by gamma (empty: 50% and 75%)",
        check=lambda v: all(1 <= m <= MAX_EPOCHS for m in v), rule=f"epochs in [1, {MAX_EPOCHS}]",
    )
    gamma: float = setting(0.1, "step schedule factor", check=lambda v: 0 < v <= 1, rule="in (0, 1]")
    min_lr: float = setting(0.0, "final rate of the cosine schedules", check=lambda v: 0 <= v <= MAX_LR, rule=f"in [0, {MAX_LR:g}]")
    granularity: str = setting("block", "how parameters are grouped into layers", choices=GRANULARITIES)
    device: str = setting(
        "auto", "'auto' (CUDA when present), 'cpu' or 'cuda[:N]'",
        check=lambda v: re.fullmatch(r"auto|cpu|cuda(:\d+)?", v) is not None, rule="'auto', 'cpu' or 'cuda[:N]'",
    )
    compile: bool = setting(
        False, "torch.compile the model (worth it on a GPU for long runs; the first epoch pays the compile)"
    )
    cpu_threads: int = setting(
        1, "torch threads when training on the CPU (results reproduce only with the same count)",
        check=lambda v: 1 <= v <= MAX_CPU_THREADS, rule=f"in [1, {MAX_CPU_THREADS}]",
    )
    # -- text and audio datasets, pretrained models --------------------------------
    pretrained: str = setting("", "bert, cvt13: local folder of pretrained weights (empty: random init)")
    tokenizer: str = setting(
        "", "text: local pretrained tokenizer folder (empty: the 'pretrained' folder if set, "
        "else a WordPiece vocabulary trained on the training file and cached beside it)",
    )
    vocab_size: int = setting(
        8000, "text: size of the trained WordPiece vocabulary",
        check=lambda v: 16 <= v <= 1_000_000, rule="in [16, 1000000]",
    )
    max_length: int = setting(
        128, "text: tokens per example pair (truncated longest-first, padded)",
        check=lambda v: 8 <= v <= 512, rule="in [8, 512]",
    )
    test_fold: int = setting(
        5, "esc50: the official fold held out as test (validation: another fold, by data_seed)",
        check=lambda v: 1 <= v <= 5, rule="in [1, 5]",
    )
    sample_rate: int = setting(16000, "audio: clips are resampled to this rate in Hz",
                               check=lambda v: 1000 <= v <= 192_000, rule="in [1000, 192000]")
    n_mels: int = setting(128, "audio: mel bands of the log-mel spectrogram",
                          check=lambda v: 4 <= v <= 512, rule="in [4, 512]")
    hop_ms: float = setting(
        10.0, "audio: spectrogram hop in ms (window 2.5 hops)", check=lambda v: 1 <= v <= 1000,
        rule="in [1, 1000]",
    )

    def milestone_epochs(self) -> tuple[int, ...]:
        """The step schedule's milestones, defaulting to 50% and 75% of training."""
        if self.milestones:
            return self.milestones
        return (max(1, self.epochs // 2), max(1, (3 * self.epochs) // 4))

    def data_options(self) -> dict[str, Any]:
        """The settings only text and audio datasets read, as `load_dataset` keywords."""
        return {
            "tokenizer": self.tokenizer or self.pretrained,
            "vocab_size": self.vocab_size,
            "max_length": self.max_length,
            "test_fold": self.test_fold,
            "sample_rate": self.sample_rate,
            "n_mels": self.n_mels,
            "hop_ms": self.hop_ms,
        }


TRAIN_KEYS = frozenset(TrainSettings.__dataclass_fields__)


@dataclass(frozen=True)
class RunConfig:
    """A validated run: shared settings and the regime's own settings object."""

    train: TrainSettings
    regime: RegimeSettings

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> RunConfig:
        """Validate a flat config dict; raises ValueError naming the offending key."""
        from trainables.regime_settings import settings_class

        values = dict(values)
        regime_name = values.get("regime", TrainSettings.regime)
        settings_type = settings_class(regime_name)
        shared = {k: v for k, v in values.items() if k in TRAIN_KEYS}
        own = {k: v for k, v in values.items() if k not in TRAIN_KEYS}
        train = build_settings(TrainSettings, shared, owner="training")
        regime = build_settings(settings_type, own, owner=f"regime '{regime_name}'")
        if train.nesterov and (train.optimizer != "sgd" or train.momentum == 0):
            raise ValueError("setting 'nesterov' needs optimizer 'sgd' with momentum > 0")
        if train.warmup_epochs > train.epochs:
            raise ValueError(
                f"setting 'warmup_epochs' ({train.warmup_epochs}) must not exceed 'epochs' ({train.epochs})"
            )
        check_model_fits(train.model, dataset=train.dataset, pretrained=train.pretrained)
        regime.check_with(train)
        return cls(train=train, regime=regime)

    def to_dict(self) -> dict[str, Any]:
        """The flat dict form, complete with defaults; `from_dict` round-trips it."""
        return {**settings_dict(self.train), **settings_dict(self.regime)}

    def to_params(self) -> dict[str, str]:
        """The flat form as strings (lists as JSON), e.g. for MLflow params."""
        return {
            key: json.dumps(value) if isinstance(value, list) else str(value)
            for key, value in sorted(self.to_dict().items())
        }

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> RunConfig:
        """Read back `to_params`: each string is parsed by its setting's declared type,
        so a string setting that looks like a number stays a string."""
        from trainables.regime_settings import settings_class

        regime = params.get("regime", TrainSettings.regime)
        types = {
            **typing.get_type_hints(TrainSettings),
            **typing.get_type_hints(settings_class(regime)),
        }
        return cls.from_dict({
            key: json.loads(text) if typing.get_origin(types.get(key)) is tuple else text
            for key, text in params.items()
        })


def check_batch_fits(batch_size: int, train_size: int) -> None:
    """Refuse a batch larger than the training split, which is known only once data is loaded:
    every epoch would be one short batch and `batch_size` would not mean what it says."""
    if batch_size > train_size:
        raise ValueError(
            f"setting 'batch_size' ({batch_size}) is larger than the training split "
            f"({train_size} examples)"
        )
