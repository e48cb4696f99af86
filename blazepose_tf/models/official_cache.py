"""The converted official models on disk: saved as ``.keras`` (atomically) with a stamp, cached, and loaded.

``converted_model_path(name)`` converts MediaPipe's model on first use (:mod:`blazepose_tf.models.official_translation`)
and keeps ``<name>.keras`` in the converted-model cache (``$BLAZEPOSE_TF_CACHE/converted`` or
``~/.cache/blazepose_tf/converted``) next to a stamp ``<name>.keras.json`` (converter version, source sha256): a file
whose stamp does not match is converted again. Loading needs the custom layers of
:mod:`blazepose_tf.models.official_layers` registered, which importing this module does.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Optional

import keras

from blazepose_tf.models import official_layers  # noqa: F401 - registers the custom layers for loading
from blazepose_tf.models.official_translation import convert, official_role
from blazepose_tf.official import OFFICIAL_SHA256, cache_dir

CONVERTER_VERSION = 2  # bump when the translation changes, so cached .keras files are rebuilt (2: 1x1 convs SAME)


def converted_dir() -> Path:
    """The converted-model cache: ``converted`` next to the official models' folder."""
    return cache_dir().parent / "converted"


def converted_model_path(name: str, directory: Optional[str | os.PathLike] = None, force: bool = False) -> Path:
    """Path of the converted ``<name>.keras``, converting and saving it on first use (atomic write).

    A stamp ``<name>.keras.json`` records the converter version and the source model's sha256; a file
    without a matching stamp is converted again.

    Args:
        name: ``pose_detection``, ``pose_landmark_full`` or ``pose_landmark_lite``.
        directory: where to keep it (default :func:`converted_dir`).
        force: convert again even if the file exists.
    """
    official_role(name)  # an unknown name is a ModelError
    folder = Path(directory) if directory else converted_dir()
    path = folder / f"{name}.keras"
    if path.is_file() and not force:
        try:
            if json.loads((folder / f"{name}.keras.json").read_text()) == _stamp(name):
                return path
        except (OSError, ValueError):
            pass  # no or unreadable stamp: an older or foreign file, convert again
    return save_converted(convert(name), name, folder)


def _stamp(name: str) -> dict:
    return {"converter_version": CONVERTER_VERSION, "source_sha256": OFFICIAL_SHA256[name]}


def save_converted(model: keras.Model, name: str, directory: str | os.PathLike) -> Path:
    """Saves a converted official model as ``<directory>/<name>.keras`` plus its stamp (both atomically)."""
    path = save_model(model, Path(directory) / f"{name}.keras")
    stamp_path = path.with_name(f"{name}.keras.json")
    tmp = stamp_path.with_name(f".{stamp_path.name}.{os.getpid()}.part")
    tmp.write_text(json.dumps(_stamp(name)))
    os.replace(tmp, stamp_path)
    return path


def save_model(model: keras.Model, path: str | os.PathLike) -> Path:
    """Saves a Keras model to ``path`` (``.keras``) atomically: a temporary file in the same folder, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".keras", dir=path.parent)
    os.close(fd)
    try:
        model.save(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_converted(name: str, directory: Optional[str | os.PathLike] = None) -> keras.Model:
    """The converted Keras model (from :func:`converted_model_path`, converting on first use)."""
    return keras.models.load_model(converted_model_path(name, directory), compile=False)
