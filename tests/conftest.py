"""Shared pytest fixtures."""
from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder (``<repo>/../shared/data``, or env ``BLAZEPOSE_SHARED_DATA``); skips if absent."""
    env = os.environ.get("BLAZEPOSE_SHARED_DATA")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"shared data folder not found at {path} (set BLAZEPOSE_SHARED_DATA to override)")
    return path
