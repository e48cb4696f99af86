"""Helpers for the hostile-user tests (``tests/test_hostile_*.py``): run a command as a user would, assert it
failed (or succeeded) cleanly with one ``error:`` line and the documented exit code, and check that no file a
user had was changed."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterable, Optional

REPO = Path(__file__).resolve().parents[1]
# Lines other libraries print to stderr (TFLite's "INFO: Created TensorFlow Lite XNNPACK delegate", absl/TF logs).
FOREIGN_PREFIXES = ("INFO: ", "WARNING: ", "W0000", "I0000", "E0000", "WARNING:absl", "INFO:tensorflow")


def run_module(module: str, *args: object, timeout: float = 600, env: Optional[dict] = None,
               cwd: Optional[Path] = None, python_options: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Runs ``python [python_options] -m module args`` from the repository root, as a user would."""
    full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
    return subprocess.run([sys.executable, *python_options, "-m", module, *map(str, args)], cwd=cwd or REPO,
                          capture_output=True, text=True, errors="replace", timeout=timeout, env=full_env)


def report(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    """The ``error:`` lines a command printed on stderr."""
    return [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]


def assert_clean_exit(proc: subprocess.CompletedProcess, code: int, *substrings: str) -> str:
    """Asserts exit ``code``, no traceback anywhere, and (for a failure) exactly one ``error:`` line that contains
    every one of ``substrings`` (case-insensitive). Returns that line ('' for code 0)."""
    text = report(proc)
    assert proc.returncode == code, text
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, text
    if code == 0 and not substrings:
        return ""
    lines = error_lines(proc)
    assert len(lines) == 1, text
    for s in substrings:
        assert s.lower() in lines[0].lower(), f"{s!r} not in {lines[0]!r}\n{text}"
    return lines[0]


def checksums(*roots: Path) -> dict[str, str]:
    """sha256 of every file under ``roots`` (files or folders), keyed by path; to compare before/after."""
    out: dict[str, str] = {}
    for root in roots:
        files: Iterable[Path] = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for p in files:
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out
