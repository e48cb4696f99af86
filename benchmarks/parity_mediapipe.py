"""Parity of our IMAGE-mode pipeline with MediaPipe 0.10.21's own legacy Pose pipeline on LSPET, for the official
Full and Lite landmark models.

    python -m benchmarks.parity_mediapipe [--num_images 585] [--split dev] [--threads 1]
                                          [--trackers pose_landmark_full,pose_landmark_lite] [--output out.json]

Takes the first ``--num_images`` *scored* images of the split (file order of ``annotations.json``; an image
is scored when its largest person has both shoulders and both hips annotated, docs/design.md §8) and, for each
tracker of ``--trackers``, runs

* MediaPipe's legacy ``mp.solutions.pose.Pose`` (static images, min detection confidence 0.5;
  ``model_complexity=1`` for ``pose_landmark_full``, ``0`` for ``pose_landmark_lite``, whose model file is copied
  into the venv's mediapipe package first) in its isolated venv (:mod:`benchmarks.mediapipe_env`), and
* ``PoseTracker.from_official(mode="image", landmarks=...)`` here with the same official models, first pose of
  each image,

and prints:

* the detection rate of each (share of images with a pose);
* the median and p90 distance between the two pipelines' 33 landmarks (x, y), pooled over all points of
  the images where both found a person, in units of the **ground-truth** torso (|mid-shoulder - mid-hip|
  of the annotated person), with MediaPipe's own predicted torso given for information;
* PCK@0.2 of each against the ground truth (mid torso, and the diagonal variant), docs/design.md §8.

Targets, per tracker: median distance <= 0.02 torso and |PCK_ours - PCK_mediapipe| <= 0.5 points (mid torso);
each is printed with PASS/FAIL and the exit code is 0 only when all pass (1 otherwise; 2-5 for usage/input
errors, 4 when the mediapipe venv cannot be created, e.g. offline).
"""
from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:  # allow `python benchmarks/parity_mediapipe.py`
    sys.path.insert(0, str(_REPO))

import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from benchmarks.mediapipe_env import LEGACY_LANDMARK_MODELS, run_legacy_pose  # noqa: E402
from blazepose_tf import cli  # noqa: E402
from blazepose_tf.contract import NUM_KEYPOINTS  # noqa: E402
from blazepose_tf.datasets.coco import ImageRecord, PersonAnnotation, load_coco_keypoints  # noqa: E402
from blazepose_tf.errors import InputError, UserError  # noqa: E402
from blazepose_tf.metrics import pck, select_scored_person  # noqa: E402
from blazepose_tf.runtime.pipeline import PoseTracker  # noqa: E402
from blazepose_tf.topology import BLAZEPOSE_33, torso_size  # noqa: E402

DEFAULT_DATA_DIR = os.environ.get("BLAZEPOSE_TF_LSPET") or str(_REPO.parent / "shared" / "data" / "lspet")
MIN_IMAGES = 100
MEDIAN_DISTANCE_TARGET = 0.02   # torso units
PCK_DIFF_TARGET = 0.5           # percentage points
#: --trackers: official landmark model -> the ``model_complexity`` with which MediaPipe runs it.
TRACKERS: dict[str, int] = {name: complexity for complexity, name in LEGACY_LANDMARK_MODELS.items()}


@dataclass
class ScoredImage:
    """An image of the benchmark set and the GT person PCK scores on it."""

    record: ImageRecord
    person: PersonAnnotation

    @property
    def path(self) -> Path:
        return self.record.file_path


def select_scored_images(data_dir: str, split: str, num_images: int) -> list[ScoredImage]:
    """The first ``num_images`` scored images of ``split`` (all of them if there are fewer)."""
    root = Path(data_dir)
    dataset = load_coco_keypoints(root / "annotations.json", root / "images", split=split,
                                  splits_json=root / "splits.json")
    out: list[ScoredImage] = []
    for record in dataset:
        person = select_scored_person(record)
        if person is not None:
            out.append(ScoredImage(record, person))
            if len(out) == num_images:
                break
    if not out:
        raise InputError(f"no scored image in split {split!r} of {root}")
    return out


def load_rgb(path: Path) -> np.ndarray:
    """HxWx3 uint8 RGB image (``blazepose_tf.io.images.load_image`` when available, else OpenCV)."""
    try:
        from blazepose_tf.io.images import load_image  # type: ignore[import-not-found]
    except ImportError:
        load_image = None
    if load_image is not None:
        return np.asarray(load_image(path))
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def run_mediapipe(images: Sequence[ScoredImage], out_json: Optional[Path] = None,
                  threads_pinned: bool = False, cpu: Any = 0,
                  model_complexity: int = 1) -> tuple[list[Optional[np.ndarray]], dict]:
    """MediaPipe legacy predictions: per image a (33, 5) array [x_px, y_px, z, visibility, presence] or None.

    ``model_complexity``: 1 Full, 0 Lite. Also returns the worker's full output (``meta`` and per-image
    ``results`` with ``latency_ms``).
    """
    with tempfile.TemporaryDirectory(prefix="bp_mp_") as tmp:
        target = out_json or Path(tmp) / "mediapipe.json"
        raw = run_legacy_pose([im.path for im in images], target, threads_pinned=threads_pinned, cpu=cpu,
                              model_complexity=model_complexity)
    preds: list[Optional[np.ndarray]] = []
    for r in raw["results"]:
        lm = r["landmarks"]
        preds.append(None if lm is None else np.array(lm, dtype=np.float64))  # None presence -> nan
    return preds, raw


def make_tracker(num_threads: int, landmarks: str = "pose_landmark_full") -> Any:
    """Our IMAGE-mode pipeline on the official detector and the official landmark model ``landmarks``, one tracker
    pass per person as MediaPipe's graph runs it (``roi_passes=1``)."""
    return PoseTracker.from_official(mode="image", num_threads=num_threads, landmarks=landmarks, roi_passes=1)


def run_ours(images: Sequence[ScoredImage], num_threads: int,
             landmarks: str = "pose_landmark_full") -> tuple[list[Any], int]:
    """Our first pose per image (None when no person), and the number of images with more than one pose."""
    tracker = make_tracker(num_threads, landmarks)
    preds: list[Any] = []
    multi = 0
    for im in images:
        poses = tracker.process(load_rgb(im.path))
        multi += int(len(poses) > 1)
        preds.append(poses[0] if poses else None)
    return preds, multi
def landmark_distances(ours: Sequence[Any], theirs: Sequence[Optional[np.ndarray]],
                       images: Sequence[ScoredImage]) -> dict:
    """Per-point (x, y) distances ours-vs-MediaPipe over images where both found a person.

    Returns pooled median/p90 in GT-torso units and in MediaPipe-predicted-torso units, plus per-image
    mean distances (GT torso) and the mean absolute visibility difference.
    """
    gt_units: list[np.ndarray] = []
    mp_units: list[np.ndarray] = []
    vis_diff: list[np.ndarray] = []
    per_image: list[Optional[float]] = []
    for pose, mp_lm, im in zip(ours, theirs, images):
        if pose is None or mp_lm is None:
            per_image.append(None)
            continue
        ours_xy = np.asarray(pose.keypoints, dtype=np.float64)[:NUM_KEYPOINTS, :2]
        d = np.linalg.norm(ours_xy - mp_lm[:NUM_KEYPOINTS, :2], axis=1)
        gt_torso = torso_size(im.person.keypoints, BLAZEPOSE_33)
        mp_torso = torso_size(mp_lm[:NUM_KEYPOINTS, :2], BLAZEPOSE_33)
        gt_units.append(d / gt_torso)
        if mp_torso > 0:
            mp_units.append(d / mp_torso)
        ours_vis = np.asarray(pose.visibility, dtype=np.float64)[:NUM_KEYPOINTS]
        vis_diff.append(np.abs(ours_vis - mp_lm[:NUM_KEYPOINTS, 3]))
        per_image.append(float(np.mean(d / gt_torso)))

    def stats(chunks: list[np.ndarray]) -> dict:
        if not chunks:
            return {"median": float("nan"), "p90": float("nan"), "max": float("nan"), "num_points": 0}
        v = np.concatenate(chunks)
        return {"median": float(np.median(v)), "p90": float(np.percentile(v, 90)), "max": float(v.max()),
                "num_points": int(v.size)}

    return {"num_images_both": len(gt_units), "gt_torso": stats(gt_units), "mp_torso": stats(mp_units),
            "visibility_abs_diff_mean": float(np.mean(np.concatenate(vis_diff))) if vis_diff else float("nan"),
            "per_image_mean_gt_torso": per_image}


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def compare(images: Sequence[ScoredImage], tracker: str, threads: int) -> tuple[dict, bool]:
    """Runs MediaPipe's pipeline and ours with the official landmark model ``tracker`` (``pose_landmark_full`` or
    ``pose_landmark_lite``), prints the comparison, returns (its summary, both targets passed)."""
    complexity = TRACKERS[tracker]
    print(f"\n== {tracker}")
    mp_preds, mp_raw = run_mediapipe(images, model_complexity=complexity)
    meta = mp_raw["meta"]
    print(f"reference: MediaPipe {meta['mediapipe_version']} legacy Pose (model_complexity="
          f"{meta['model_complexity']}, static_image_mode, min_detection_confidence="
          f"{meta['min_detection_confidence']}), isolated venv")
    ours, multi = run_ours(images, threads, tracker)
    print(f"ours:      blazepose_tf PoseTracker.from_official(mode='image', roi_passes=1, "
          f"num_threads={threads}, "
          f"landmarks={tracker!r}), first pose" + (f" ({multi} images returned >1 pose)" if multi else ""))

    n = len(images)
    mp_det = sum(p is not None for p in mp_preds)
    our_det = sum(p is not None for p in ours)
    both = sum(a is not None and b is not None for a, b in zip(ours, mp_preds))
    print(f"images                 {n}")
    print(f"detection rate         mediapipe {100.0 * mp_det / n:5.1f}% ({mp_det})   "
          f"ours {100.0 * our_det / n:5.1f}% ({our_det})   both {both}, only mediapipe {mp_det - both}, "
          f"only ours {our_det - both}")

    dist = landmark_distances(ours, mp_preds, images)
    g, m = dist["gt_torso"], dist["mp_torso"]
    dist_ok = bool(dist["num_images_both"] > 0 and g["median"] <= MEDIAN_DISTANCE_TARGET)
    print(f"landmark distance ours vs mediapipe, {NUM_KEYPOINTS} points x {dist['num_images_both']} images, "
          f"GT torso units: median {g['median']:.4f}  p90 {g['p90']:.4f}  max {g['max']:.3f}   "
          f"[{_verdict(dist_ok)}: median <= {MEDIAN_DISTANCE_TARGET}]")
    print(f"  (in MediaPipe-predicted torso units: median {m['median']:.4f}  p90 {m['p90']:.4f}; "
          f"mean |visibility diff| {dist['visibility_abs_diff_mean']:.4f})")

    gt_people = [im.person for im in images]
    mp_xy = [None if p is None else p[:NUM_KEYPOINTS, :2] for p in mp_preds]
    results: dict[str, Any] = {}
    pck_ok = False
    for diagonal in (False, True):
        r_mp = pck(gt_people, mp_xy, threshold=0.2, diagonal=diagonal)
        r_ours = pck(gt_people, ours, threshold=0.2, diagonal=diagonal)
        key = "diagonal" if diagonal else "mid_torso"
        results[key] = {"mediapipe": r_mp.to_dict(), "ours": r_ours.to_dict()}
        diff = r_ours.pck - r_mp.pck
        label = "PCK@0.2 diagonal torso " if diagonal else "PCK@0.2 mid torso      "
        line = f"{label}mediapipe {r_mp.pck:5.1f}   ours {r_ours.pck:5.1f}   diff {diff:+.2f}"
        if not diagonal:
            pck_ok = bool(abs(diff) <= PCK_DIFF_TARGET)
            line += f"   [{_verdict(pck_ok)}: |diff| <= {PCK_DIFF_TARGET}]"
        print(line + f"   ({r_mp.num_points} GT keypoints)")
    passed = dist_ok and pck_ok
    print(f"{tracker} overall   {_verdict(passed)}")
    summary = {
        "mediapipe_meta": meta,
        "detection": {"mediapipe": mp_det, "ours": our_det, "both": both, "ours_multi_pose": multi},
        "distance": {k: v for k, v in dist.items() if k != "per_image_mean_gt_torso"},
        "pck": results,
        "targets": {"median_distance": MEDIAN_DISTANCE_TARGET, "pck_diff": PCK_DIFF_TARGET,
                    "distance_pass": dist_ok, "pck_pass": pck_ok, "pass": passed},
        "per_image": [{"path": str(im.path), "mediapipe_found": p is not None, "ours_found": o is not None,
                       "mean_distance_gt_torso": d}
                      for im, p, o, d in zip(images, mp_preds, ours, dist["per_image_mean_gt_torso"])],
    }
    return summary, passed


def evaluate(num_images: int, split: str, threads: int, data_dir: str, output: Optional[str] = None,
             trackers: Sequence[str] = tuple(TRACKERS), overwrite: Optional[bool] = None) -> tuple[dict, bool]:
    """Compares both pipelines for every tracker of ``trackers``, prints the report, returns (summary dict, all
    targets passed)."""
    unknown = [t for t in trackers if t not in TRACKERS]
    if unknown or not trackers:
        raise UserError(f"--trackers must list names from {', '.join(TRACKERS)}, got {list(trackers)}")
    images = select_scored_images(data_dir, split, num_images)
    print(f"LSPET {split}: {len(images)} scored images (first {len(images)} in annotations.json order; "
          f"{num_images} requested), data {data_dir}")
    sections: dict[str, dict] = {}
    passed = True
    for tracker in trackers:
        sections[tracker], ok = compare(images, tracker, threads)
        passed &= ok
    print(f"\noverall                {_verdict(passed)}")
    summary = {"split": split, "num_images": len(images), "num_requested": num_images, "threads": threads,
               "data_dir": data_dir, "torso_units": "ground truth |mid-shoulder - mid-hip|", "trackers": sections,
               "pass": passed}
    write_summary(summary, output, overwrite)
    return summary, passed


def write_summary(summary: dict, output: Optional[str], overwrite: Optional[bool] = None) -> None:
    """Writes a benchmark's summary JSON to ``output`` (folders created, marked, checked again with the command's
    ``overwrite``: :func:`blazepose_tf.cli.write_marked`) when one is given."""
    if output:
        cli.write_marked(output, summary, overwrite=overwrite)
        print(f"wrote {output}")


def _define_flags() -> None:
    flags.DEFINE_integer("num_images", 585, "Number of scored images (first N of the split; 585 = all of LSPET dev).",
                         lower_bound=MIN_IMAGES)
    flags.DEFINE_string("split", "dev", "Split name in splits.json.")
    flags.DEFINE_integer("threads", 1, "num_threads of our pipeline.", lower_bound=1)
    flags.DEFINE_list("trackers", list(TRACKERS), "Official landmark models compared (MediaPipe runs "
                      + ", ".join(f"{n} with model_complexity={c}" for n, c in TRACKERS.items()) + ").")
    flags.DEFINE_string("output", None, "Optional JSON file for the full results.")
    cli.define_overwrite_flag()
    flags.DEFINE_string("data_dir", DEFAULT_DATA_DIR, "LSPET folder (annotations.json, splits.json, images/).")


def main(argv: list[str]) -> int:
    FLAGS = flags.FLAGS
    cli.check_outputs([("--output", FLAGS.output)], [("--data_dir", FLAGS.data_dir)], overwrite=FLAGS.overwrite)
    _, passed = evaluate(FLAGS.num_images, FLAGS.split, FLAGS.threads, FLAGS.data_dir, FLAGS.output, FLAGS.trackers,
                         FLAGS.overwrite)
    return 0 if passed else 1


if __name__ == "__main__":
    _define_flags()
    cli.run(main)
