"""Per-point loss weights (--point_weights): parsing, their effect on every per-point term, the command's errors."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from blazepose_tf.errors import UserError
from blazepose_tf.training.weighted_losses import point_weight_vector, tracker_losses

NAMES = ("nose", "left_heel", "right_heel", "left_foot_index", "right_foot_index")
B, P, S, H = 2, 5, 64, 8


def test_patterns_names_and_overrides():
    np.testing.assert_array_equal(point_weight_vector("*_heel=4", NAMES), [1, 4, 4, 1, 1])
    np.testing.assert_array_equal(point_weight_vector("*_heel=4, *_foot_index=2.5,", NAMES), [1, 4, 4, 2.5, 2.5])
    # A later pair overrides an earlier one; an exact name is a pattern too.
    np.testing.assert_array_equal(point_weight_vector("*=0,nose=3", NAMES), [3, 0, 0, 0, 0])
    np.testing.assert_array_equal(point_weight_vector("", NAMES), np.ones(5))


@pytest.mark.parametrize("spec, message", [
    ("toe=2", "matches none of the points"),
    ("nose", "is not name=weight"),
    ("nose=heavy", "is not name=weight"),
    ("nose=-1", "is not name=weight"),
    ("nose=nan", "is not name=weight"),
])
def test_bad_specs_are_one_line_errors(spec, message):
    with pytest.raises(UserError, match=message) as e:
        point_weight_vector(spec, NAMES)
    assert "\n" not in str(e.value)


def _batch(rng):
    """A student's outputs and targets with every term nonzero: ground truth on points 0-2, the teacher's
    elsewhere too (``--distill_points=all``)."""
    xyz = rng.uniform(0, S, (B, P, 3)).astype(np.float32)
    vis = rng.normal(0, 1, (B, P)).astype(np.float32)
    landmarks = np.concatenate([xyz, vis[..., None], np.zeros((B, P, 1), np.float32)], -1).reshape(B, -1)
    outputs = {"landmarks": landmarks, "presence": np.full((B, 1), 0.9, np.float32),
               "heatmap": rng.normal(-3, 1, (B, H, H, P)).astype(np.float32)}
    mask = np.zeros((B, P), np.float32)
    mask[:, :3] = 1
    targets = {
        "coords": rng.uniform(0, 1, (B, P, 3)).astype(np.float32), "coord_mask": np.repeat(mask[..., None], 3, -1),
        "visibility": rng.uniform(0, 1, (B, P)).astype(np.float32), "visibility_mask": mask,
        "presence": np.ones((B, 1), np.float32), "is_gt": mask,
        "heatmap": rng.uniform(0, 1, (B, H, H, P)).astype(np.float32), "heatmap_mask": mask,
        "distill_coords": rng.uniform(0, 1, (B, P, 3)).astype(np.float32),
        "distill_visibility": rng.uniform(0, 1, (B, P)).astype(np.float32),
        "distill_heatmap": rng.uniform(0, 1, (B, H, H, P)).astype(np.float32),
    }
    return outputs, targets


def _terms(outputs, targets, point_weights=None):
    weights = {"heatmap": 1.0, "distill": 1.0, "distill_heatmap": 1.0, "visibility": 1.0}
    return {k: float(v) for k, v in tracker_losses(outputs, targets, weights, S, "all", point_weights).items()}


def test_weights_scale_each_points_share_of_every_term():
    outputs, targets = _batch(np.random.default_rng(0))
    plain = _terms(outputs, targets)
    assert _terms(outputs, targets, np.ones(P, np.float32)) == pytest.approx(plain)
    # Weight 0 on point 1 is the same as the point missing from every mask (ground truth and teacher).
    dropped = {k: v.copy() for k, v in targets.items()}
    for key in ("coord_mask", "visibility_mask", "heatmap_mask", "is_gt"):
        dropped[key][:, 1] = 0
    zero = _terms(outputs, targets, np.array([1, 0, 1, 1, 1], np.float32))
    gt_terms = ("coords", "z", "visibility", "heatmap")
    assert {k: zero[k] for k in gt_terms} == pytest.approx({k: _terms(outputs, dropped)[k] for k in gt_terms})
    assert all(zero[k] != pytest.approx(plain[k]) for k in gt_terms + ("distill", "distill_heatmap"))
    # Integer weights are copies: weight 2 on point 4 counts it twice in the teacher's terms.
    doubled = {k: np.concatenate([v, v[:, 4:5]], axis=1) for k, v in targets.items()
               if k in ("distill_coords", "distill_visibility")}
    doubled["distill_heatmap"] = np.concatenate([targets["distill_heatmap"], targets["distill_heatmap"][..., 4:5]],
                                                -1)
    out2 = dict(outputs, landmarks=np.concatenate(
        [outputs["landmarks"].reshape(B, P, 5), outputs["landmarks"].reshape(B, P, 5)[:, 4:5]], 1).reshape(B, -1),
        heatmap=np.concatenate([outputs["heatmap"], outputs["heatmap"][..., 4:5]], -1))
    pad = {k: np.concatenate([v, np.zeros_like(v[:, :1])], 1) for k, v in targets.items()
           if k in ("coords", "coord_mask", "visibility", "visibility_mask", "heatmap_mask")}
    pad["heatmap"] = np.concatenate([targets["heatmap"], np.zeros_like(targets["heatmap"][..., :1])], -1)
    pad["is_gt"] = np.concatenate([targets["is_gt"], np.zeros((B, 1), np.float32)], 1)
    copies = _terms(out2, {**doubled, **pad, "presence": targets["presence"]}, np.ones(P + 1, np.float32))
    twice = _terms(outputs, targets, np.array([1, 1, 1, 1, 2], np.float32))
    for k in ("distill", "distill_heatmap"):
        assert twice[k] == pytest.approx(copies[k], rel=1e-5)


def test_train_cli_rejects_bad_point_weights(tmp_path):
    for extra in (["--point_weights=toe=2"], ["--model=detector", "--point_weights=nose=2"]):
        model_dir = tmp_path / "run"
        proc = subprocess.run([sys.executable, "-m", "blazepose_tf.train", "--train_data=x", f"--model_dir={model_dir}",
                               *extra], capture_output=True, text=True, timeout=120)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
        assert "point_weights" in proc.stderr.strip().splitlines()[-1]
        assert not model_dir.exists()
