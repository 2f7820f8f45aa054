"""Text classifiers over (B, 3, L) int64 batches: token ids, attention mask, segment ids.

- `bert`: HF transformers' `BertForSequenceClassification`, a small BERT built
  from `BertConfig` by default (4 layers, hidden 128, 2 heads: BERT-mini's
  depth at BERT-tiny's width) or a local pretrained folder. transformers is
  imported only when a BERT is built.
- `lstm`: a bidirectional LSTM over token and segment embeddings, mean-pooled
  over the real tokens. Each direction is its own `nn.LSTM`, and the backward
  one reads every sequence reversed within its length, so padding never leaks
  into the states of real tokens (what packing does, without host syncs or
  shape changes that would stop `torch.compile`).

Both name their layer groups for `trainables.layers`: BERT through
`layer_blocks()` (embeddings, each encoder layer, pooler, classifier), the
LSTM through its module tree (embed, layers.0, layers.1, ..., head).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from trainables.pretrained import from_local_folder

# The default BERT: small enough to train from scratch in a sweep.
BERT_LAYERS, BERT_HIDDEN, BERT_HEADS, BERT_MAX_POSITIONS = 4, 128, 2, 512
LSTM_EMBED, LSTM_HIDDEN, LSTM_LAYERS, LSTM_DROPOUT = 128, 128, 2, 0.1


def _unpack(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token ids, attention mask and segment ids of a (B, 3, L) batch."""
    if x.dim() != 3 or x.shape[1] != 3 or x.is_floating_point():
        raise ValueError(
            f"text models read (batch, 3, length) integer token batches; got {tuple(x.shape)} "
            f"{x.dtype}: choose a text dataset (setting 'dataset')"
        )
    ids, mask, segments = x.unbind(1)
    return ids, mask, segments


class BertClassifier(nn.Module):
    """HF's `BertForSequenceClassification` reading our (B, 3, L) batches, returning logits."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids, mask, segments = _unpack(x)
        return self.net(input_ids=ids, attention_mask=mask, token_type_ids=segments).logits

    def layer_blocks(self) -> Iterator[tuple[str, Iterator[nn.Parameter]]]:
        """Embeddings, every encoder layer, pooler, classifier (input to output)."""
        bert = self.net.bert
        yield "embeddings", bert.embeddings.parameters()
        for index, layer in enumerate(bert.encoder.layer):
            yield f"layer.{index}", layer.parameters()
        if bert.pooler is not None:
            yield "pooler", bert.pooler.parameters()
        yield "classifier", self.net.classifier.parameters()


def bert(*, num_classes: int, vocab_size: int, pretrained: str = "") -> BertClassifier:
    """A small BERT from `BertConfig`, or the one saved in the local folder `pretrained`.

    A pretrained model keeps its own vocabulary; it must cover the dataset's
    token ids (use its tokenizer: setting 'tokenizer', or leave it empty to use
    the `pretrained` folder's). Its classifier is new, drawn from the global
    torch generator like every other model's weights.
    """
    from transformers import BertConfig, BertForSequenceClassification

    if pretrained:
        net, folder = from_local_folder(BertForSequenceClassification, pretrained, num_classes=num_classes)
        if net.config.vocab_size < vocab_size:
            raise ValueError(
                f"setting 'pretrained': the model in {folder} knows {net.config.vocab_size} tokens "
                f"but the tokenizer gives ids up to {vocab_size - 1}; use the model's own tokenizer"
            )
        return BertClassifier(net)
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=BERT_HIDDEN,
        num_hidden_layers=BERT_LAYERS,
        num_attention_heads=BERT_HEADS,
        intermediate_size=4 * BERT_HIDDEN,
        max_position_embeddings=BERT_MAX_POSITIONS,
        num_labels=num_classes,
    )
    return BertClassifier(BertForSequenceClassification(config))


class _Embedding(nn.Module):
    """Token embedding plus a segment embedding (which text of the pair a token is in)."""

    def __init__(self, vocab_size: int, dim: int):
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.segments = nn.Embedding(2, dim)

    def forward(self, ids: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
        return self.tokens(ids) + self.segments(segments)


class _BiLstmLayer(nn.Module):
    """One bidirectional layer: both directions together, the backward one length-aware."""

    def __init__(self, input_size: int, hidden: int):
        super().__init__()
        self.forward_lstm = nn.LSTM(input_size, hidden, batch_first=True)
        self.backward_lstm = nn.LSTM(input_size, hidden, batch_first=True)

    def forward(self, x: torch.Tensor, reverse: torch.Tensor) -> torch.Tensor:
        """`reverse` (B, L, 1) indexes each sequence reversed within its length (an involution)."""
        ahead, _ = self.forward_lstm(x)
        back, _ = self.backward_lstm(x.gather(1, reverse.expand(-1, -1, x.shape[2])))
        back = back.gather(1, reverse.expand(-1, -1, back.shape[2]))
        return torch.cat([ahead, back], dim=2)


class BiLstmClassifier(nn.Module):
    """Embedding, stacked bidirectional LSTM layers, mean over real tokens, linear head."""

    def __init__(
        self, *, num_classes: int, vocab_size: int, embed: int = LSTM_EMBED,
        hidden: int = LSTM_HIDDEN, num_layers: int = LSTM_LAYERS, dropout: float = LSTM_DROPOUT,
    ):
        super().__init__()
        self.embed = _Embedding(vocab_size, embed)
        self.layers = nn.ModuleList(
            _BiLstmLayer(embed if i == 0 else 2 * hidden, hidden) for i in range(num_layers)
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids, mask, segments = _unpack(x)
        lengths = mask.sum(1, keepdim=True)
        positions = torch.arange(ids.shape[1], device=ids.device)[None, :]
        reverse = torch.where(positions < lengths, lengths - 1 - positions, positions)[..., None]
        hidden = self.dropout(self.embed(ids, segments))
        for layer in self.layers:
            hidden = self.dropout(layer(hidden, reverse))
        weights = (mask.to(hidden.dtype) / lengths.clamp_min(1).to(hidden.dtype))[..., None]
        return self.head((hidden * weights).sum(1))


def lstm(*, num_classes: int, vocab_size: int) -> BiLstmClassifier:
    return BiLstmClassifier(num_classes=num_classes, vocab_size=vocab_size)

