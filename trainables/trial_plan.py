"""What a sweep asks of one trial beyond its run config: when to checkpoint and to test.

The sweep passes these under the reserved config key `"sweep"` (a dict; keys
this module does not read, such as "stage", are ignored), so the run config
itself stays the flat dict `RunConfig` validates. A checkpoint of ResNet-18
(about 85 MiB with momentum) costs a large share of a fast GPU epoch, and test
accuracy is only reported, never used to choose: both are paid only where the
sweep needs them, at ASHA's rungs (a trial stopped there keeps its checkpoint
and has a test accuracy) and at the end of training.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

SWEEP_KEY = "sweep"


@dataclass(frozen=True, kw_only=True)
class TrialPlan:
    """1-based epochs at which to checkpoint and to measure test accuracy (beyond the last)."""

    checkpoint_epochs: frozenset[int] = frozenset()
    test_epochs: frozenset[int] = frozenset()

    @classmethod
    def split(cls, config: Mapping[str, Any]) -> tuple[dict[str, Any], TrialPlan]:
        """The run config without the `"sweep"` key, and the plan that key holds.

        Without the key (direct use) the plan is empty: checkpoint and test at the end only.
        """
        run_config = {key: value for key, value in config.items() if key != SWEEP_KEY}
        sweep = config.get(SWEEP_KEY) or {}
        if not isinstance(sweep, Mapping):
            raise ValueError(f"config key '{SWEEP_KEY}' must be a dict, got {sweep!r}")
        return run_config, cls(
            checkpoint_epochs=_epochs(sweep, "checkpoint_epochs"),
            test_epochs=_epochs(sweep, "test_epochs"),
        )

    def checkpoint_due(self, epoch: int, *, last: bool) -> bool:
        """Whether the trial should checkpoint after `epoch` (the last epoch always does)."""
        return last or epoch in self.checkpoint_epochs

    def test_due(self, epoch: int) -> bool:
        """Whether the sweep wants test accuracy after `epoch` (the Trainer adds the last)."""
        return epoch in self.test_epochs


def _epochs(sweep: Mapping[str, Any], key: str) -> frozenset[int]:
    values: Iterable[Any] = sweep.get(key, ())
    try:
        epochs = frozenset(int(value) for value in values)
    except (TypeError, ValueError):
        raise ValueError(f"'{SWEEP_KEY}.{key}' must be a list of epochs, got {values!r}") from None
    if any(epoch < 1 for epoch in epochs):
        raise ValueError(f"'{SWEEP_KEY}.{key}' holds 1-based epochs, got {sorted(epochs)}")
    return epochs
