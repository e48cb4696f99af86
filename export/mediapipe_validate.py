"""Runs a ``.task`` bundle in MediaPipe Tasks itself (item 5 of :mod:`export.to_mediapipe`): ``PoseLandmarker``
in the isolated ``mediapipe==0.10.21`` venv of :mod:`export.mediapipe_env`, through the standalone worker
script :mod:`export.mp_worker_tasks`, compared with our own pipeline on the same two .tflite files.
"""
from __future__ import annotations

import functools
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import cv2
import numpy as np

from blazepose_tf.contract import NUM_KEYPOINTS
from blazepose_tf.errors import ModelError, UserError
from blazepose_tf.io.images import load_image
from blazepose_tf.io.samples import sample_image_path
from blazepose_tf.runtime.pipeline import PoseTracker
from blazepose_tf.runtime.runners import load_runner
from export.mediapipe_env import MediapipeEnvError, ensure_mediapipe_env, pin_args, tail, worker_env
from export.task_bundle import extract_bundle

#: The worker, run by the mediapipe venv's python (a path: it is a script, not imported).
WORKER_SCRIPT = Path(__file__).resolve().parent / "mp_worker_tasks.py"
#: PoseLandmarkerOptions defaults of MediaPipe Tasks 0.10.21.
MEDIAPIPE_DEFAULTS = {"num_poses": 1, "min_pose_detection_confidence": 0.5, "min_pose_presence_confidence": 0.5,
                      "min_tracking_confidence": 0.5, "output_segmentation_masks": False}

_log = functools.partial(print, flush=True)


def tasks_request(bundle: Union[str, os.PathLike], items: Sequence[Mapping[str, Any]], mode: str = "image",
                  options: Optional[Mapping[str, Any]] = None, fps: float = 30.0, warmup: int = 1) -> dict:
    """The worker's request JSON (see :mod:`export.mp_worker_tasks`); ``options`` override
    :data:`MEDIAPIPE_DEFAULTS`."""
    return {"bundle": str(Path(bundle).resolve()), "mode": mode, "items": list(items),
            "options": {**MEDIAPIPE_DEFAULTS, **dict(options or {})}, "fps": fps, "warmup": warmup}


def tasks_command(python: Path, request: Path, output: Path, cpu: Optional[Sequence[int]] = None) -> list[str]:
    """The command line running the worker on ``request``, writing ``output``, pinned to ``cpu`` if given."""
    return [str(python), str(WORKER_SCRIPT), "--request", str(request), "--output", str(output), *pin_args(cpu)]


def run_pose_landmarker(bundle: Union[str, os.PathLike], items: Sequence[Mapping[str, Any]], mode: str = "image",
                        options: Optional[Mapping[str, Any]] = None, cpu: Optional[Sequence[int]] = None,
                        fps: float = 30.0, warmup: int = 1, timeout: Optional[float] = None,
                        python: Optional[Path] = None) -> dict:
    """Runs MediaPipe Tasks ``PoseLandmarker`` on ``bundle`` in the isolated mediapipe venv.

    ``items`` are ``{"id": ..., "frames": [png paths]}`` (see :mod:`export.mp_worker_tasks` for modes and
    the result format). Returns the worker's JSON; a bundle MediaPipe cannot load gives ``{"error": msg}``.

    Raises:
        MediapipeEnvError: the venv cannot be created, or the worker crashed.
    """
    python = python or ensure_mediapipe_env(quiet=True)
    req = tasks_request(bundle, items, mode, options, fps, warmup)
    with tempfile.TemporaryDirectory(prefix="bp_mp_tasks_") as tmp:
        rq, out = Path(tmp) / "request.json", Path(tmp) / "out.json"
        rq.write_text(json.dumps(req))
        try:
            proc = subprocess.run(tasks_command(python, rq, out, cpu), capture_output=True, text=True,
                                  env=worker_env(), timeout=timeout)
        except subprocess.TimeoutExpired:
            raise MediapipeEnvError(f"MediaPipe Tasks worker did not finish within {timeout} s") from None
        if out.is_file():
            return json.loads(out.read_text())
        raise MediapipeEnvError(f"MediaPipe Tasks worker failed (exit {proc.returncode}): {tail(proc.stderr, 4)}")


def _write_png(image: np.ndarray, path: Path) -> Path:
    if not cv2.imwrite(str(path), np.ascontiguousarray(image[..., ::-1])):
        raise UserError(f"cannot write {path}")
    return path


def validate_bundle(bundle: Union[str, os.PathLike], image_path: Optional[Union[str, os.PathLike]] = None,
                    require: bool = False, log: Callable[..., None] = _log) -> dict[str, Any]:
    """Loads and runs the bundle in MediaPipe Tasks (IMAGE mode) and our pipeline on the same .tflite files.

    Returns ``{"mediapipe": "ok" | "skipped" | "failed", "reason", "ours": {...}, "tasks": {...},
    "median_distance_px"}``. Raises ModelError when MediaPipe cannot load or run the bundle, and, with
    ``require``, when the mediapipe environment is unavailable.
    """
    image_path = Path(image_path) if image_path else sample_image_path()
    rgb = load_image(image_path)
    out: dict[str, Any] = {"image": str(image_path)}
    with tempfile.TemporaryDirectory(prefix="bp_mp_validate_") as tmp:
        det, lmk = extract_bundle(bundle, tmp)
        tracker = PoseTracker(load_runner(det), load_runner(lmk), mode="image", roi_passes=1)  # MediaPipe's graph
        poses = tracker.process(rgb)
        ours = np.asarray(poses[0].keypoints, np.float64)[:NUM_KEYPOINTS, :2] if poses else None
        out["ours"] = {"poses": len(poses), "presence": float(poses[0].score) if poses else None}
        png = _write_png(rgb, Path(tmp) / "validate.png")
        try:
            res = run_pose_landmarker(bundle, [{"id": "validate", "frames": [str(png)]}], mode="image",
                                      timeout=600)
        except MediapipeEnvError as e:
            if require:
                raise ModelError(f"cannot validate the bundle in MediaPipe Tasks: {e}") from None
            out.update(mediapipe="skipped", reason=str(e))
            log(f"validation: MediaPipe Tasks check skipped ({e})")
            return out
    if "error" in res:
        out.update(mediapipe="failed", reason=res["error"])
        raise ModelError(f"MediaPipe Tasks PoseLandmarker rejected the bundle: {res['error']}")
    frame = res["results"][0]["frames"][0]
    if frame.get("error"):
        out.update(mediapipe="failed", reason=frame["error"])
        raise ModelError(f"MediaPipe Tasks loaded the bundle but failed running it: {frame['error']}")
    tposes = frame["poses"]
    out["tasks"] = {"poses": len(tposes), "create_ms": res["meta"].get("create_ms"),
                    "latency_ms": frame.get("latency_ms"), "mediapipe_version": res["meta"]["mediapipe_version"]}
    if tposes and len(tposes[0]["landmarks"]) != NUM_KEYPOINTS:
        raise ModelError(f"MediaPipe Tasks returned {len(tposes[0]['landmarks'])} landmarks, expected "
                         f"{NUM_KEYPOINTS}")
    if tposes and ours is not None:
        theirs = np.asarray([p[:2] for p in tposes[0]["landmarks"]], np.float64)
        out["median_distance_px"] = float(np.median(np.linalg.norm(theirs - ours, axis=1)))
    out["mediapipe"] = "ok"
    agree = (f", median distance to our pipeline {out['median_distance_px']:.2f} px"
             if "median_distance_px" in out else "")
    log(f"validation: MediaPipe Tasks {out['tasks']['mediapipe_version']} loaded the bundle and found "
        f"{len(tposes)} pose(s) on {image_path.name} (our pipeline: {len(poses)}){agree}")
    return out
