"""Shared pytest fixtures."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

HEAVY = "heavy"


def pytest_configure(config: pytest.Config) -> None:
    """Registers the ``heavy`` marker. Under pytest-xdist (``-n 2``) tests go to the workers one at a time
    (``--maxschedchunk=1``, unless given): with the heavy tests first (below), the workers end together instead of
    one of them running the last heavy tests alone."""
    config.addinivalue_line("markers", f"{HEAVY}: a test of a minute or more (several training or conversion "
                                       "runs); heavy tests are collected first")
    if getattr(config.option, "maxschedchunk", "absent") is None:
        config.option.maxschedchunk = 1


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Heavy tests first, each group in its collected order."""
    items.sort(key=lambda item: item.get_closest_marker(HEAVY) is None)


@pytest.fixture(scope="session", autouse=True)
def subprocess_tmpdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The commands the tests start keep their temporary files under pytest's own temporary folder (``TMPDIR``):
    TensorFlow's AutoGraph writes a source file per converted function and removes it only at a normal exit, so
    every killed training run would leave its files in the system's ``/tmp``."""
    folder = tmp_path_factory.mktemp("subprocess_tmp")
    os.environ["TMPDIR"] = str(folder)
    return folder


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
