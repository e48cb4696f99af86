"""An isolated virtual environment with the official ``mediapipe==0.10.21``, used only as a reference.

mediapipe must never be installed into the project's own environment (it pins ``numpy<2`` and its own
protobuf). This module creates, once, a separate venv at ``$BLAZEPOSE_TF_CACHE/mediapipe-venv`` (default
``~/.cache/blazepose_tf/mediapipe-venv``) with the system ``python3 -m venv`` and ``pip install
mediapipe==0.10.21``. Worker scripts run inside it as subprocesses (:mod:`export.mp_worker_tasks` for
:mod:`export.to_mediapipe`'s validation, :mod:`benchmarks.mp_worker_legacy` for the benchmarks); they import
nothing from the project and talk back through JSON.

    python -m export.mediapipe_env            # create the venv (no-op when it is already there)
    python -m export.mediapipe_env --force    # delete and re-create it

Nothing from mediapipe is imported here.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence, Union

from blazepose_tf.errors import EXIT_MODELS, UserError
from blazepose_tf.official import cache_dir

MEDIAPIPE_VERSION = "0.10.21"
_MARKER = ".blazepose_tf_complete"     # written last, only after mediapipe imports cleanly


class MediapipeEnvError(UserError):
    """The reference mediapipe environment could not be created or used (offline, pip failure...)."""

    exit_code = EXIT_MODELS


def cache_root() -> Path:
    """``$BLAZEPOSE_TF_CACHE`` or ``~/.cache/blazepose_tf`` (the parent of the official models' folder)."""
    return cache_dir().parent


def venv_dir() -> Path:
    """Folder of the reference venv."""
    return cache_root() / "mediapipe-venv"


def venv_python(directory: Optional[Path] = None) -> Path:
    """Python executable inside the reference venv (it may not exist yet)."""
    return Path(directory or venv_dir()) / "bin" / "python"


def _system_python() -> str:
    """The interpreter used for ``-m venv``: ``$BLAZEPOSE_TF_MP_BASE_PYTHON``, else ``python3`` on PATH.

    If ``python3`` on PATH is itself inside a virtual environment (e.g. the project venv is activated),
    the base interpreter behind the running Python is used instead, so the new venv never inherits the
    project's packages.
    """
    override = os.environ.get("BLAZEPOSE_TF_MP_BASE_PYTHON")
    if override:
        return override
    found = shutil.which("python3")
    if found:
        probe = subprocess.run([found, "-c", "import sys; print(int(sys.prefix != sys.base_prefix))"],
                               capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip() == "0":
            return found
    base = getattr(sys, "_base_executable", None) or sys.executable
    return base


def tail(text: str, lines: int = 3) -> str:
    """The last ``lines`` non-empty lines of a worker's output, joined with `` | `` (for one-line errors)."""
    rows = [r for r in (text or "").strip().splitlines() if r.strip()]
    return " | ".join(rows[-lines:]) if rows else "no output"


def _installed_version(python: Path) -> Optional[str]:
    """mediapipe version importable by ``python``, or None."""
    if not python.exists():
        return None
    proc = subprocess.run([str(python), "-c", "import mediapipe; print(mediapipe.__version__)"],
                          capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def ensure_mediapipe_env(force: bool = False, quiet: bool = False) -> Path:
    """Creates the reference venv if needed and returns its python executable.

    Idempotent: when the venv is complete (marker file present and ``mediapipe`` importable at the pinned
    version) it returns at once. A half-built venv (e.g. from an interrupted or offline run) is deleted
    and rebuilt. Concurrent callers are serialized with a file lock.

    Args:
        force: delete and re-create the venv even if it is complete.
        quiet: do not print progress to stderr.
    Raises:
        MediapipeEnvError: venv creation or ``pip install`` failed (typically: no network).
    """
    directory = venv_dir()
    python = venv_python(directory)
    marker = directory / _MARKER
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / "mediapipe-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not force and marker.is_file() and python.exists():
            if marker.read_text().strip() == MEDIAPIPE_VERSION:
                return python
        if directory.exists():
            shutil.rmtree(directory)
        base = _system_python()
        if not quiet:
            print(f"creating {directory} with {base} -m venv and pip install mediapipe=={MEDIAPIPE_VERSION} "
                  "(one-off, ~1-2 min)", file=sys.stderr)
        proc = subprocess.run([base, "-m", "venv", str(directory)], capture_output=True, text=True)
        if proc.returncode != 0 or not python.exists():
            shutil.rmtree(directory, ignore_errors=True)
            raise MediapipeEnvError(f"could not create a venv with `{base} -m venv {directory}`: "
                                    f"{tail(proc.stderr)}")
        cmd = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
               "--quiet", "--retries", "2", "--timeout", "30", f"mediapipe=={MEDIAPIPE_VERSION}"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            shutil.rmtree(directory, ignore_errors=True)
            raise MediapipeEnvError(f"`pip install mediapipe=={MEDIAPIPE_VERSION}` into {directory} failed "
                                    f"(offline?): {tail(proc.stderr)}")
        got = _installed_version(python)
        if got != MEDIAPIPE_VERSION:
            shutil.rmtree(directory, ignore_errors=True)
            raise MediapipeEnvError(f"mediapipe installed into {directory} but `import mediapipe` gives "
                                    f"version {got!r}, expected {MEDIAPIPE_VERSION}")
        marker.write_text(MEDIAPIPE_VERSION + "\n")
        return python


def worker_env() -> dict[str, str]:
    """The environment a worker runs in: ours without the project's Python paths, mediapipe's logging quiet."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.setdefault("GLOG_minloglevel", "2")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def pin_args(cpu: Union[int, Sequence[int], None]) -> list[str]:
    """A worker's ``--pin_cpu`` flag for a core or cores; none for None or no cores."""
    if cpu is None:
        return []
    cores = [cpu] if isinstance(cpu, int) else list(cpu)
    return ["--pin_cpu", ",".join(str(int(c)) for c in cores)] if cores else []


def main(argv: Sequence[str]) -> int:
    """Command line: create the reference venv and print its python path."""
    force = "--force" in argv[1:]
    try:
        python = ensure_mediapipe_env(force=force)
    except MediapipeEnvError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    print(python)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
