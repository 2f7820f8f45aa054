"""SpecAugment-style frequency and time masking of a batch of spectrograms, on its device.

Park et al. (Interspeech 2019) mask `freq_masks` bands of up to `freq_width`
mel bins and `time_masks` spans of up to `time_width` frames per example. The
masks are built for the whole batch at once by comparing index ranges, so the
training loop runs no per-example Python; widths and starts are drawn from the
Trainer's generator, so a run (and a restored checkpoint) is reproducible.
Masked cells are set to 0, the mean of the normalised spectrograms.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True, kw_only=True)
class SpectrogramMasking:
    """A dataset's masking policy: how many masks per example and their largest widths."""

    freq_masks: int
    freq_width: int
    time_masks: int
    time_width: int

    def __call__(self, x: torch.Tensor, *, generator: torch.Generator) -> torch.Tensor:
        """`x` (B, C, mels, frames) with this policy's masks drawn afresh per example."""
        batch, _, mels, frames = x.shape
        keep = _bands(batch, mels, self.freq_masks, self.freq_width, generator, x.device)[:, :, None]
        keep = keep & _bands(batch, frames, self.time_masks, self.time_width, generator, x.device)[:, None, :]
        return x * keep[:, None].to(x.dtype)


def _bands(
    batch: int, size: int, count: int, max_width: int, generator: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    """(batch, size) bool, False inside `count` random spans of width 0..max_width per row.

    Each span's width is uniform in [0, max_width] (capped by `size`) and its
    start uniform over the positions where it fits, as in SpecAugment. The
    random numbers are drawn on the batch's device by its generator (the
    Trainer's lives there): no host-device copy.
    """
    if count == 0 or max_width == 0:
        return torch.ones(batch, size, dtype=torch.bool, device=device)
    widths = torch.randint(0, min(max_width, size) + 1, (batch, count), generator=generator, device=device)
    starts = (torch.rand(batch, count, generator=generator, device=device) * (size - widths + 1)).long()
    positions = torch.arange(size, device=device)[None, None, :]
    inside = (positions >= starts[..., None]) & (positions < (starts + widths)[..., None])
    return ~inside.any(dim=1)
