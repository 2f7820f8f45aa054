"""CBS, Curriculum by Smoothing: a fixed Gaussian blur after every 3x3 conv.

The blur (kernel 3, depthwise, not trained) sits between each 3x3 convolution
and what follows it (its BatchNorm); 1x1 shortcuts and the head are left alone.
sigma starts at `cbs_sigma` and is multiplied by `cbs_decay` every `cbs_every`
epochs; the blur is never removed, so it costs compute for all of training.
It is attached with forward hooks and its kernel is a non-persistent buffer of
each blurred conv, so the model's parameters and state_dict are unchanged.

Compiled models: the hooks are registered when the regime is built, before the
Trainer compiles, and the Trainer makes torch.compile guard on hooks, so a
compiled graph of a hook-less run (conventional, in a reused actor) is never
replayed for CBS. One module-level hook function and kernels held as buffers
(inputs to the graph, updated in place each epoch) let every CBS run in a
process share one compiled graph instead of recompiling per run or per sigma.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainables.regime_settings import CbsSettings
from trainables.regimes.base import Regime, RegimeContext


def gaussian_kernel3(sigma: float) -> torch.Tensor:
    """A normalised 3x3 Gaussian kernel."""
    offsets = torch.tensor([-1.0, 0.0, 1.0])
    one_d = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = torch.outer(one_d, one_d)
    return kernel / kernel.sum()


def blurred_convs(model: nn.Module) -> list[nn.Conv2d]:
    """The 3x3 convolutions that CBS blurs (1x1 shortcuts are excluded)."""
    return [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]


KERNEL_BUFFER = "cbs_kernel"


def blur_output(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
    """Forward hook: the conv's output blurred depthwise by the kernel buffer the conv carries.

    No dtype cast: under autocast the depthwise conv casts to bf16 itself.
    """
    channels = output.shape[1]
    weight = getattr(module, KERNEL_BUFFER).expand(channels, 1, 3, 3)
    return F.conv2d(output, weight, padding=1, groups=channels)


class Cbs(Regime):
    name = "cbs"
    Settings = CbsSettings

    def __init__(self, settings: CbsSettings, context: RegimeContext):
        super().__init__(settings, context)
        self.convs = blurred_convs(self.model)
        if not self.convs:
            raise ValueError(f"CBS needs a model with 3x3 convolutions; '{context.train.model}' has none")
        kernel = gaussian_kernel3(settings.cbs_sigma).to(context.device)
        for conv in self.convs:
            conv.register_buffer(KERNEL_BUFFER, kernel.clone().view(1, 1, 3, 3), persistent=False)
            conv.register_forward_hook(blur_output)

    def sigma(self, epoch: int) -> float:
        return self.settings.cbs_sigma * self.settings.cbs_decay ** (epoch // self.settings.cbs_every)

    @torch.no_grad()
    def start_epoch(self, epoch: int) -> None:
        kernel = gaussian_kernel3(self.sigma(epoch)).to(self.context.device).view(1, 1, 3, 3)
        for conv in self.convs:
            getattr(conv, KERNEL_BUFFER).copy_(kernel)
