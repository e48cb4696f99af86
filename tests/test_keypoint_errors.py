"""Per-keypoint bias and spread (benchmarks/keypoint_errors.py): the person's frame, and a tracker shifted by a known
offset on crops of the bundled sample photo."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from benchmarks import keypoint_errors as ke
from benchmarks.ood_guard import ANNOTATED
from blazepose_tf.codecs.targets import gt_alignment_roi
from blazepose_tf.datasets.coco import PersonAnnotation, load_coco_keypoints
from blazepose_tf.evaluation import scored_records
from blazepose_tf.official import official_model_path
from blazepose_tf.runtime.runners import TFLiteRunner
from blazepose_tf.topology import BLAZEPOSE_33
from test_ood_guard import Shifted, official_ground_truth

# A person facing the camera (their left on the image's right), in torso-ish units before placement.
FIGURE = {"left_shoulder": (20, -50), "right_shoulder": (-20, -50), "left_elbow": (30, -25),
          "right_elbow": (-30, -25), "left_wrist": (35, 0), "right_wrist": (-35, 0), "left_hip": (15, 0),
          "right_hip": (-15, 0), "left_knee": (18, 40), "right_knee": (-18, 40), "left_ankle": (20, 80),
          "right_ankle": (-20, 80)}


def _rotation(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s], [s, c]])


def _person(angle: float, mirrored_view: bool = False) -> PersonAnnotation:
    kps = np.zeros((BLAZEPOSE_33.num_keypoints, 2))
    avail = np.zeros(BLAZEPOSE_33.num_keypoints, bool)
    for name, (x, y) in FIGURE.items():
        k = BLAZEPOSE_33.index(name)
        kps[k] = _rotation(angle) @ np.array([-x if mirrored_view else x, y], float) + (200.0, 150.0)
        avail[k] = True
    return PersonAnnotation(keypoints=kps, available=avail, bbox=None, area=None, iscrowd=False)


def test_offsets_are_in_the_persons_frame() -> None:
    d = np.array([0.05, -0.12])  # torso units: toward the person's left, and up
    for angle in (0.0, 0.5, -2.0):
        for back_view in (False, True):
            person = _person(angle, back_view)
            roi = gt_alignment_roi(person.keypoints, person.available)
            aligned = ke.AlignedPerson(Path("x.png"), person, roi)
            aligned.mirrored = back_view and ke.seen_from_behind(aligned)
            assert aligned.mirrored == back_view
            # The known offset, taken from the person's frame back to image pixels (ROI rotation, mirror).
            step = _rotation(roi.rotation) @ (d * [-1.0 if back_view else 1.0, 1.0]) * aligned.torso
            offsets = ke.person_offsets([aligned], [person.keypoints + step])
            annotated = person.available
            assert np.allclose(offsets[0, annotated], d, atol=1e-5)
            assert np.isnan(offsets[0, ~annotated]).all()
            [stats] = [s for s in ke.keypoint_stats(offsets) if s.name == "left_hip"]
            assert np.allclose(stats.mean, d, atol=1e-5) and np.allclose(stats.std, 0, atol=1e-6)


def test_shifted_tracker_bias_equals_the_shift(official_models, tmp_path: Path) -> None:
    # Ground truth: the official pipeline's own poses on the 3 photos, on LSPET's 12 points.
    gt = official_ground_truth(tmp_path)
    dataset = load_coco_keypoints(gt, gt.parent / "images")
    people = ke.aligned_people(scored_records(dataset), mirror=False)
    assert len(people) == 3
    names = list(ANNOTATED)

    full = TFLiteRunner(official_model_path("pose_landmark_full"))
    dx, dy = 6.0, -4.0  # crop pixels (of 256)
    base = {e.decoding: e for e in ke.measure_tracker("official Full", full, people)}
    moved = {e.decoding: e for e in ke.measure_tracker("shifted", Shifted(full, dx, dy), people)}
    # The shift in each person's frame: crop pixels → ROI fraction → torso units.
    expected = np.mean([np.array([dx, dy]) / 256 * p.roi.width / p.torso for p in people], axis=0)
    assert np.abs(expected).min() > 0.02
    before = {s.name: np.array(s.mean) for s in base["regressed"].keypoints}
    for decoding in ke.DECODINGS:  # no heatmap once shifted: both decodings are the regressed one
        assert not moved[decoding].has_heatmap
        after = {s.name: np.array(s.mean) for s in moved[decoding].keypoints}
        assert set(after) == set(names)
        for name in names:
            assert np.allclose(after[name] - before[name], expected, atol=1e-3), name
    assert base["refined"].has_heatmap and base["refined"].pck >= 0

    figure = ke.draw_figure(list(base.values()) + list(moved.values()), ke.mean_pose(people), 5.0)
    assert figure.shape == (2 * ke.PANEL[1], 2 * ke.PANEL[0], 3) and figure.dtype == np.uint8
    text = ke.markdown(list(base.values()) + list(moved.values()),
                       {"dataset": "sample", "num_people": 3, "mirror": False, "num_mirrored": 0})
    assert "shifted" in text and "left_hip" in text
