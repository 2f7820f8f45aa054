"""The models build for any channels/classes and the input sizes of every dataset."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from trainables.config import RunConfig
from trainables.model_catalog import MODEL_MODALITIES, MODEL_NAMES
from trainables.models import build_model
from trainables.training import compile_in_place

SLOW_MODELS = ("wide_resnet50_2", "densenet121", "cvt13")
TEXT_MODELS = tuple(name for name in MODEL_NAMES if "text" in MODEL_MODALITIES[name])
PIXEL_MODELS = tuple(name for name in MODEL_NAMES if name not in TEXT_MODELS)
# (C, H, W): digits, CIFAR, Tiny ImageNet, mnist1d, a small log-mel spectrogram.
INPUT_SHAPES = ((1, 8, 8), (3, 32, 32), (3, 64, 64), (1, 1, 40), (1, 16, 101))
TINY_SHAPES = ((2, 8, 8), (1, 1, 40))

SHAPE_CASES = [
    (name, shape)
    for name in PIXEL_MODELS
    for shape in (TINY_SHAPES if name in SLOW_MODELS else INPUT_SHAPES)
]
VOCAB = 50


def build(name: str, *, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """Any model: text models get a vocabulary, the others `in_channels`."""
    vocab = VOCAB if name in TEXT_MODELS else None
    return build_model(name, num_classes=num_classes, in_channels=in_channels, vocab_size=vocab)


def token_batch(lengths: list[int], length: int = 12, seed: int = 0) -> torch.Tensor:
    """(B, 3, length) ids/mask/segments, padded right; the second text is the last third."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (len(lengths), length), generator=generator)
    positions = torch.arange(length)
    mask = (positions < torch.tensor(lengths)[:, None]).long()
    segments = ((positions >= torch.tensor(lengths)[:, None] * 2 // 3) & (mask == 1)).long()
    return torch.stack([ids * mask, mask, segments], dim=1)

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


@pytest.mark.parametrize("name", list(EXPECTED_CHILDREN))
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
    def seeded(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        return build(name).state_dict()

    first, second, other = seeded(3), seeded(3), seeded(4)
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


# ---------------------------------------------------------------- text, audio and CvT


@pytest.mark.parametrize("name", TEXT_MODELS)
def test_text_models_read_token_batches(name: str) -> None:
    torch.manual_seed(0)
    model = build(name, num_classes=3)
    out = model(token_batch([12, 7, 3, 9]))
    assert out.shape == (4, 3) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="setting 'dataset'"):
        model(torch.randn(4, 3, 12))  # an image batch is refused with a clear line


@pytest.mark.parametrize("name", TEXT_MODELS)
def test_text_models_ignore_padding(name: str) -> None:
    """The same pairs padded to another length, with junk ids under the padding, give the same logits."""
    torch.manual_seed(0)
    model = build(name).eval()
    short = token_batch([12, 7, 3, 9], length=12)
    long = torch.cat([short, torch.zeros(4, 3, 8, dtype=torch.int64)], dim=2)
    padding = long[:, 1] == 0
    long[:, 0][padding] = 9  # junk token ids where the mask is 0
    with torch.no_grad():
        assert torch.allclose(model(short), model(long), atol=1e-5)


def test_models_need_the_right_kind_of_input() -> None:
    with pytest.raises(ValueError, match="needs a text dataset's vocab_size"):
        build_model("bert", num_classes=2, in_channels=3)
    with pytest.raises(ValueError, match="not token ids"):
        build_model("resnet18", num_classes=2, in_channels=3, vocab_size=100)
    with pytest.raises(ValueError, match="'pretrained' applies to bert, cvt13 only"):
        build_model("small_cnn", num_classes=2, in_channels=3, pretrained="/some/folder")


@pytest.mark.parametrize(
    ("model", "dataset"),
    [("bert", "digits"), ("lstm", "esc50"), ("resnet18", "rte"), ("septr", "boolq"), ("cvt13", "qnli")],
)
def test_a_config_pairing_a_model_with_data_it_cannot_read_is_refused(model: str, dataset: str) -> None:
    with pytest.raises(ValueError, match="setting 'model'") as info:
        RunConfig.from_dict({"model": model, "dataset": dataset})
    assert dataset in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(("model", "dataset"), [("septr", "esc50"), ("resnet18", "cremad"),
                                                ("cvt13", "cifar10"), ("lstm", "rte")])
def test_fitting_pairs_are_accepted(model: str, dataset: str) -> None:
    assert RunConfig.from_dict({"model": model, "dataset": dataset}).train.model == model


def test_pretrained_only_for_models_that_load_weights() -> None:
    with pytest.raises(ValueError, match="setting 'pretrained'"):
        RunConfig.from_dict({"model": "lstm", "dataset": "rte", "pretrained": "/x"})


# CvT at 32x32: at 16x16 its last stage is a 1x1 token grid, whose BatchNorm over a batch of 2
# has a near-zero variance and (thread-count dependent) non-finite bf16 gradients.
@pytest.mark.parametrize(("name", "shape"), [("bert", None), ("lstm", None), ("septr", (1, 16, 40)),
                                              ("cvt13", (3, 32, 32))])
def test_new_models_run_under_bf16_autocast(name: str, shape: tuple[int, int, int] | None) -> None:
    torch.manual_seed(0)
    model = build(name, in_channels=shape[0] if shape else 3)
    x = token_batch([12, 5]) if shape is None else torch.randn(2, *shape)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.shape == (2, 10) and torch.isfinite(out.float()).all()
    out.float().sum().backward()
    bad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not bad, bad[:5]


def test_septr_refuses_a_token_grid_beyond_its_position_tables() -> None:
    model = build("septr", in_channels=1)
    with pytest.raises(ValueError, match="token grid"):
        model(torch.randn(1, 1, 8, 4 * 1025))


def test_pretrained_bert_is_read_from_a_local_folder(tmp_path) -> None:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    saved = BertForSequenceClassification(BertConfig(
        vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=5,
    ))
    saved.save_pretrained(tmp_path)
    model = build_model("bert", num_classes=2, in_channels=3, vocab_size=60, pretrained=str(tmp_path))
    loaded = model.net.bert.embeddings.word_embeddings.weight
    assert torch.equal(loaded, saved.bert.embeddings.word_embeddings.weight)
    assert model.net.classifier.out_features == 2  # a new head for this dataset
    assert model(token_batch([12, 4])).shape == (2, 2)
    with pytest.raises(ValueError, match="knows 60 tokens"):
        build_model("bert", num_classes=2, in_channels=3, vocab_size=61, pretrained=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no config.json"):
        build_model("bert", num_classes=2, in_channels=3, vocab_size=60, pretrained=str(tmp_path / "x"))


def test_pretrained_cvt_must_match_the_channels(tmp_path) -> None:
    from transformers import CvtConfig, CvtForImageClassification

    tiny = CvtConfig(num_channels=3, embed_dim=[8, 8, 16], num_heads=[1, 1, 2], depth=[1, 2, 3], num_labels=4)
    CvtForImageClassification(tiny).save_pretrained(tmp_path)
    model = build_model("cvt13", num_classes=6, in_channels=3, pretrained=str(tmp_path))
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 6)
    with pytest.raises(ValueError, match="3-channel"):
        build_model("cvt13", num_classes=6, in_channels=1, pretrained=str(tmp_path))


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("name", ["lstm", "septr"])
def test_new_models_compile(name: str) -> None:
    """torch.compile gives the eager model's outputs and gradients flow. SepTr is a one-block
    version (the default one takes over a minute to compile here); BERT and CvT-13 take 1.5-3
    minutes on this CPU and were checked by hand."""
    from trainables.septr import SepTr

    torch.manual_seed(0)
    if name == "lstm":
        model, x = build(name).eval(), token_batch([12, 5])
    else:
        model = SepTr(num_classes=10, in_channels=1, dim=16, depth=1, heads=2, mlp=32).eval()
        x = torch.randn(2, 1, 16, 24)
    with torch.no_grad():
        eager = model(x)
    compile_in_place(model)  # as the Trainer compiles
    compiled = model(x)
    assert torch.allclose(compiled, eager, atol=1e-5)
    compiled.sum().backward()
