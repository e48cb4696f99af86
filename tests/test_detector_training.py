"""Detector training path: data.prepare's whole-image examples, the letterbox/augment pipeline and its anchor
targets, the dev detection-rate matcher, and a few steps of the detector smoke flagfile end to end."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from blazepose_tf.codecs.anchors import generate_anchors  # noqa: E402
from blazepose_tf.codecs.detector_targets import person_target  # noqa: E402
from blazepose_tf.datasets.coco import ImageRecord, PersonAnnotation  # noqa: E402
from blazepose_tf.topology import BLAZEPOSE_33  # noqa: E402
from blazepose_tf.training.augment import AugmentConfig  # noqa: E402
from blazepose_tf.training.detector_data import DetectorDataConfig, detector_dataset, detector_examples  # noqa: E402
from blazepose_tf.training.evaluation import match_detections  # noqa: E402
from data.prepare import Labeller, to_detector_example  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
K = BLAZEPOSE_33.num_keypoints
IDX = BLAZEPOSE_33.index
BODY = {"left_hip": (0.3, 0), "right_hip": (-0.3, 0), "left_shoulder": (0.4, -1.2), "right_shoulder": (-0.4, -1.2),
        "left_wrist": (1.2, -0.3), "right_wrist": (-1.1, -0.5), "left_knee": (0.35, 1.0), "right_knee": (-0.35, 1.0),
        "left_ankle": (0.4, 2.0), "right_ankle": (-0.4, 2.0), "nose": (0.0, -1.7), "left_eye": (0.1, -1.8),
        "right_eye": (-0.1, -1.8)}


def _person(center, scale):
    kps = np.zeros((K, 2))
    avail = np.zeros(K, bool)
    for name, xy in BODY.items():
        kps[IDX(name)] = np.array(xy) * scale + center
        avail[IDX(name)] = True
    return kps, avail


def _write(path: Path, n: int, size=(240, 320), seed: int = 0, max_side: int = 160) -> list[np.ndarray]:
    """n images (h, w = size) with one or two people each; returns each example's stored keypoints."""
    rng = np.random.default_rng(seed)
    labeller = Labeller(None, BLAZEPOSE_33, crop_size=64, margin=1.5, teacher_weight=0.5)
    stored = []
    with tf.io.TFRecordWriter(str(path)) as w:
        for i in range(n):
            people = [PersonAnnotation(*_person(rng.uniform([80, 90], [240, 140]), rng.uniform(25, 35)), None, None,
                                       False, i)]
            if i % 2:
                people.append(PersonAnnotation(*_person((60.0, 120.0), 20.0), None, None, False, i))
            image = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
            rec = ImageRecord(i, path, size[1], size[0], people)
            ex = labeller.image_example(rec, image, Counter(), image_size=max_side)
            assert ex is not None and ex["crop"].shape[:2] == (120, 160)  # longer side scaled to max_side
            stored.append(ex["points"])
            w.write(to_detector_example(ex, i, "synthetic"))
    return stored


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("detector_data")
    stored = _write(d / "train-00000.tfrecord", 8, seed=0)
    _write(d / "dev-00000.tfrecord", 4, seed=1)
    return d, stored


def test_prepare_detector_example_scales_people_with_the_image(tmp_path):
    labeller = Labeller(None, BLAZEPOSE_33, crop_size=64, margin=1.5, teacher_weight=0.5)
    kps, avail = _person((160.0, 120.0), 30.0)
    no_torso = avail.copy()
    no_torso[[IDX("left_hip"), IDX("right_hip")]] = False
    rec = ImageRecord(0, tmp_path, 320, 240, [PersonAnnotation(kps, avail, None, None, False, 0),
                                              PersonAnnotation(kps, no_torso, None, None, False, 1)])
    problems = Counter()
    ex = labeller.image_example(rec, np.zeros((240, 320, 3), np.uint8), problems, image_size=160)
    assert ex["points"].shape == (1, K, 2)          # the person without hips is counted, not stored
    assert problems["no_torso"] == 1
    np.testing.assert_allclose(ex["points"][0][avail], kps[avail] * 0.5, atol=1e-4)
    assert ex["valid"][0].sum() == avail.sum()


def test_letterbox_puts_people_where_the_runtime_would(data_dir):
    d, stored = data_dir
    cfg = DetectorDataConfig(batch_size=8, augment=AugmentConfig.none())
    images, t = next(iter(detector_dataset(str(d / "train-*.tfrecord"), cfg, training=False)))
    assert images.shape == (8, 224, 224, 3)
    # a 160x120 image is fitted to 224 wide, centred vertically: 1.4x scale and (224 - 168) / 2 = 28 px pad
    assert float(tf.reduce_max(images[:, :27])) == -1.0 and float(tf.reduce_mean(images[:, 40:180])) > -0.5
    people, valid = t["people"].numpy(), t["people_valid"].numpy()
    for i, pts in enumerate(stored):
        expect = (pts * 1.4 + np.array([0.0, 28.0])) / 224.0
        ok = valid[i, :len(pts)] > 0
        np.testing.assert_allclose(people[i, :len(pts)][ok], expect[ok], atol=2e-3)
        assert valid[i, len(pts):].sum() == 0      # padding people carry no points
    # every person gets positive anchors, and those anchors sit next to the person's face box centre
    anchors = generate_anchors()
    labels = t["labels"].numpy()
    for i in range(8):
        centres = [person_target(p, v > 0).center for p, v in zip(people[i], valid[i]) if v.any()]
        pos = anchors[labels[i] == 1, :2]
        assert len(pos) >= len(centres)
        for c in centres:
            assert np.min(np.linalg.norm(pos - c, axis=1)) < 1.5 / 28
        mask = t["regressor_mask"].numpy()[i]
        assert (mask[labels[i] == 1, :4] == 1).all() and (mask[labels[i] != 1] == 0).all()


def test_flip_swaps_left_and_right_people_points(data_dir):
    d, _ = data_dir
    flip = AugmentConfig(**{**AugmentConfig.none().__dict__, "flip_prob": 1.0})
    plain = next(iter(detector_dataset(str(d / "train-*.tfrecord"), DetectorDataConfig(batch_size=8,
                                       augment=AugmentConfig.none()), training=False)))[1]["people"].numpy()
    flipped = next(iter(detector_dataset(str(d / "train-*.tfrecord"), DetectorDataConfig(batch_size=8, augment=flip),
                                         training=True)))
    # training order is shuffled: compare as sets of mirrored left wrists
    got = flipped[1]["people"].numpy()
    lw, rw = IDX("left_wrist"), IDX("right_wrist")
    mirrored = np.stack([1.0 - plain[:, 0, rw, 0], plain[:, 0, rw, 1]], axis=1)
    for p in got[:, 0, lw]:
        assert np.min(np.linalg.norm(mirrored - p, axis=1)) < 2e-3


def test_detector_batches_are_the_same_from_memory_and_decoded_as_read(data_dir):
    d, _ = data_dir
    cfg = DetectorDataConfig(batch_size=3, shuffle_buffer=4)
    cached = detector_examples(str(d / "train-*.tfrecord"), cache_mb=100)
    streamed = detector_examples(str(d / "train-*.tfrecord"))
    assert cached.cached and not streamed.cached and cached.image_shape == (120, 160)
    for (ia, ta), (ib, tb) in zip(detector_dataset(cached, cfg, repeat=True, skip_batches=1).take(4),
                                  detector_dataset(streamed, cfg, repeat=True, skip_batches=1).take(4)):
        np.testing.assert_array_equal(ia.numpy(), ib.numpy())
        for k in ta:
            np.testing.assert_array_equal(ta[k].numpy(), tb[k].numpy(), err_msg=k)


def test_match_detections_counts_hits_and_strays():
    kps, avail = _person((100.0, 100.0), 20.0)
    people = (kps / 224.0)[None]
    target = person_target(people[0], avail)
    r = np.linalg.norm(target.keypoints[1] - target.keypoints[0])
    near = target.keypoints[None].copy()
    near[0, 0] += [0.3 * r, 0.0]
    far = target.keypoints[None].copy()
    far[0, 0] += [0.8 * r, 0.0]
    assert match_detections(near, people, avail[None]) == (1, 1, 0)
    assert match_detections(far, people, avail[None]) == (1, 0, 1)
    assert match_detections(np.concatenate([near, far]), people, avail[None]) == (1, 1, 1)
    assert match_detections(np.zeros((0, 4, 2)), people, avail[None]) == (1, 0, 0)


@pytest.mark.heavy
def test_detector_smoke_flagfile_trains_evaluates_and_resumes(data_dir, tmp_path):
    d, _ = data_dir
    cmd = [sys.executable, "-m", "blazepose_tf.train", f"--flagfile={ROOT / 'configs' / 'detector_smoke.flags'}",
           f"--train_data={d / 'train-*.tfrecord'}", f"--dev_data={d / 'dev-*.tfrecord'}",
           f"--model_dir={tmp_path / 'run'}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    first = subprocess.run(cmd + ["--steps=4"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    history = [json.loads(x) for x in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    evals = [h for h in history if "dev_detection_rate" in h]
    assert [h["step"] for h in evals] == [0, 3, 4] and all(h["dev_people"] == 6 for h in evals)
    losses = [h for h in history if "classification" in h]
    assert all(np.isfinite(h["classification"]) and np.isfinite(h["regression"]) for h in losses)
    assert (tmp_path / "run" / "best.keras").is_file()
    second = subprocess.run(cmd + ["--steps=6"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resumed from" in second.stderr and "at step 4" in second.stderr
    assert json.loads(second.stdout.strip().splitlines()[-1])["step"] == 6


def test_detector_flags_are_validated(tmp_path, data_dir):
    d, _ = data_dir
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    bad = subprocess.run([sys.executable, "-m", "blazepose_tf.train", "--model=detector", "--preset=nope",
                          f"--train_data={d / 'train-*.tfrecord'}", f"--model_dir={tmp_path / 'x'}"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "unknown detector preset 'nope'" in bad.stderr
    assert "Traceback" not in bad.stderr


def _layer_weights(model) -> dict[str, list[np.ndarray]]:
    return {layer.name: [np.array(w.numpy()) for w in layer.weights] for layer in model.layers if layer.weights}


def test_score_head_training_leaves_backbone_and_regressors_bit_identical(data_dir):
    """--trainable=score_head: a few optimizer steps on the detector losses move only the classification
    convolutions; every other weight (backbone, box/keypoint regressors) and the regressors output stay exact."""
    import keras

    from blazepose_tf.models.graph import upstream_layers
    from blazepose_tf.training import registry
    from blazepose_tf.training.weighted_losses import detector_losses

    d, _ = data_dir
    models = registry.build_detector_models("detector_smoke")
    n = registry.restrict_trainable(models, "score_head")
    out = dict(zip(models.training.output_names, models.training.outputs))
    head = upstream_layers(out["scores"]) - upstream_layers(out["regressors"])
    trainable = {layer.name for layer in models.training.layers if layer.trainable and layer.weights}
    assert n == len(trainable) > 0 and trainable <= head
    images, targets = next(iter(detector_dataset(str(d / "train-*.tfrecord"), DetectorDataConfig(batch_size=4),
                                                 training=True)))
    before = _layer_weights(models.training)
    regressors = np.asarray(models.training(images, training=False)[0])
    optimizer = keras.optimizers.SGD(0.1)
    for _ in range(3):
        with tf.GradientTape() as tape:
            losses = detector_losses(models.training(images, training=True), targets, {}, "focal")
            loss = tf.add_n(list(losses.values()))
        variables = models.training.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    after = _layer_weights(models.training)
    for name, weights in before.items():
        if name in trainable:
            assert any(np.abs(a - b).max() > 0 for a, b in zip(after[name], weights)), name
        else:
            for a, b in zip(after[name], weights):
                np.testing.assert_array_equal(a, b, err_msg=name)
    outputs = models.training(images, training=False)
    np.testing.assert_array_equal(np.asarray(outputs[0]), regressors)
    with pytest.raises(Exception, match="needs a detector"):
        registry.restrict_trainable(registry.build_models("smoke", BLAZEPOSE_33), "score_head")
    with pytest.raises(Exception, match="needs a tracker"):
        registry.restrict_trainable(models, "regression_branch")


def test_regression_quality_labels_follow_the_anchors_own_regressors():
    """--score_targets=regression: an anchor is positive when its own decoded kp0/kp1 place the person's ROI, background
    when its kp0 is far from everyone, ignored in between; padding people count for nothing."""
    from blazepose_tf.codecs.detection import encode_boxes
    from blazepose_tf.codecs.detector_targets import tf_regression_quality_labels
    from blazepose_tf.codecs.targets import alignment_keypoints

    anchors = generate_anchors()
    kps, avail = _person((100.0, 110.0), 20.0)
    people = np.zeros((1, 2, K, 2), np.float32)          # a person and a padding person
    valid = np.zeros((1, 2, K), np.float32)
    people[0, 0], valid[0, 0] = kps / 224.0, avail
    align, _ = alignment_keypoints(people[0, 0], avail)
    r = float(np.linalg.norm(align[1] - align[0]))
    # every anchor predicts the person's alignment points moved by a per-anchor error (in radii)
    errors = np.zeros(len(anchors))
    errors[:3] = [0.0, 0.1, 0.25]
    errors[3:] = 2.0
    errors[5] = 0.4
    points = np.repeat(align[None], len(anchors), axis=0)
    points[:, :2, 0] += (errors * r)[:, None]
    boxes = np.tile(np.array([[0.4, 0.4, 0.6, 0.6]], np.float32), (len(anchors), 1))
    reg = encode_boxes(boxes, points, anchors)[None]
    labels = tf_regression_quality_labels(reg, people, valid, tolerance=0.2).numpy()[0]
    assert list(labels[:3]) == [1, 1, -1] and labels[5] == -1 and (labels[3:5] == 0).all() and (labels[6:] == 0).all()
    assert (tf_regression_quality_labels(reg, people, np.zeros_like(valid)).numpy() == 0).all()   # nobody
