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
    warm-up), so "LeRaC vs a warm-up of the same length" differs only in the
    per-layer rise. `warmup_steps` > 0 adds a linear warm-up from
    eta0/warmup_steps, whatever the kind.
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
        if self.kind == "cosine":
            span = max(1, self.total_steps - self.start_step)
            progress = min(1.0, max(0.0, (t - self.start_step) / span))
            return self.min_lr + (self.eta0 - self.min_lr) * (1 + math.cos(math.pi * progress)) / 2
        raise ValueError(f"unknown schedule {self.kind!r}")


@dataclass(frozen=True, kw_only=True)
class Curriculum:
    """LeRaC's rise: layer j goes from `initial[j]` toward eta0 during the first `k_steps`.

    Rules (REGIMES.md):
    - `eq9`, the paper's: every layer follows `shape` and all reach eta0 together at k.
    - `stepped`, the official code's: at each update every layer's rate is
      multiplied by `factor` (10 there) until it reaches eta0, so layers arrive
      at different times, deep ones last.
    Rates change every `update_steps` steps (1 = every iteration; the official
    code updated once, twice or four times per epoch).
    """

    initial: tuple[float, ...]
    k_steps: int
    shape: str = "exp"
    rule: str = "eq9"
    update_steps: int = 1
    factor: float = 10.0

    def rate(self, layer: int, t: int, target: float) -> float:
        updates = t // self.update_steps
        if self.rule == "stepped":
            return min(target, self.initial[layer] * self.factor**updates)
        return rise(self.shape, updates * self.update_steps, self.k_steps, self.initial[layer], target)


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
        """Whether step t is inside a curriculum (layers may differ from the ordinary rate)."""
        return self.curriculum is not None and t < self.curriculum.k_steps

    def rates_at(self, t: int) -> list[float]:
        if self.in_curriculum(t):
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
