"""Runs MediaPipe's legacy Pose solution on a list of images; executed by the *mediapipe venv's* python.

    <mediapipe-venv>/bin/python benchmarks/mp_worker_legacy.py --images in.json --output out.json \
        [--pin_cpu 0[,1...]] [--warmup 3] [--model_complexity 1]
    <mediapipe-venv>/bin/python benchmarks/mp_worker_legacy.py --serve [--pin_cpu 0] [--warmup 3]

``--model_complexity 1`` runs the Full landmark model (in the wheel), ``0`` the Lite, which must already be in
the mediapipe package's ``modules/pose_landmark/`` (``benchmarks/mediapipe_env.py`` copies it there; otherwise
MediaPipe tries to download it).

Standalone on purpose: it runs in the isolated environment made by ``export/mediapipe_env.py`` and
must not import ``blazepose_tf`` (nor anything outside the standard library, mediapipe, cv2 and numpy).

Batch mode input: a JSON list of image paths. Output JSON::

    {"meta": {"mediapipe_version", "model_complexity", "min_detection_confidence", "warmup",
              "cpu_affinity", "num_images"},
     "results": [{"path", "width", "height", "landmarks", "latency_ms", "error"}, ...]}

``landmarks`` is 33 x [x_px, y_px, z, visibility, presence] (x/y = normalized x width/height; z is
MediaPipe's normalized depth, on the same scale as normalized x, so ``z * width`` is pixels) or null
when no person was found. The legacy graph leaves ``presence`` unset: it is then null. ``latency_ms``
times ``pose.process`` alone (after ``--warmup`` calls on the first readable image). With
``static_image_mode=True`` every call runs the detector and is independent of the previous one, so one
``Pose`` object serves all images. On Linux desktop builds MediaPipe's XNNPACK delegate defaults to one
thread; ``--pin_cpu`` also keeps the graph's own scheduler threads on a single core.

``--serve`` keeps one ``Pose`` alive and answers requests line by line (see :func:`_serve`), so a benchmark
can interleave MediaPipe and another pipeline image by image under the same machine load.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Optional


def _parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", help="JSON file with a list of image paths (batch mode).")
    p.add_argument("--output", help="Where to write the results JSON (batch mode).")
    p.add_argument("--serve", action="store_true",
                   help="Line mode: read one image request per stdin line, answer one JSON line each.")
    p.add_argument("--pin_cpu", default=None,
                   help="Pin this process to these CPU cores (comma-separated, e.g. 0 or 0,1).")
    p.add_argument("--warmup", type=int, default=3, help="Warm-up process() calls on the first image.")
    p.add_argument("--min_detection_confidence", type=float, default=0.5)
    p.add_argument("--model_complexity", type=int, default=1, help="0 Lite, 1 Full (the landmark model).")
    args = p.parse_args(argv)
    if not args.serve and not (args.images and args.output):
        p.error("--images and --output are required unless --serve is given")
    return args


def _landmarks_px(result: Any, width: int, height: int) -> Optional[list[list[float]]]:
    """33 x [x_px, y_px, z, visibility, presence], or None when no pose was found."""
    if result.pose_landmarks is None:
        return None
    out = []
    for lm in result.pose_landmarks.landmark:
        out.append([float(lm.x) * width, float(lm.y) * height, float(lm.z),
                    float(lm.visibility), float(lm.presence) if lm.HasField("presence") else None])
    return out


def _read_rgb(path: str) -> Optional[Any]:
    import cv2

    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _process_one(pose: Any, path: str, rgb: Optional[Any], repeat: int = 1) -> dict:
    """Runs ``pose.process`` ``repeat`` times on one image; latency_ms is the median of the runs."""
    if rgb is None:
        return {"path": path, "width": None, "height": None, "landmarks": None, "latency_ms": None,
                "error": "unreadable image"}
    height, width = rgb.shape[:2]
    times = []
    res = None
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        res = pose.process(rgb)
        times.append((time.perf_counter() - t0) * 1000.0)
    times.sort()
    return {"path": path, "width": int(width), "height": int(height),
            "landmarks": _landmarks_px(res, width, height), "latency_ms": times[len(times) // 2],
            "error": None}


def _meta(args: argparse.Namespace, mp: Any, num_images: Optional[int]) -> dict:
    return {"mediapipe_version": mp.__version__, "model_complexity": args.model_complexity,
            "min_detection_confidence": args.min_detection_confidence, "static_image_mode": True,
            "warmup": args.warmup, "cpu_affinity": sorted(os.sched_getaffinity(0)), "num_images": num_images}


def _serve(args: argparse.Namespace, pose: Any, mp: Any) -> int:
    """Line protocol: stdin gets JSON requests ``{"path": ..., "repeat": k}`` (or a bare path), stdout
    answers one JSON line each (the per-image dict above). The first line written is the meta dict.

    Native libraries print to fd 1; it is pointed at stderr so only protocol lines reach the reader.
    """
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    out.write(json.dumps({"meta": _meta(args, mp, None)}) + "\n")
    warmed = False
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        req = json.loads(line) if line.startswith("{") else {"path": line}
        path = str(req["path"])
        rgb = _read_rgb(path)
        if not warmed and rgb is not None:
            for _ in range(max(0, args.warmup)):
                pose.process(rgb)
            warmed = True
        out.write(json.dumps(_process_one(pose, path, rgb, int(req.get("repeat", 1)))) + "\n")
    return 0


def main(argv: list[str]) -> int:
    args = _parse_args(argv)
    if args.pin_cpu is not None:
        # Before mediapipe/XNNPACK start any thread, so every thread inherits the mask.
        os.sched_setaffinity(0, {int(c) for c in str(args.pin_cpu).split(",") if c.strip()})

    import mediapipe as mp

    with mp.solutions.pose.Pose(static_image_mode=True, model_complexity=args.model_complexity,
                                min_detection_confidence=args.min_detection_confidence,
                                enable_segmentation=False) as pose:
        if args.serve:
            return _serve(args, pose, mp)
        with open(args.images) as f:
            paths = [str(p) for p in json.load(f)]
        images = [_read_rgb(p) for p in paths]
        first = next((im for im in images if im is not None), None)
        if first is not None:
            for _ in range(max(0, args.warmup)):
                pose.process(first)
        results = [_process_one(pose, path, rgb) for path, rgb in zip(paths, images)]

    tmp = args.output + ".part"
    with open(tmp, "w") as f:
        json.dump({"meta": _meta(args, mp, len(paths)), "results": results}, f)
    os.replace(tmp, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
