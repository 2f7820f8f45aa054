"""The sweep's command (`python search/lerac_sweep.py`, `lerac-sweep`): Ray starts first.

A sweep on this machine needs a local Ray runtime, and starting one (2.5-4 s)
does not need the sweep's own modules. So the runtime starts on a thread
(`search.local_runtime.EarlyStart`) before the driver imports Ray Tune, MLflow
and SciPy and checks its input (never torch: that is the trials'), and
`search.sweep` uses it. Bad
input is still refused in one line, exit 2, after the runtime is ended.

Only a command that cannot name a cluster starts early: --address, --config and
--resume may each point the sweep at one, and --help and --version start
nothing; those run as before, with Ray started (or joined) by `search.sweep`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import NoReturn

from search.local_runtime import EarlyStart
from search.tune_environment import set_sweep_environment
from trainables.cli import exit_without_teardown

# Flags after which the sweep may not want a local runtime (argparse also takes any
# unambiguous prefix of a flag, so a prefix of these counts too).
MAY_NOT_START_LOCALLY = ("address", "config", "resume", "help", "version")


def starts_local_runtime(argv: Sequence[str]) -> bool:
    """Whether these arguments surely mean a sweep on a local runtime (bad input aside)."""
    for token in argv:
        if token == "--":
            break
        if token.startswith("-") and not token.startswith("--") and "h" in token[1:]:
            return False  # -h, or -h among short flags
        name = token[2:].split("=", 1)[0] if token.startswith("--") else ""
        if name and any(flag.startswith(name) for flag in MAY_NOT_START_LOCALLY):
            return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sweep command (see `search.lerac_sweep.main`) with Ray starting meanwhile."""
    argv = list(sys.argv[1:] if argv is None else argv)
    early = None
    if starts_local_runtime(argv):
        set_sweep_environment()
        early = EarlyStart.start()
    try:
        from search.lerac_sweep import main as sweep_main

        return sweep_main(argv, early=early)
    finally:
        if early is not None:
            early.stop()  # done already, unless the sweep refused its input before using it


def command() -> NoReturn:
    """`lerac-sweep` and `python search/lerac_sweep.py`: `main`, then exit without the
    interpreter's teardown once the sweep is over and Ray's runtime is stopped."""
    status = main()
    exit_without_teardown(status)
