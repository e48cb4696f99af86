"""Distillation (``--distill_from``): a teacher tracker whose predictions on each augmented batch become extra,
soft targets for the points the ground truth does not annotate."""
from __future__ import annotations

import tensorflow as tf

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


def teacher_targets(teacher, images: tf.Tensor, num_points: int, input_size: int = 256) -> dict:
    """Teacher predictions on the (augmented) batch as soft targets: coordinates and visibility probability of
    its first ``num_points`` points (zero-padded up to ``num_points``)."""
    out = outputs_by_name(teacher(images, training=False), teacher.output_names)
    xyz, vis_logits, _ = split_landmarks(out["landmarks"], input_size)
    p = min(num_points, xyz.shape[1])
    pad = num_points - p
    coords = tf.pad(xyz[:, :p], [[0, 0], [0, pad], [0, 0]])
    vis = tf.pad(tf.sigmoid(vis_logits[:, :p]), [[0, 0], [0, pad]])
    return {"distill_coords": tf.stop_gradient(coords), "distill_visibility": tf.stop_gradient(vis)}
