"""Where the converted official models are kept and their conversion stamps, without TensorFlow (so that
:mod:`blazepose_tf.models.convert_official` checks its outputs before TensorFlow's start-up).

Beside each converted ``<name>.keras`` the converter writes a stamp ``<name>.keras.json``: the converter version, the
source ``.tflite``'s sha256 and the sha256 of the ``.keras`` it wrote (``keras_sha256``). A ``.keras`` whose sha256
is not its stamp's has been changed since (edited or replaced by the user): it is the user's, never replaced
unasked nor used as MediaPipe's model (:func:`changed_since_converted`). Stamps written before ``keras_sha256`` was
recorded still vouch for the file beside them, as they did.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

from blazepose_tf.official import cache_dir, sha256

def converted_dir() -> Path:
    """The converted-model cache: ``converted`` next to the official models' folder."""
    return cache_dir().parent / "converted"

def stamp_path(path: str | os.PathLike) -> Path:
    """The conversion stamp of a converted ``<name>.keras``: ``<name>.keras.json`` beside it."""
    path = Path(path)
    return path.with_name(f"{path.name}.json")

def read_stamp(path: str | os.PathLike) -> Optional[dict]:
    """The conversion stamp of the converted ``path`` (:func:`stamp_path`), or None when it is missing or is not a
    JSON object."""
    try:
        stamp = json.loads(stamp_path(path).read_text())
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) else None

def changed_since_converted(path: str | os.PathLike) -> bool:
    """Whether the converted ``path`` has been changed since the converter wrote it: its stamp records the sha256 of
    the file it wrote (``keras_sha256``; while a new file is being put in place, also ``replaces_sha256``: the
    one it replaces) and ``path``'s is neither. A stamp from before the sha256 was recorded (or no stamp) vouches
    for any file: False."""
    stamp = read_stamp(path)
    recorded = [stamp.get(k) for k in ("keras_sha256", "replaces_sha256")] if stamp else []
    recorded = [r for r in recorded if isinstance(r, str)]
    if not recorded:
        return False
    try:
        return sha256(Path(path)) not in recorded
    except OSError:
        return False

