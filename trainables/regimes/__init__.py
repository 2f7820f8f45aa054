"""The training regimes, by name. Each is one module with one `Regime` subclass; their settings
and names are `trainables.regime_settings`, which the tests hold to the same names and order."""

from __future__ import annotations

from trainables.regime_settings import REGIME_NAMES, settings_class
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


def regime_class(name: str) -> type[Regime]:
    """The regime class registered under `name`; ValueError naming it if unknown."""
    settings_class(name)  # the one check of the name (`trainables.regime_settings` lists the regimes)
    return REGIMES[name]


__all__ = ["REGIMES", "REGIME_NAMES", "Regime", "RegimeContext", "regime_class"]
