"""Our models inside MediaPipe Tasks: ``.task`` bundles run by ``PoseLandmarker`` vs our own pipeline.

    python -m benchmarks.mediapipe_bundle [--num_images 100] [--split dev] [--modes image,video]
        [--bundles official,converted,lite,full] [--lite_model M.keras] [--full_model M.keras]
        [--clip_frames 3] [--shift 3,2] [--out_dir DIR] [--rebuild] [--cpu 0] [--output results.json]

For each bundle (made with :mod:`export.to_mediapipe`):

* ``official``: MediaPipe's own ``pose_detection.tflite`` + ``pose_landmark_full.tflite`` with TFLite Metadata;
* ``converted``: our Keras conversions of both (``convert_official.converted_model_path``), exported fp32;
* ``lite`` / ``full``: our own tracker presets (``--lite_model`` / ``--full_model``, default
  ``~/.cache/blazepose_tf/runs/{lite,full}/best.keras``; when that file does not exist, a freshly built
  **untrained** preset, labelled so) with documented placeholders (segmentation, world; padded landmarks,
  own heatmap), behind the converted official detector (our own detector is not trained for this yet),

it runs, on the first ``--num_images`` scored images of the LSPET split (docs/design.md §8):

* MediaPipe Tasks 0.10.21 ``PoseLandmarker`` from the bundle, in its isolated venv
  (:mod:`export.mediapipe_env`, worker :mod:`export.mp_worker_tasks`, pinned to ``--cpu``), Tasks
  defaults (num_poses 1, min_pose_detection_confidence / min_pose_presence_confidence /
  min_tracking_confidence 0.5), and
* our pipeline, :class:`~blazepose_tf.runtime.pipeline.PoseTracker` on the **same two .tflite files**
  extracted from the bundle (``load_runner``), same thresholds,

in two modes:

* ``image``: IMAGE mode on each image (Tasks ``detect``; ours ``mode="image"``);
* ``video``: each image becomes a short clip of ``--clip_frames`` frames, frame k being the image translated
  by k·``--shift`` pixels (edge-replicated borders), fed at 30 fps to a fresh VIDEO-mode landmarker (Tasks
  ``detect_for_video``; ours ``mode="video"``), so frames after the first are *tracked* from the previous
  frame's auxiliary points, not detected. The last frame is scored against the ground truth translated
  likewise. MediaPipe Tasks 0.10.21's VIDEO mode differs from the legacy graph that our ``PoseTracker``
  follows: it takes the next frame's ROI from the *raw* auxiliary points, and smooths only the output
  landmarks (One Euro 0.05 / 80 / 1.0) with the next-frame ROI's size as the velocity scale. So our row runs
  ``PoseTracker(mode="video", smooth=False)`` plus that smoothing step (see :func:`run_ours`); our default
  (legacy-graph) smoothing is printed beside it for information.

Both pipelines read identical pixels: every frame is decoded once here and written as PNG.

Printed per bundle and mode: detection rate of each, PCK@0.2 (mid torso) of MediaPipe Tasks next to ours
and their difference, and the median (p90) distance between the two pipelines' 33 landmarks, over images
where both found a pose, in ground-truth torso units. Targets: |ΔPCK| ≤ 0.5 points and median ≤ 0.02 torso
(PASS/FAIL; exit code 0 only when every row passes). Untrained presets output presence ≈ 0.5, which the 0.5
threshold would drop in both pipelines (nothing to compare), so their rows use presence threshold 0 in both,
flagged in the table.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:  # allow `python benchmarks/mediapipe_bundle.py`
    sys.path.insert(0, str(_REPO))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from benchmarks.parity_mediapipe import load_rgb, select_scored_images  # noqa: E402
from blazepose_tf import cli  # noqa: E402
from blazepose_tf.contract import NUM_KEYPOINTS  # noqa: E402
from blazepose_tf.errors import UserError  # noqa: E402
from blazepose_tf.metrics import pck  # noqa: E402
from blazepose_tf.official import official_model_path  # noqa: E402
from blazepose_tf.runtime.pipeline import PoseTracker, roi_from_aux  # noqa: E402
from blazepose_tf.runtime.runners import load_runner  # noqa: E402
from blazepose_tf.smoothing import LANDMARKS, OneEuroFilter  # noqa: E402
from blazepose_tf.topology import BLAZEPOSE_33, torso_size  # noqa: E402
from export.mediapipe_env import MediapipeEnvError, cache_root, ensure_mediapipe_env, worker_env  # noqa: E402
from export.mediapipe_validate import tasks_command, tasks_request  # noqa: E402
from export.task_bundle import DETECTOR_FILE, extract_bundle, read_bundle  # noqa: E402
from export.to_mediapipe import build_bundle  # noqa: E402

DEFAULT_DATA_DIR = os.environ.get("BLAZEPOSE_TF_LSPET") or str(_REPO.parent / "shared" / "data" / "lspet")
MIN_IMAGES = 100
MEDIAN_DISTANCE_TARGET = 0.02   # GT torso units
PCK_DIFF_TARGET = 0.5           # percentage points
BUNDLES = ("official", "converted", "lite", "full")
MODES = ("image", "video")


@dataclass
class BundleSpec:
    """A bundle of the benchmark: its name, label, file and the presence threshold used for it."""

    name: str
    label: str
    path: Path
    min_presence: float = 0.5
    trained: bool = True


# ---------------------------------------------------------------------------------------------------------
# Bundles


def _key_matches(path: Path, key: dict) -> bool:
    side = path.with_name(path.stem + ".bench_key.json")
    try:
        return path.is_file() and json.loads(side.read_text()) == key
    except (OSError, ValueError):
        return False


def _write_key(path: Path, key: dict) -> None:
    path.with_name(path.stem + ".bench_key.json").write_text(json.dumps(key))


def _file_key(p: Optional[Path]) -> Optional[list]:
    return None if p is None or not p.is_file() else [str(p), p.stat().st_size, int(p.stat().st_mtime)]


def make_bundles(names: Sequence[str], out_dir: Path, lite_model: Optional[str], full_model: Optional[str],
                 rebuild: bool = False) -> list[BundleSpec]:
    """Builds (or reuses, when their sources did not change) the requested bundles in ``out_dir``."""
    from blazepose_tf.models.convert_official import converted_model_path  # loads TensorFlow: only when run

    out_dir.mkdir(parents=True, exist_ok=True)
    specs: list[BundleSpec] = []
    quiet = lambda *a: print("  ", *a, flush=True)  # noqa: E731
    conv_det: Optional[Path] = None

    def converted_detector() -> Any:
        nonlocal conv_det
        if conv_det is None:
            path = out_dir / "converted.task"
            if "converted" in names and path.is_file():  # reuse its conversion (a .tflite) instead of converting again
                conv_det = out_dir / "converted_pose_detection.tflite"
                conv_det.write_bytes(read_bundle(path)[DETECTOR_FILE])
            else:
                return str(converted_model_path("pose_detection"))
        return str(conv_det)

    for name in names:
        path = out_dir / f"{name}.task"
        if name in ("official", "converted"):
            locate, building, label = {
                "official": (official_model_path, "official .tflite files + TFLite metadata",
                             "official (MediaPipe's .tflite files)"),
                "converted": (converted_model_path, "converted official Keras models, fp32",
                              "converted official (Keras → fp32)"),
            }[name]
            det, lmk = locate("pose_detection"), locate("pose_landmark_full")
            key = {"det": _file_key(det), "lmk": _file_key(lmk)}
            if rebuild or not _key_matches(path, key):
                print(f"building {path.name} ({building})")
                build_bundle(str(det), str(lmk), path, validate="off", overwrite=True, log=quiet)  # its cache
                _write_key(path, key)
            specs.append(BundleSpec(name, label, path))
        elif name in ("lite", "full"):
            given = lite_model if name == "lite" else full_model
            src = Path(given) if given else cache_root() / "runs" / name / "best.keras"
            trained = src.is_file()
            if given and not trained:
                raise UserError(f"--{name}_model {given} not found")
            key = {"det": _file_key(converted_model_path("pose_detection")),
                   "lmk": _file_key(src) if trained else f"untrained-{name}-seed0"}
            if rebuild or not _key_matches(path, key):
                if trained:
                    model: Any = str(src)
                else:
                    import keras

                    from blazepose_tf.models.tracker import build_tracker

                    keras.utils.set_random_seed(0)
                    model = build_tracker(name).inference_with_heatmap
                print(f"building {path.name} (our {name} tracker, {src if trained else 'untrained'}; converted "
                      "official detector)")
                build_bundle(converted_detector(), model, path, validate="off", overwrite=True, log=quiet)
                _write_key(path, key)
            label = f"our {name.capitalize()} ({src.name})" if trained else f"our {name.capitalize()} (untrained)"
            specs.append(BundleSpec(name, label, path, min_presence=0.5 if trained else 0.0, trained=trained))
        else:
            raise UserError(f"unknown bundle {name!r}; known: {', '.join(BUNDLES)}")
    return specs


# ---------------------------------------------------------------------------------------------------------
# Frames


@dataclass
class Clip:
    """One scored image as frames (PNG paths) and the GT person of the scored (last) frame."""

    id: str
    frames: list[Path]
    arrays: list[np.ndarray]
    person: Any              # PersonAnnotation, translated to the last frame


def shifted(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """The image translated by (dx, dy) pixels, same size, borders replicated."""
    if dx == 0 and dy == 0:
        return image
    h, w = image.shape[:2]
    m = max(abs(dx), abs(dy))
    padded = np.pad(image, ((m, m), (m, m), (0, 0)), mode="edge")
    return np.ascontiguousarray(padded[m - dy:m - dy + h, m - dx:m - dx + w])


def make_clips(images: Sequence[Any], directory: Path, frames: int, shift: tuple[int, int]) -> list[Clip]:
    """PNG frames for every image: ``frames`` frames translated by k·shift (1 frame = the image itself)."""
    clips = []
    for i, im in enumerate(images):
        rgb = load_rgb(im.path)
        paths, arrays = [], []
        for k in range(frames):
            arr = shifted(rgb, k * shift[0], k * shift[1])
            p = directory / f"{i:04d}_{k}.png"
            cv2.imwrite(str(p), np.ascontiguousarray(arr[..., ::-1]))
            paths.append(p)
            arrays.append(arr)
        last = frames - 1
        offset = np.array([last * shift[0], last * shift[1]], np.float64)
        kps = np.where(im.person.available[:, None], im.person.keypoints + offset, im.person.keypoints)
        clips.append(Clip(f"{i:04d}", paths, arrays, dataclasses.replace(im.person, keypoints=kps)))
    return clips


# ---------------------------------------------------------------------------------------------------------
# Running both pipelines


def run_ours(bundle: Path, clips: Sequence[Clip], mode: str, min_presence: float,
             fps: float = 30.0) -> dict[str, list[Optional[np.ndarray]]]:
    """Our pipeline on the bundle's own .tflite files: (33, 2) pixels of the last frame of each clip, or None.

    IMAGE mode: ``PoseTracker(mode="image")``. VIDEO mode gives two variants:

    * ``"tasks"``: configured as MediaPipe Tasks 0.10.21's VIDEO mode does it — the next frame's ROI from the
      *raw* auxiliary points (``PoseTracker(smooth=False)``), and the output landmarks smoothed by a One Euro
      filter (0.05, 80, 1.0) whose velocity scale is the next-frame ROI's size (not the landmarks' box);
    * ``"legacy"``: our ``PoseTracker(mode="video")`` defaults, which follow the legacy graph (smoothed
      auxiliary points for the ROI, object scale from the landmarks' box).
    """
    out: dict[str, list[Optional[np.ndarray]]] = {}
    with tempfile.TemporaryDirectory(prefix="bp_bundle_") as tmp:
        det, lmk = extract_bundle(bundle, tmp)
        runners = (load_runner(det), load_runner(lmk))
        variants = ("tasks",) if mode == "image" else ("tasks", "legacy")
        for variant in variants:
            tracker = PoseTracker(*runners, mode=mode, min_presence=min_presence, smooth=variant == "legacy",
                                  roi_passes=1)  # one tracker pass per person, as MediaPipe's graphs
            smoother = OneEuroFilter(LANDMARKS)
            preds: list[Optional[np.ndarray]] = []
            for clip in clips:
                tracker.reset()
                smoother.reset()
                kps: Optional[np.ndarray] = None
                for k, arr in enumerate(clip.arrays):
                    t = round(k * 1000.0 / fps) / 1000.0   # the worker's integer-millisecond timestamps
                    poses = tracker.process(arr, timestamp=t)
                    if not poses:
                        smoother.reset()
                        kps = None
                        continue
                    kps = np.asarray(poses[0].keypoints, np.float64)
                    if mode == "video" and variant == "tasks":
                        roi = roi_from_aux(poses[0].aux_keypoints, tracker.roi_scale)
                        scale = 0.5 * (roi.width + roi.height) if roi is not None else 0.0
                        if scale > 1e-6:
                            kps = smoother(kps, t, 1.0 / scale)
                preds.append(None if kps is None else kps[:NUM_KEYPOINTS, :2])
            out[variant] = preds
    return out


def start_tasks(bundle: Path, clips: Sequence[Clip], mode: str, min_presence: float, cpu: Optional[list[int]],
                workdir: Path):
    """Starts the MediaPipe Tasks worker in the background; returns (Popen, output path)."""
    python = ensure_mediapipe_env(quiet=False)
    req = tasks_request(bundle, [{"id": c.id, "frames": [str(p) for p in c.frames]} for c in clips], mode,
                        {"min_pose_presence_confidence": min_presence}, fps=30.0, warmup=1)
    rq = workdir / f"req_{bundle.stem}_{mode}.json"
    out = workdir / f"out_{bundle.stem}_{mode}.json"
    rq.write_text(json.dumps(req))
    log = open(workdir / f"log_{bundle.stem}_{mode}.txt", "w")
    proc = subprocess.Popen(tasks_command(python, rq, out, cpu), stdout=log, stderr=log, env=worker_env())
    return proc, out, log


def finish_tasks(proc, out: Path, log) -> list[Optional[np.ndarray]]:
    """Waits for the worker; (33, 2) pixels of the last frame of each clip, or None."""
    proc.wait()
    log.close()
    if not out.is_file():
        tail = Path(log.name).read_text().strip().splitlines()[-3:]
        raise MediapipeEnvError(f"MediaPipe Tasks worker failed (exit {proc.returncode}): {' | '.join(tail)}")
    res = json.loads(out.read_text())
    if "error" in res:
        raise MediapipeEnvError(f"MediaPipe Tasks could not load {res['meta']['bundle']}: {res['error']}")
    preds: list[Optional[np.ndarray]] = []
    for item in res["results"]:
        last = item["frames"][-1]
        preds.append(np.asarray([p[:2] for p in last["poses"][0]["landmarks"]], np.float64)
                     if last["poses"] else None)
    return preds


# ---------------------------------------------------------------------------------------------------------
# Scoring


def distances(ours: Sequence[Optional[np.ndarray]], theirs: Sequence[Optional[np.ndarray]],
              people: Sequence[Any]) -> dict[str, Any]:
    """Pooled per-point distances ours vs MediaPipe Tasks, in GT torso units, where both found a pose."""
    chunks = []
    for a, b, person in zip(ours, theirs, people):
        if a is None or b is None:
            continue
        chunks.append(np.linalg.norm(a - b, axis=1) / torso_size(person.keypoints, BLAZEPOSE_33))
    if not chunks:
        return {"both": 0, "median": float("nan"), "p90": float("nan")}
    v = np.concatenate(chunks)
    return {"both": len(chunks), "median": float(np.median(v)), "p90": float(np.percentile(v, 90))}


def score(ours: Sequence[Optional[np.ndarray]], theirs: Sequence[Optional[np.ndarray]],
          people: Sequence[Any]) -> dict[str, Any]:
    """PCK@0.2 (mid torso) of both, detection counts, distances and the PASS/FAIL verdicts."""
    p_ours, p_tasks = pck(people, list(ours)), pck(people, list(theirs))
    d = distances(ours, theirs, people)
    diff = p_ours.pck - p_tasks.pck
    pck_ok = abs(diff) <= PCK_DIFF_TARGET
    dist_ok = d["both"] > 0 and d["median"] <= MEDIAN_DISTANCE_TARGET
    return {"n": len(people), "det_tasks": sum(p is not None for p in theirs),
            "det_ours": sum(p is not None for p in ours), "pck_tasks": p_tasks.pck, "pck_ours": p_ours.pck,
            "pck_diff": diff, "num_points": p_tasks.num_points, **{f"dist_{k}": v for k, v in d.items()},
            "pck_pass": bool(pck_ok), "dist_pass": bool(dist_ok), "pass": bool(pck_ok and dist_ok)}


def format_table(rows: Sequence[dict]) -> str:
    head = ("| bundle | mode | images | detected Tasks / ours | PCK@0.2 Tasks | PCK@0.2 ours | ΔPCK | "
            "median dist (torso) | p90 | verdict |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        s = r["score"]
        flag = " ¹" if r["min_presence"] != 0.5 else ""
        lines.append(f"| {r['label']}{flag} | {r['mode']} | {s['n']} | {s['det_tasks']} / {s['det_ours']} | "
                     f"{s['pck_tasks']:.2f} | {s['pck_ours']:.2f} | {s['pck_diff']:+.2f} | "
                     f"{s['dist_median']:.4f} | {s['dist_p90']:.4f} | {'PASS' if s['pass'] else 'FAIL'} |")
    if any(r["min_presence"] != 0.5 for r in rows):
        lines.append("\n¹ untrained: presence threshold 0 in both pipelines (its presence is ≈0.5).")
    return "\n".join(lines)


def evaluate(num_images: int, split: str, data_dir: str, bundles: Sequence[str], modes: Sequence[str],
             clip_frames: int, shift: tuple[int, int], out_dir: Path, rebuild: bool, cpu: Optional[list[int]],
             lite_model: Optional[str], full_model: Optional[str], output: Optional[str],
             overwrite: Optional[bool] = None) -> tuple[list, bool]:
    t0 = time.time()
    images = select_scored_images(data_dir, split, num_images)
    print(f"LSPET {split}: {len(images)} scored images (first {len(images)} in annotations.json order), {data_dir}")
    specs = make_bundles(bundles, out_dir, lite_model, full_model, rebuild)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bp_mpbench_") as tmp:
        tmpdir = Path(tmp)
        clips = {}
        for mode in modes:
            d = tmpdir / mode
            d.mkdir()
            clips[mode] = make_clips(images, d, clip_frames if mode == "video" else 1, shift)
        for spec in specs:
            for mode in modes:
                t1 = time.time()
                cs = clips[mode]
                proc, out, log = start_tasks(spec.path, cs, mode, spec.min_presence, cpu, tmpdir)
                try:
                    ours = run_ours(spec.path, cs, mode, spec.min_presence)
                finally:
                    theirs = finish_tasks(proc, out, log)
                people = [c.person for c in cs]
                s = score(ours["tasks"], theirs, people)
                row = {"bundle": spec.name, "label": spec.label, "mode": mode, "trained": spec.trained,
                       "min_presence": spec.min_presence, "bundle_path": str(spec.path), "score": s}
                if "legacy" in ours:
                    row["legacy_smoothing"] = score(ours["legacy"], theirs, people)
                rows.append(row)
                print(f"{spec.label:<40} {mode:<5}  det {s['det_tasks']}/{s['det_ours']}  PCK Tasks "
                      f"{s['pck_tasks']:.2f} ours {s['pck_ours']:.2f} ({s['pck_diff']:+.2f})  median "
                      f"{s['dist_median']:.4f} p90 {s['dist_p90']:.4f}  {'PASS' if s['pass'] else 'FAIL'}  "
                      f"({time.time() - t1:.0f} s)", flush=True)
                if "legacy_smoothing" in row:
                    g = row["legacy_smoothing"]
                    print(f"{'':<40} (ours with legacy-graph smoothing: PCK {g['pck_ours']:.2f}, median "
                          f"{g['dist_median']:.4f}, p90 {g['dist_p90']:.4f})", flush=True)
    print()
    print(format_table(rows))
    passed = all(r["score"]["pass"] for r in rows)
    print(f"\ntargets: |ΔPCK| <= {PCK_DIFF_TARGET} points, median distance <= {MEDIAN_DISTANCE_TARGET} GT torso; "
          f"overall {'PASS' if passed else 'FAIL'} ({time.time() - t0:.0f} s)")
    if output:
        cli.write_marked(output, {
            "split": split, "num_images": len(images), "clip_frames": clip_frames, "shift": list(shift),
            "targets": {"pck_diff": PCK_DIFF_TARGET, "median_distance": MEDIAN_DISTANCE_TARGET},
            "rows": rows, "pass": passed}, overwrite=overwrite)
        print(f"wrote {output}")
    return rows, passed


def _define_flags() -> None:
    flags.DEFINE_integer("num_images", MIN_IMAGES, "Scored images (first N of the split).", lower_bound=MIN_IMAGES)
    flags.DEFINE_string("split", "dev", "Split name in splits.json.")
    flags.DEFINE_string("data_dir", DEFAULT_DATA_DIR, "LSPET folder (annotations.json, splits.json, images/).")
    flags.DEFINE_list("bundles", list(BUNDLES), f"Bundles to build and run: {', '.join(BUNDLES)}.")
    flags.DEFINE_list("modes", list(MODES), "Running modes: image, video.")
    flags.DEFINE_string("lite_model", None, "Our Lite tracker (.keras); default runs/lite/best.keras, else untrained.")
    flags.DEFINE_string("full_model", None, "Our Full tracker (.keras); default runs/full/best.keras, else untrained.")
    flags.DEFINE_integer("clip_frames", 3, "Frames per VIDEO-mode clip.", lower_bound=1)
    flags.DEFINE_string("shift", "3,2", "Per-frame translation dx,dy (pixels) of VIDEO-mode clips.")
    flags.DEFINE_string("out_dir", None, "Where bundles are kept (default <cache>/mediapipe_bundles).")
    flags.DEFINE_bool("rebuild", False, "Rebuild bundles even when their sources did not change.")
    flags.DEFINE_string("cpu", "0", "Cores the MediaPipe worker is pinned to (comma-separated; empty = no pinning).")
    flags.DEFINE_string("output", None, "Optional JSON file for the full results.")
    cli.define_overwrite_flag()


def main(argv: list[str]) -> int:
    FLAGS = flags.FLAGS
    cli.check_outputs([("--output", FLAGS.output)], [("--data_dir", FLAGS.data_dir)], overwrite=FLAGS.overwrite)
    bad = [m for m in FLAGS.modes if m not in MODES]
    if bad:
        raise UserError(f"--modes: unknown {', '.join(bad)} (known: {', '.join(MODES)})")
    try:
        shift = tuple(int(v) for v in FLAGS.shift.split(","))
        assert len(shift) == 2
    except (ValueError, AssertionError):
        raise UserError(f"--shift must be DX,DY integers, got {FLAGS.shift!r}") from None
    cpu = [int(c) for c in FLAGS.cpu.split(",") if c.strip()] if FLAGS.cpu else None
    out_dir = Path(FLAGS.out_dir) if FLAGS.out_dir else cache_root() / "mediapipe_bundles"
    _, passed = evaluate(FLAGS.num_images, FLAGS.split, FLAGS.data_dir, FLAGS.bundles, FLAGS.modes,
                         FLAGS.clip_frames, shift, out_dir, FLAGS.rebuild, cpu, FLAGS.lite_model,
                         FLAGS.full_model, FLAGS.output, FLAGS.overwrite)
    return 0 if passed else 1


if __name__ == "__main__":
    _define_flags()
    cli.run(main)
