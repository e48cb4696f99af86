"""Left/right label consistency (blazepose_tf.codecs.sides) and data.prepare's --fix_sides on a teacher's pose."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from blazepose_tf.codecs.sides import fix_swapped_sides
from blazepose_tf.datasets.coco import ImageRecord, PersonAnnotation
from blazepose_tf.topology import BLAZEPOSE_33
from blazepose_tf.types import Pose

T = BLAZEPOSE_33
K = T.num_keypoints
LSP_POINTS = {"left_shoulder": (60, 40), "right_shoulder": (40, 40), "left_elbow": (70, 60), "right_elbow": (30, 60),
              "left_wrist": (75, 80), "right_wrist": (25, 80), "left_hip": (57, 100), "right_hip": (43, 100),
              "left_knee": (58, 140), "right_knee": (42, 140), "left_ankle": (58, 180), "right_ankle": (42, 180)}


def _figure() -> tuple[np.ndarray, np.ndarray]:
    """A person (LSP's 12 points annotated, the others at the torso centre) and its availability."""
    pts = np.tile(np.array([[50.0, 70.0]]), (K, 1))
    avail = np.zeros(K, bool)
    for name, xy in LSP_POINTS.items():
        pts[T.index(name)] = xy
        avail[T.index(name)] = True
    return pts, avail


def _swap(pts: np.ndarray, *names: str) -> np.ndarray:
    out = pts.copy()
    for left in names:
        i, j = T.index(f"left_{left}"), T.index(f"right_{left}")
        out[[i, j]] = out[[j, i]]
    return out


def test_a_swapped_pair_is_swapped_back_and_named():
    ref, avail = _figure()
    gt = _swap(ref, "elbow", "knee") + 1.5          # the annotator swapped two pairs (and is off by a pixel or two)
    fixed, swapped = fix_swapped_sides(gt, avail, ref, T)
    assert sorted(swapped) == [("left_elbow", "right_elbow"), ("left_knee", "right_knee")]
    np.testing.assert_allclose(fixed, ref + 1.5)
    np.testing.assert_allclose(gt, _swap(ref, "elbow", "knee") + 1.5)   # the input is not modified


def test_consistent_labels_and_a_narrower_convention_are_left_alone():
    ref, avail = _figure()
    assert fix_swapped_sides(ref, avail, ref, T)[1] == []
    narrow = ref.copy()                               # the reference's hips sit closer together than the labels'
    narrow[T.index("left_hip"), 0] -= 5
    narrow[T.index("right_hip"), 0] += 5
    assert fix_swapped_sides(ref, avail, narrow, T)[1] == []


@pytest.mark.parametrize("case", ["close_pair", "one_side_missing", "no_torso", "weak_evidence"])
def test_no_swap_without_clear_evidence(case):
    ref, avail = _figure()
    gt = _swap(ref, "knee")
    if case == "close_pair":                           # knees 2 px apart: swapping gains less than min_gain torsos
        ref[T.index("left_knee"), 0], ref[T.index("right_knee"), 0] = 51, 49
        gt = _swap(ref, "knee")
    elif case == "one_side_missing":
        avail[T.index("right_knee")] = False
    elif case == "no_torso":
        avail[T.index("left_hip")] = False
    else:                                              # the reference sits between the two labels
        ref[T.index("left_knee"), 0] = ref[T.index("right_knee"), 0] = 50
    fixed, swapped = fix_swapped_sides(gt, avail, ref, T)
    assert swapped == []
    np.testing.assert_array_equal(fixed, gt)


class _Teacher:
    """A teacher that returns one fixed pose."""

    def __init__(self, keypoints: np.ndarray):
        self.pose = Pose(keypoints=np.concatenate([keypoints, np.zeros((K, 1))], 1), visibility=np.ones(K),
                         presence=np.ones(K), score=1.0, roi=None, aux_keypoints=None)

    def process(self, image):
        return [self.pose]


@pytest.mark.parametrize("fix", [True, False])
def test_prepare_labeller_swaps_the_ground_truth_only_when_asked(fix):
    from data.prepare import SOURCE_GT, Labeller

    ref, avail = _figure()
    gt = _swap(ref, "hip", "wrist")
    record = ImageRecord(image_id=1, file_path="x.jpg", width=100, height=200,
                         people=[PersonAnnotation(gt[:, :2], avail, None, None, False, 1)])
    labeller = Labeller(_Teacher(ref), T, crop_size=64, margin=1.5, teacher_weight=0.5)
    problems: Counter = Counter()
    merged = list(labeller.merged_people(record, np.zeros((200, 100, 3), np.uint8), problems, fix_sides=fix))
    assert len(merged) == 1
    pts, source = merged[0]["points"], merged[0]["source"]
    assert (source[avail] == SOURCE_GT).all()
    np.testing.assert_allclose(pts[avail, :2], (ref if fix else gt)[avail])
    assert problems == (Counter(sides_swapped_hip=1, sides_swapped_wrist=1) if fix else Counter())
