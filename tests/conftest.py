"""Shared test set-up: sweeps started by tests seal their state with a key of the test
session's own, never the user's `~/.config/lerac-search/state.key`."""

from __future__ import annotations

import os

import pytest

from search.integrity import KEY_FILE_ENV
from search.tracking_store import CACHE_DIR_ENV


@pytest.fixture(scope="session", autouse=True)
def test_state_key(tmp_path_factory):
    previous = os.environ.get(KEY_FILE_ENV)
    os.environ[KEY_FILE_ENV] = str(tmp_path_factory.mktemp("state-key") / "state.key")
    yield
    if previous is None:
        os.environ.pop(KEY_FILE_ENV, None)
    else:
        os.environ[KEY_FILE_ENV] = previous


@pytest.fixture(scope="session", autouse=True)
def test_cache_dir(tmp_path_factory):
    """The template of an empty MLflow store that sweeps keep (`search.tracking_store`): the
    session's own, never the user's ~/.cache."""
    previous = os.environ.get(CACHE_DIR_ENV)
    os.environ[CACHE_DIR_ENV] = str(tmp_path_factory.mktemp("cache"))
    yield
    if previous is None:
        os.environ.pop(CACHE_DIR_ENV, None)
    else:
        os.environ[CACHE_DIR_ENV] = previous
