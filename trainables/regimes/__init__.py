"""The training regimes, by name. Each is one module with one `Regime` subclass."""

from __future__ import annotations

from trainables.regimes.base import Regime, RegimeContext
from trainables.regimes.cbs import Cbs
from trainables.regimes.conventional import Conventional
from trainables.regimes.leap import Leap
from trainables.regimes.lerac import Lerac
from trainables.regimes.multirate import Multirate
from trainables.regimes.per_instance import PerInstance

REGIMES: dict[str, type[Regime]] = {
    regime.name: regime for regime in (Conventional, Lerac, Cbs, Leap, Multirate, PerInstance)
}
REGIME_NAMES: tuple[str, ...] = tuple(REGIMES)


def regime_class(name: str) -> type[Regime]:
    """The regime class registered under `name`; ValueError naming it if unknown."""
    if not isinstance(name, str):  # e.g. a YAML list, which is not even hashable
        raise ValueError(
            f"setting 'regime' must be one regime name, got {name!r}; known regimes: {', '.join(REGIME_NAMES)}"
        )
    if name not in REGIMES:
        raise ValueError(f"unknown regime {name!r}; known regimes: {', '.join(REGIME_NAMES)}")
    return REGIMES[name]


__all__ = ["REGIMES", "REGIME_NAMES", "Regime", "RegimeContext", "regime_class"]
