"""Layer groups: every trainable parameter once, ordered input to output, named by structure."""

from __future__ import annotations

from functools import cache

import pytest
import torch
from torch import nn

from trainables.config import GRANULARITIES
from trainables.layers import LayerGroup, layer_groups
from trainables.model_catalog import MODEL_MODALITIES, MODEL_NAMES
from trainables.models import build_model


@cache
def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    vocab = 50 if "text" in MODEL_MODALITIES[name] else None
    return build_model(name, num_classes=10, in_channels=3, vocab_size=vocab)


def _names(groups: list[LayerGroup]) -> list[str]:
    return [group.name for group in groups]


def _ids(params: object) -> list[int]:
    return [id(p) for p in params]


def _assert_partition(model: nn.Module, groups: list[LayerGroup]) -> None:
    """Each trainable parameter in exactly one group, no frozen ones, no empty groups."""
    grouped = [id(p) for group in groups for p in group.params]
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert all(group.params for group in groups)
    assert len(grouped) == len(set(grouped))
    assert set(grouped) == trainable
    assert len(set(_names(groups))) == len(groups)


@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_parameter_exactly_once(name: str, granularity: str) -> None:
    model = _model(name)
    _assert_partition(model, layer_groups(model, granularity))


def test_resnet18_blocks_match_official_lerac_grouping() -> None:
    assert _names(layer_groups(_model("resnet18"))) == [
        "stem", "layer1.0", "layer1.1", "layer2.0", "layer2.1",
        "layer3.0", "layer3.1", "layer4.0", "layer4.1", "head",
    ]


def test_block_groups_follow_parameter_order() -> None:
    model = _model("resnet18")
    grouped = [p for group in layer_groups(model) for p in group.params]
    assert _ids(grouped) == _ids(model.parameters())


def test_densenet_final_norm_joins_the_last_dense_layer() -> None:
    model = _model("densenet121")
    groups = layer_groups(model)
    assert _names(groups)[:3] == ["stem", "denseblock1.denselayer1", "denseblock1.denselayer2"]
    assert _names(groups)[-2:] == ["denseblock4.denselayer16", "head"]
    assert set(_ids(model.get_submodule("norm5").parameters())) <= set(_ids(groups[-2].params))


def test_module_granularity_joins_norm_with_the_conv_before_it() -> None:
    model = _model("resnet18")
    groups = layer_groups(model, "module")
    stem = model.get_submodule("stem")
    assert groups[0].name == "stem.0"
    assert _ids(groups[0].params) == _ids(stem.parameters())
    assert _names(groups)[1:3] == ["layer1.0.conv1", "layer1.0.conv2"]
    conv1, bn1 = model.get_submodule("layer1.0.conv1"), model.get_submodule("layer1.0.bn1")
    assert _ids(groups[1].params) == _ids([*conv1.parameters(), *bn1.parameters()])
    assert groups[-1].name == "head.2"


def _mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_plain_sequential_mlp(granularity: str) -> None:
    model = _mlp()
    groups = layer_groups(model, granularity)
    assert _names(groups) == ["0", "3"]
    assert _ids(groups[0].params) == _ids([*model[0].parameters(), *model[1].parameters()])
    _assert_partition(model, groups)


class _Wrapper(nn.Module):
    """A model whose only child holds the network, as many libraries wrap models."""

    def __init__(self) -> None:
        super().__init__()
        self.net = _mlp()


def test_single_child_wrapper_is_descended() -> None:
    assert _names(layer_groups(_Wrapper())) == ["net.0", "net.3"]


class _Transformerish(nn.Module):
    """Root-level parameters, a ModuleList of blocks and a final norm."""

    def __init__(self) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 8))
        self.embed = nn.Linear(4, 8)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 8)) for _ in range(3)
        )
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 2)


def test_root_params_first_then_blocks_and_norm_joins_previous() -> None:
    model = _Transformerish()
    groups = layer_groups(model)
    assert _names(groups) == ["cls_token", "embed", "blocks.0", "blocks.1", "blocks.2", "head"]
    assert set(_ids(model.norm.parameters())) <= set(_ids(groups[-2].params))
    _assert_partition(model, groups)


class _TiedLM(nn.Module):
    """Input embedding and output projection share one weight."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.body = nn.Linear(4, 4)
        self.decoder = nn.Linear(4, 10)
        self.decoder.weight = self.embed.weight


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_tied_parameters_appear_once_in_the_first_group(granularity: str) -> None:
    model = _TiedLM()
    groups = layer_groups(model, granularity)
    _assert_partition(model, groups)
    assert _names(groups) == ["embed", "body", "decoder"]
    assert _ids(groups[0].params) == [id(model.embed.weight)]
    assert _ids(groups[-1].params) == [id(model.decoder.bias)]


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_frozen_parameters_are_excluded(granularity: str) -> None:
    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=10, in_channels=1)
    model.get_submodule("stem").requires_grad_(False)
    model.get_submodule("block1.1").bias.requires_grad_(False)
    groups = layer_groups(model, granularity)
    _assert_partition(model, groups)
    assert not any(group.name.startswith("stem") for group in groups)


def test_unknown_granularity() -> None:
    with pytest.raises(ValueError, match="layer"):
        layer_groups(_mlp(), "layer")


# ---------------------------------------------------------------- text, audio and CvT models


def test_bert_blocks_are_embeddings_each_encoder_layer_pooler_classifier() -> None:
    model = _model("bert")
    groups = layer_groups(model)
    assert _names(groups) == ["embeddings", "layer.0", "layer.1", "layer.2", "layer.3", "pooler", "classifier"]
    bert = model.net.bert
    assert _ids(groups[0].params) == _ids(bert.embeddings.parameters())
    assert _ids(groups[2].params) == _ids(bert.encoder.layer[1].parameters())
    assert _ids(groups[-2].params) == _ids(bert.pooler.parameters())
    assert _ids(groups[-1].params) == _ids(model.net.classifier.parameters())


def test_lstm_blocks_keep_both_directions_of_a_layer_together() -> None:
    model = _model("lstm")
    groups = layer_groups(model)
    assert _names(groups) == ["embed", "layers.0", "layers.1", "head"]
    layer = model.layers[1]
    assert set(_ids(groups[2].params)) == set(_ids([*layer.forward_lstm.parameters(),
                                                    *layer.backward_lstm.parameters()]))
    assert _names(layer_groups(model, "module"))[:4] == [
        "embed.tokens", "embed.segments", "layers.0.forward_lstm", "layers.0.backward_lstm"]


def test_septr_blocks_are_embedding_each_separable_block_head() -> None:
    model = _model("septr")
    groups = layer_groups(model)
    assert _names(groups) == ["embed", "blocks.0", "blocks.1", "blocks.2", "head"]
    assert id(model.embed.cls_token) in _ids(groups[0].params)  # the class token starts there
    assert set(_ids(groups[1].params)) == set(_ids(model.blocks[0].parameters()))


def test_cvt13_blocks_follow_the_official_lerac_code() -> None:
    """One group per block (13); a stage's token embedding, and the class token, join its first block."""
    model = _model("cvt13")
    groups = layer_groups(model)
    assert _names(groups) == ["stage0.0", "stage1.0", "stage1.1", *(f"stage2.{b}" for b in range(10)), "head"]
    stage2 = model.net.cvt.encoder.stages[2]
    first = set(_ids(groups[3].params))
    assert set(_ids(stage2.embedding.parameters())) <= first and id(stage2.cls_token) in first
    assert set(_ids(groups[-1].params)) == set(_ids([*model.net.layernorm.parameters(),
                                                     *model.net.classifier.parameters()]))


class _Forgetful(nn.Module):
    """Declares its blocks but leaves one parameter out."""

    def __init__(self) -> None:
        super().__init__()
        self.body, self.head = nn.Linear(4, 4), nn.Linear(4, 2)

    def layer_blocks(self):
        yield "body", self.body.parameters()


def test_declared_blocks_must_cover_every_parameter() -> None:
    with pytest.raises(ValueError, match="leaves out parameter 'head.weight'"):
        layer_groups(_Forgetful())
    assert _names(layer_groups(_Forgetful(), "module")) == ["body", "head"]  # module: the tree
