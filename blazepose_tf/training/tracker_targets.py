"""From the tracker data pipeline's targets (keypoints in crop pixels, weights; whole batches) to what the losses
compare the model's outputs with (:mod:`blazepose_tf.codecs`): crop-normalized coordinates with masks,
visibility, presence, heatmaps and offsets."""
from __future__ import annotations

import functools
from typing import Callable

import tensorflow as tf

from blazepose_tf.codecs.heatmap import encode_heatmaps
from blazepose_tf.codecs.targets import tracker_targets
from blazepose_tf.contract import HEATMAP_STRIDE
from blazepose_tf.training.augment import compiled


def pad_points(x: tf.Tensor, num_points: int) -> tf.Tensor:
    """Pads the point axis (axis 1 of a batch) with zeros up to ``num_points`` (unused official landmarks)."""
    extra = num_points - x.shape[1]
    if extra <= 0:
        return x
    pad = [[0, 0], [0, extra]] + [[0, 0]] * (x.shape.rank - 2)
    return tf.pad(x, pad)


@functools.lru_cache(maxsize=16)
def target_encoder(num_points: int, input_size: int = 256, with_offsets: bool = True) -> Callable:
    """Batched ``(images, targets) -> (images, loss targets)`` for a tracker predicting ``num_points`` points on
    ``input_size`` crops (``with_offsets``: also the offset maps of our presets' training head), one XLA
    computation. Adds ``keypoints_px`` and ``is_gt`` for the dev evaluation.

    Cached per arguments: pipelines built alike share the functions, so XLA compiles them once per input shape
    in a process instead of once per pipeline.
    """
    p = num_points
    size = input_size

    @compiled
    def encode(images, t):
        kps = pad_points(t["keypoints"], p)
        w = pad_points(t["weight"], p)
        zw = pad_points(t["z_weight"], p)
        out = tracker_targets(kps, tf.stack([w, w, zw], -1), visibility=pad_points(t["visible"], p),
                              visibility_available=pad_points(t["vis_weight"], p), input_size=size)
        hm, off, off_mask = encode_heatmaps(kps, tf.cast(w > 0, tf.float32), heatmap_size=size // HEATMAP_STRIDE,
                                            input_size=size)
        out.update(heatmap=hm, heatmap_mask=w, is_gt=pad_points(t["is_gt"], p), keypoints_px=kps)
        if with_offsets:
            out.update(offsets=off, offset_mask=off_mask)
        return images, out
    return encode
