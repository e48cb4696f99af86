"""MediaPipe's legacy Pose solution as a reference, run in the isolated ``mediapipe==0.10.21`` venv of
:mod:`export.mediapipe_env`: :mod:`benchmarks.mp_worker_legacy` runs inside it as a subprocess, in batch
(:func:`run_legacy_pose`) or one image at a time (:class:`LegacyPoseServer`), with the Full landmark model
(``model_complexity=1``) or the Lite (``model_complexity=0``). The wheel holds only the Full; for the Lite,
MediaPipe would download ``pose_landmark_lite.tflite`` into its package at run time, so :func:`legacy_python`
copies the Lite this project carries (:mod:`blazepose_tf.official`) there first.

    python -m benchmarks.mediapipe_env            # create the venv (as python -m export.mediapipe_env)
    python -m benchmarks.mediapipe_env --force    # delete and re-create it

Nothing from mediapipe is imported here; the worker talks back through a JSON file.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

from blazepose_tf.errors import ModelError
from blazepose_tf.official import OFFICIAL_SHA256, PACKAGED_MODELS, official_model_path, sha256
from export.mediapipe_env import MediapipeEnvError, ensure_mediapipe_env, main, pin_args, tail, worker_env

WORKER_SCRIPT = Path(__file__).resolve().parent / "mp_worker_legacy.py"
#: MediaPipe's ``model_complexity`` -> the official landmark model its legacy Pose runs.
LEGACY_LANDMARK_MODELS: dict[int, str] = {1: "pose_landmark_full", 0: "pose_landmark_lite"}
# Prints the venv's mediapipe package folder without importing mediapipe.
_FIND_PACKAGE = "import importlib.util, os; print(os.path.dirname(importlib.util.find_spec('mediapipe').origin))"


def legacy_python(model_complexity: int = 1) -> Path:
    """The reference venv's python (created if needed), ready to run the legacy Pose at ``model_complexity``: a
    landmark model this project carries (the Lite) is copied into the venv's mediapipe package first.

    Raises:
        MediapipeEnvError: unknown complexity, the venv cannot be created or the model cannot be copied.
    """
    if model_complexity not in LEGACY_LANDMARK_MODELS:
        raise MediapipeEnvError(f"model_complexity must be one of {sorted(LEGACY_LANDMARK_MODELS)} (Heavy is not "
                                f"available offline), got {model_complexity}")
    python = ensure_mediapipe_env()
    name = LEGACY_LANDMARK_MODELS[model_complexity]
    if name in PACKAGED_MODELS:
        install_packaged_model(python, name)
    return python


def install_packaged_model(python: Path, name: str) -> Path:
    """Copies the packaged official model ``name`` into ``<mediapipe>/modules/pose_landmark/`` of the venv whose
    interpreter is ``python`` (atomically; nothing to do when the right file is there); returns its path there."""
    proc = subprocess.run([str(python), "-c", _FIND_PACKAGE], capture_output=True, text=True, env=worker_env())
    if proc.returncode != 0 or not proc.stdout.strip():
        raise MediapipeEnvError(f"cannot locate the mediapipe package of {python}: {tail(proc.stderr)}")
    dest = Path(proc.stdout.strip()) / "modules" / "pose_landmark" / f"{name}.tflite"
    if dest.is_file() and sha256(dest) == OFFICIAL_SHA256[name]:
        return dest
    try:
        source = official_model_path(name)
        part = dest.with_name(f".{dest.name}.{os.getpid()}.part")
        shutil.copyfile(source, part)
        os.replace(part, dest)
    except (ModelError, OSError) as e:
        raise MediapipeEnvError(f"cannot copy {name}.tflite into {dest.parent}: {e}") from None
    return dest


def run_legacy_pose(image_paths: Iterable[Union[str, Path]], out_json: Union[str, Path],
                    threads_pinned: bool = True, cpu: Union[int, Sequence[int]] = 0, warmup: int = 3,
                    timeout: Optional[float] = None, model_complexity: int = 1) -> dict:
    """Runs MediaPipe's legacy ``mp.solutions.pose.Pose`` (static images; Full model, or Lite with
    ``model_complexity=0``) on ``image_paths``.

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
        model_complexity: 1 (Full) or 0 (Lite), see :data:`LEGACY_LANDMARK_MODELS`.
    Raises:
        MediapipeEnvError: the venv cannot be created or the worker failed.
    """
    python = legacy_python(model_complexity)
    paths = [str(Path(p).resolve()) for p in image_paths]
    out_json = Path(out_json)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="mp_inputs_", delete=False) as f:
        json.dump(paths, f)
        inputs = f.name
    cmd = [str(python), str(WORKER_SCRIPT), "--images", inputs, "--output", str(out_json),
           "--warmup", str(warmup), "--model_complexity", str(model_complexity)]
    cmd += pin_args(cpu if threads_pinned else None)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=worker_env(), timeout=timeout)
    except subprocess.TimeoutExpired:
        raise MediapipeEnvError(f"mediapipe worker did not finish within {timeout} s") from None
    finally:
        os.unlink(inputs)
    if proc.returncode != 0 or not out_json.is_file():
        raise MediapipeEnvError(f"mediapipe worker failed (exit {proc.returncode}): {tail(proc.stderr, 5)}")
    with open(out_json) as f:
        return json.load(f)


class LegacyPoseServer:
    """A long-lived MediaPipe legacy Pose worker answering one image at a time (``--serve`` mode).

    Lets a benchmark interleave MediaPipe and our pipeline image by image, so both see the same machine
    load. Use as a context manager::

        with LegacyPoseServer(cpu=0) as mp_pose:       # model_complexity=0 for the Lite
            result = mp_pose.process("/path/im.jpg", repeat=3)   # dict as in run_legacy_pose's results
    """

    def __init__(self, threads_pinned: bool = True, cpu: Union[int, Sequence[int]] = 0, warmup: int = 3,
                 model_complexity: int = 1):
        python = legacy_python(model_complexity)
        cmd = [str(python), str(WORKER_SCRIPT), "--serve", "--warmup", str(warmup),
               "--model_complexity", str(model_complexity)]
        cmd += pin_args(cpu if threads_pinned else None)
        self._stderr = tempfile.TemporaryFile("w+")
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                      text=True, bufsize=1, env=worker_env())
        self.meta: dict = self._read()["meta"]

    def _read(self) -> dict:
        line = self._proc.stdout.readline() if self._proc.stdout else ""
        if not line:
            self._proc.wait()
            self._stderr.seek(0)
            raise MediapipeEnvError(f"mediapipe worker exited (code {self._proc.returncode}): "
                                    f"{tail(self._stderr.read(), 5)}")
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


if __name__ == "__main__":
    sys.exit(main(sys.argv))
