"""Learning-rate schedules as pure functions of the step, one rate per layer group.

Like timm's schedulers: `LayerRateSchedule.rates_at(t)` is a pure function, so
plots, tests and resumed runs all see exactly the rates training used. The
only state a run keeps is the step counter (`RateScheduler`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from trainables.curriculum import rise


@dataclass(frozen=True, kw_only=True)
class OrdinarySchedule:
    """The schedule every layer follows once any curriculum or warm-up is over.

    `start_step` is where the decay of `cosine` begins: the end of the warm-up
    for the conventional regime, step k for LeRaC (the curriculum replaces the
    warm-up). `warmup_steps` > 0 adds a linear warm-up from eta0/warmup_steps.
    """

    kind: str
    eta0: float
    total_steps: int
    start_step: int = 0
    warmup_steps: int = 0
    milestone_steps: tuple[int, ...] = ()
    gamma: float = 0.1
    min_lr: float = 0.0

    def rate(self, t: int) -> float:
        if t < self.warmup_steps:
            return self.eta0 * (t + 1) / self.warmup_steps
        if self.kind == "constant":
            return self.eta0
        if self.kind == "step":
            passed = sum(1 for milestone in self.milestone_steps if t >= milestone)
            return self.eta0 * self.gamma**passed
        if self.kind in ("cosine", "warmup_cosine"):
            span = max(1, self.total_steps - self.start_step)
            progress = min(1.0, max(0.0, (t - self.start_step) / span))
            return self.min_lr + (self.eta0 - self.min_lr) * (1 + math.cos(math.pi * progress)) / 2
        raise ValueError(f"unknown schedule {self.kind!r}")


@dataclass(frozen=True, kw_only=True)
class Curriculum:
    """LeRaC's rise: layer j goes from `initial[j]` to eta0 over `k_steps`.

    With `update_every` > 1 the rate moves in stairs, as in the official code,
    which raised rates a few times per epoch rather than every iteration.
    """

    initial: tuple[float, ...]
    k_steps: int
    shape: str
    update_every: int = 1

    def rate(self, layer: int, t: int, target: float) -> float:
        stepped_t = (t // self.update_every) * self.update_every
        return rise(self.shape, stepped_t, self.k_steps, self.initial[layer], target)


@dataclass(frozen=True, kw_only=True)
class LayerRateSchedule:
    """The rate of every layer group at any step.

    During a curriculum (t < k) layer j follows its rise toward eta0; from then
    on every layer follows the ordinary schedule. `multipliers` scale each
    group's rate (multirate gives its fast group h/m).
    """

    num_layers: int
    ordinary: OrdinarySchedule
    curriculum: Curriculum | None = None
    multipliers: tuple[float, ...] | None = None

    def in_curriculum(self, t: int) -> bool:
        """True at steps where layers may follow a curriculum instead of the ordinary schedule."""
        return self.curriculum is not None and t < self.curriculum.k_steps

    def rates_at(self, t: int) -> list[float]:
        if self.curriculum is not None and t < self.curriculum.k_steps:
            rates = [
                self.curriculum.rate(j, t, self.ordinary.eta0) for j in range(self.num_layers)
            ]
        else:
            rates = [self.ordinary.rate(t)] * self.num_layers
        if self.multipliers is not None:
            rates = [rate * scale for rate, scale in zip(rates, self.multipliers, strict=True)]
        return rates


class RateScheduler:
    """Applies a `LayerRateSchedule` to an optimizer's per-layer param groups.

    Call `apply()` before each optimizer step; `advance()` after it. The step
    counter is the whole state, so a restored scheduler continues exactly.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: LayerRateSchedule):
        self.optimizer = optimizer
        self.schedule = schedule
        self.step_count = 0

    def current_rates(self) -> list[float]:
        return self.schedule.rates_at(self.step_count)

    def apply(self) -> None:
        for group, rate in zip(self.optimizer.param_groups, self.current_rates(), strict=True):
            group["lr"] = rate

    def advance(self) -> None:
        self.step_count += 1

    def state_dict(self) -> dict[str, int]:
        return {"step_count": self.step_count}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.step_count = int(state["step_count"])
