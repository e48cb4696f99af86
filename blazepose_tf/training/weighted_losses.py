"""What the training loop minimizes: the weighted loss terms of a tracker and of a detector, built from the
losses of :mod:`blazepose_tf.losses`. Weights missing from ``weights`` take their defaults from
:data:`blazepose_tf.training.config.LOSS_WEIGHTS` (the ``--w_<term>`` flags)."""
from __future__ import annotations

from typing import Mapping

import tensorflow as tf

from blazepose_tf.contract import DETECTOR_ROLES
from blazepose_tf.losses import (coordinate_loss, detector_classification_loss, detector_regression_loss,
                                 heatmap_loss, offset_loss, presence_loss, split_landmarks, visibility_loss)
from blazepose_tf.training.config import default_loss_weights
from blazepose_tf.training.registry import outputs_by_name


def tracker_losses(outputs, targets: Mapping[str, tf.Tensor], weights: Mapping[str, float],
                   input_size: int = 256) -> dict:
    """Weighted loss terms (scalars, batch means over annotated points): coordinates, z, visibility, presence,
    and when the model has those outputs the heatmap and offsets; with a teacher's targets
    (:func:`blazepose_tf.training.distillation.teacher_targets`), its coordinates and visibility on the points
    that are not ground truth."""
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
    if "distill_coords" in targets and w["distill"] > 0:
        not_gt = (1.0 - targets["is_gt"])[..., None] * tf.ones_like(xyz[..., :2])
        terms["distill"] = w["distill"] * (
            coordinate_loss(targets["distill_coords"][..., :2], xyz[..., :2], not_gt)
            + visibility_loss(targets["distill_visibility"], vis_logits, 1.0 - targets["is_gt"]))
    return terms


def detector_losses(outputs, targets: Mapping[str, tf.Tensor], weights: Mapping[str, float],
                    classification: str = "focal") -> dict:
    """Weighted loss terms: anchor classification (focal or hard-negative BCE) and box/keypoint regression."""
    w = {**default_loss_weights("detector"), **weights}
    out = outputs_by_name(outputs, DETECTOR_ROLES)
    return {
        "classification": w["classification"] * detector_classification_loss(
            targets["labels"], out["scores"], classification),
        "regression": w["regression"] * detector_regression_loss(
            targets["regressors"], out["regressors"], targets["regressor_mask"]),
    }
