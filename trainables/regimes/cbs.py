"""CBS, Curriculum by Smoothing: a fixed Gaussian blur after every 3x3 conv.

The blur (kernel 3, depthwise, not trained) sits between each 3x3 convolution
and what follows it (its BatchNorm); 1x1 shortcuts and the head are left alone.
sigma starts at `cbs_sigma` and is multiplied by `cbs_decay` every `cbs_every`
epochs; the blur is never removed, so it costs compute for all of training.
It is attached with forward hooks, so the model's parameters and state_dict
are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from trainables.config import MAX_EPOCHS
from trainables.regimes.base import Regime, RegimeContext
from trainables.settings import setting


@dataclass(frozen=True, kw_only=True)
class CbsSettings:
    # Below 0.01 the 3x3 kernel is the identity (far below, sigma**2 underflows and the kernel is
    # 0/0 = NaN); above 100 it is a box filter within 0.01%.
    cbs_sigma: float = setting(1.0, "initial blur sigma", check=lambda v: 0.01 <= v <= 100, rule="in [0.01, 100]")
    cbs_decay: float = setting(
        0.9, "sigma is multiplied by this every cbs_every epochs",
        check=lambda v: 0 < v <= 1, rule="in (0, 1]",
    )
    cbs_every: int = setting(
        5, "epochs between sigma decays", check=lambda v: 1 <= v <= MAX_EPOCHS, rule=f"in [1, {MAX_EPOCHS}]"
    )


def gaussian_kernel3(sigma: float) -> torch.Tensor:
    """A normalised 3x3 Gaussian kernel."""
    offsets = torch.tensor([-1.0, 0.0, 1.0])
    one_d = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = torch.outer(one_d, one_d)
    return kernel / kernel.sum()


def blurred_convs(model: nn.Module) -> list[nn.Conv2d]:
    """The 3x3 convolutions that CBS blurs (1x1 shortcuts are excluded)."""
    return [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]


class Cbs(Regime):
    name = "cbs"
    Settings = CbsSettings

    def __init__(self, settings: CbsSettings, context: RegimeContext):
        super().__init__(settings, context)
        self.kernel = gaussian_kernel3(settings.cbs_sigma).to(context.device)
        self.hooks = [conv.register_forward_hook(self._blur) for conv in blurred_convs(self.model)]
        if not self.hooks:
            raise ValueError(f"CBS needs a model with 3x3 convolutions; '{context.train.model}' has none")

    def sigma(self, epoch: int) -> float:
        return self.settings.cbs_sigma * self.settings.cbs_decay ** (epoch // self.settings.cbs_every)

    def start_epoch(self, epoch: int) -> None:
        self.kernel = gaussian_kernel3(self.sigma(epoch)).to(self.context.device)

    def _blur(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        channels = output.shape[1]
        weight = self.kernel.to(output.dtype).expand(channels, 1, 3, 3)
        return F.conv2d(output, weight, padding=1, groups=channels)


