"""When a run counts as diverged: the rule the Trainer, the CLI and the sweep share.

NaN or infinite is not enough. With a high rate the logits can grow without
bound while the loss stays finite (lr=50 on digits reached 1e15 and never NaN),
and such a run would otherwise finish, be tagged `completed` and compete for the
win. Cross-entropy of a uniform guess over C classes is ln(C), and a network
starts near it; a sane run's mean epoch loss stays at or below it, and even a
badly tuned one that learns nothing stays within a few times it. A mean loss
above 10 ln(C) + 10 means the model is confidently and persistently wrong, that
is, its weights are blowing up. The margin is wide on purpose: a false alarm
stops a trial that might still have won, a miss only costs the rest of its epochs.
The `+ 10` keeps the limit meaningful for few classes (ln 2 = 0.69).
"""

from __future__ import annotations

import math


def loss_limit(num_classes: int) -> float:
    """The highest mean training loss (cross-entropy) that still counts as training."""
    return 10 * math.log(num_classes) + 10


def diverged(train_loss: float, num_classes: int) -> bool:
    """True when the loss is NaN, infinite or above `loss_limit(num_classes)`."""
    return not math.isfinite(train_loss) or train_loss > loss_limit(num_classes)
