"""MLflow's usage telemetry stays off when the sweep or the analysis imports MLflow."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SCRIPT = ("import {package}, mlflow\n"
          "from mlflow.telemetry.client import get_telemetry_client\n"
          "print(get_telemetry_client() is None)\n")


def telemetry_off_after_importing(package: str) -> bool:
    """In a clean environment (MLflow itself turns telemetry off under pytest or CI variables)."""
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    done = subprocess.run([sys.executable, "-c", SCRIPT.format(package=package)], env=env,
                          capture_output=True, text=True, timeout=120, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip() == "True"


@pytest.mark.parametrize("package", ["search", "analysis"])
def test_our_packages_turn_mlflow_telemetry_off(package):
    assert telemetry_off_after_importing(package)


def test_without_them_mlflow_would_report_usage():
    """The control: the check above can fail."""
    assert not telemetry_off_after_importing("json")
