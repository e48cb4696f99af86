"""Runs MediaPipe Tasks' ``PoseLandmarker`` from a ``.task`` bundle; executed by the *mediapipe venv's* python.

    <mediapipe-venv>/bin/python export/mp_worker_tasks.py --request req.json --output out.json [--pin_cpu 0]

Standalone on purpose, like :mod:`benchmarks.mp_worker_legacy`: it runs in the isolated environment made by
``export/mediapipe_env.py`` (mediapipe pins NumPy < 2) and imports nothing but the standard library, mediapipe,
cv2 and numpy — nothing from this project. Callers: :func:`export.mediapipe_validate.run_pose_landmarker`
(the exporter's validation) and :mod:`benchmarks.mediapipe_bundle`.

Request JSON::

    {"bundle": "/path/pose_landmarker.task",
     "mode": "image" | "video",
     "items": [{"id": "...", "frames": ["/path/frame0.png", ...]}, ...],
     "options": {"num_poses": 1, "min_pose_detection_confidence": 0.5, "min_pose_presence_confidence": 0.5,
                 "min_tracking_confidence": 0.5, "output_segmentation_masks": false},
     "fps": 30, "warmup": 1}

* ``image`` mode: one ``PoseLandmarker`` (``RunningMode.IMAGE``) serves every frame of every item; each frame
  is independent (``detect``).
* ``video`` mode: each item is a clip: a *fresh* ``PoseLandmarker`` (``RunningMode.VIDEO``) per item, its
  frames fed with ``detect_for_video`` at timestamps ``k * 1000 / fps`` ms, so tracking state never leaks
  from one clip into the next.

Output JSON::

    {"meta": {"mediapipe_version", "mode", "options", "cpu_affinity", "create_ms"},
     "results": [{"id", "frames": [{"width", "height", "latency_ms", "error",
                                    "poses": [{"landmarks": 33 x [x_px, y_px, z, visibility, presence],
                                               "world": 33 x [x, y, z] (m),
                                               "mask": {"shape": [h, w], "mean": m, "max": m} or null}]}]}]}

``x_px``/``y_px`` are MediaPipe's normalized coordinates times the image width/height; ``z`` is MediaPipe's
normalized depth. If the bundle cannot be loaded, the output is ``{"meta": ..., "error": "<message>"}`` and the
exit code is 3 (the message is MediaPipe's own, e.g. the missing-NormalizationOptions error); a frame MediaPipe
fails on (e.g. a landmark model whose outputs are not in the official order) gets its message in ``error``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Optional

DEFAULT_OPTIONS = {"num_poses": 1, "min_pose_detection_confidence": 0.5, "min_pose_presence_confidence": 0.5,
                   "min_tracking_confidence": 0.5, "output_segmentation_masks": False}


def _parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--request", required=True, help="Request JSON (see the module docstring).")
    p.add_argument("--output", required=True, help="Where to write the results JSON.")
    p.add_argument("--pin_cpu", default=None, help="Pin this process to these CPU cores (e.g. 0 or 0,1).")
    return p.parse_args(argv)


def _read_rgb(path: str) -> Optional[Any]:
    import cv2

    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _create(mp: Any, bundle: str, mode: str, options: dict) -> Any:
    from mediapipe.tasks.python import BaseOptions
    from mediapipe.tasks.python.vision import PoseLandmarker, PoseLandmarkerOptions, RunningMode

    running = RunningMode.VIDEO if mode == "video" else RunningMode.IMAGE
    opts = PoseLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=bundle), running_mode=running,
        num_poses=int(options["num_poses"]),
        min_pose_detection_confidence=float(options["min_pose_detection_confidence"]),
        min_pose_presence_confidence=float(options["min_pose_presence_confidence"]),
        min_tracking_confidence=float(options["min_tracking_confidence"]),
        output_segmentation_masks=bool(options["output_segmentation_masks"]))
    return PoseLandmarker.create_from_options(opts)


def _poses(result: Any, width: int, height: int) -> list[dict]:
    import numpy as np

    out = []
    worlds = list(result.pose_world_landmarks or [])
    masks = list(result.segmentation_masks or [])
    for i, lms in enumerate(result.pose_landmarks or []):
        pts = [[float(lm.x) * width, float(lm.y) * height, float(lm.z),
                None if lm.visibility is None else float(lm.visibility),
                None if lm.presence is None else float(lm.presence)] for lm in lms]
        world = [[float(w.x), float(w.y), float(w.z)] for w in worlds[i]] if i < len(worlds) else None
        mask = None
        if i < len(masks) and masks[i] is not None:
            arr = np.asarray(masks[i].numpy_view(), dtype=np.float32)
            mask = {"shape": list(arr.shape[:2]), "mean": float(arr.mean()), "max": float(arr.max())}
        out.append({"landmarks": pts, "world": world, "mask": mask})
    return out


def _run_frame(mp: Any, landmarker: Any, path: str, mode: str, timestamp_ms: int) -> dict:
    rgb = _read_rgb(path)
    if rgb is None:
        return {"width": None, "height": None, "latency_ms": None, "error": f"unreadable image {path}",
                "poses": []}
    height, width = rgb.shape[:2]
    image = mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb)
    t0 = time.perf_counter()
    try:
        if mode == "video":
            result = landmarker.detect_for_video(image, timestamp_ms)
        else:
            result = landmarker.detect(image)
    except Exception as e:  # noqa: BLE001 - e.g. a model whose outputs are not in MediaPipe's order
        return {"width": int(width), "height": int(height), "latency_ms": None, "error": _first_error_line(e),
                "poses": []}
    latency = (time.perf_counter() - t0) * 1000.0
    return {"width": int(width), "height": int(height), "latency_ms": latency, "error": None,
            "poses": _poses(result, width, height)}


def _close(landmarker: Any) -> None:
    """Closes a landmarker; a graph that already failed re-raises its error on close, which is reported per frame."""
    try:
        landmarker.close()
    except Exception:  # noqa: BLE001
        pass


def _first_error_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " | ".join(lines[:3])[:600]


def main(argv: list[str]) -> int:
    args = _parse_args(argv)
    if args.pin_cpu is not None:
        # Before mediapipe/XNNPACK start any thread, so every thread inherits the mask.
        os.sched_setaffinity(0, {int(c) for c in str(args.pin_cpu).split(",") if c.strip()})
    with open(args.request) as f:
        req = json.load(f)
    mode = str(req.get("mode", "image"))
    if mode not in ("image", "video"):
        print(f"error: mode must be image or video, got {mode!r}", file=sys.stderr)
        return 2
    options = dict(DEFAULT_OPTIONS)
    options.update(req.get("options") or {})
    fps = float(req.get("fps", 30.0))
    warmup = int(req.get("warmup", 1))
    items = list(req.get("items") or [])

    import mediapipe as mp

    meta = {"mediapipe_version": mp.__version__, "bundle": req["bundle"], "mode": mode, "options": options,
            "fps": fps, "cpu_affinity": sorted(os.sched_getaffinity(0)), "num_items": len(items)}
    out: dict[str, Any] = {"meta": meta}
    code = 0
    try:
        t0 = time.perf_counter()
        landmarker = _create(mp, req["bundle"], mode, options) if mode == "image" else None
        if landmarker is None:  # video: check that the bundle loads at all before the per-clip instances
            _close(_create(mp, req["bundle"], mode, options))
        meta["create_ms"] = (time.perf_counter() - t0) * 1000.0
    except Exception as e:  # noqa: BLE001 - report MediaPipe's message to the caller
        out["error"] = _first_error_line(e)
        code = 3
    else:
        results = []
        if mode == "image":
            first = next((fr for it in items for fr in it.get("frames", [])), None)
            if first is not None:
                for _ in range(max(0, warmup)):
                    _run_frame(mp, landmarker, first, mode, 0)
            for it in items:
                results.append({"id": it.get("id"),
                                "frames": [_run_frame(mp, landmarker, fr, mode, 0) for fr in it.get("frames", [])]})
            _close(landmarker)
        else:
            for it in items:
                lm = _create(mp, req["bundle"], mode, options)
                frames = [_run_frame(mp, lm, fr, mode, int(round(k * 1000.0 / fps)))
                          for k, fr in enumerate(it.get("frames", []))]
                _close(lm)
                results.append({"id": it.get("id"), "frames": frames})
        out["results"] = results
    tmp = args.output + ".part"
    with open(tmp, "w") as f:
        json.dump(out, f)
    os.replace(tmp, args.output)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
