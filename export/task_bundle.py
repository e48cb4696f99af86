"""MediaPipe Tasks ``.task`` bundle files: a zip, stored without compression, holding ``pose_detector.tflite``
and ``pose_landmarks_detector.tflite`` (MediaPipe's ``PoseLandmarker`` looks the two models up by these names).
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Union

from blazepose_tf.contract import DETECTOR, LANDMARKS
from blazepose_tf.errors import ModelError

DETECTOR_FILE = "pose_detector.tflite"
LANDMARKS_FILE = "pose_landmarks_detector.tflite"
#: Model role -> its file in the bundle.
BUNDLE_FILES: dict[str, str] = {DETECTOR: DETECTOR_FILE, LANDMARKS: LANDMARKS_FILE}


def write_bundle(detector: bytes, landmarks: bytes, output: Union[str, os.PathLike]) -> Path:
    """Writes the two models as a stored (uncompressed) zip, atomically."""
    output = Path(output)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.part")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as z:
        for fname, data in ((DETECTOR_FILE, detector), (LANDMARKS_FILE, landmarks)):
            zi = zipfile.ZipInfo(fname, date_time=(2024, 1, 1, 0, 0, 0))
            zi.compress_type = zipfile.ZIP_STORED
            zi.external_attr = 0o644 << 16
            z.writestr(zi, data)
    os.replace(tmp, output)
    return output


def read_bundle(path: Union[str, os.PathLike]) -> dict[str, bytes]:
    """{file name: bytes} of a .task bundle (checks that both model files are there)."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"bundle not found: {p}")
    try:
        with zipfile.ZipFile(p) as z:
            files = {n: z.read(n) for n in z.namelist()}
    except zipfile.BadZipFile:
        raise ModelError(f"{p} is not a .task bundle (not a zip file)") from None
    missing = [f for f in (DETECTOR_FILE, LANDMARKS_FILE) if f not in files]
    if missing:
        raise ModelError(f"{p} has no {', '.join(missing)}")
    return files


def extract_bundle(path: Union[str, os.PathLike], directory: Union[str, os.PathLike]) -> tuple[Path, Path]:
    """Writes the bundle's detector and landmark .tflite files into ``directory``; returns their paths."""
    files = read_bundle(path)
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    out = []
    for fname in (DETECTOR_FILE, LANDMARKS_FILE):
        (d / fname).write_bytes(files[fname])
        out.append(d / fname)
    return out[0], out[1]
