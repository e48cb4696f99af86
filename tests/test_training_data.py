"""Tracker input pipeline: alignment crops from data.prepare, flip, occlusion, determinism and resume skip; the
batched augmentation against TensorFlow's per-image kernels; memory cache and streaming alike; per-replica
batches."""
from __future__ import annotations

import math
import os
from collections import Counter

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from blazepose_tf.datasets.coco import ImageRecord, PersonAnnotation  # noqa: E402
from blazepose_tf.errors import UserError  # noqa: E402
from blazepose_tf.topology import BLAZEPOSE_33  # noqa: E402
from blazepose_tf.training.augment import (AugmentConfig, compiled, compiled_colour, sample_affine,  # noqa: E402
                                           sample_colour, warp)
from blazepose_tf.training.data import TrackerDataConfig, tracker_dataset, tracker_examples  # noqa: E402
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


def _affines(n: int, seed: int = 0):
    """n random augmentation warps (2, 2) / (2,) of a 384 crop onto 256, from the training ranges."""
    rng = np.random.default_rng(seed)
    cfg = AugmentConfig(scale=0.3, rotation_deg=40.0, shift=0.3, flip_prob=0.5)
    draws = [sample_affine(tf.constant(rng.integers(0, 2 ** 31, 2)), 384.0, 256.0, cfg) for _ in range(n)]
    return tf.stack([d[0] for d in draws]), tf.stack([d[1] for d in draws])


@pytest.mark.parametrize("fill", ["nearest", "constant"])
def test_batched_warp_matches_image_projective_transform(fill):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 384, 384, 3), dtype=np.uint8)
    sizes = np.array([[384, 384], [300, 384], [384, 250], [200, 330]], np.int32)   # content in the top-left corner
    a, b = _affines(4)
    got = compiled(lambda x, a, b, s: warp(x, a, b, 256, s, fill))(images, a, b, sizes).numpy()
    for i, (h, w) in enumerate(sizes):
        inv = np.linalg.inv(a[i].numpy())
        shift = -inv @ b[i].numpy()
        transform = np.array([inv[0, 0], inv[0, 1], shift[0], inv[1, 0], inv[1, 1], shift[1], 0, 0], np.float32)
        want = tf.raw_ops.ImageProjectiveTransformV3(
            images=tf.constant(images[i:i + 1, :h, :w], tf.float32), transforms=transform[None],
            output_shape=[256, 256], fill_value=0.0, interpolation="BILINEAR", fill_mode=fill.upper())[0]
        np.testing.assert_allclose(got[i], want.numpy(), atol=0.02)   # uint8 units


def test_batched_colour_jitter_makes_the_draws_and_changes_of_tf_image():
    rng = np.random.default_rng(1)
    images = tf.constant(rng.uniform(0, 1, (6, 32, 32, 3)).astype(np.float32))
    cfg = AugmentConfig()
    seeds = [tf.constant(rng.integers(0, 2 ** 31, 2)) for _ in range(6)]
    colour = tf.stack([sample_colour(s, cfg) for s in seeds])
    got = compiled_colour()(images, colour).numpy()
    for i, seed in enumerate(seeds):
        s = tf.random.experimental.stateless_split(seed, 4)
        want = tf.image.stateless_random_brightness(images[i], cfg.brightness, s[0])
        want = tf.image.stateless_random_contrast(want, 1 - cfg.contrast, 1 + cfg.contrast, s[1])
        want = tf.image.stateless_random_saturation(want, 1 - cfg.saturation, 1 + cfg.saturation, s[2])
        want = tf.clip_by_value(tf.image.stateless_random_hue(want, cfg.hue, s[3]), 0.0, 1.0)
        np.testing.assert_allclose(got[i], want.numpy(), atol=2e-5)
    # contrast around the mean of a region only (the detector's image content inside its padded batch)
    region = np.zeros((6, 32, 32, 1), np.float32)
    region[:, :20, :24] = 1.0
    part = compiled_colour()(images, colour, region).numpy()
    for i, seed in enumerate(seeds):
        s = tf.random.experimental.stateless_split(seed, 4)
        want = tf.image.stateless_random_brightness(images[i, :20, :24], cfg.brightness, s[0])
        want = tf.image.stateless_random_contrast(want, 1 - cfg.contrast, 1 + cfg.contrast, s[1])
        want = tf.image.stateless_random_saturation(want, 1 - cfg.saturation, 1 + cfg.saturation, s[2])
        want = tf.clip_by_value(tf.image.stateless_random_hue(want, cfg.hue, s[3]), 0.0, 1.0)
        np.testing.assert_allclose(part[i, :20, :24], want.numpy(), atol=2e-5)


def _batches(ds, n: int) -> list:
    out = []
    for images, targets in ds.take(n):
        out.append((images.numpy(), {k: v.numpy() for k, v in targets.items()}))
    return out


def _assert_same(a, b) -> None:
    for (ia, ta), (ib, tb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(ia, ib)
        for k in ta:
            np.testing.assert_array_equal(ta[k], tb[k], err_msg=k)


def test_memory_cache_and_decoding_as_read_give_the_same_batches(tmp_path):
    for shard, angles in (("a", np.linspace(-60, 60, 5)), ("b", np.linspace(-30, 90, 6))):
        _write_records(tmp_path / f"{shard}.tfrecord", list(angles))
    pattern = str(tmp_path / "*.tfrecord")
    cached = tracker_examples(pattern, cache_mb=100)
    streamed = tracker_examples(pattern, cache_mb=0)
    assert cached.cached and not streamed.cached and cached.num_examples == 11
    cfg = TrackerDataConfig(batch_size=3, shuffle_buffer=4)
    for kwargs in ({}, {"epoch": 2, "skip_batches": 1}):   # shuffled epochs, resumed mid-epoch, across epochs
        a = _batches(tracker_dataset(cached, cfg, repeat=True, **kwargs), 7)
        b = _batches(tracker_dataset(streamed, cfg, repeat=True, **kwargs), 7)
        _assert_same(a, b)


def test_replicas_of_a_global_batch_get_its_rows_augmented_alike(tmp_path):
    _write_records(tmp_path / "r.tfrecord", list(np.linspace(-60, 60, 12)))
    examples = tracker_examples(str(tmp_path / "r.tfrecord"), cache_mb=100)
    cfg = TrackerDataConfig(batch_size=4, shuffle_buffer=8)
    whole = _batches(tracker_dataset(examples, cfg, repeat=True), 3)
    # 2 workers with one replica each, and 1 worker with 2 replicas: each yields its per-replica batches in order
    halves = [_batches(tracker_dataset(examples, cfg, repeat=True, input_context=tf.distribute.InputContext(
        num_input_pipelines=2, input_pipeline_id=i, num_replicas_in_sync=2)), 3) for i in range(2)]
    local = _batches(tracker_dataset(examples, cfg, repeat=True, input_context=tf.distribute.InputContext(
        num_input_pipelines=1, input_pipeline_id=0, num_replicas_in_sync=2)), 6)
    for step, (images, targets) in enumerate(whole):
        parts = [halves[0][step], halves[1][step]]
        _assert_same(parts, local[2 * step:2 * step + 2])
        np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), images)
        np.testing.assert_array_equal(np.concatenate([p[1]["keypoints"] for p in parts]), targets["keypoints"])
    with pytest.raises(UserError, match="cannot be split evenly between 3 replicas"):
        tracker_dataset(examples, cfg, input_context=tf.distribute.InputContext(1, 0, 3))


def test_several_globs_separated_by_commas_read_their_union(tmp_path, monkeypatch):
    from blazepose_tf.io.shards import list_shards
    from blazepose_tf.training.data import count_records

    for folder, n in (("a", 2), ("b", 3)):
        (tmp_path / folder).mkdir()
        _write_records(tmp_path / folder / "train-00000.tfrecord", [0.0] * n, dots=False)
    monkeypatch.setenv("SHARDS", str(tmp_path))
    from blazepose_tf.io.shards import expand_patterns
    assert expand_patterns(" ~/x-*.tfrecord, $SHARDS/b/*,") == f"{os.path.expanduser('~')}/x-*.tfrecord,{tmp_path}/b/*"
    both = f"$SHARDS/a/train-*.tfrecord, {tmp_path}/b/train-*.tfrecord"
    assert list_shards(both) == [str(tmp_path / "a" / "train-00000.tfrecord"),
                                 str(tmp_path / "b" / "train-00000.tfrecord")]
    assert count_records(both) == 5
    assert count_records(f"{tmp_path}/*/train-*.tfrecord,{tmp_path}/a/*.tfrecord") == 5   # overlaps count once
    with pytest.raises(FileNotFoundError, match="c/train"):
        list_shards(f"{tmp_path}/a/*.tfrecord,{tmp_path}/c/train-*.tfrecord")
