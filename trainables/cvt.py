"""CvT-13 (Wu et al., ICCV 2021) from HF transformers' `CvtConfig`, randomly initialised.

`CvtConfig()`'s defaults are CvT-13: three stages of 1, 2 and 10 blocks with
convolutional token embeddings (7x7 stride 4, then 3x3 stride 2 twice) and
depthwise-convolutional attention projections; the class token joins in stage
3. It has no absolute position embeddings, so any input size works down to 3
pixels a side (the first embedding's 7x7 kernel with padding 2); smaller
inputs (MNIST-1D's 1x40) are zero-padded to 3. Measured: 8x8 digits leave a
2x2 token grid after stage 1 and 1x1 after stages 2 and 3; 32x32 CIFAR 8x8,
4x4, 2x2.

Layer groups follow the official LeRaC CvT code: one group per block, with
each stage's token embedding (and stage 3's class token) joining the stage's
first block, which the official code gives the same rate; then the head (final
layer norm and classifier). transformers is imported only when a CvT is built.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import chain

import torch
import torch.nn.functional as F
from torch import nn

from trainables.pretrained import from_local_folder

MIN_SIDE = 3


class CvtClassifier(nn.Module):
    """HF's `CvtForImageClassification` on (B, C, H, W) images of any size >= 1 pixel."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[2:]
        if height < MIN_SIDE or width < MIN_SIDE:
            pad_h, pad_w = max(0, MIN_SIDE - height), max(0, MIN_SIDE - width)
            x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        return self.net(pixel_values=x).logits

    def layer_blocks(self) -> Iterator[tuple[str, Iterator[nn.Parameter]]]:
        """`stage<s>.<b>` for every block (the first with its stage's embedding), then `head`."""
        for s, stage in enumerate(self.net.cvt.encoder.stages):
            for b, block in enumerate(stage.layers):
                if b == 0:
                    own = [stage.cls_token] if getattr(stage, "cls_token", None) is not None else []
                    yield f"stage{s}.{b}", chain(stage.embedding.parameters(), own, block.parameters())
                else:
                    yield f"stage{s}.{b}", block.parameters()
        yield "head", chain(self.net.layernorm.parameters(), self.net.classifier.parameters())


def cvt13(*, num_classes: int, in_channels: int, pretrained: str = "") -> CvtClassifier:
    """CvT-13 for `in_channels`-channel images; `pretrained`: a local folder (3 channels)."""
    from transformers import CvtConfig, CvtForImageClassification

    if pretrained:
        net, folder = from_local_folder(CvtForImageClassification, pretrained, num_classes=num_classes)
        if net.config.num_channels != in_channels:
            raise ValueError(
                f"setting 'pretrained': the model in {folder} reads {net.config.num_channels}-channel "
                f"images but the dataset has {in_channels}"
            )
        return CvtClassifier(net)
    return CvtClassifier(CvtForImageClassification(CvtConfig(num_channels=in_channels, num_labels=num_classes)))
