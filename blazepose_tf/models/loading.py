"""Loading ``.keras`` files with one-line errors that say what is wrong: missing, not a Keras archive, or a
Keras archive that does not load (corrupt, truncated, or made with layers this project does not define).

Every place that reads a user's ``.keras`` (the runtime, ``--init_from``, ``--distill_from``, export) goes
through :func:`load_keras_model`.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

from blazepose_tf.errors import ModelError, model_file


def check_keras_file(path: str | os.PathLike, what: str = "model") -> Path:
    """``path`` as a Path if it names an existing, readable ``.keras`` archive; else a one-line
    :class:`ModelError` naming ``what`` (e.g. ``--init_from``) and the problem."""
    p = model_file(path, what)
    if p.suffix == ".h5":  # legacy Keras 2 HDF5 files: Keras reports what is wrong with them
        return p
    if p.suffix != ".keras":
        raise ModelError(f"{what} {p.name!r} is not a .keras file")
    try:
        with zipfile.ZipFile(p) as z:
            names = set(z.namelist())
            bad = z.testzip()
    except (zipfile.BadZipFile, EOFError):
        raise ModelError(f"{what} {p} is corrupt or truncated: not a Keras archive") from None
    except OSError as e:
        raise ModelError(f"{what} {p} cannot be read: {e.strerror or e}") from None
    if "config.json" not in names:
        raise ModelError(f"{what} {p} is not a Keras model archive (no config.json inside)")
    if bad is not None:
        raise ModelError(f"{what} {p} is corrupt: member {bad!r} fails its checksum")
    return p


def load_keras_model(path: str | os.PathLike, what: str = "model"):
    """Loads a ``.keras`` file (the project's custom layers registered first), uncompiled; any failure is a
    one-line :class:`ModelError` (see :func:`check_keras_file`)."""
    p = check_keras_file(path, what)
    import keras

    from blazepose_tf.models import register_custom_layers
    register_custom_layers()
    try:
        return keras.models.load_model(p, compile=False)
    except Exception as e:  # noqa: BLE001 - any load failure is a bad model file for the user
        first = next((line for line in str(e).strip().splitlines() if line.strip()), type(e).__name__)
        raise ModelError(f"{what} {p} does not load as a Keras model: {first[:200]}") from None
