"""What tests that start servers on 127.0.0.1 share: a free port, and waiting for an answer."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests


def free_port() -> int:
    """A port nothing listens on right now (bound and released at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(url: str, *, seconds: float = 120, headers: dict[str, str] | None = None) -> bool:
    """Whether a GET of `url` answers OK within `seconds`, asked every half second: a server
    not listening yet, or too busy to answer, is asked again."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if requests.get(url, headers=headers or {}, timeout=5).ok:
                return True
        except requests.RequestException:
            pass
        time.sleep(0.5)
    return False


def start_mlflow_server(folder: Path, port: int) -> subprocess.Popen:
    """A real `mlflow server` on 127.0.0.1:`port` with its sqlite store and artifacts in `folder`,
    in a process group of its own (end it with `os.killpg`)."""
    return subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
         "--artifacts-destination", str(folder / "artifacts"), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},  # starts twice as fast
    )
