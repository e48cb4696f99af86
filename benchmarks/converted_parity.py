"""Parity of the converted official Keras models with the official .tflite files, on real LSPET images.

    python -m benchmarks.converted_parity [--num_crops 100] [--limit N] [--split dev] [--threads 1]
                                          [--trackers pose_landmark_full,pose_landmark_lite]
                                          [--data_dir DIR] [--reconvert] [--output out.json]

1. Tensor parity on real inputs. The first ``--num_crops`` scored images of the split where the official
   pipeline finds a person give one crop each: the official detector (the .tflite) → first detection → ROI
   (``roi_from_detection``) → ``blazepose_tf.codecs.roi.crop`` (256×256, as the pipeline). Every official
   landmark model of ``--trackers`` (converted Keras and .tflite) runs on the same crops; printed per model:
   landmark x, y max/mean |Δ| in crop pixels, z, visibility and per-landmark presence after sigmoid, pose
   presence, heatmap, segmentation, world. The detector pair runs on the letterboxed 224×224 inputs of the
   same images: regressors max/mean |Δ| in input pixels, score |Δ| after sigmoid, and whether the detections
   after decoding + weighted NMS are identical (same count; boxes, keypoints, scores within 1e-3).
2. Accuracy parity. ``blazepose_tf.evaluation.evaluate`` on the scored images of the split (all 585 of
   LSPET dev unless ``--limit``), per tracker, with a ``PoseTracker`` on ``KerasRunner``s of the converted
   models and one on the .tflite files: both PCK@0.2 (mid torso) and their difference.

Targets (PASS/FAIL each; exit code 0 only when all pass, 1 otherwise, 2-5 for usage/input/model errors):
landmarks < 0.5 crop px, visibility/presence within 1e-3 (every tracker), regressors < 0.5 px, identical
detections after NMS, |PCK_keras - PCK_tflite| <= 0.2 points (every tracker), at least 50 crops.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:  # allow `python benchmarks/converted_parity.py`
    sys.path.insert(0, str(_REPO))

import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from blazepose_tf import cli  # noqa: E402
from blazepose_tf.codecs import roi as roi_codec  # noqa: E402
from blazepose_tf.contract import (DETECTOR, INPUT_RANGES, INPUT_SHAPES, LANDMARKS,  # noqa: E402
                                   OFFICIAL_MODEL_ROLES)
from blazepose_tf.datasets.coco import load_coco_keypoints  # noqa: E402
from blazepose_tf.errors import InputError, UserError  # noqa: E402
from blazepose_tf.evaluation import evaluate, scored_records  # noqa: E402
from blazepose_tf.io.images import load_image  # noqa: E402
from blazepose_tf.official import official_model_path  # noqa: E402
from blazepose_tf.runtime.pipeline import PersonDetector, PoseTracker, as_rgb, roi_from_detection  # noqa: E402
from blazepose_tf.runtime.runners import KerasRunner, TFLiteRunner  # noqa: E402

# The converted models, their parity metrics and acceptance criteria (blazepose_tf.models.official_cache,
# official_parity, official_translation) need TensorFlow: imported where used, so that --help and a bad flag
# answer without its start-up.

DEFAULT_DATA_DIR = os.environ.get("BLAZEPOSE_TF_LSPET") or str(_REPO.parent / "shared" / "data" / "lspet")
MIN_CROPS = 50
PCK_DIFF_TARGET = 0.2   # percentage points
DETECTOR_MODEL = next(n for n, r in OFFICIAL_MODEL_ROLES.items() if r == DETECTOR)
#: The official landmark models (Full, Lite).
TRACKERS: tuple[str, ...] = tuple(n for n, r in OFFICIAL_MODEL_ROLES.items() if r == LANDMARKS)


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def load_models(trackers: Sequence[str], reconvert: bool, threads: int) -> dict[str, Any]:
    """Runners for the official detector and ``trackers``: ``keras_<name>`` (converted) and ``tflite_<name>``."""
    from blazepose_tf.models.official_cache import converted_model_path, load_converted

    runners: dict[str, Any] = {}
    for name in (DETECTOR_MODEL, *trackers):
        if reconvert:
            converted_model_path(name, force=True)
        runners[f"keras_{name}"] = KerasRunner(load_converted(name))
        runners[f"tflite_{name}"] = TFLiteRunner(official_model_path(name), threads)
    return runners


def _aggregate(per_item: list[dict[str, Any]]) -> dict[str, Any]:
    """max of *_max, mean of *_mean, all() of booleans, sum of counts."""
    out: dict[str, Any] = {}
    for key in per_item[0]:
        vals = [p[key] for p in per_item]
        if isinstance(vals[0], bool):
            out[key] = all(vals)
        elif key.endswith("_mean"):
            out[key] = float(np.mean(vals))
        elif isinstance(vals[0], int):
            out[key] = int(sum(vals))
        else:
            out[key] = float(np.max(vals))
    return out


def tensor_parity(records: list, runners: dict[str, Any], num_crops: int, trackers: Sequence[str]) -> dict[str, Any]:
    """Keras vs TFLite outputs on real detector inputs and real tracker crops (see module docstring); the
    ``landmarks`` entry holds one aggregate per tracker."""
    from blazepose_tf.models.official_parity import detector_parity, landmark_parity

    det_h, det_w = INPUT_SHAPES[DETECTOR][:2]
    lmk_h, lmk_w = INPUT_SHAPES[LANDMARKS][:2]
    official_detector = PersonDetector(runners[f"tflite_{DETECTOR_MODEL}"])
    det_stats: list[dict[str, Any]] = []
    lmk_stats: dict[str, list[dict[str, Any]]] = {name: [] for name in trackers}
    num_crops_seen = 0
    images_seen = 0
    for rec in records:
        if num_crops_seen >= num_crops:
            break
        image = as_rgb(load_image(rec.file_path))
        images_seen += 1
        h, w = image.shape[:2]
        padded, _ = roi_codec.letterbox_roi(w, h, det_w, det_h)
        det_in = roi_codec.to_tensor(roi_codec.crop(image, padded, det_w, det_h, border="zero"),
                                     INPUT_RANGES[DETECTOR])
        det_stats.append(detector_parity(runners[f"tflite_{DETECTOR_MODEL}"](det_in),
                                         runners[f"keras_{DETECTOR_MODEL}"](det_in)))
        dets = official_detector(image)
        roi = roi_from_detection(dets[0]) if dets else None
        if roi is None:
            continue
        crop = roi_codec.to_tensor(roi_codec.crop(image, roi, lmk_w, lmk_h, border="replicate"),
                                   INPUT_RANGES[LANDMARKS])
        num_crops_seen += 1
        for name in trackers:
            lmk_stats[name].append(landmark_parity(runners[f"tflite_{name}"](crop), runners[f"keras_{name}"](crop)))
    if not num_crops_seen:
        raise InputError("the official detector found nobody in the selected images; no crops to compare")
    return {"num_images": images_seen, "num_crops": num_crops_seen, "detector": _aggregate(det_stats),
            "landmarks": {name: _aggregate(stats) for name, stats in lmk_stats.items()}}


def pck_parity(records: list, runners: dict[str, Any], progress: bool, tracker: str) -> dict[str, Any]:
    """PCK@0.2 of the pipeline (official detector + ``tracker``) on the converted Keras models and on the .tflite
    files."""
    out: dict[str, Any] = {}
    for kind in ("tflite", "keras"):
        pipeline = PoseTracker(runners[f"{kind}_{DETECTOR_MODEL}"], runners[f"{kind}_{tracker}"], mode="image",
                               roi_passes=1)  # one pass: the models' parity, not the ROI feedback
        t0 = time.perf_counter()
        res = evaluate(pipeline.process, records, progress=progress, desc=f"evaluate {tracker} ({kind})")
        out[kind] = {"pck": res.pck.pck, "pck_diagonal": res.pck_diagonal.pck,
                     "detection_rate": res.pck.detection_rate, "num_people": res.pck.num_people,
                     "seconds": time.perf_counter() - t0}
    out["diff"] = out["keras"]["pck"] - out["tflite"]["pck"]
    out["diff_diagonal"] = out["keras"]["pck_diagonal"] - out["tflite"]["pck_diagonal"]
    return out


def report_landmarks(name: str, lm: dict[str, float]) -> dict[str, bool]:
    """Prints one tracker's tensor parity; returns its checks (landmarks, visibility, presence)."""
    from blazepose_tf.models.official_parity import LANDMARK_PX_TOL, PROBABILITY_TOL

    checks = {"landmarks": lm["xy_px_max"] < LANDMARK_PX_TOL,
              "visibility": lm["visibility_max"] <= PROBABILITY_TOL
              and lm["landmark_presence_max"] <= PROBABILITY_TOL,
              "presence": lm["presence_max"] <= PROBABILITY_TOL}
    print(f"  {name}")
    print(f"    landmark x,y |diff|     max {lm['xy_px_max']:.2e} px  mean {lm['xy_px_mean']:.2e} px   "
          f"[{_verdict(checks['landmarks'])}: max < {LANDMARK_PX_TOL} crop px]")
    print(f"    landmark z |diff|       max {lm['z_max']:.2e}")
    print(f"    visibility / presence   max {lm['visibility_max']:.2e} / {lm['landmark_presence_max']:.2e} "
          f"(after sigmoid)   [{_verdict(checks['visibility'])}: <= {PROBABILITY_TOL:g}]")
    print(f"    pose presence           max {lm['presence_max']:.2e}   "
          f"[{_verdict(checks['presence'])}: <= {PROBABILITY_TOL:g}]")
    print(f"    heatmap logits          max {lm['heatmap_max']:.2e}  mean {lm['heatmap_mean']:.2e}")
    print(f"    segmentation            logits max {lm['segmentation_max']:.2e} mean {lm['segmentation_mean']:.2e}"
          f" (logits reach ±1000); after sigmoid max {lm['segmentation_prob_max']:.2e}")
    print(f"    world (m)               max {lm['world_m_max']:.2e}  mean {lm['world_m_mean']:.2e}")
    return checks


def run(num_crops: int, limit: Optional[int], split: str, threads: int, data_dir: str, reconvert: bool,
        output: Optional[str], progress: bool = True, trackers: Sequence[str] = TRACKERS,
        overwrite: Optional[bool] = None) -> tuple[dict, bool]:
    """Runs both parts for the official detector and ``trackers``, prints the report, returns (summary, all
    targets passed)."""
    from blazepose_tf.models.official_parity import REGRESSOR_PX_TOL
    from blazepose_tf.models.official_translation import count_params

    unknown = [t for t in trackers if t not in TRACKERS]
    if unknown or not trackers:
        raise UserError(f"--trackers must list names from {', '.join(TRACKERS)}, got {list(trackers)}")
    root = Path(data_dir)
    if not (root / "annotations.json").is_file():
        raise InputError(f"no LSPET annotations.json in {root} (set --data_dir)")
    dataset = load_coco_keypoints(root / "annotations.json", root / "images", split=split,
                                  splits_json=root / "splits.json")
    all_records = scored_records(dataset)
    if not all_records:
        raise InputError(f"no scored image in split {split!r} of {root}")
    runners = load_models(trackers, reconvert, threads)
    for name in (DETECTOR_MODEL, *trackers):
        total, trainable = count_params(runners[f"keras_{name}"].model)
        print(f"converted {name}: {total:,} parameters ({trainable:,} trainable)")

    tp = tensor_parity(all_records, runners, num_crops, trackers)
    d = tp["detector"]
    print(f"\n[1] tensor parity, LSPET {split}: {tp['num_crops']} tracker crops from the first {tp['num_images']} "
          f"scored images (detector inputs: all {tp['num_images']})")
    checks: dict[str, bool] = {"crops": tp["num_crops"] >= MIN_CROPS}
    print(f"  crops                     {tp['num_crops']}   [{_verdict(checks['crops'])}: >= {MIN_CROPS}]")
    for name in trackers:
        checks.update({f"{name}/{k}": v for k, v in report_landmarks(name, tp["landmarks"][name]).items()})
    checks["regressors"] = d["regressors_px_max"] < REGRESSOR_PX_TOL
    print(f"  {DETECTOR_MODEL}")
    print(f"    regressors              max {d['regressors_px_max']:.2e} px  mean {d['regressors_px_mean']:.2e} px   "
          f"[{_verdict(checks['regressors'])}: max < {REGRESSOR_PX_TOL} px]")
    print(f"    scores                  max {d['score_max']:.2e} (after sigmoid)")
    checks["nms"] = bool(d["nms_identical"])
    print(f"    detections after NMS    tflite {d['detections']}  keras {d['detections_candidate']}  max diff "
          f"{d['nms_max_diff']:.1e}   [{_verdict(checks['nms'])}: identical on every image]")

    records = all_records[:limit] if limit else all_records
    print(f"\n[2] PCK@0.2 on LSPET {split}: {len(records)} scored images"
          + ("" if len(records) == len(all_records) else f" (of {len(all_records)}, --limit)")
          + ", official detector + each tracker")
    pk: dict[str, Any] = {}
    for name in trackers:
        pk[name] = p = pck_parity(records, runners, progress, name)
        print(f"  {name}")
        for kind in ("tflite", "keras"):
            r = p[kind]
            print(f"    {kind:<7s} PCK@0.2 {r['pck']:6.2f}%  diagonal {r['pck_diagonal']:6.2f}%  detection rate "
                  f"{r['detection_rate']:5.1f}%  ({r['seconds']:.0f} s)")
        checks[f"{name}/pck"] = bool(abs(p["diff"]) <= PCK_DIFF_TARGET)
        print(f"    difference keras - tflite {p['diff']:+.2f} points (diagonal {p['diff_diagonal']:+.2f})   "
              f"[{_verdict(checks[f'{name}/pck'])}: |diff| <= {PCK_DIFF_TARGET}]")
    passed = all(checks.values())
    print(f"\noverall {_verdict(passed)}")
    summary = {"split": split, "data_dir": data_dir, "trackers": list(trackers), "tensor_parity": tp, "pck": pk,
               "checks": checks, "pass": passed}
    if output:
        cli.write_marked(output, summary, overwrite=overwrite)
        print(f"wrote {output}")
    return summary, passed


def _define_flags() -> None:
    flags.DEFINE_integer("num_crops", 100, "Real tracker crops for the tensor comparison.", lower_bound=1)
    flags.DEFINE_integer("limit", None, "Score only the first N scored images for PCK (default: all).",
                         lower_bound=1)
    flags.DEFINE_string("split", "dev", "Split name in splits.json.")
    flags.DEFINE_integer("threads", 1, "num_threads of the .tflite runners.", lower_bound=1)
    flags.DEFINE_list("trackers", list(TRACKERS), f"Official landmark models to check, from {', '.join(TRACKERS)}.")
    flags.DEFINE_string("data_dir", DEFAULT_DATA_DIR, "LSPET folder (annotations.json, splits.json, images/).")
    flags.DEFINE_bool("reconvert", False, "Convert the official models again instead of using the cached .keras.")
    flags.DEFINE_bool("progress", True, "Show progress bars.")
    flags.DEFINE_string("output", None, "Optional JSON file for the full results.")
    cli.define_overwrite_flag()


def main(argv: list[str]) -> int:
    FLAGS = flags.FLAGS
    cli.check_outputs([("--output", FLAGS.output)], [("--data_dir", FLAGS.data_dir)], overwrite=FLAGS.overwrite)
    _, passed = run(FLAGS.num_crops, FLAGS.limit, FLAGS.split, FLAGS.threads, FLAGS.data_dir, FLAGS.reconvert,
                    FLAGS.output, FLAGS.progress, FLAGS.trackers, FLAGS.overwrite)
    return 0 if passed else 1


if __name__ == "__main__":
    _define_flags()
    cli.run(main)
