"""A small separable transformer for spectrograms, after SepTr (Ristea, Ionescu, Khan;
Interspeech 2022).

SepTr's idea: instead of attending over all (frequency, time) tokens at once,
each block runs one transformer over the tokens of the same frequency bin
(along time) and then one over the tokens of the same time frame (along
frequency), which costs O(F*T*(F+T)) instead of O((F*T)^2). A class token is
prepended to every sequence; its copies are averaged between the two
transformers and at the end of the block, and the final class token is
classified.

This is our own version, not the official code: tokens are non-overlapping
`patch` x `patch` patches embedded by a strided convolution (the official
model average-pools the input and projects each pixel), and learned
frequency and time position embeddings are added once, at the embedding,
sliced to the input's token grid (so any input up to `max_tokens` works; the
official model sizes them to one input size in every block). Inputs are
zero-padded to a multiple of the patch, so 8x8 digits and 1x40 MNIST-1D work.
The transformer layers are PyTorch's `nn.TransformerEncoderLayer` (pre-norm,
GELU). Layer groups for LeRaC: `embed`, `blocks.0`, ..., `head`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SEPTR_DIM, SEPTR_DEPTH, SEPTR_HEADS, SEPTR_MLP, SEPTR_PATCH = 128, 3, 4, 256, 4
# Token grid sizes the position embeddings cover: 512 mel bins, 4096 frames (41 s at 10 ms).
MAX_TOKENS = (128, 1024)


def _encoder_layer(dim: int, heads: int, mlp: int, dropout: float) -> nn.TransformerEncoderLayer:
    return nn.TransformerEncoderLayer(
        dim, heads, dim_feedforward=mlp, dropout=dropout, activation="gelu",
        batch_first=True, norm_first=True,
    )


class PatchEmbedding(nn.Module):
    """Patches to tokens (B, F, T, dim), with position embeddings; and the initial class token."""

    def __init__(self, in_channels: int, dim: int, patch: int, max_tokens: tuple[int, int]):
        super().__init__()
        self.patch = patch
        self.project = nn.Conv2d(in_channels, dim, kernel_size=patch, stride=patch)
        self.freq_position = nn.Parameter(torch.zeros(max_tokens[0], dim))
        self.time_position = nn.Parameter(torch.zeros(max_tokens[1], dim))
        self.cls_token = nn.Parameter(torch.zeros(dim))
        for parameter in (self.freq_position, self.time_position, self.cls_token):
            nn.init.trunc_normal_(parameter, std=0.02)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        height, width = x.shape[2:]
        pad_h, pad_w = -height % self.patch, -width % self.patch
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        tokens = self.project(x).permute(0, 2, 3, 1)  # (B, F, T, dim)
        freq, time = tokens.shape[1:3]
        if freq > len(self.freq_position) or time > len(self.time_position):
            raise ValueError(
                f"septr: a {height}x{width} input gives a {freq}x{time} token grid; at most "
                f"{len(self.freq_position)}x{len(self.time_position)} is supported"
            )
        tokens = tokens + self.freq_position[:freq, None] + self.time_position[None, :time]
        return tokens, self.cls_token.expand(len(x), -1)


class SeparableBlock(nn.Module):
    """Attention along time within each frequency bin, then along frequency within each frame."""

    def __init__(self, dim: int, heads: int, mlp: int, dropout: float):
        super().__init__()
        self.along_time = _encoder_layer(dim, heads, mlp, dropout)
        self.along_frequency = _encoder_layer(dim, heads, mlp, dropout)

    @staticmethod
    def _with_cls(tokens: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        """(B, S, N, dim) sequences with the class token prepended: (B*S, N+1, dim)."""
        batch, sequences, _, dim = tokens.shape
        heads = cls[:, None, None, :].expand(batch, sequences, 1, dim)
        return torch.cat([heads, tokens], dim=2).flatten(0, 1)

    def forward(self, tokens: torch.Tensor, cls: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, freq, time, dim = tokens.shape
        out = self.along_time(self._with_cls(tokens, cls)).view(batch, freq, time + 1, dim)
        cls, tokens = out[:, :, 0].mean(1), out[:, :, 1:].transpose(1, 2)  # tokens: (B, T, F, dim)
        out = self.along_frequency(self._with_cls(tokens, cls)).view(batch, time, freq + 1, dim)
        return out[:, :, 1:].transpose(1, 2), out[:, :, 0].mean(1)


class SepTr(nn.Module):
    """Patch embedding, `depth` separable blocks, a normalised linear head on the class token."""

    def __init__(
        self, *, num_classes: int, in_channels: int, dim: int = SEPTR_DIM, depth: int = SEPTR_DEPTH,
        heads: int = SEPTR_HEADS, mlp: int = SEPTR_MLP, patch: int = SEPTR_PATCH,
        dropout: float = 0.0, max_tokens: tuple[int, int] = MAX_TOKENS,
    ):
        super().__init__()
        self.embed = PatchEmbedding(in_channels, dim, patch, max_tokens)
        self.blocks = nn.ModuleList(SeparableBlock(dim, heads, mlp, dropout) for _ in range(depth))
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or not x.is_floating_point():
            raise ValueError(f"septr reads (batch, channels, mels, frames) spectrograms; got {tuple(x.shape)}")
        tokens, cls = self.embed(x)
        for block in self.blocks:
            tokens, cls = block(tokens, cls)
        return self.head(cls)


def septr(*, num_classes: int, in_channels: int) -> SepTr:
    return SepTr(num_classes=num_classes, in_channels=in_channels)
