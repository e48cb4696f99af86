"""The detector benchmark (benchmarks/detector_roi.py): per-person ROI overlap with the ground-truth ROI, matching,
the paired PCK difference, and the whole measurement on the bundled sample photos."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from benchmarks import detector_roi as dr
from blazepose_tf.codecs.targets import alignment_keypoints, gt_alignment_roi
from blazepose_tf.datasets.coco import ImageRecord, load_coco_keypoints
from blazepose_tf.evaluation import scored_records
from blazepose_tf.official import official_model_path
from blazepose_tf.topology import BLAZEPOSE_33
from blazepose_tf.types import Detection
from test_keypoint_errors import _person
from test_ood_guard import official_ground_truth


def _detection(keypoints: np.ndarray, score: float = 0.9) -> Detection:
    return Detection(box=np.zeros(4, np.float32), keypoints=np.asarray(keypoints, np.float32), score=score)


def test_person_rois_overlap_and_matching():
    person = _person(0.4)
    gt = gt_alignment_roi(person.keypoints, person.available)
    align, _ = alignment_keypoints(person.keypoints, person.available)
    rec = ImageRecord(7, Path("x.png"), 400, 300, [person])
    far = align + [400.0, 0.0]
    [exact] = dr.person_rois(rec, [_detection(align)], num_poses=1)
    assert exact.iou == pytest.approx(1.0, abs=1e-5) and exact.matched and exact.gt == gt
    # the runtime crops only the first detection with one pose: a right second detection does not count...
    [first_far] = dr.person_rois(rec, [_detection(far), _detection(align)], num_poses=1)
    assert first_far.iou == 0.0 and not first_far.matched and first_far.iou_any == pytest.approx(1.0, abs=1e-5)
    # ...with two poses it does
    [two] = dr.person_rois(rec, [_detection(far), _detection(align)], num_poses=2)
    assert two.iou == pytest.approx(1.0, abs=1e-5) and two.matched
    [none] = dr.person_rois(rec, [], num_poses=1)
    assert none.iou == 0.0 and none.roi is None and not none.matched
    # a scale point twice as far: same centre and rotation, side ×2 → IoU 1/4, still matched (centre exact)
    double = align.copy()
    double[1] = align[0] + 2 * (align[1] - align[0])
    [big] = dr.person_rois(rec, [_detection(double)], num_poses=1)
    assert big.iou == pytest.approx(0.25, abs=1e-5) and big.matched
    # people without hips have no ground-truth ROI and are not counted
    person.available[[BLAZEPOSE_33.index("left_hip"), BLAZEPOSE_33.index("right_hip")]] = False
    assert dr.person_rois(rec, [_detection(align)], num_poses=1) == []


def test_measure_on_the_sample_photos(official_models, tmp_path: Path):
    # Ground truth: the official pipeline's own poses on the 3 photos, on LSPET's 12 points.
    gt = official_ground_truth(tmp_path)
    records = scored_records(load_coco_keypoints(gt, gt.parent / "images"))
    assert len(records) == 3
    detector, full = official_model_path("pose_detection"), official_model_path("pose_landmark_full")
    result = dr.measure("official", detector, full, records, progress=False)
    assert result.num_people == result.num_matched == 3 and result.detection_rate == 100.0
    assert result.pck == pytest.approx(100.0) and len(result.per_person_correct) == 3
    assert 0.3 < result.iou_mean <= 1.0 and result.iou_any_mean >= result.iou_mean
    assert result.rotation_median_deg is not None and math.isfinite(result.rotation_median_deg)
    text = dr.markdown([result], {"dataset": "sample", "num_images": 3, "landmarks": "official", "num_poses": 1})
    assert "| official |" in text


def test_detector_flag_parsing(official_models, tmp_path: Path):
    from blazepose_tf.errors import UserError

    path = official_model_path("pose_detection")
    got = dr.detectors(["official", f"mine={path}"])
    assert got == [("official detector", path), ("mine", path)]
    with pytest.raises(UserError, match="must differ"):
        dr.detectors([str(path), str(path)])
    with pytest.raises(UserError, match="not found"):
        dr.detectors([str(tmp_path / "nope.tflite")])
    for item in ("x=", f"={path}", " = "):
        with pytest.raises(UserError, match="needs a label and a model"):
            dr.detector_specs([item])
    with pytest.raises(UserError, match="must differ"):
        dr.detector_specs(["a =official", "a=official"])
    assert dr.resolve_model("official", "--landmarks", dr.NAMED_TRACKERS) == official_model_path("pose_landmark_full")
