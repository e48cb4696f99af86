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


@pytest.fixture(scope="session")
def official_models():
    """Makes sure MediaPipe's official models are fetched; skips (with the reason) when they cannot be."""
    from blazepose_tf.errors import ModelError
    from blazepose_tf.official import official_model_path

    try:
        official_model_path("pose_detection")
        official_model_path("pose_landmark_full")
    except ModelError as e:
        pytest.skip(f"official MediaPipe models unavailable (offline and not cached?): {e}")
