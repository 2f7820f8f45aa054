"""Build step: record the git commit in every built package.

The project's metadata is in pyproject.toml; this file only adds the step that
writes `trainables/_build_info.py` (`COMMIT = "<short hash>[+dirty]"`) into
a wheel built from a git checkout, and into an sdist (so a wheel built from
the sdist keeps it), where `trainables.version.code_version()` reads it. An
editable install reads the commit live from the checkout instead.
"""

import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

ROOT = Path(__file__).resolve().parent
BUILD_INFO = Path("trainables") / "_build_info.py"


def checkout_commit() -> str | None:
    """The commit of the checkout this file sits at the top of, else None (e.g. an sdist)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != ROOT:
            return None  # an unpacked sdist inside some other repository
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if dirty else "")


def write_build_info(target: str) -> None:
    commit = checkout_commit()
    if commit is not None:  # otherwise the sdist's own file is already in place
        path = Path(target) / BUILD_INFO
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f'"""Written by setup.py when this package was built."""\n\nCOMMIT = "{commit}"\n')


class BuildPyWithCommit(build_py):
    def run(self):
        super().run()
        if not self.editable_mode:
            write_build_info(self.build_lib)


class SdistWithCommit(sdist):
    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, files)
        write_build_info(base_dir)


setup(cmdclass={"build_py": BuildPyWithCommit, "sdist": SdistWithCommit})
