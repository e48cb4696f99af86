"""Tracker input pipeline: alignment crops from data.prepare, flip, occlusion, determinism and resume skip."""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from blazepose_tf.datasets.coco import ImageRecord, PersonAnnotation  # noqa: E402
from blazepose_tf.topology import BLAZEPOSE_33  # noqa: E402
from blazepose_tf.training.augment import AugmentConfig  # noqa: E402
from blazepose_tf.training.data import TrackerDataConfig, tracker_dataset  # noqa: E402
from data.prepare import Labeller, to_example  # noqa: E402

K = BLAZEPOSE_33.num_keypoints
IDX = BLAZEPOSE_33.index


def _person(angle_deg: float, center=(200.0, 150.0), scale=40.0) -> np.ndarray:
    """A stick figure (33 points) rotated by ``angle_deg``; hips at ``center``, shoulders 1 unit 'up'."""
    local = np.zeros((K, 2))
    spec = {"left_hip": (0.3, 0), "right_hip": (-0.3, 0), "left_shoulder": (0.4, -1.2),
            "right_shoulder": (-0.4, -1.2), "left_elbow": (0.9, -0.8), "right_elbow": (-0.9, -0.8),
            "left_wrist": (1.2, -0.3), "right_wrist": (-1.1, -0.5), "left_knee": (0.35, 1.0),
            "right_knee": (-0.35, 1.0), "left_ankle": (0.4, 2.0), "right_ankle": (-0.4, 2.0), "nose": (0, -1.7)}
    avail = np.zeros(K, bool)
    for name, xy in spec.items():
        local[IDX(name)] = xy
        avail[IDX(name)] = True
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return (local @ rot.T) * scale + np.array(center), avail


def _write_records(path, angles, dots=True):
    """Writes one example per angle with coloured dots painted at every keypoint; returns the colours."""
    rng = np.random.default_rng(0)
    colors = rng.integers(40, 255, size=(K, 3)).astype(np.uint8)
    labeller = Labeller(None, BLAZEPOSE_33, crop_size=384, margin=1.5, teacher_weight=0.5)
    with tf.io.TFRecordWriter(str(path)) as w:
        for i, angle in enumerate(angles):
            kps, avail = _person(angle)
            image = np.full((320, 400, 3), 90, np.uint8)
            if dots:
                for j in np.nonzero(avail)[0]:
                    x, y = np.round(kps[j]).astype(int)
                    image[y - 2:y + 3, x - 2:x + 3] = colors[j]
            rec = ImageRecord(image_id=i, file_path=path, width=400, height=320,
                              people=[PersonAnnotation(kps, avail, None, None, False, i)])
            examples = list(labeller.people(rec, image, Counter()))
            assert len(examples) == 1
            w.write(to_example(examples[0], i, "synthetic"))
    return colors


def _cfg(**aug):
    base = AugmentConfig.none()
    return TrackerDataConfig(batch_size=2, shuffle_buffer=4,
                             augment=AugmentConfig(**{**base.__dict__, **aug}))


def test_alignment_crop_centres_mid_hip_and_makes_torso_vertical(tmp_path):
    path = tmp_path / "a.tfrecord"
    _write_records(path, [0.0, 35.0, -120.0, 170.0])
    images, t = next(iter(tracker_dataset(str(path), TrackerDataConfig(batch_size=4), training=False)))
    k = t["keypoints"].numpy()
    hip = (k[:, IDX("left_hip"), :2] + k[:, IDX("right_hip"), :2]) / 2
    sho = (k[:, IDX("left_shoulder"), :2] + k[:, IDX("right_shoulder"), :2]) / 2
    np.testing.assert_allclose(hip, 128.0, atol=0.05)
    np.testing.assert_allclose(sho[:, 0], 128.0, atol=0.05)        # hip→shoulder line vertical...
    assert np.all(sho[:, 1] < hip[:, 1] - 10)                       # ...and pointing up
    # Auxiliary ROI points: centre at mid-hip, scale point straight above it.
    np.testing.assert_allclose(k[:, K, :2], 128.0, atol=0.05)
    np.testing.assert_allclose(k[:, K + 1, 0], 128.0, atol=0.05)


def test_flip_maps_left_points_onto_right_twins(tmp_path):
    path = tmp_path / "f.tfrecord"
    colors = _write_records(path, [10.0, -25.0])
    plain = next(iter(tracker_dataset(str(path), _cfg(), training=True)))
    flipped = next(iter(tracker_dataset(str(path), _cfg(flip_prob=1.0), training=True)))
    kp, kf = plain[1]["keypoints"].numpy(), flipped[1]["keypoints"].numpy()
    perm = BLAZEPOSE_33.flip_indices
    for left, right in BLAZEPOSE_33.flip_pairs:
        # the flipped sample's left point is the mirror image of the plain sample's right point
        np.testing.assert_allclose(kf[:, left, 0], 256.0 - kp[:, right, 0], atol=1e-3)
        np.testing.assert_allclose(kf[:, left, 1], kp[:, right, 1], atol=1e-3)
    # and the pixels agree: at the flipped left-wrist position sits the colour painted for the right wrist
    img = (flipped[0].numpy() * 255).round()
    for name in ("left_wrist", "left_ankle", "left_elbow"):
        j = IDX(name)
        x, y = kf[0, j, :2]
        got = img[0, int(y), int(x)]
        np.testing.assert_allclose(got, colors[perm[j]], atol=25)


def test_occluded_points_are_not_visible(tmp_path):
    path = tmp_path / "o.tfrecord"
    _write_records(path, [0.0] * 8, dots=False)
    occ = _cfg(occlusion_prob=1.0, max_occluders=1, occluder_size=(0.45, 0.6)).augment
    clean = tracker_dataset(str(path), TrackerDataConfig(batch_size=8, shuffle_buffer=8,
                                                         augment=AugmentConfig.none()), training=True)
    occluded = tracker_dataset(str(path), TrackerDataConfig(batch_size=8, shuffle_buffer=8, augment=occ),
                               training=True)
    (img0, t0), (img1, t1) = next(iter(clean)), next(iter(occluded))
    np.testing.assert_allclose(t0["keypoints"], t1["keypoints"])      # same geometry, only paint differs
    changed = np.abs(img1.numpy() - img0.numpy()).max(axis=-1) > 1e-3
    k, vis0, vis1 = t1["keypoints"].numpy(), t0["visible"].numpy(), t1["visible"].numpy()
    hidden = 0
    for b in range(k.shape[0]):
        for j in range(K + 2):
            x, y = k[b, j, :2]
            xi, yi = int(x), int(y)
            near = changed[b, max(yi - 1, 0):yi + 2, max(xi - 1, 0):xi + 2]
            far = changed[b, max(yi - 4, 0):yi + 5, max(xi - 4, 0):xi + 5]
            if vis1[b, j] == 0 and vis0[b, j] == 1:
                hidden += 1
                assert near.any(), f"point {j} of sample {b} marked hidden but no occluder there"
            elif vis0[b, j] == 1:
                assert not far.all(), f"point {j} of sample {b} is deep inside an occluder but still visible"
    assert hidden > 0


def test_pipeline_is_deterministic_and_resume_skips_exact_batches(tmp_path):
    path = tmp_path / "d.tfrecord"
    _write_records(path, list(np.linspace(-60, 60, 8)))
    cfg = TrackerDataConfig(batch_size=2, shuffle_buffer=8)
    a = [b[0].numpy() for b in tracker_dataset(str(path), cfg, training=True)]
    b = [b[0].numpy() for b in tracker_dataset(str(path), cfg, training=True)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    c = [b[0].numpy() for b in tracker_dataset(str(path), cfg, training=True, skip_batches=3)]
    assert len(c) == len(a) - 3 and np.array_equal(c[0], a[3])
    other_epoch = [b[0].numpy() for b in tracker_dataset(str(path), cfg, training=True, epoch=1)]
    assert not np.array_equal(other_epoch[0], a[0])
