"""Distillation targets and loss terms (--distill_from, --distill_points, --w_distill_heatmap)."""
from __future__ import annotations

import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from blazepose_tf.errors import UserError
from blazepose_tf.topology import BLAZEPOSE_33
from blazepose_tf.training import registry
from blazepose_tf.training.distillation import check_heatmap_distillation, teacher_targets
from blazepose_tf.training.weighted_losses import tracker_losses

B, P, S, H = 2, 4, 64, 16
RNG = np.random.default_rng(0)


def _batch():
    """Outputs of a tiny 'student' and targets whose ground truth equals them (GT terms are zero), with the
    teacher's coordinates, visibility and heatmap set apart from the student's."""
    xyz = RNG.uniform(0, S, (B, P, 3)).astype(np.float32)
    vis = RNG.normal(0, 1, (B, P)).astype(np.float32)
    landmarks = np.concatenate([xyz, vis[..., None], np.zeros((B, P, 1), np.float32)], -1).reshape(B, -1)
    heat = RNG.normal(-3, 1, (B, H, H, P)).astype(np.float32)
    is_gt = np.array([[1, 0, 1, 0], [0, 0, 1, 1]], np.float32)
    outputs = {"landmarks": landmarks, "presence": np.full((B, 1), 0.9, np.float32), "heatmap": heat}
    targets = {
        "coords": xyz / S, "coord_mask": np.ones((B, P, 3), np.float32),
        "visibility": 1 / (1 + np.exp(-vis)), "visibility_mask": np.zeros((B, P), np.float32),
        "presence": np.ones((B, 1), np.float32), "is_gt": is_gt,
        "distill_coords": xyz / S, "distill_visibility": 1 / (1 + np.exp(-vis)),
        "distill_heatmap": 1 / (1 + np.exp(-heat)), "distill_presence": np.full((B, 1), 0.9, np.float32),
    }
    return outputs, targets


def _terms(outputs, targets, points):
    weights = {"heatmap": 0.0, "distill": 1.0, "distill_heatmap": 1.0}
    return {k: float(v) for k, v in tracker_losses(outputs, targets, weights, S, points).items()}


@pytest.mark.parametrize("points", ["unannotated", "all"])
def test_teacher_terms_follow_the_selected_points(points):
    outputs, targets = _batch()
    same = _terms(outputs, targets, points)
    assert same["distill"] < 1e-6 and same["distill_heatmap"] < 1e-5
    # The teacher disagrees on a ground-truth point (example 0, point 0): only "all" sees it.
    moved = dict(targets)
    moved["distill_coords"] = targets["distill_coords"].copy()
    moved["distill_coords"][0, 0, :2] += 0.25
    moved["distill_heatmap"] = targets["distill_heatmap"].copy()
    moved["distill_heatmap"][0, ..., 0] = np.roll(moved["distill_heatmap"][0, ..., 0], 5, axis=0)
    got = _terms(outputs, moved, points)
    if points == "all":
        assert got["distill"] > 1e-3 and got["distill_heatmap"] > 1e-3
    else:
        assert got["distill"] < 1e-6 and got["distill_heatmap"] < 1e-5
    # ... and on an unannotated one (example 0, point 1): both see it.
    moved["distill_coords"][0, 1, :2] += 0.25
    moved["distill_heatmap"][0, ..., 1] = np.roll(moved["distill_heatmap"][0, ..., 1], 5, axis=1)
    got = _terms(outputs, moved, points)
    assert got["distill"] > 1e-3 and got["distill_heatmap"] > 1e-3


def test_teacher_presence_term():
    outputs, targets = _batch()
    low = dict(outputs, presence=np.full((B, 1), 0.2, np.float32))
    weights = {"heatmap": 0.0, "distill_presence": 1.0}
    assert float(tracker_losses(outputs, targets, weights, S)["distill_presence"]) < 1e-6
    assert float(tracker_losses(low, targets, weights, S)["distill_presence"]) > 0.5
    assert "distill_presence" not in tracker_losses(low, targets, {"heatmap": 0.0}, S)  # off by default


def test_heatmap_term_needs_its_weight_and_the_teacher_heatmap():
    outputs, targets = _batch()
    terms = tracker_losses(outputs, targets, {"heatmap": 0.0, "distill": 1.0}, S)  # w_distill_heatmap: 0
    assert "distill_heatmap" not in terms and "distill" in terms
    without = {k: v for k, v in targets.items() if k != "distill_heatmap"}
    assert "distill_heatmap" not in tracker_losses(outputs, without, {"heatmap": 0.0, "distill_heatmap": 1.0}, S)


def test_teacher_targets_and_shape_check():
    student = registry.build_models("smoke", BLAZEPOSE_33)
    teacher = student.training  # our presets' inference view has no heatmap; the training view does
    images = tf.constant(RNG.uniform(0, 1, (2, 256, 256, 3)).astype(np.float32))
    t = teacher_targets(teacher, images, student.num_points, heatmap=True)
    heat = dict(zip(teacher.output_names, teacher(images)))["heatmap"]
    np.testing.assert_allclose(t["distill_heatmap"], tf.sigmoid(heat), atol=1e-6)
    assert t["distill_coords"].shape == (2, student.num_points, 2 + 1)
    assert "distill_heatmap" not in teacher_targets(teacher, images, student.num_points)
    check_heatmap_distillation(teacher, student.training)  # same shapes: accepted
    inp = keras.Input((256, 256, 3))
    pooled = keras.layers.AveragePooling2D(4)(inp)
    flat = keras.layers.Flatten()(pooled)
    # A teacher with more channels (the official trackers' 39 for our 35): the student learns the first ones.
    wide = keras.layers.Conv2D(student.num_points + 4, 1, name="heatmap")(pooled)
    wider = keras.Model(inp, {"landmarks": keras.layers.Dense(5 * 39, name="landmarks")(flat), "heatmap": wide,
                              "presence": keras.layers.Dense(1, "sigmoid", name="presence")(flat)})
    check_heatmap_distillation(wider, student.training)
    t = teacher_targets(wider, images, student.num_points, heatmap=True)
    np.testing.assert_allclose(t["distill_heatmap"], tf.sigmoid(wider(images)["heatmap"][..., :student.num_points]),
                               atol=1e-6)
    for bad in (keras.layers.Conv2D(3, 1, name="heatmap")(pooled),                       # fewer channels
                keras.layers.Conv2D(student.num_points, 1, name="heatmap")(keras.layers.AveragePooling2D(8)(inp))):
        other = keras.Model(inp, {"landmarks": keras.layers.Dense(5 * 35, name="landmarks")(flat), "heatmap": bad})
        with pytest.raises(UserError, match="heatmaps of the same size"):
            check_heatmap_distillation(other, student.training)


def test_train_cli_rejects_an_unknown_distill_points():
    proc = subprocess.run([sys.executable, "-m", "blazepose_tf.train", "--train_data=x", "--model_dir=y",
                           "--distill_points=some"], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "distill_points" in proc.stderr
