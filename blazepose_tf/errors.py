"""User-facing errors and the exit codes every command documents.

A user mistake (missing file, unreadable image, bad flag) raises one of these; the command-line entry points
print ``error: <message>`` on one line and exit with the class's code, never with a traceback.
"""
from __future__ import annotations

import os
from pathlib import Path

EXIT_OK = 0
EXIT_USAGE = 2          # bad flag value, missing path, wrong argument combination
EXIT_NO_INPUT = 3       # nothing could be processed (every input unreadable, empty video)
EXIT_MODELS = 4         # official models missing/unfetchable or checksum mismatch
EXIT_PARTIAL = 5        # some inputs were unreadable and skipped; the rest was processed


class UserError(Exception):
    """An error caused by the user's input; reported as one line, no traceback."""

    exit_code = EXIT_USAGE


class InputError(UserError):
    """An input file (image or video) is missing, empty, corrupt or unsupported."""

    exit_code = EXIT_NO_INPUT


class ModelError(UserError):
    """A model file is missing, corrupt, or cannot be fetched."""

    exit_code = EXIT_MODELS


def model_file(path: str | os.PathLike, what: str = "model file") -> Path:
    """``path`` (``~`` expanded) if it names an existing file; else a one-line :class:`ModelError` naming ``what``
    (e.g. a flag): a missing model is a model error (exit 4) in every command."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ModelError(f"{what} not found: {p}")
    if p.is_dir():
        raise ModelError(f"{what} {p} is a folder, not a file")
    if not p.is_file():
        raise ModelError(f"{what} {p} is not a regular file")
    return p


def require_utf8(value: str | os.PathLike, flag: str, needed_by: str) -> None:
    """A one-line :class:`UserError` (exit 2) when the path ``value`` of ``flag`` is not valid UTF-8 (a byte of
    another encoding in a file or folder name, which Python holds as a lone surrogate) and ``needed_by`` (what
    reads or records the name, e.g. "TensorFlow") needs it to be."""
    try:
        os.fspath(value).encode("utf-8")
    except UnicodeEncodeError:
        raise UserError(f"{flag} {os.fspath(value)!r}: the name is not valid UTF-8, which {needed_by} needs; "
                        "rename it") from None
