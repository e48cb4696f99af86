"""Tracker-crop augmentation in core TensorFlow (no tensorflow-addons): one affine warp per sample that
combines the alignment crop with random scale, shift, rotation and horizontal flip, then colour jitter and
occlusion rectangles. All randomness is stateless, driven by a per-sample seed, so a pipeline is
deterministic whatever its parallelism.

Coordinates follow the runtime's crop convention (:mod:`blazepose_tf.codecs.roi`): a crop of size S spans
continuous coordinates [0, S] and output pixel (i, j) samples the source at the transformed point (j, i).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import tensorflow as tf


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation ranges (all off with ``AugmentConfig.none()``)."""

    scale: float = 0.10           # uniform in [1 - scale, 1 + scale]
    shift: float = 0.10           # fraction of the output size, each axis
    rotation_deg: float = 20.0    # uniform in ±rotation_deg
    flip_prob: float = 0.5
    brightness: float = 0.15
    contrast: float = 0.25
    saturation: float = 0.25
    hue: float = 0.03
    occlusion_prob: float = 0.4
    max_occluders: int = 2
    occluder_size: tuple[float, float] = (0.12, 0.4)   # side, fraction of the output size

    @staticmethod
    def none() -> "AugmentConfig":
        return AugmentConfig(scale=0.0, shift=0.0, rotation_deg=0.0, flip_prob=0.0, brightness=0.0,
                             contrast=0.0, saturation=0.0, hue=0.0, occlusion_prob=0.0)


def _uniform(seed, lo, hi, shape=()):
    return tf.random.stateless_uniform(shape, seed=seed, minval=lo, maxval=hi)


def sample_affine(seed: tf.Tensor, in_size: float, out_size: float, cfg: AugmentConfig):
    """Draws one augmentation and returns (A (2,2), b (2,), flip (bool)) with p_out = A·p_in + b.

    Without augmentation this is the centre crop that maps the stored crop's centre onto the output's at the
    same pixel scale (the stored crop is the alignment crop plus a margin).
    """
    seeds = tf.random.experimental.stateless_split(seed, 4)
    s = 1.0 + _uniform(seeds[0], -cfg.scale, cfg.scale) if cfg.scale > 0 else tf.constant(1.0)
    theta = _uniform(seeds[1], -1.0, 1.0) * (cfg.rotation_deg * math.pi / 180.0)
    t = _uniform(seeds[2], -cfg.shift, cfg.shift, (2,)) * out_size
    flip = _uniform(seeds[3], 0.0, 1.0) < cfg.flip_prob
    c, si = tf.cos(theta), tf.sin(theta)
    rot = tf.reshape(tf.stack([c, -si, si, c]), (2, 2))
    f = tf.where(flip, -1.0, 1.0)
    fmat = tf.reshape(tf.stack([f, 0.0, 0.0, 1.0]), (2, 2))
    a = s * tf.matmul(rot, fmat)
    cin = tf.stack([in_size / 2, in_size / 2])
    cout = tf.stack([out_size / 2, out_size / 2])
    b = cout + t - tf.linalg.matvec(a, cin)
    return a, b, flip


def warp_image(image: tf.Tensor, a: tf.Tensor, b: tf.Tensor, out_size: int, fill: str = "nearest") -> tf.Tensor:
    """Warps (H, W, 3) float image so that p_out = A·p_in + b, bilinear; outside the source, edge pixels are
    replicated (``fill="nearest"``, tracker crops) or zero (``"constant"``, the detector's letterbox)."""
    inv = tf.linalg.inv(a)
    binv = -tf.linalg.matvec(inv, b)
    transform = tf.stack([inv[0, 0], inv[0, 1], binv[0], inv[1, 0], inv[1, 1], binv[1], 0.0, 0.0])
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=transform[None], output_shape=tf.constant([out_size, out_size]),
        fill_value=0.0, interpolation="BILINEAR", fill_mode=fill.upper())
    return out[0]


def transform_keypoints(kps: tf.Tensor, a: tf.Tensor, b: tf.Tensor, flip: tf.Tensor,
                        flip_indices: tf.Tensor) -> tf.Tensor:
    """Applies the warp to (P, 3) keypoints (x, y, z); z scales with the warp; left/right swapped on flip."""
    xy = tf.linalg.matvec(a, kps[:, :2]) + b
    scale = tf.sqrt(tf.abs(tf.linalg.det(a)))
    out = tf.concat([xy, kps[:, 2:3] * scale], axis=1)
    return tf.cond(flip, lambda: tf.gather(out, flip_indices), lambda: out)


def color_jitter(image: tf.Tensor, seed: tf.Tensor, cfg: AugmentConfig) -> tf.Tensor:
    """Brightness, contrast, saturation and hue jitter on a [0, 1] RGB image."""
    seeds = tf.random.experimental.stateless_split(seed, 4)
    if cfg.brightness > 0:
        image = tf.image.stateless_random_brightness(image, cfg.brightness, seeds[0])
    if cfg.contrast > 0:
        image = tf.image.stateless_random_contrast(image, 1 - cfg.contrast, 1 + cfg.contrast, seeds[1])
    if cfg.saturation > 0:
        image = tf.image.stateless_random_saturation(image, 1 - cfg.saturation, 1 + cfg.saturation, seeds[2])
    if cfg.hue > 0:
        image = tf.image.stateless_random_hue(image, cfg.hue, seeds[3])
    return tf.clip_by_value(image, 0.0, 1.0)


def occlude(image: tf.Tensor, kps: tf.Tensor, visible: tf.Tensor, seed: tf.Tensor, cfg: AugmentConfig):
    """Paints up to ``max_occluders`` rectangles of random colours; points they cover become not visible."""
    size = tf.cast(tf.shape(image)[0], tf.float32)
    ys = tf.range(tf.shape(image)[0], dtype=tf.float32)[:, None] + 0.5
    xs = tf.range(tf.shape(image)[1], dtype=tf.float32)[None, :] + 0.5
    seeds = tf.random.experimental.stateless_split(seed, cfg.max_occluders)
    for k in range(cfg.max_occluders):
        s = tf.random.experimental.stateless_split(seeds[k], 4)
        apply = _uniform(s[0], 0.0, 1.0) < (cfg.occlusion_prob if k == 0 else cfg.occlusion_prob / 2)
        wh = _uniform(s[1], cfg.occluder_size[0], cfg.occluder_size[1], (2,)) * size
        xy0 = _uniform(s[2], 0.0, 1.0, (2,)) * (size - wh)
        color = _uniform(s[3], 0.0, 1.0, (3,))
        x0, y0, x1, y1 = xy0[0], xy0[1], xy0[0] + wh[0], xy0[1] + wh[1]
        mask = (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1) & apply
        image = tf.where(mask[..., None], color[None, None, :], image)
        inside = (kps[:, 0] >= x0) & (kps[:, 0] < x1) & (kps[:, 1] >= y0) & (kps[:, 1] < y1) & apply
        visible = tf.where(inside, tf.zeros_like(visible), visible)
    return image, visible
