"""What a closed-form head refit run (``refit_head``, ``refit_teacher``) writes, its cache folder and its number-list
flags."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from blazepose_tf import cli
from blazepose_tf.errors import UserError

OUTPUT_FILES = ("best.keras", "best.json", "refit.json")   # what a run writes into --output_dir


def parse_numbers(values: list[str], name: str, positive: bool = True, finite: bool = False) -> list[float]:
    """The floats of a list flag ``--name`` ('inf' allowed unless ``finite``; never 'nan').

    Raises:
        UserError: a value is not a number, the list is empty, (``positive``) a value is not > 0, or (``finite``) a
        value is infinite.
    """
    try:
        out = [float(v) for v in values]
    except ValueError:
        raise UserError(f"--{name} must be a list of numbers, got {','.join(values)}") from None
    if not out or any(math.isnan(v) for v in out) or (positive and any(not v > 0 for v in out)):
        raise UserError(f"--{name} must list numbers > 0, got {','.join(values)}")
    if finite and any(math.isinf(v) for v in out):
        raise UserError(f"--{name} must list finite numbers, got {','.join(values)}")
    return out


def check_output_dir(out: Path) -> None:
    """Refuses an ``--output_dir`` that is not a folder, already holds a run's output (an earlier refit is never
    overwritten) or cannot be written.

    Raises:
        UserError: one line naming the folder and the problem.
    """
    if out.exists() and not out.is_dir():
        raise UserError(f"--output_dir is not a folder: {out}")
    existing = [name for name in OUTPUT_FILES if (out / name).exists()]
    if existing:
        raise UserError(f"--output_dir {out} already holds a refit ({', '.join(existing)}): choose another folder "
                        "or move that one away")
    cli.check_output_folder(out / OUTPUT_FILES[0], "--output_dir")


def check_cache_dir(cache: Path) -> None:
    """Refuses a ``--cache_dir`` that is a file or whose folder cannot be made or written (the refits check it before
    any work: the cache is written only after the slow first pass).

    Raises:
        UserError: one line naming the folder and the problem.
    """
    if cache.exists() and not cache.is_dir():
        raise UserError(f"--cache_dir {cache} is a file, not a folder")
    cli.check_writable_folder(cache, "--cache_dir")


def write_json(path: Path, doc: Any) -> None:
    """Writes ``doc`` as JSON atomically (a temporary sibling renamed)."""
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(json.dumps(doc, indent=1, allow_nan=False))
    tmp.replace(path)


def json_float(value: float) -> Any:
    """``value``, or ``"inf"`` for an infinite one (JSON has no infinity)."""
    return value if math.isfinite(value) else "inf"


def log(*args: Any) -> None:
    """Prints a progress line on stderr."""
    print(*args, file=sys.stderr, flush=True)
