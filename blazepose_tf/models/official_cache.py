"""The converted official models on disk: saved as ``.keras`` (atomically) with a stamp, cached, and loaded.

``converted_model_path(name)`` converts MediaPipe's model on first use (:mod:`blazepose_tf.models.official_translation`)
and keeps ``<name>.keras`` in the converted-model cache (``$BLAZEPOSE_TF_CACHE/converted`` or
``~/.cache/blazepose_tf/converted``) next to a stamp ``<name>.keras.json`` (converter version, source sha256, and the
sha256 of the ``.keras`` it wrote): a file whose stamp is stale is converted again; a file that has been changed
since the converter wrote it (its sha256 is not the stamp's: the user edited or replaced it) is the user's, never
replaced nor used as MediaPipe's model (:mod:`blazepose_tf.models.official_stamp`, whose names this module
re-exports). Stamps written before the ``.keras`` sha256 was recorded vouch for the file beside them as before.
Loading needs the custom layers of
:mod:`blazepose_tf.models.official_layers` registered, which importing this module does.
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import keras

from blazepose_tf.errors import ModelError
from blazepose_tf.models import official_layers  # noqa: F401 - registers the custom layers for loading
from blazepose_tf.models.official_stamp import changed_since_converted, converted_dir, read_stamp, stamp_path
from blazepose_tf.models.official_translation import convert, official_role
from blazepose_tf.official import OFFICIAL_SHA256, sha256

__all__ = ["CONVERTER_VERSION", "changed_since_converted", "converted_dir", "converted_model_path",
           "load_converted", "read_stamp", "save_converted", "save_model", "stamp_path"]

CONVERTER_VERSION = 2  # bump when the translation changes, so cached .keras files are rebuilt (2: 1x1 convs SAME)


def converted_model_path(name: str, directory: Optional[str | os.PathLike] = None, force: bool = False) -> Path:
    """Path of the converted ``<name>.keras``, converting and saving it on first use (atomic write).

    A stamp ``<name>.keras.json`` records the converter version, the source model's sha256 and the written file's
    sha256; a file without a matching stamp is converted again, but a file changed since the converter wrote it is
    refused (:func:`changed_since_converted`), even with ``force``.

    Args:
        name: ``pose_detection``, ``pose_landmark_full`` or ``pose_landmark_lite``.
        directory: where to keep it (default :func:`converted_dir`).
        force: convert again even if the file exists.
    Raises:
        ModelError: an unknown name, or ``<name>.keras`` has been changed since the converter wrote it.
    """
    official_role(name)  # an unknown name is a ModelError
    folder = Path(directory) if directory else converted_dir()
    path = folder / f"{name}.keras"
    if path.is_file():
        if changed_since_converted(path):
            where = "" if folder == converted_dir() else f" --output_dir {folder}"
            raise ModelError(f"{path} has been changed since the converter wrote it ({stamp_path(path).name} records "
                             f"another sha256), so it is not MediaPipe's {name} any more: move it elsewhere to keep "
                             f"it, or convert again with `python -m blazepose_tf.models.convert_official --models "
                             f"{name}{where} --overwrite`")
        stamp = read_stamp(path)
        if not force and stamp is not None and all(stamp.get(k) == v for k, v in _stamp(name).items()):
            return path
    return save_converted(convert(name), name, folder)


def _stamp(name: str) -> dict:
    return {"converter_version": CONVERTER_VERSION, "source_sha256": OFFICIAL_SHA256[name]}


def save_converted(model: keras.Model, name: str, directory: str | os.PathLike) -> Path:
    """Saves a converted official model as ``<directory>/<name>.keras`` plus its stamp (both atomically), the stamp
    recording the file's sha256.

    While the new file replaces an earlier converted one, the stamp vouches for both (``replaces_sha256``), so that
    no moment leaves the converter's file looking changed by the user (:func:`changed_since_converted`).
    """
    path = Path(directory) / f"{name}.keras"
    with _staged(model, path) as tmp, _locked(path):   # two processes saving at once: one after the other
        stamp = {**_stamp(name), "keras_sha256": sha256(tmp)}
        vouched = path.is_file() and read_stamp(path) is not None and not changed_since_converted(path)
        if vouched:
            _write_stamp(path, {**stamp, "replaces_sha256": sha256(path)})
        os.replace(tmp, path)
        _write_stamp(path, stamp)
    return path


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path``'s save (a hidden ``.<name>.lock`` beside it), so that the stamp a save writes
    always names the file that save put in place. Without ``fcntl`` (Windows) nothing is locked."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path.with_name(f".{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _write_stamp(path: Path, stamp: dict) -> None:
    target = stamp_path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
    tmp.write_text(json.dumps(stamp))
    os.replace(tmp, target)


@contextmanager
def _staged(model: keras.Model, path: Path) -> Iterator[Path]:
    """``model`` saved to a temporary ``.keras`` beside ``path`` (folder created, usual permissions), for the block
    to rename into place; deleted afterwards if it was not."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".keras", dir=path.parent)
    os.close(fd)
    try:
        model.save(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        yield Path(tmp)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_model(model: keras.Model, path: str | os.PathLike) -> Path:
    """Saves a Keras model to ``path`` (``.keras``) atomically: a temporary file in the same folder, then rename."""
    path = Path(path)
    with _staged(model, path) as tmp:
        os.replace(tmp, path)
    return path


def load_converted(name: str, directory: Optional[str | os.PathLike] = None) -> keras.Model:
    """The converted Keras model (from :func:`converted_model_path`, converting on first use)."""
    return keras.models.load_model(converted_model_path(name, directory), compile=False)
