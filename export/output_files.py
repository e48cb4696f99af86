"""Where an export writes: the ``.tflite`` and its ``.report.json`` beside it, checked before anything is loaded
(:func:`check_output_path`) and written atomically (:func:`write_temporary`, then :func:`os.replace`)."""
from __future__ import annotations

import os
import time
from pathlib import Path

from blazepose_tf.cli import check_output_folder
from blazepose_tf.errors import UserError


def report_path_for(output: Path) -> Path:
    """``out.tflite`` → ``out.report.json``."""
    return output.with_name(output.stem + ".report.json")


def check_output_path(output: Path) -> None:
    """Raises a one-line :class:`UserError` (exit 2) unless ``output`` and its report can be written: neither is a
    folder, and their folder exists or can be created (its nearest existing ancestor is a writable folder).
    Cheap: :func:`export.to_tflite.export_model` calls it before loading or converting anything."""
    if output.suffix != ".tflite":
        raise UserError(f"--output must end in .tflite, got {output.name!r}")
    for path in (output, report_path_for(output)):
        if path.is_dir():
            raise UserError(f"cannot write {path}: it is a folder" + (
                "; give a .tflite file name" if path == output else " (the report goes beside the model)"))
    check_output_folder(output)


def write_temporary(path: Path, data: bytes) -> Path:
    """Writes ``data`` to a new temporary file beside ``path`` (creating the folder; usual permissions), returned
    for :func:`os.replace`; a write failure is a one-line :class:`UserError` and leaves nothing behind."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.time_ns()}.part")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    return tmp
