"""What the training loop minimizes: the weighted loss terms of a tracker and of a detector, built from the
losses of :mod:`blazepose_tf.losses`. Weights missing from ``weights`` take their defaults from
:data:`blazepose_tf.training.config.LOSS_WEIGHTS` (the ``--w_<term>`` flags)."""
from __future__ import annotations

from typing import Mapping

import tensorflow as tf

from blazepose_tf.codecs.detector_targets import tf_regression_quality_labels
from blazepose_tf.contract import DETECTOR_ROLES
from blazepose_tf.losses import (coordinate_loss, detector_classification_loss, detector_regression_loss,
                                 heatmap_loss, offset_loss, presence_loss, split_landmarks, visibility_loss)
from blazepose_tf.training.config import default_loss_weights
from blazepose_tf.training.registry import outputs_by_name


def tracker_losses(outputs, targets: Mapping[str, tf.Tensor], weights: Mapping[str, float],
                   input_size: int = 256, distill_points: str = "unannotated") -> dict:
    """Weighted loss terms (scalars, batch means over annotated points): coordinates, z, visibility, presence,
    and when the model has those outputs the heatmap and offsets; with a teacher's targets
    (:func:`blazepose_tf.training.distillation.teacher_targets`), its coordinates and visibility (``distill``)
    and heatmap (``distill_heatmap``) on the points that are not ground truth, or on all (``distill_points``),
    and its presence (``distill_presence``: a student that learns the teacher's points but not its presence gates
    people out)."""
    w = {**default_loss_weights("tracker"), **weights}
    out = outputs_by_name(outputs)
    xyz, vis_logits, _ = split_landmarks(out["landmarks"], input_size)
    m = targets["coord_mask"]
    terms = {
        "coords": w["coords"] * coordinate_loss(targets["coords"][..., :2], xyz[..., :2], m[..., :2]),
        "z": w["z"] * coordinate_loss(targets["coords"][..., 2:], xyz[..., 2:], m[..., 2:]),
        "visibility": w["visibility"] * visibility_loss(targets["visibility"], vis_logits, targets["visibility_mask"]),
        "presence": w["presence"] * presence_loss(targets["presence"], out["presence"]),
    }
    if "heatmap" in out and w["heatmap"] > 0:
        terms["heatmap"] = w["heatmap"] * heatmap_loss(targets["heatmap"], out["heatmap"], targets["heatmap_mask"])
    if "offsets" in out and "offsets" in targets and w["offset"] > 0:
        terms["offset"] = w["offset"] * offset_loss(targets["offsets"], out["offsets"], targets["offset_mask"],
                                                    targets["heatmap_mask"])
    selected = (tf.ones_like(targets["is_gt"]) if distill_points == "all" else 1.0 - targets["is_gt"])
    if "distill_coords" in targets and w["distill"] > 0:
        terms["distill"] = w["distill"] * (
            coordinate_loss(targets["distill_coords"][..., :2], xyz[..., :2],
                            selected[..., None] * tf.ones_like(xyz[..., :2]))
            + visibility_loss(targets["distill_visibility"], vis_logits, selected))
    if "distill_heatmap" in targets and "heatmap" in out and w["distill_heatmap"] > 0:
        channels = out["heatmap"].shape[-1]
        terms["distill_heatmap"] = w["distill_heatmap"] * heatmap_loss(
            targets["distill_heatmap"][..., :channels], out["heatmap"], selected[:, :channels])
    if "distill_presence" in targets and w["distill_presence"] > 0:
        terms["distill_presence"] = w["distill_presence"] * presence_loss(targets["distill_presence"], out["presence"])
    return terms


def detector_losses(outputs, targets: Mapping[str, tf.Tensor], weights: Mapping[str, float],
                    classification: str = "focal", score_targets: str = "assigned",
                    score_tolerance: float = 0.2) -> dict:
    """Weighted loss terms: anchor classification (focal or hard-negative BCE) and box/keypoint regression.

    ``score_targets="regression"``: the classification labels come from the detector's own regressors
    (:func:`blazepose_tf.codecs.detector_targets.tf_regression_quality_labels`), combined with the position-based
    assignment: a positive must also be an anchor the assignment does not call background, and anchors the assignment
    ignores are never taught as background."""
    w = {**default_loss_weights("detector"), **weights}
    out = outputs_by_name(outputs, DETECTOR_ROLES)
    labels = targets["labels"]
    if score_targets == "regression":
        quality = tf_regression_quality_labels(out["regressors"], targets["people"], targets["people_valid"],
                                               tolerance=score_tolerance)
        assigned = tf.cast(labels, tf.int32)
        # positives only near the person's box centre (where the assignment does not call it background), so that
        # the detections they make overlap and weighted NMS merges them; background stays background only where
        # the assignment agrees it is not near a person
        labels = tf.where((quality == 1) & (assigned == 0), -1, quality)
        labels = tf.where((labels == 0) & (assigned < 0), -1, labels)
    elif score_targets != "assigned":
        raise ValueError(f"unknown score targets {score_targets!r}; use 'assigned' or 'regression'")
    return {
        "classification": w["classification"] * detector_classification_loss(labels, out["scores"], classification),
        "regression": w["regression"] * detector_regression_loss(
            targets["regressors"], out["regressors"], targets["regressor_mask"]),
    }
