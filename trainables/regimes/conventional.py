"""The conventional regime: every layer on the ordinary schedule (the baseline)."""

from trainables.regimes.base import Regime


class Conventional(Regime):
    """Plain training: the base class already is the conventional regime."""

    name = "conventional"
