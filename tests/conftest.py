"""Shared test set-up: sweeps started by tests seal their state with a key of the test
session's own, never the user's `~/.config/lerac-search/state.key`, and keep their empty
MLflow store template (`search.tracking_store`) in the session's folder, never ~/.cache."""

from __future__ import annotations

import pytest

from search.integrity import KEY_FILE_ENV
from search.tracking_store import CACHE_DIR_ENV


@pytest.fixture(scope="session", autouse=True)
def session_key_and_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(KEY_FILE_ENV, str(tmp_path_factory.mktemp("state-key") / "state.key"))
        patch.setenv(CACHE_DIR_ENV, str(tmp_path_factory.mktemp("cache")))
        yield
