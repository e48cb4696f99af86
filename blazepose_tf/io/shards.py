"""TFRecord shard patterns (the ``--train_data`` / ``--dev_data`` flags): globs, several separated by commas, each with
``~`` and ``$VAR`` expanded. Imports no TensorFlow, so a command checks them before TensorFlow starts."""
from __future__ import annotations

import glob
import os


def expand_patterns(pattern: str) -> str:
    """A glob, or several separated by commas, with ``~`` and ``$VAR`` expanded in each (empty ones dropped)."""
    parts = (p.strip() for p in pattern.split(","))
    return ",".join(os.path.expanduser(os.path.expandvars(p)) for p in parts if p)


def list_shards(pattern: str) -> list[str]:
    """Sorted shard files (not folders) for a glob pattern, or several separated by commas (their union; each
    expanded by :func:`expand_patterns`). Raises FileNotFoundError naming a pattern that matches none."""
    files: set[str] = set()
    for part in filter(None, expand_patterns(pattern).split(",")):
        found = {f for f in glob.glob(part) if os.path.isfile(f)}
        if not found:
            raise FileNotFoundError(f"no TFRecord shards match {part}")
        files |= found
    if not files:
        raise FileNotFoundError(f"no TFRecord shards match {pattern!r}")
    return sorted(files)
