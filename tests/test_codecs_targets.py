"""Heatmap/offset codec round trips, tracker regression targets and detector target assignment."""
from __future__ import annotations

import math

import numpy as np
import pytest

from blazepose_tf.codecs import roi as roi_codec
from blazepose_tf.codecs.anchors import AnchorOptions, anchors_per_cell, generate_anchors
from blazepose_tf.codecs.detection import decode_boxes
from blazepose_tf.codecs.heatmap import decode_heatmaps, encode_heatmaps
from blazepose_tf.codecs.landmarks import refine_with_heatmap
from blazepose_tf.codecs.detector_targets import (HEAD_FROM_SHOULDERS, AssignmentOptions, assign_detector_targets,
                                                  detector_targets, person_target, tf_detector_targets)
from blazepose_tf.codecs.targets import (alignment_keypoints, gt_alignment_roi, tracker_targets, upper_body_indices,
                                         with_aux_points)
from blazepose_tf.contract import ROI_SCALE
from blazepose_tf.topology import BLAZEPOSE_33, COCO_17

tf = pytest.importorskip("tensorflow")

P = BLAZEPOSE_33.num_keypoints + 2


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-12, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


# ------------------------------------------------------------------------------------------------ heatmaps
def test_heatmap_shapes_and_peak():
    kp = np.array([[100.0, 60.0], [0.0, 0.0], [255.0, 255.0]], np.float32)
    hm, off, mask = (np.asarray(t) for t in encode_heatmaps(kp, heatmap_size=64, input_size=256))
    assert hm.shape == (64, 64, 3) and off.shape == (64, 64, 6) and mask.shape == (64, 64, 3)
    # Cell (row 15, col 25) is crop pixel (100, 60): the peak, value 1, and its offsets are 0.
    assert np.unravel_index(np.argmax(hm[..., 0]), (64, 64)) == (15, 25)
    assert hm[15, 25, 0] == pytest.approx(1.0)
    np.testing.assert_allclose(off[15, 25, 0:2], 0.0, atol=1e-6)
    # offsets point from the cell to the keypoint, in cells, dx/dy interleaved per point
    np.testing.assert_allclose(off[14, 27, 0:2], [25 - 27, 15 - 14], atol=1e-6)


def test_offset_mask_only_near_the_peak():
    kp = np.array([[128.0, 128.0]], np.float32)
    _, _, mask = encode_heatmaps(kp, sigma=2.0, offset_radius=2.0)
    mask = np.asarray(mask)[..., 0]
    rows, cols = np.nonzero(mask)
    assert mask.sum() == 13  # lattice points within radius 2 of a cell centre
    assert np.hypot(rows - 32, cols - 32).max() <= 2.0


@pytest.mark.parametrize("use_offsets, as_logits", [(True, True), (False, True), (False, False)])
def test_heatmap_round_trip_subpixel(use_offsets, as_logits):
    rng = np.random.default_rng(1)
    kp = rng.uniform(6.0, 250.0, size=(4, P, 2)).astype(np.float32)  # batch of 4 crops
    hm, off, _ = (np.asarray(t) for t in encode_heatmaps(kp))
    maps = _logit(hm) if as_logits else hm
    pts, scores = decode_heatmaps(maps, off if use_offsets else None, logits=as_logits)
    assert pts.shape == (4, P, 2) and scores.shape == (4, P)
    err = np.linalg.norm(pts - kp, axis=-1)
    assert err.max() < 0.5, err.max()
    assert scores.min() > 0.75  # the peak cell is within ~0.7 cells of the keypoint


def test_heatmap_matches_runtime_refinement_convention():
    """MediaPipe's refinement (the runtime's) maps cell j to x = j / W; with our encoding it returns the
    keypoint itself (a half-cell convention mismatch would be a 2 px bias)."""
    kp = np.array([[100.0, 60.0], [36.0, 200.0]], np.float32)  # on cells, so the 7×7 window is symmetric
    hm, _, _ = encode_heatmaps(kp)
    refined = refine_with_heatmap(kp / 256.0, _logit(np.asarray(hm)), kernel_size=7)
    np.testing.assert_allclose(refined * 256.0, kp, atol=0.05)


def test_unannotated_points_have_empty_maps():
    kp = np.array([[100.0, 60.0], [50.0, 50.0]], np.float32)
    hm, off, mask = (np.asarray(t) for t in encode_heatmaps(kp, weights=[1.0, 0.0]))
    assert hm[..., 1].max() == 0 and mask[..., 1].max() == 0 and np.abs(off[..., 2:4]).max() == 0
    assert hm[..., 0].max() == pytest.approx(1.0)


def test_heatmap_encoding_runs_inside_tf_data():
    kp = np.random.default_rng(2).uniform(0, 256, (3, P, 2)).astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices(kp).map(lambda k: encode_heatmaps(k, tf.ones([P])))
    hm, off, mask = next(iter(ds.batch(3)))
    assert hm.shape == (3, 64, 64, P) and off.shape == (3, 64, 64, 2 * P) and mask.shape == (3, 64, 64, P)


# ---------------------------------------------------------------------------------------- tracker targets
def test_tracker_targets_normalized_to_crop():
    rng = np.random.default_rng(3)
    kp = rng.uniform(0, 256, (P, 3)).astype(np.float32)
    kp[0, :2] = [-10.0, 30.0]  # outside the crop
    avail = np.ones(P, np.float32)
    avail[5] = 0
    t = {k: np.asarray(v) for k, v in tracker_targets(kp, avail).items()}
    np.testing.assert_allclose(t["coords"][1], kp[1] / 256.0, rtol=1e-6)
    assert t["coords"].shape == (P, 3) and t["coord_mask"].shape == (P, 3)
    assert t["coord_mask"][5].sum() == 0 and t["coord_mask"][4].sum() == 3
    assert t["point_presence"][0] == 0 and t["point_presence"][1] == 1
    assert t["visibility"][5] == 0 and t["visibility_mask"][5] == 0
    assert t["presence"].tolist() == [1.0]


def test_tracker_targets_without_z_and_negative_crops():
    kp = np.full((P, 2), 128.0, np.float32)
    t = {k: np.asarray(v) for k, v in tracker_targets(kp, np.ones(P)).items()}
    assert t["coord_mask"][:, 2].sum() == 0 and t["coord_mask"][:, :2].min() == 1  # z not annotated
    neg = {k: np.asarray(v) for k, v in tracker_targets(kp, np.ones(P), person_present=0.0).items()}
    assert neg["presence"].tolist() == [0.0]
    for key in ("coord_mask", "visibility_mask", "point_presence_mask"):
        assert neg[key].sum() == 0, key
    batch = tracker_targets(np.stack([kp, kp]), np.ones((2, P)), person_present=[1.0, 0.0])
    assert batch["presence"].shape == (2, 1) and float(tf.reduce_sum(batch["coord_mask"][1])) == 0
    assert tracker_targets(np.stack([kp] * 3), np.ones((3, P)))["presence"].shape == (3, 1)  # scalar broadcast


def test_tracker_targets_per_coordinate_mask_and_visibility():
    kp = np.full((P, 3), 100.0, np.float32)
    avail = np.ones((P, 3), np.float32)
    avail[:, 2] = 0  # no z anywhere
    vis = np.zeros(P, np.float32)
    vis[:3] = 1
    t = tracker_targets(kp, avail, visibility=vis, visibility_available=np.ones(P))
    assert float(tf.reduce_sum(t["coord_mask"][:, 2])) == 0
    assert np.asarray(t["visibility"]).tolist() == vis.tolist()


# --------------------------------------------------------------------------------------- alignment points
def _standing_person(cx: float = 0.5, cy: float = 0.55, scale: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic upright person (normalized coordinates) in BlazePose-33 order."""
    rng = np.random.default_rng(4)
    kp = np.zeros((33, 2), np.float32)
    named = {"left_hip": (0.1, 0.0), "right_hip": (-0.1, 0.0), "left_shoulder": (0.15, -0.5),
             "right_shoulder": (-0.15, -0.5), "nose": (0.0, -0.75), "left_ankle": (0.1, 0.9),
             "right_ankle": (-0.1, 0.9), "left_wrist": (0.5, -0.6), "right_wrist": (-0.5, -0.6)}
    for i, name in enumerate(BLAZEPOSE_33.keypoints):
        x, y = named.get(name, (rng.uniform(-0.3, 0.3), rng.uniform(-0.8, 0.8)))
        if "eye" in name or "ear" in name or "mouth" in name:
            x, y = rng.uniform(-0.06, 0.06), -0.75 + rng.uniform(-0.05, 0.05)
        kp[i] = (cx + x * scale, cy + y * scale)
    return kp, np.ones(33, bool)


def test_alignment_keypoints_follow_the_design():
    kp, valid = _standing_person()
    kps, mask = alignment_keypoints(kp, valid)
    assert mask.all()
    hip = (kp[23] + kp[24]) / 2
    sho = (kp[11] + kp[12]) / 2
    r = np.linalg.norm(kp - hip, axis=1).max()
    up = upper_body_indices(BLAZEPOSE_33)
    r_up = np.linalg.norm(kp[up] - sho, axis=1).max()
    np.testing.assert_allclose(kps[0], hip, atol=1e-6)
    np.testing.assert_allclose(kps[2], sho, atol=1e-6)
    u = (sho - hip) / np.linalg.norm(sho - hip)
    np.testing.assert_allclose(kps[1], hip + r * u, atol=1e-6)
    np.testing.assert_allclose(kps[3], sho + r_up * u, atol=1e-6)
    # An upright person gives an unrotated ROI that holds every keypoint.
    roi = roi_codec.alignment_roi(kps[0], kps[1], scale=1.0)
    assert abs(roi.rotation) < 1e-6
    crop = roi_codec.image_to_crop(kp, roi)
    assert crop.min() >= 0 and crop.max() <= 1
    assert "left_knee" not in [BLAZEPOSE_33.keypoints[i] for i in up]


def test_alignment_needs_hips_and_shoulders():
    kp, valid = _standing_person()
    valid[23] = False
    _, mask = alignment_keypoints(kp, valid)
    assert not mask.any()


def test_gt_alignment_roi_is_the_alignment_of_the_training_crops():
    kp, valid = _standing_person()
    kps, _ = alignment_keypoints(kp, valid)
    roi = gt_alignment_roi(kp, valid)
    assert (roi.x_center, roi.y_center) == pytest.approx(tuple(kps[0]), abs=1e-4)
    assert roi.width == roi.height == pytest.approx(2 * np.linalg.norm(kps[1] - kps[0]) * ROI_SCALE, rel=1e-5)
    assert abs(roi.rotation) < 1e-6
    assert gt_alignment_roi(kp, valid, scale=1.0).width == pytest.approx(roi.width / ROI_SCALE)
    valid[23] = False
    assert gt_alignment_roi(kp, valid) is None


def test_with_aux_points_appends_roi_points():
    kp, valid = _standing_person()
    kp3 = np.concatenate([kp, np.ones((33, 1), np.float32)], axis=1)
    full, ok = with_aux_points(kp3, valid)
    assert full.shape == (35, 3) and ok.shape == (35,) and ok.all()
    kps, _ = alignment_keypoints(kp, valid)
    np.testing.assert_allclose(full[33:, :2], kps[:2])
    assert (full[33:, 2] == 0).all()


# ---------------------------------------------------------------------------------------- detector targets
def test_detector_targets_round_trip_through_runtime_decoding():
    kp, valid = _standing_person()
    person = person_target(kp, valid)
    anchors = generate_anchors()
    reg, labels, mask = assign_detector_targets([person], anchors)
    assert reg.shape == (2254, 12) and labels.shape == (2254,) and mask.shape == (2254, 12)
    pos = np.nonzero(labels == 1)[0]
    assert 3 <= len(pos) <= 20
    boxes, kps = decode_boxes(reg[pos], anchors[pos])
    np.testing.assert_allclose(boxes, np.repeat(person.box[None], len(pos), 0), atol=1e-5)
    np.testing.assert_allclose(kps, np.repeat(person.keypoints[None], len(pos), 0), atol=1e-5)
    assert mask[pos].min() == 1 and mask[labels != 1].max() == 0
    assert np.abs(reg[labels != 1]).max() == 0


def test_detector_positives_sit_at_the_face_on_fine_maps():
    kp, valid = _standing_person()
    person = person_target(kp, valid)
    face = kp[:11].mean(axis=0)
    np.testing.assert_allclose(person.center, face, atol=1e-6)
    assert person.box[2] - person.box[0] == pytest.approx(0.2)
    anchors = generate_anchors()
    _, labels, _ = assign_detector_targets([person], anchors)
    sizes = [s * s * n for s, n in anchors_per_cell(AnchorOptions())]
    level = np.repeat(np.arange(3), sizes)
    pos = labels == 1
    assert pos[level == 0].any() and pos[level == 1].any() and not pos[level == 2].any()
    d = np.linalg.norm(anchors[pos, :2] - face, axis=1)
    assert d.max() <= 0.75 / 14 + 1e-6
    assert (labels == -1).any()  # an ignore band around the positives
    ign = np.linalg.norm(anchors[labels == -1, :2] - face, axis=1)
    assert ign.max() <= 1.5 / 14 + 1e-6


def test_detector_fallback_box_without_face_points():
    kp, valid = _standing_person()
    valid[:11] = False  # LSPET-like: no face keypoints
    person = person_target(kp, valid)
    hip = (kp[23] + kp[24]) / 2
    sho = (kp[11] + kp[12]) / 2
    np.testing.assert_allclose(person.center, sho + HEAD_FROM_SHOULDERS * (sho - hip), atol=1e-6)


def test_detector_targets_multi_person_empty_and_unplaceable():
    a, va = _standing_person(cx=0.25, scale=0.25)
    b, vb = _standing_person(cx=0.75, scale=0.25)
    reg, labels, mask = detector_targets(np.stack([a, b]), np.stack([va, vb]))
    anchors = generate_anchors()
    pos = np.nonzero(labels == 1)[0]
    boxes, _ = decode_boxes(reg[pos], anchors[pos])
    centers = (boxes[:, :2] + boxes[:, 2:]) / 2
    assert (np.abs(centers[:, 0] - 0.25) < 0.01).any() and (np.abs(centers[:, 0] - 0.75) < 0.01).any()
    # nobody: all negatives
    reg0, labels0, mask0 = detector_targets(np.zeros((0, 33, 2)), np.zeros((0, 33)))
    assert (labels0 == 0).all() and mask0.sum() == 0
    # a person with only legs annotated cannot be placed: no positives, an ignore zone instead
    legs = np.zeros(33, bool)
    legs[25:29] = True
    _, labels1, _ = detector_targets(a[None], legs[None])
    assert (labels1 == 1).sum() == 0 and (labels1 == -1).sum() > 0


def test_detector_keypoint_mask_and_other_topologies():
    kp, valid = _standing_person()
    coco = kp[BLAZEPOSE_33.mapping_to(COCO_17)]
    person = person_target(coco, np.ones(17, bool), COCO_17)
    full = person_target(kp, valid)
    np.testing.assert_allclose(person.keypoints[[0, 2]], full.keypoints[[0, 2]], atol=1e-6)
    assert person.keypoint_mask.all()
    options = AssignmentOptions(levels=(0,), positive_radius=0.5)
    _, labels, _ = assign_detector_targets([person], options=options)
    assert (labels == 1).sum() >= 2  # nearest 28² cell, both of its anchors


def test_detector_targets_run_inside_tf_data():
    kp, valid = _standing_person()
    ds = tf.data.Dataset.from_tensors((kp[None].astype(np.float32), valid[None]))
    ds = ds.map(lambda k, v: tf_detector_targets(k, v))
    reg, labels, mask = next(iter(ds))
    assert reg.shape == (2254, 12) and labels.shape == (2254,) and mask.shape == (2254, 12)
    ref_reg, ref_labels, _ = detector_targets(kp[None], valid[None])
    np.testing.assert_array_equal(labels.numpy(), ref_labels)
    np.testing.assert_allclose(reg.numpy(), ref_reg)


def test_detector_rotation_recovered_from_targets():
    """A person lying sideways: the decoded kp0→kp1 gives the ROI rotation of docs/design.md §5."""
    kp, valid = _standing_person()
    centre = np.array([0.5, 0.55])
    rot = np.array([[0.0, -1.0], [1.0, 0.0]])  # 90° on screen
    lying = (kp - centre) @ rot.T + centre
    person = person_target(lying, valid)
    anchors = generate_anchors()
    reg, labels, _ = assign_detector_targets([person], anchors)
    i = np.nonzero(labels == 1)[0][0]
    _, kps = decode_boxes(reg[i:i + 1], anchors[i:i + 1])
    roi = roi_codec.alignment_roi(kps[0, 0], kps[0, 1])
    assert abs(abs(roi.rotation) - math.pi / 2) < 1e-4


def test_tf_detector_targets_match_numpy_on_batches():
    """Batched TensorFlow encoding (compiled with XLA, as in the training pipeline) = the NumPy reference, image by
    image: people in and out of the input, partly annotated, without face or torso, and padding people."""
    rng = np.random.default_rng(1)
    batch, people, k = 24, 8, BLAZEPOSE_33.num_keypoints
    kp = np.zeros((batch, people, k, 2), np.float32)
    valid = np.zeros((batch, people, k), np.float32)
    for b in range(batch):
        for m in range(rng.integers(0, 4)):
            kp[b, m] = rng.uniform(-0.1, 1.1, 2) + rng.normal(0, 1, (k, 2)) * rng.uniform(0.02, 0.16)
            valid[b, m] = rng.uniform(size=k) > rng.uniform(0, 0.9)
    reg, labels, mask = tf.function(tf_detector_targets, jit_compile=True)(kp, valid)
    for b in range(batch):
        ref_reg, ref_labels, ref_mask = detector_targets(kp[b], valid[b])
        np.testing.assert_array_equal(labels[b].numpy(), ref_labels)
        np.testing.assert_allclose(reg[b].numpy(), ref_reg, atol=1e-4)
        np.testing.assert_array_equal(mask[b].numpy(), ref_mask)
    assert (labels.numpy() == 1).sum() > 50 and (labels.numpy() == -1).sum() > 100
