"""LeRaC's curriculum math as pure functions (REGIMES.md is the contract).

Layer j (0 = nearest the input) starts at `eta_j(0) = max(eta0 * b**j, eta_min)`
and rises to eta0 during the first k steps along one of four shapes. Every
shape starts at `start`, reaches `target` exactly at t = k, is monotone and
never overshoots.
"""

from __future__ import annotations

import math

SHAPES = ("exp", "linear", "log", "cosine")
# eq9: the paper's rise, all layers reach eta0 together at k; stepped: the official code's.
CURRICULUM_RULES = ("eq9", "stepped")


def initial_rates(num_layers: int, eta0: float, decay_base: float, eta_min: float) -> list[float]:
    """Initial rate of each layer: eta0 * decay_base**j, floored at eta_min (never above eta0)."""
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1; got {num_layers}")
    if not 0 < decay_base <= 1:
        raise ValueError(f"decay_base must be in (0, 1]; got {decay_base}")
    if eta0 <= 0:
        raise ValueError(f"eta0 must be > 0; got {eta0}")
    if eta_min < 0:
        raise ValueError(f"eta_min must be >= 0; got {eta_min}")
    return [min(eta0, max(eta0 * decay_base**j, eta_min)) for j in range(num_layers)]


def lowered_initial_rates(
    num_layers: int, eta0: float, decay_base: float, eta_min: float, *, lowered: int
) -> list[float]:
    """Initial rates when only the deepest `lowered` groups take part in the curriculum.

    The others start (and stay) at eta0; the lowered ones start at eta0 * b**i,
    i = 1..lowered counted from the first lowered group, floored at eta_min.
    `lowered` = 0 or >= num_layers: every group takes part (`initial_rates`).
    The official LeRaC BERT code lowers only the pooler and the classifier.
    """
    if lowered == 0 or lowered >= num_layers:
        return initial_rates(num_layers, eta0, decay_base, eta_min)
    return [eta0] * (num_layers - lowered) + initial_rates(lowered + 1, eta0, decay_base, eta_min)[1:]


def _progress(shape: str, t: float, k: float) -> float:
    """Fraction of the way from start to target at step t (0 at t=0, 1 at t=k)."""
    if shape == "linear":
        return t / k
    if shape == "log":
        return math.log1p(t) / math.log1p(k)
    if shape == "cosine":
        return (1.0 - math.cos(math.pi * t / k)) / 2.0
    raise ValueError(f"unknown rise shape {shape!r}; known: {', '.join(SHAPES)}")


def rise(shape: str, t: float, k: float, start: float, target: float) -> float:
    """Rate at step t of a rise from `start` (t=0) to `target` (t>=k).

    `exp` is the paper's Eq. 9, `start * c**((t/k) * log_c(target/start))`; the
    base c cancels, leaving a geometric interpolation. A zero start can only
    rise geometrically from zero, so it stays at zero until t = k.
    """
    if shape not in SHAPES:
        raise ValueError(f"unknown rise shape {shape!r}; known: {', '.join(SHAPES)}")
    if t >= k:
        return target
    if t <= 0:
        return start
    if shape == "exp":
        if start <= 0:
            return start
        return start * (target / start) ** (t / k)
    return start + (target - start) * _progress(shape, t, k)
