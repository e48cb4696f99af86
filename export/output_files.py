"""Where an export writes: the ``.tflite`` and its ``.report.json`` beside it, checked before anything is loaded
(:func:`check_output_path`) and written atomically (:func:`write_temporary`, then :func:`os.replace`).

An export replaces only what an earlier export wrote: an existing model file is replaceable while the report beside
it is an unchanged blazepose_tf output (:mod:`blazepose_tf.io.provenance`) that records the model's sha256
(:func:`check_replaceable_export`); anything else needs ``overwrite`` (``--overwrite``)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from blazepose_tf.cli import check_output_folder, check_replaceable
from blazepose_tf.errors import UserError, require_utf8
from blazepose_tf.io.provenance import written_here
from blazepose_tf.official import sha256


def report_path_for(output: Path) -> Path:
    """``out.tflite`` → ``out.report.json``."""
    return output.with_name(output.stem + ".report.json")


def vouched(artifact: Path, report: Path) -> bool:
    """Whether ``report`` is an unchanged blazepose_tf output that records ``artifact``'s sha256: as ``sha256``
    (the export that wrote the report wrote the file, and neither changed since) or, while an export is putting a
    new file in place, as ``replaces_sha256`` (the earlier export's file it replaces; see :func:`install`)."""
    if not written_here(report):
        return False
    try:
        doc = json.loads(report.read_bytes())
        recorded = [doc.get("sha256"), doc.get("replaces_sha256")]
    except (OSError, ValueError, AttributeError):
        return False
    recorded = [r for r in recorded if isinstance(r, str)]
    try:
        return bool(recorded) and sha256(artifact) in recorded
    except OSError:
        return False


def install(artifact: Path, staged: Path, report: Path, write_report: Callable[[dict], object], doc: dict,
            sidecars: Sequence[Path] = (), overwrite: bool = False) -> None:
    """Puts an export's ``staged`` file at ``artifact`` and its report ``doc`` at ``report`` (``write_report(doc)``
    writes it, and any ``sidecars``, atomically), so that no moment leaves a file no report vouches for:

    1. the output is checked again (:func:`check_replaceable_export`): a file of the user's that appeared there
       during the export is refused (unless ``overwrite``);
    2. the report is written recording ``replaces_sha256``, the digest of the earlier export it replaces;
    3. the staged file is renamed over ``artifact``;
    4. the report is written again without ``replaces_sha256``, which vouches for the earlier file no longer.

    Stopped between 2 and 3, the earlier file is still vouched for; between 3 and 4, the new one. Any failure
    deletes ``staged``; an OS error is a one-line :class:`UserError`."""
    try:
        check_replaceable_export(artifact, report, sidecars, overwrite)
        write_report({**doc, "replaces_sha256": replaced_digest(artifact, report)})
        os.replace(staged, artifact)
        write_report({**doc, "replaces_sha256": None})
    except OSError as e:
        raise UserError(f"cannot write --output {artifact} or its report: {e.strerror or e}") from None
    finally:
        staged.unlink(missing_ok=True)


def replaced_digest(artifact: Path, report: Path) -> Optional[str]:
    """The sha256 of the earlier export at ``artifact`` that a new export is about to replace (None when there is
    none, or the file is not one ``report`` vouches for)."""
    return sha256(artifact) if artifact.is_file() and vouched(artifact, report) else None


def check_replaceable_export(artifact: Path, report: Path, sidecars: Sequence[Path] = (),
                             overwrite: bool = False) -> None:
    """A one-line :class:`UserError` (exit 2), unless ``overwrite``, if a file is at ``artifact`` that ``report``
    does not vouch for (:func:`vouched`), or at ``report`` or one of the ``sidecars`` that is not an unchanged
    blazepose_tf output: an export never replaces a file of the user's unasked."""
    if overwrite:
        return
    if artifact.is_file() and not vouched(artifact, report):
        raise UserError(f"--output {artifact} exists and is not an unchanged blazepose_tf export (no unchanged "
                        f"{report.name} beside it records its sha256); pass --overwrite to replace it, or choose "
                        "another path")
    for side in (report, *sidecars):
        check_replaceable("--output's", side, overwrite)


def check_utf8_path(output: Path, flag: str = "--output") -> None:
    """A one-line :class:`UserError` (exit 2) when ``output``'s path is not valid UTF-8 (a byte of another encoding
    in a file or folder name, which Python holds as a lone surrogate): the report records the path as JSON text,
    which strict parsers refuse with such a character, and MediaPipe opens a bundle only by a UTF-8 name."""
    require_utf8(output.absolute(), flag, "the report written beside it (JSON text)")


def check_output_path(output: Path, overwrite: bool = False) -> None:
    """Raises a one-line :class:`UserError` (exit 2) unless ``output`` and its report can be written: the path is
    valid UTF-8 (:func:`check_utf8_path`), neither is a folder, their folder exists or can be created (its nearest
    existing ancestor is a writable folder), and neither replaces a file an earlier export did not write
    (:func:`check_replaceable_export`, unless ``overwrite``). Cheap: :func:`export.to_tflite.export_model` calls it
    before loading or converting anything."""
    check_utf8_path(output)
    if output.suffix != ".tflite":
        raise UserError(f"--output must end in .tflite, got {output.name!r}")
    if output.stem.endswith(".task"):
        raise UserError(f"--output {output.name!r}: its report would take the name of a .task bundle's report "
                        f"({report_path_for(output).name}); choose a name not ending in .task.tflite")
    for path in (output, report_path_for(output)):
        if path.is_dir():
            raise UserError(f"cannot write {path}: it is a folder" + (
                "; give a .tflite file name" if path == output else " (the report goes beside the model)"))
    check_replaceable_export(output, report_path_for(output), overwrite=overwrite)
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
