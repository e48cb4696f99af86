"""An isolated virtual environment with the official ``mediapipe==0.10.21``, used only as a reference.

mediapipe must never be installed into the project's own environment (it pins ``numpy<2`` and its own
protobuf). This module creates, once, a separate venv at ``$BLAZEPOSE_TF_CACHE/mediapipe-venv`` (default
``~/.cache/blazepose_tf/mediapipe-venv``) with the system ``python3 -m venv`` and ``pip install
mediapipe==0.10.21``, and runs :mod:`benchmarks.mp_worker_legacy` inside it as a subprocess: in batch
(:func:`run_legacy_pose`) or one image at a time (:class:`LegacyPoseServer`).

    python -m benchmarks.mediapipe_env            # create the venv (no-op when it is already there)
    python -m benchmarks.mediapipe_env --force    # delete and re-create it

Nothing from mediapipe is imported here; the worker talks back through a JSON file.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

from blazepose_tf.errors import EXIT_MODELS, UserError

MEDIAPIPE_VERSION = "0.10.21"
WORKER_SCRIPT = Path(__file__).resolve().parent / "mp_worker_legacy.py"
_MARKER = ".blazepose_tf_complete"     # written last, only after mediapipe imports cleanly


class MediapipeEnvError(UserError):
    """The reference mediapipe environment could not be created or used (offline, pip failure...)."""

    exit_code = EXIT_MODELS


def cache_root() -> Path:
    """``$BLAZEPOSE_TF_CACHE`` or ``~/.cache/blazepose_tf``."""
    root = os.environ.get("BLAZEPOSE_TF_CACHE") or os.path.join(Path.home(), ".cache", "blazepose_tf")
    return Path(root)


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


def _tail(text: str, lines: int = 3) -> str:
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
                                    f"{_tail(proc.stderr)}")
        cmd = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
               "--quiet", "--retries", "2", "--timeout", "30", f"mediapipe=={MEDIAPIPE_VERSION}"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            shutil.rmtree(directory, ignore_errors=True)
            raise MediapipeEnvError(f"`pip install mediapipe=={MEDIAPIPE_VERSION}` into {directory} failed "
                                    f"(offline?): {_tail(proc.stderr)}")
        got = _installed_version(python)
        if got != MEDIAPIPE_VERSION:
            shutil.rmtree(directory, ignore_errors=True)
            raise MediapipeEnvError(f"mediapipe installed into {directory} but `import mediapipe` gives "
                                    f"version {got!r}, expected {MEDIAPIPE_VERSION}")
        marker.write_text(MEDIAPIPE_VERSION + "\n")
        return python


def run_legacy_pose(image_paths: Iterable[Union[str, Path]], out_json: Union[str, Path],
                    threads_pinned: bool = True, cpu: Union[int, Sequence[int]] = 0, warmup: int = 3,
                    timeout: Optional[float] = None) -> dict:
    """Runs MediaPipe's legacy ``mp.solutions.pose.Pose`` (static images, Full model) on ``image_paths``.

    The worker (:mod:`benchmarks.mp_worker_legacy`) runs in the reference venv and writes ``out_json``;
    its parsed content is returned: ``{"meta": {...}, "results": [{"path", "width", "height",
    "landmarks" (33 x [x_px, y_px, z, visibility, presence]) or None, "latency_ms"}, ...]}`` in input
    order.

    Args:
        image_paths: images to process.
        out_json: where the worker writes its results.
        threads_pinned: pin the worker process to the CPU core(s) ``cpu`` (default: the single core 0,
            for fair one-thread timing).
        cpu: core, or cores, used when ``threads_pinned``.
        warmup: warm-up ``process`` calls on the first readable image before timing.
        timeout: seconds before the worker is killed (None = no limit).
    Raises:
        MediapipeEnvError: the venv cannot be created or the worker failed.
    """
    python = ensure_mediapipe_env()
    paths = [str(Path(p).resolve()) for p in image_paths]
    out_json = Path(out_json)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="mp_inputs_", delete=False) as f:
        json.dump(paths, f)
        inputs = f.name
    cmd = [str(python), str(WORKER_SCRIPT), "--images", inputs, "--output", str(out_json),
           "--warmup", str(warmup)]
    cmd += _pin_args(threads_pinned, cpu)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=_worker_env(), timeout=timeout)
    except subprocess.TimeoutExpired:
        raise MediapipeEnvError(f"mediapipe worker did not finish within {timeout} s") from None
    finally:
        os.unlink(inputs)
    if proc.returncode != 0 or not out_json.is_file():
        raise MediapipeEnvError(f"mediapipe worker failed (exit {proc.returncode}): {_tail(proc.stderr, 5)}")
    with open(out_json) as f:
        return json.load(f)


def _worker_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.setdefault("GLOG_minloglevel", "2")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def _pin_args(threads_pinned: bool, cpu: Union[int, Sequence[int]]) -> list[str]:
    if not threads_pinned:
        return []
    cores = [cpu] if isinstance(cpu, int) else list(cpu)
    return ["--pin_cpu", ",".join(str(int(c)) for c in cores)]


class LegacyPoseServer:
    """A long-lived MediaPipe legacy Pose worker answering one image at a time (``--serve`` mode).

    Lets a benchmark interleave MediaPipe and our pipeline image by image, so both see the same machine
    load. Use as a context manager::

        with LegacyPoseServer(cpu=0) as mp_pose:
            result = mp_pose.process("/path/im.jpg", repeat=3)   # dict as in run_legacy_pose's results
    """

    def __init__(self, threads_pinned: bool = True, cpu: Union[int, Sequence[int]] = 0, warmup: int = 3):
        python = ensure_mediapipe_env()
        cmd = [str(python), str(WORKER_SCRIPT), "--serve", "--warmup", str(warmup)]
        cmd += _pin_args(threads_pinned, cpu)
        self._stderr = tempfile.TemporaryFile("w+")
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                      text=True, bufsize=1, env=_worker_env())
        self.meta: dict = self._read()["meta"]

    def _read(self) -> dict:
        line = self._proc.stdout.readline() if self._proc.stdout else ""
        if not line:
            self._proc.wait()
            self._stderr.seek(0)
            raise MediapipeEnvError(f"mediapipe worker exited (code {self._proc.returncode}): "
                                    f"{_tail(self._stderr.read(), 5)}")
        return json.loads(line)

    def process(self, path: Union[str, Path], repeat: int = 1) -> dict:
        """Runs the legacy pipeline on one image file; ``latency_ms`` is the median of ``repeat`` calls."""
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps({"path": str(Path(path).resolve()), "repeat": int(repeat)}) + "\n")
        self._proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        """Stops the worker."""
        if self._proc.poll() is None:
            if self._proc.stdin:
                self._proc.stdin.close()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc.stdout:
            self._proc.stdout.close()
        self._stderr.close()

    def __enter__(self) -> "LegacyPoseServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
