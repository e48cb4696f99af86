"""Distillation (``--distill_from``): a teacher tracker whose predictions on each augmented batch become extra,
soft targets: its coordinates, visibility and (when both have one) heatmap, on the points the ground truth does
not annotate or on all of them (``--distill_points``; the loss terms are in
:mod:`blazepose_tf.training.weighted_losses`)."""
from __future__ import annotations

import tensorflow as tf

from blazepose_tf.errors import UserError
from blazepose_tf.losses import split_landmarks
from blazepose_tf.models.convert_official import converted_model_path
from blazepose_tf.models.loading import load_keras_model
from blazepose_tf.training.registry import outputs_by_name

OFFICIAL_TEACHER = "pose_landmark_full"


def load_teacher(spec: str):
    """The distillation teacher, frozen: ``official`` (the converted official Full) or a ``.keras`` tracker."""
    if spec == "official":
        teacher = load_keras_model(converted_model_path(OFFICIAL_TEACHER), "--distill_from official")
    else:
        teacher = load_keras_model(spec, "--distill_from")
    teacher.trainable = False
    return teacher


def teacher_targets(teacher, images: tf.Tensor, num_points: int, input_size: int = 256,
                    heatmap: bool = False) -> dict:
    """Teacher predictions on the (augmented) batch as soft targets: coordinates and visibility probability of
    its first ``num_points`` points (zero-padded up to ``num_points``), its presence probability, and with
    ``heatmap`` the sigmoid of its heatmap's first ``num_points`` channels (``distill_heatmap``,
    (B, H, W, ≤ num_points): the official trackers' 39 channels hold the 35 of our presets first)."""
    out = outputs_by_name(teacher(images, training=False), teacher.output_names)
    extra = ({"distill_heatmap": tf.stop_gradient(tf.sigmoid(out["heatmap"][..., :num_points]))} if heatmap
             else {})
    xyz, vis_logits, _ = split_landmarks(out["landmarks"], input_size)
    p = min(num_points, xyz.shape[1])
    pad = num_points - p
    coords = tf.pad(xyz[:, :p], [[0, 0], [0, pad], [0, 0]])
    vis = tf.pad(tf.sigmoid(vis_logits[:, :p]), [[0, 0], [0, pad]])
    return {"distill_coords": tf.stop_gradient(coords), "distill_visibility": tf.stop_gradient(vis),
            "distill_presence": tf.stop_gradient(out["presence"]), **extra}


def check_heatmap_distillation(teacher, student) -> None:
    """Refuses (:class:`UserError`) heatmap distillation unless both models have a heatmap of the same size and
    the teacher's has at least the student's channels (the student learns the first ones)."""
    shapes = [tuple(dict(zip(m.output_names, m.outputs))["heatmap"].shape[1:]) if "heatmap" in m.output_names
              else None for m in (teacher, student)]
    if None in shapes or shapes[0][:2] != shapes[1][:2] or shapes[0][2] < shapes[1][2]:
        raise UserError(f"--w_distill_heatmap needs a teacher and a student with heatmaps of the same size, the "
                        f"teacher's with at least the student's channels, got teacher {shapes[0] or 'none'} and "
                        f"student {shapes[1] or 'none'}")
