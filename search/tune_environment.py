"""The environment variables a sweep sets for Ray Tune and for a local runtime it starts.

Set in one place because a runtime can be started before the sweep's own modules
are imported (`search.launch`): Ray's processes read their settings from the
environment they are started in, so a runtime started early must see the same
values as one started by `search.sweep`.
"""

from __future__ import annotations

import os

# How long a trial's epochs may be buffered in its actor before Tune sees them, and how
# many at most: short epochs arrive a rung at a time, long ones one by one.
RESULT_BUFFER_S = 2.0
RESULT_BUFFER_EPOCHS = 100


def set_sweep_environment() -> None:
    """Set (without overriding the user's own) what the sweep needs from Ray and Ray Tune."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # keep the compact CLIReporter table
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Tune's CSV and TensorBoard loggers cost the driver a tenth of a core during the sweep,
    # taken from the trials beside it; MLflow holds every metric and `result.json` (the JSON
    # logger, added in `search.sweep.build_tuner`) is what a resume reads.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # A trial's actor keeps training for up to RESULT_BUFFER_S before Tune sees its epochs,
    # instead of idling through one driver round trip per epoch. Tune's buffer ends at every
    # result that asks for a checkpoint (ASHA's rungs, the last epoch) and at `done`, so
    # ASHA still decides at each rung before the trial trains past it, and nothing it stops
    # trains an epoch more. Epochs longer than RESULT_BUFFER_S are reported one by one.
    os.environ.setdefault("TUNE_RESULT_BUFFER_LENGTH", str(RESULT_BUFFER_EPOCHS))
    os.environ.setdefault("TUNE_RESULT_BUFFER_MIN_TIME_S", str(RESULT_BUFFER_S))
    # Ray prestarts idle workers for the first driver, but Tune's trial actors never use
    # them (Tune gives its actors their own runtime env): two Python start-ups, about
    # 2 CPU-seconds, taken from the start-up of a local runtime for nothing.
    os.environ.setdefault("RAY_prestart_worker_first_driver", "0")
