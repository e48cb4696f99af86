"""The official models' registry (blazepose_tf.official): the Lite landmark model the package carries is found
without any cache or network, is checked against its pinned sha256, and ships with its license notice."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from blazepose_tf import contract, official
from blazepose_tf.errors import ModelError

LITE = "pose_landmark_lite"


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch) -> Path:
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("BLAZEPOSE_TF_CACHE", str(cache))
    return cache


def test_every_official_model_is_pinned_and_has_a_role() -> None:
    assert set(official.OFFICIAL_SHA256) == set(contract.OFFICIAL_MODEL_ROLES)
    assert list(contract.OFFICIAL_MODEL_ROLES)[:2] == ["pose_detection", "pose_landmark_full"]  # appended only
    assert contract.OFFICIAL_MODEL_ROLES[LITE] == contract.LANDMARKS
    assert not set(official.PACKAGED_MODELS) & set(official.OFFICIAL_MODELS)  # packaged models are never fetched


def test_packaged_lite_is_found_without_any_cache(empty_cache: Path) -> None:
    path = official.official_model_path(LITE, fetch_if_missing=False)
    assert path == official.PACKAGED_DIR / f"{LITE}.tflite"
    assert path.parent == Path(official.__file__).resolve().parent / "official_models"
    assert official.sha256(path) == official.PACKAGED_MODELS[LITE]
    assert official.official_model_path(LITE) == path
    assert not any(empty_cache.iterdir())  # nothing fetched, nothing written


def test_packaged_lite_carries_its_notice() -> None:
    readme = (official.PACKAGED_DIR / "README.md").read_text()
    assert official.PACKAGED_MODELS[LITE] in readme and "Apache License 2.0" in readme
    assert "Apache License" in (official.PACKAGED_DIR / "LICENSE").read_text()


def test_packaged_file_checked_against_its_sha256(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(official, "PACKAGED_DIR", tmp_path)
    with pytest.raises(ModelError) as missing:
        official.official_model_path(LITE)
    assert "\n" not in str(missing.value) and "is missing" in str(missing.value)
    corrupt = tmp_path / f"{LITE}.tflite"
    shutil.copyfile(Path(official.__file__).parent / "official_models" / f"{LITE}.tflite", corrupt)
    with open(corrupt, "r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ModelError) as bad:
        official.official_model_path(LITE)
    msg = str(bad.value)
    assert "\n" not in msg and "corrupted" in msg and official.PACKAGED_MODELS[LITE][:12] in msg, msg


def test_unknown_official_model_names_the_known_ones() -> None:
    with pytest.raises(ModelError, match="unknown official model 'pose_landmark_heavy'.*pose_landmark_lite"):
        official.official_model_path("pose_landmark_heavy")
