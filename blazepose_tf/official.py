"""MediaPipe's official BlazePose .tflite models: where they live, their pinned sha256, and fetching them from
the ``mediapipe==0.10.21`` wheel (the command is ``python -m data.fetch_official``).

The detector and the Full landmark model come from the wheel (:data:`OFFICIAL_MODELS`). The Lite landmark model is
in no wheel (MediaPipe downloads it at run time) and no registry serves it, so this package carries it
(:data:`PACKAGED_MODELS`, in ``blazepose_tf/official_models/`` with its license notice); it needs no cache.

The wheel is downloaded with ``pip download --no-deps`` (mediapipe is never installed), the two models are
extracted, their sha256 sums checked, and the wheel deleted. A second run with the files already in place
does nothing. Offline or on a checksum mismatch it stops with one clear line and exit code 4.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Optional

from blazepose_tf.errors import ModelError

MEDIAPIPE_VERSION = "0.10.21"

# name -> (path inside the wheel, sha256 of the extracted file)
OFFICIAL_MODELS: dict[str, tuple[str, str]] = {
    "pose_detection": (
        "mediapipe/modules/pose_detection/pose_detection.tflite",
        "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c",
    ),
    "pose_landmark_full": (
        "mediapipe/modules/pose_landmark/pose_landmark_full.tflite",
        "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f",
    ),
}
#: Official models shipped inside this package (``official_models/<name>.tflite``): name -> sha256.
PACKAGED_MODELS: dict[str, str] = {
    "pose_landmark_lite": "0e0d22450724475de81b5074cf8deac54268cd9af73c883c02475b768e4ec7e4",
}
PACKAGED_DIR = Path(__file__).resolve().parent / "official_models"
#: Every official model's pinned sha256, by name (fetched and packaged ones).
OFFICIAL_SHA256: dict[str, str] = {**{n: digest for n, (_, digest) in OFFICIAL_MODELS.items()}, **PACKAGED_MODELS}
# Pure-Python TFLite metadata schema shipped in the same wheel (used by export.to_mediapipe).
METADATA_FILES: dict[str, str] = {
    "metadata_schema_py_generated.py": "mediapipe/tasks/metadata/metadata_schema_py_generated.py",
    "schema_py_generated.py": "mediapipe/tasks/metadata/schema_py_generated.py",
}


def cache_dir() -> Path:
    """Where fetched models live: ``$BLAZEPOSE_TF_CACHE`` or ``~/.cache/blazepose_tf``, sub-folder ``official``."""
    root = os.environ.get("BLAZEPOSE_TF_CACHE") or os.path.join(Path.home(), ".cache", "blazepose_tf")
    return Path(root) / "official"


def sha256(path: Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _is_complete(directory: Path) -> bool:
    for name, (_, digest) in OFFICIAL_MODELS.items():
        p = directory / f"{name}.tflite"
        if not p.is_file() or sha256(p) != digest:
            return False
    return all((directory / "metadata" / f).is_file() for f in METADATA_FILES)


def _download_wheel(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", f"mediapipe=={MEDIAPIPE_VERSION}", "--no-deps",
           "--only-binary=:all:", "--quiet", "-d", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("mediapipe-*.whl"))
    if proc.returncode != 0 or not wheels:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ModelError(f"could not download mediapipe=={MEDIAPIPE_VERSION} with pip (offline?): {last}")
    return wheels[0]


def fetch(directory: Optional[Path] = None, force: bool = False, wheel: Optional[Path] = None) -> Path:
    """Makes sure the official models are in ``directory`` (default :func:`cache_dir`) and returns it.

    Args:
        directory: target folder.
        force: re-download even if the files are present and valid.
        wheel: use this local wheel instead of downloading one.
    Raises:
        ModelError: download failed or a checksum does not match.
    """
    directory = Path(directory or cache_dir())
    if not force and _is_complete(directory):
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bp_wheel_") as tmp:
        whl = Path(wheel) if wheel else _download_wheel(Path(tmp))
        try:
            zf = zipfile.ZipFile(whl)
        except (zipfile.BadZipFile, OSError) as e:
            raise ModelError(f"{whl} is not a readable wheel: {e}") from None
        with zf:
            names = set(zf.namelist())
            wanted = {f"{n}.tflite": p for n, (p, _) in OFFICIAL_MODELS.items()}
            wanted.update({f"metadata/{n}": p for n, p in METADATA_FILES.items()})
            for out_name, member in wanted.items():
                if member not in names:
                    raise ModelError(f"{whl.name} has no {member}")
                out = directory / out_name
                out.parent.mkdir(parents=True, exist_ok=True)
                part = out.with_name(f".{out.name}.{os.getpid()}.part")   # one per process: fetches may race
                with zf.open(member) as src, open(part, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                os.replace(part, out)
    for name, (_, digest) in OFFICIAL_MODELS.items():
        got = sha256(directory / f"{name}.tflite")
        if got != digest:
            (directory / f"{name}.tflite").unlink()
            raise ModelError(f"checksum mismatch for {name}.tflite: expected {digest[:12]}…, got {got[:12]}…")
    return directory


def model_location(name: str) -> Path:
    """Where the official model ``name`` lives (the packaged file, or its place in the cache), without checking,
    fetching or reading it: for output checks, which must not refuse or download anything."""
    return PACKAGED_DIR / f"{name}.tflite" if name in PACKAGED_MODELS else cache_dir() / f"{name}.tflite"


def official_model_path(name: str, fetch_if_missing: bool = True) -> Path:
    """Path of an official model (a name of :data:`OFFICIAL_SHA256`), checked against its sha256.

    ``pose_detection`` and ``pose_landmark_full`` are fetched into the cache if needed; ``pose_landmark_lite`` is
    the file this package carries (no cache, no network).

    Raises:
        ModelError: unknown name, a packaged file missing or changed, or a fetch that failed.
    """
    if name in PACKAGED_MODELS:
        return _packaged_path(name)
    if name not in OFFICIAL_MODELS:
        raise ModelError(f"unknown official model {name!r}; known: {sorted(OFFICIAL_SHA256)}")
    path = cache_dir() / f"{name}.tflite"
    if path.is_file() and sha256(path) == OFFICIAL_MODELS[name][1]:
        return path
    if not fetch_if_missing:
        raise ModelError(f"{path} is missing; run `python -m data.fetch_official`")
    return fetch() / f"{name}.tflite"


def _packaged_path(name: str) -> Path:
    """The packaged file of ``name``, after checking it is there and unchanged (a one-line ModelError if not)."""
    path = PACKAGED_DIR / f"{name}.tflite"
    restore = "reinstall blazepose-tf or restore it with `git checkout -- blazepose_tf/official_models`"
    if not path.is_file():
        raise ModelError(f"packaged official model {path} is missing; {restore}")
    got, want = sha256(path), PACKAGED_MODELS[name]
    if got != want:
        raise ModelError(f"packaged official model {path} is corrupted (sha256 {got[:12]}…, expected "
                         f"{want[:12]}…); {restore}")
    return path
