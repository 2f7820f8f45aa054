"""The networks the regimes are compared on, adapted to small images.

Every model is an `nn.Sequential` of named stages (stem, blocks, head) so that
`trainables.layers.layer_groups` finds the architecture's blocks from the
module tree alone. The torchvision networks get a CIFAR-style stem (3x3 conv,
stride 1, no max-pool) because their ImageNet stem would shrink 8x8 or 32x32
inputs to nothing; all downsampling keeps height-1 inputs (mnist1d, 1x40) alive.
Initialisation draws only from the global torch generator, so a seed fixes it.

Beyond images: `bert` and `lstm` read token batches (`trainables.text_models`),
`septr` spectrograms (`trainables.septr`), `cvt13` images or spectrograms
(`trainables.cvt`); the CNNs read spectrograms as 1-channel images. Each model
names the modalities it reads (`trainables.model_catalog`): a config that pairs a model
with a dataset it cannot read is refused before anything is built.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING

import torch
from torch import nn

from trainables.model_catalog import MODEL_MODALITIES, MODEL_NAMES, check_pretrained

if TYPE_CHECKING:
    from torchvision import models as tv

def _stem_conv(in_channels: int, out_channels: int, *, mode: str) -> nn.Conv2d:
    """A 3x3 stride-1 conv, initialised as torchvision initialises the conv it replaces."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode=mode, nonlinearity="relu")
    return conv


def _head(classifier: nn.Linear, *, relu: bool = False) -> nn.Sequential:
    """Global average pooling then the classifier, so any input size works."""
    layers: list[nn.Module] = [nn.ReLU(inplace=True)] if relu else []
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), classifier)


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    # Padding 1 keeps height-1 inputs at height 1 even with stride 2.
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def small_cnn(*, num_classes: int, in_channels: int) -> nn.Sequential:
    """Three conv stages and a linear head: fast enough for sweeps on tiny data."""
    return nn.Sequential(OrderedDict(
        stem=_conv_bn_relu(in_channels, 32, stride=1),
        block1=_conv_bn_relu(32, 64, stride=2),
        block2=_conv_bn_relu(64, 128, stride=2),
        head=_head(nn.Linear(128, num_classes)),
    ))


def _cifar_resnet(net: tv.ResNet, *, in_channels: int) -> nn.Sequential:
    """Re-wrap a torchvision ResNet as stem, layer1..layer4, head with a CIFAR stem."""
    stem_conv = _stem_conv(in_channels, net.conv1.out_channels, mode="fan_out")
    return nn.Sequential(OrderedDict(
        stem=nn.Sequential(stem_conv, net.bn1, net.relu),
        layer1=net.layer1,
        layer2=net.layer2,
        layer3=net.layer3,
        layer4=net.layer4,
        head=_head(net.fc),
    ))


def _torchvision_models() -> ModuleType:
    """torchvision's model zoo, imported only when a model needs it (1.3 s per worker otherwise)."""
    from torchvision import models

    return models


def resnet18(*, num_classes: int, in_channels: int) -> nn.Sequential:
    net = _torchvision_models().resnet18(weights=None, num_classes=num_classes)
    return _cifar_resnet(net, in_channels=in_channels)


def wide_resnet50_2(*, num_classes: int, in_channels: int) -> nn.Sequential:
    net = _torchvision_models().wide_resnet50_2(weights=None, num_classes=num_classes)
    return _cifar_resnet(net, in_channels=in_channels)


def densenet121(*, num_classes: int, in_channels: int) -> nn.Sequential:
    """torchvision's DenseNet-121 with a CIFAR stem and ceil-mode transition pooling.

    ceil_mode lets a 2x2 average pool map height 1 to height 1 instead of 0.
    """
    net = _torchvision_models().densenet121(weights=None, num_classes=num_classes)
    features = net.features
    stem_conv = _stem_conv(in_channels, features.conv0.out_channels, mode="fan_in")
    stages: OrderedDict[str, nn.Module] = OrderedDict(
        stem=nn.Sequential(OrderedDict(conv0=stem_conv, norm0=features.norm0, relu0=features.relu0)),
    )
    for name, module in features.named_children():
        if name.startswith("transition"):
            module.pool = nn.AvgPool2d(kernel_size=2, stride=2, ceil_mode=True)
        if name.startswith(("denseblock", "transition", "norm5")):
            stages[name] = module
    stages["head"] = _head(net.classifier, relu=True)
    return nn.Sequential(stages)


def cvt13(*, num_classes: int, in_channels: int, pretrained: str = "") -> nn.Module:
    from trainables.cvt import cvt13 as build  # imports transformers: only when asked for

    return build(num_classes=num_classes, in_channels=in_channels, pretrained=pretrained)


def septr(*, num_classes: int, in_channels: int) -> nn.Module:
    from trainables.septr import septr as build

    return build(num_classes=num_classes, in_channels=in_channels)


def bert(*, num_classes: int, vocab_size: int, pretrained: str = "") -> nn.Module:
    from trainables.text_models import bert as build  # imports transformers: only when asked for

    return build(num_classes=num_classes, vocab_size=vocab_size, pretrained=pretrained)


def lstm(*, num_classes: int, vocab_size: int) -> nn.Module:
    from trainables.text_models import lstm as build

    return build(num_classes=num_classes, vocab_size=vocab_size)


_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "small_cnn": small_cnn,
    "resnet18": resnet18,
    "wide_resnet50_2": wide_resnet50_2,
    "densenet121": densenet121,
    "cvt13": cvt13,
    "septr": septr,
    "bert": bert,
    "lstm": lstm,
}


@functools.cache
def has_3x3_convolutions(name: str) -> bool:
    """Whether model `name` has a 3x3 convolution (what CBS blurs), read from the model itself
    built on the meta device: no memory, no initialisation, about 50 ms, once per name."""
    reads_text = "text" in MODEL_MODALITIES[name]
    with torch.device("meta"):
        model = build_model(name, num_classes=2, in_channels=3, vocab_size=64 if reads_text else None)
    return any(isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) for m in model.modules())


def build_model(
    name: str, *, num_classes: int, in_channels: int, vocab_size: int | None = None,
    pretrained: str = "",
) -> nn.Module:
    """Build a freshly initialised model by name (ValueError for an unknown name).

    Text models (`bert`, `lstm`) need the dataset's `vocab_size` and ignore
    `in_channels`; the others read pixels or spectrograms and refuse a
    `vocab_size`. `pretrained` (bert, cvt13) is a local folder of weights.
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}")
    reads_text = "text" in MODEL_MODALITIES[name]
    if reads_text and vocab_size is None:
        raise ValueError(f"model {name!r} reads token ids: it needs a text dataset's vocab_size")
    if not reads_text and vocab_size is not None:
        raise ValueError(f"model {name!r} reads images or spectrograms, not token ids")
    check_pretrained(name, pretrained)
    options: dict = {"pretrained": pretrained} if pretrained else {}
    if reads_text:
        return _BUILDERS[name](num_classes=num_classes, vocab_size=vocab_size, **options)
    return _BUILDERS[name](num_classes=num_classes, in_channels=in_channels, **options)
