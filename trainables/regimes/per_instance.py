"""Per-instance learning rates: a learned rate multiplier for every training example.

Example i carries a logit a_i; within a batch its loss weight is
B * softmax(a)_i (mean 1), and its rate multiplier is exp(a_i). The a_i are
learned by their own optimizer from the hypergradient of a held-out batch's
loss after a one-step look-ahead (as in learning-to-reweight): examples whose
gradient disagrees with the held-out batch's (typically mislabelled ones) get
lower rates. Held-out batches come from the dataset's trusted examples
(`Dataset.trusted`): with a noisy held-out batch the signal is weak (measured
on digits with 30% flipped labels: AUC 0.64 against 0.95 with clean batches). The hypergradient is normalised per batch, so `instance_lr` is the
typical change of a_i per visit, whatever the loss scale.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from trainables.regime_settings import PerInstanceSettings
from trainables.regimes.base import Regime, RegimeContext


def _twice_differentiable() -> contextlib.AbstractContextManager:
    """Kernels whose backward can itself be differentiated, for the look-ahead's double backward.

    The fused attention kernels (flash, memory-efficient) and cuDNN's LSTM have
    no double backward; their plain counterparts do. Only a GPU picks them.
    """
    stack = contextlib.ExitStack()
    stack.enter_context(sdpa_kernel(SDPBackend.MATH))
    stack.enter_context(torch.backends.cudnn.flags(enabled=False))
    return stack


class PerInstance(Regime):
    name = "per_instance"
    Settings = PerInstanceSettings

    def __init__(self, settings: PerInstanceSettings, context: RegimeContext):
        super().__init__(settings, context)
        self.logits = torch.zeros(len(context.data.train), device=context.device)
        # Held-out draws on the training device: no host-device copy per step.
        self.meta_draws = torch.Generator(device=context.device)
        self.meta_draws.manual_seed(context.train.seed + 2)
        self.trusted = context.data.trusted.nonzero().squeeze(1)
        self.named_params = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        self.group_of = {id(p): i for i, g in enumerate(context.groups) for p in g.params}

    def instance_rates(self) -> torch.Tensor:
        """Each training example's current rate multiplier exp(a_i)."""
        return self.logits.exp()

    def _per_example_loss(self, params: dict, buffers: dict, x: torch.Tensor, y: torch.Tensor):
        with self.context.autocast(), _twice_differentiable():
            logits = functional_call(self.model, (params, buffers), (x,))
        return F.cross_entropy(logits.float(), y, reduction="none")

    def _hypergradient(self, losses: torch.Tensor, batch_logits: torch.Tensor) -> torch.Tensor:
        """d(held-out loss after a one-step look-ahead) / d(batch logits)."""
        weights = torch.softmax(batch_logits, 0) * len(batch_logits)
        names = [name for name, _ in self.named_params]
        params = [p for _, p in self.named_params]
        grads = torch.autograd.grad((weights * losses).mean(), params, create_graph=True)
        rates = self.scheduler.current_rates()
        lookahead = {
            name: p - rates[self.group_of[id(p)]] * g
            for name, p, g in zip(names, params, grads, strict=True)
        }
        buffers = {name: b.clone() for name, b in self.model.named_buffers()}
        train = self.context.data.train
        draws = torch.randint(
            len(self.trusted), (self.settings.meta_batch_size,), generator=self.meta_draws,
            device=self.context.device,
        )
        meta = self.trusted[draws]
        meta_loss = self._per_example_loss(lookahead, buffers, train.x[meta], train.y[meta]).mean()
        (hypergradient,) = torch.autograd.grad(meta_loss, batch_logits, retain_graph=True)
        return hypergradient

    def train_step(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        self.scheduler.apply()
        self.optimizer.zero_grad(set_to_none=True)
        losses = self._per_example_loss(dict(self.named_params), {}, x, y)
        batch_logits = self.logits[index].clone().requires_grad_(True)
        hypergradient = self._hypergradient(losses, batch_logits)
        scale = hypergradient.abs().mean().clamp_min(1e-12)
        self.logits[index] -= self.settings.instance_lr * hypergradient / scale
        weights = torch.softmax(self.logits[index], 0) * len(index)
        loss = (weights * losses).mean()
        loss.backward()
        self.optimizer_step()
        self.scheduler.advance()
        return losses.mean().detach()

    def extra_state(self) -> dict[str, Any]:
        return {"logits": self.logits.clone(), "meta_draws": self.meta_draws.get_state()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.logits.copy_(state["logits"])
        self.meta_draws.set_state(state["meta_draws"])
