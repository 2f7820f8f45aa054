"""The models build for any channels/classes and the input sizes of every dataset."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from trainables.models import MODEL_NAMES, build_model

SLOW_MODELS = ("wide_resnet50_2", "densenet121")
# (C, H, W): digits, CIFAR, Tiny ImageNet, mnist1d.
INPUT_SHAPES = ((1, 8, 8), (3, 32, 32), (3, 64, 64), (1, 1, 40))
TINY_SHAPES = ((2, 8, 8), (1, 1, 40))

SHAPE_CASES = [
    (name, shape)
    for name in MODEL_NAMES
    for shape in (TINY_SHAPES if name in SLOW_MODELS else INPUT_SHAPES)
]

RESNET_CHILDREN = ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
EXPECTED_CHILDREN = {
    "small_cnn": ["stem", "block1", "block2", "head"],
    "resnet18": RESNET_CHILDREN,
    "wide_resnet50_2": RESNET_CHILDREN,
    "densenet121": [
        "stem", "denseblock1", "transition1", "denseblock2", "transition2",
        "denseblock3", "transition3", "denseblock4", "norm5", "head",
    ],
}


@pytest.mark.parametrize(("name", "shape"), SHAPE_CASES)
def test_output_shape_for_every_input_size(name: str, shape: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    model = build_model(name, num_classes=7, in_channels=shape[0])
    with torch.no_grad():
        out = model(torch.randn(2, *shape))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_top_level_children(name: str) -> None:
    model = build_model(name, num_classes=10, in_channels=3)
    assert [child for child, _ in model.named_children()] == EXPECTED_CHILDREN[name]
    head = model.get_submodule("head")
    assert isinstance(head[-1], nn.Linear) and head[-1].out_features == 10


@pytest.mark.parametrize("name", ["resnet18", "wide_resnet50_2"])
def test_resnet_has_cifar_stem(name: str) -> None:
    stem = build_model(name, num_classes=10, in_channels=5).get_submodule("stem")
    conv = stem[0]
    assert (conv.in_channels, conv.kernel_size, conv.stride) == (5, (3, 3), (1, 1))
    assert [type(m) for m in stem] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]


def test_densenet_stem_and_ceil_mode_transitions() -> None:
    model = build_model("densenet121", num_classes=10, in_channels=2)
    conv0 = model.get_submodule("stem.conv0")
    assert (conv0.in_channels, conv0.kernel_size, conv0.stride) == (2, (3, 3), (1, 1))
    pools = [model.get_submodule(f"transition{i}.pool") for i in (1, 2, 3)]
    assert all(isinstance(p, nn.AvgPool2d) and p.ceil_mode for p in pools)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())


def test_unknown_name_lists_known_models() -> None:
    with pytest.raises(ValueError, match="vgg16") as info:
        build_model("vgg16", num_classes=10, in_channels=3)
    assert all(name in str(info.value) for name in MODEL_NAMES)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_same_seed_gives_identical_parameters(name: str) -> None:
    def build(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        return build_model(name, num_classes=10, in_channels=3).state_dict()

    first, second, other = build(3), build(3), build(4)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert not all(torch.equal(first[key], other[key]) for key in first)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny convs run far slower on two threads when another process holds a core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
def test_small_cnn_learns_digits() -> None:
    """Two epochs on sklearn digits must beat chance (10%) by far."""
    torch.manual_seed(0)
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = (x - x.mean()) / x.std()
    y = torch.tensor(digits.target)
    x_train, y_train, x_test, y_test = x[:1400], y[:1400], x[1400:], y[1400:]
    model = build_model("small_cnn", num_classes=10, in_channels=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(2):
        for batch in torch.randperm(len(x_train)).split(64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x_train[batch]), y_train[batch]).backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    assert accuracy > 0.8
