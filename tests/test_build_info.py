"""A built wheel records the commit it was built from (setup.py's build step), and reports it
when installed where no git checkout is beside it."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, check=True).stdout.strip()


def test_a_built_wheel_records_the_commit_it_was_built_from(tmp_path):
    source = tmp_path / "src"  # a clean clone of HEAD, so the build touches nothing here
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(source)], check=True)
    commit = git(source, "rev-parse", "--short", "HEAD")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-build-isolation", "--no-deps",
                    "--wheel-dir", str(tmp_path / "dist"), str(source)], check=True, timeout=600)
    (wheel,) = (tmp_path / "dist").glob("lerac_search-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert f'COMMIT = "{commit}"' in archive.read("trainables/_build_info.py").decode()
    assert not (source / "trainables" / "_build_info.py").exists()  # only in the built package

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    "--target", str(site), str(wheel)], check=True, timeout=600)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    probe = (f"import sys; sys.path.insert(0, {str(site)!r}); import trainables.version as v; "
             "print(v.__file__); print(v.code_version())")
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300, check=True)
    where, version = done.stdout.split()
    assert where.startswith(str(site)) and version == commit
