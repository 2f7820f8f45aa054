"""Which code produced a result: recorded with every sweep, checked on replay.

An installed wheel has no git checkout beside it, so its build step (setup.py)
writes the commit it was built from into `trainables/_build_info.py`; that
file wins, since a wheel installed into a virtualenv that sits inside some
other checkout would otherwise report that checkout's commit. A source
checkout (an editable install) has no such file and reads the commit live,
with '+dirty' for uncommitted changes. Without either: the package version.
"""

from __future__ import annotations

import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PACKAGE = "lerac-search"


def package_version() -> str:
    try:
        return version(PACKAGE)
    except PackageNotFoundError:
        return "unknown"


def built_commit() -> str | None:
    """The commit recorded when this copy was built as a wheel, if it was."""
    try:
        from trainables import _build_info  # written by setup.py's build step, never committed
    except ImportError:
        return None
    return _build_info.COMMIT


def git_commit(folder: Path) -> str | None:
    """The checkout's commit, when `folder` is tracked in one ('+dirty' if files changed)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True,
                              check=True).stdout.strip()

    try:
        git("ls-files", "--error-unmatch", Path(__file__).name)  # this file, tracked here
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if dirty else "")


def code_version() -> str:
    """The commit this code comes from (built into a wheel, or the checkout's), else the
    package version."""
    return built_commit() or git_commit(Path(__file__).resolve().parent) or package_version()


def version_line() -> str:
    """What `--version` prints: `lerac-search 0.1.0 (code 1a2b3c4)`."""
    return f"{PACKAGE} {package_version()} (code {code_version()})"
