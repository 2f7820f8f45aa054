"""The model catalog: names, the kinds of input each reads, and which load pretrained weights.

Torch-free, like `trainables.dataset_catalog`, so that a sweep's driver checks a config's
model against its dataset without importing torch; the networks are `trainables.models`.
"""

from __future__ import annotations

from trainables.dataset_catalog import DATASET_NAMES, dataset_modality

MODEL_NAMES: tuple[str, ...] = (
    "small_cnn", "resnet18", "wide_resnet50_2", "densenet121", "cvt13", "septr", "bert", "lstm",
)
_PIXELS = ("image", "audio")  # spectrograms are 1-channel images to a convolutional model
MODEL_MODALITIES: dict[str, tuple[str, ...]] = {
    "small_cnn": _PIXELS, "resnet18": _PIXELS, "wide_resnet50_2": _PIXELS, "densenet121": _PIXELS,
    "cvt13": _PIXELS, "septr": ("audio", "image"), "bert": ("text",), "lstm": ("text",),
}
PRETRAINED_MODELS: tuple[str, ...] = ("bert", "cvt13")


def check_model_fits(model: str, *, dataset: str, pretrained: str = "") -> None:
    """ValueError naming the setting when `model` cannot read `dataset` or load `pretrained`."""
    if model not in MODEL_MODALITIES or dataset not in DATASET_NAMES:
        return  # unknown names are reported by the settings' own checks
    modality, reads = dataset_modality(dataset), MODEL_MODALITIES[model]
    if modality not in reads:
        fitting = [name for name in MODEL_NAMES if modality in MODEL_MODALITIES[name]]
        raise ValueError(
            f"setting 'model': {model!r} reads {' or '.join(reads)} data but dataset {dataset!r} "
            f"is {modality}; models for {modality}: {', '.join(fitting)}"
        )
    check_pretrained(model, pretrained)


def check_pretrained(model: str, pretrained: str) -> None:
    """ValueError naming the setting when `pretrained` is set for a model that cannot load it."""
    if pretrained and model not in PRETRAINED_MODELS:
        raise ValueError(
            f"setting 'pretrained' applies to {', '.join(PRETRAINED_MODELS)} only, not {model!r}"
        )
