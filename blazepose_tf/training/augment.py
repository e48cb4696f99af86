"""Augmentation in core TensorFlow (no tensorflow-addons): random draws per example, pixel work per batch.

Each example draws its augmentation from its own stateless seed (:func:`sample_affine`, :func:`sample_colour`,
:func:`sample_occluders`): one affine warp that combines the alignment crop (or the detector's letterbox) with a
random scale, shift, rotation and horizontal flip, colour jitter (the very draws ``tf.image.stateless_random_*``
make from the same seeds) and occlusion rectangles. An example's augmentation therefore depends on its seed only,
not on the batch it lands in or on the pipeline's parallelism (a batch split between replicas or workers gives the
same examples).

The pixel work then runs on whole batches with per-example parameters (:func:`warp`, :func:`jitter_colour`,
:func:`occlude`, :func:`transform_points`), written in plain TensorFlow ops that XLA compiles into a few fused
loops (:func:`compiled`): on CPU that is several times cheaper than ``ImageProjectiveTransformV3`` and the
``AdjustHue``/``AdjustSaturation`` kernels run example by example, with the same results
(``tests/test_training_data.py``). Each stage is compiled on its own: fused into one computation with its
consumers, XLA recomputes a warped pixel (four gathers) for each of its uses.

Coordinates follow the runtime's crop convention (:mod:`blazepose_tf.codecs.roi`): a crop of size S spans
continuous coordinates [0, S] and output pixel (i, j) samples the source at the transformed point (j, i).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import tensorflow as tf

# Occluder parameters per rectangle: applied (0/1), x0, y0, x1, y1 (output pixels), colour r, g, b.
OCCLUDER_VALUES = 8


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

    @property
    def colour(self) -> bool:
        """Whether any colour jitter is drawn."""
        return max(self.brightness, self.contrast, self.saturation, self.hue) > 0

    @property
    def occlusion(self) -> bool:
        """Whether occluders are drawn."""
        return self.occlusion_prob > 0 and self.max_occluders > 0


def compiled(fn: Callable) -> Callable:
    """``fn`` as one XLA-compiled TensorFlow function (fused loops instead of one kernel per op; recompiled
    per input shape)."""
    return tf.function(fn, jit_compile=True, reduce_retracing=True, autograph=False)


# ----------------------------------------------------------------------------------------------- draws
def _uniform(seed, lo, hi, shape=()):
    return tf.random.stateless_uniform(shape, seed=seed, minval=lo, maxval=hi)


def sample_affine(seed: tf.Tensor, in_size, out_size: float, cfg: AugmentConfig):
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
    in_size = tf.cast(in_size, tf.float32)
    cin = tf.stack([in_size / 2, in_size / 2])
    cout = tf.stack([out_size / 2, out_size / 2])
    b = cout + t - tf.linalg.matvec(a, cin)
    return a, b, flip


def sample_colour(seed: tf.Tensor, cfg: AugmentConfig) -> tf.Tensor:
    """(4,) brightness delta, contrast factor, saturation factor, hue delta: what ``tf.image.stateless_random_
    brightness``/``contrast``/``saturation``/``hue`` draw from the four seeds split from ``seed`` (identity
    values for the ranges that are 0)."""
    seeds = tf.random.experimental.stateless_split(seed, 4)

    def draw(i, lo, hi, identity, on):
        return _uniform(seeds[i], lo, hi) if on else tf.constant(identity, tf.float32)
    return tf.stack([draw(0, -cfg.brightness, cfg.brightness, 0.0, cfg.brightness > 0),
                     draw(1, 1 - cfg.contrast, 1 + cfg.contrast, 1.0, cfg.contrast > 0),
                     draw(2, 1 - cfg.saturation, 1 + cfg.saturation, 1.0, cfg.saturation > 0),
                     draw(3, -cfg.hue, cfg.hue, 0.0, cfg.hue > 0)])


def sample_occluders(seed: tf.Tensor, size: float, cfg: AugmentConfig) -> tf.Tensor:
    """(max_occluders, :data:`OCCLUDER_VALUES`) rectangles on an output of side ``size``: the first is applied
    with ``occlusion_prob``, the others with half of it; sides uniform in ``occluder_size`` × size, placed
    uniformly inside the output, colour uniform."""
    seeds = tf.random.experimental.stateless_split(seed, cfg.max_occluders)
    rows = []
    for k in range(cfg.max_occluders):
        s = tf.random.experimental.stateless_split(seeds[k], 4)
        apply = _uniform(s[0], 0.0, 1.0) < (cfg.occlusion_prob if k == 0 else cfg.occlusion_prob / 2)
        wh = _uniform(s[1], cfg.occluder_size[0], cfg.occluder_size[1], (2,)) * size
        xy0 = _uniform(s[2], 0.0, 1.0, (2,)) * (size - wh)
        rows.append(tf.concat([[tf.cast(apply, tf.float32)], xy0, xy0 + wh, _uniform(s[3], 0.0, 1.0, (3,))], 0))
    return tf.stack(rows)


# ------------------------------------------------------------------------------------------ batch ops
def _determinant(a: tf.Tensor) -> tf.Tensor:
    """Determinants of (..., 2, 2) matrices (XLA has no MatrixDeterminant kernel)."""
    return a[..., 0, 0] * a[..., 1, 1] - a[..., 0, 1] * a[..., 1, 0]


def _inverse(a: tf.Tensor) -> tf.Tensor:
    """Inverses of (..., 2, 2) matrices."""
    adjugate = tf.stack([tf.stack([a[..., 1, 1], -a[..., 0, 1]], -1), tf.stack([-a[..., 1, 0], a[..., 0, 0]], -1)], -2)
    return adjugate / _determinant(a)[..., None, None]


def warp(images: tf.Tensor, a: tf.Tensor, b: tf.Tensor, out_size: int, sizes: Optional[tf.Tensor] = None,
         fill: str = "nearest") -> tf.Tensor:
    """Warps a batch so that p_out = A·p_in + b per example, bilinear, as ``ImageProjectiveTransformV3``.

    Args:
        images: (B, H, W, C) any real dtype; values are kept in its units (uint8 0–255 become float 0–255).
        a, b: (B, 2, 2) and (B, 2).
        sizes: (B, 2) int (height, width) of each image's content in its top-left corner (padded batches);
            default: the whole (H, W).
        fill: outside the content, ``"nearest"`` replicates the edge pixels (tracker crops), ``"constant"`` is
            zero (the detector's letterbox).
    Returns:
        (B, out_size, out_size, C) float32.
    """
    batch, height, width, channels = (tf.shape(images)[i] for i in range(4))
    if sizes is None:
        sizes = tf.tile(tf.stack([height, width])[None], [batch, 1])
    h = tf.cast(sizes[:, 0], tf.float32)[:, None, None]
    w = tf.cast(sizes[:, 1], tf.float32)[:, None, None]
    inv = _inverse(a)
    shift = -tf.linalg.matvec(inv, b)
    grid = tf.range(out_size, dtype=tf.float32)
    xs, ys = grid[None, None, :], grid[None, :, None]
    sx = inv[:, 0, 0, None, None] * xs + inv[:, 0, 1, None, None] * ys + shift[:, 0, None, None]
    sy = inv[:, 1, 0, None, None] * xs + inv[:, 1, 1, None, None] * ys + shift[:, 1, None, None]
    if fill == "nearest":
        sx = tf.clip_by_value(sx, 0.0, w - 1.0)
        sy = tf.clip_by_value(sy, 0.0, h - 1.0)
    x0, y0 = tf.floor(sx), tf.floor(sy)
    fx, fy = (sx - x0)[..., None], (sy - y0)[..., None]
    flat = tf.reshape(tf.cast(images, tf.float32), tf.stack([batch, height * width, channels]))

    def at(y, x):
        inside = tf.cast((x >= 0.0) & (x <= w - 1.0) & (y >= 0.0) & (y <= h - 1.0), tf.float32)[..., None]
        xi = tf.cast(tf.clip_by_value(x, 0.0, tf.cast(width - 1, tf.float32)), tf.int32)
        yi = tf.cast(tf.clip_by_value(y, 0.0, tf.cast(height - 1, tf.float32)), tf.int32)
        return tf.gather(flat, yi * width + xi, batch_dims=1) * inside

    top = at(y0, x0) * (1.0 - fx) + at(y0, x0 + 1.0) * fx
    bottom = at(y0 + 1.0, x0) * (1.0 - fx) + at(y0 + 1.0, x0 + 1.0) * fx
    return top * (1.0 - fy) + bottom * fy


def transform_points(points: tf.Tensor, a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """Applies each example's warp to its points: (B, ..., P, 2) x, y, or (B, ..., P, 3) x, y, z (z scales with
    the warp, by sqrt|det A|)."""
    rank = points.shape.rank
    expand = [slice(None)] + [None] * (rank - 2)
    xy = tf.einsum("bij,b...j->b...i", a, points[..., :2]) + b[tuple(expand)]
    if points.shape[-1] == 2:
        return xy
    scale = tf.sqrt(tf.abs(_determinant(a)))[tuple(expand + [None])]
    return tf.concat([xy, points[..., 2:3] * scale], axis=-1)


def _region_mean(images: tf.Tensor, region: Optional[tf.Tensor]) -> tf.Tensor:
    if region is None:
        return tf.reduce_mean(images, axis=[1, 2], keepdims=True)
    return tf.reduce_sum(images * region, axis=[1, 2], keepdims=True) / tf.maximum(
        tf.reduce_sum(region, axis=[1, 2], keepdims=True), 1.0)


def brightness_contrast(images: tf.Tensor, colour: tf.Tensor, region: Optional[tf.Tensor] = None) -> tf.Tensor:
    """The brightness and contrast steps of :func:`jitter_colour` (not clipped)."""
    x = images + colour[:, 0, None, None, None]
    mean = _region_mean(x, region)
    return (x - mean) * colour[:, 1, None, None, None] + mean


def saturation_hue(images: tf.Tensor, colour: tf.Tensor) -> tf.Tensor:
    """The saturation and hue steps of :func:`jitter_colour`, then the clip to [0, 1]."""
    h, s, v = tf.unstack(tf.image.rgb_to_hsv(images), axis=-1)
    s = tf.clip_by_value(s * colour[:, 2, None, None], 0.0, 1.0)
    h = h + colour[:, 3, None, None]
    h = h - tf.floor(h)
    return tf.clip_by_value(tf.image.hsv_to_rgb(tf.stack([h, s, v], axis=-1)), 0.0, 1.0)


def jitter_colour(images: tf.Tensor, colour: tf.Tensor, region: Optional[tf.Tensor] = None,
                  hsv: bool = True) -> tf.Tensor:
    """Brightness, contrast, saturation and hue jitter of a (B, H, W, 3) RGB batch in [0, 1], each example by
    its (4,) :func:`sample_colour` values, as ``tf.image.adjust_brightness``, ``adjust_contrast`` (around each
    channel's mean over ``region``, (B, H, W, 1) in {0, 1}, default the whole image), ``adjust_saturation``
    (saturation scaled and clamped to [0, 1]) and ``adjust_hue`` (hue shifted, modulo 1) in that order; then
    clipped to [0, 1]. ``hsv=False`` skips the saturation/hue step (both ranges 0)."""
    x = brightness_contrast(images, colour, region)
    return saturation_hue(x, colour) if hsv else tf.clip_by_value(x, 0.0, 1.0)


def compiled_colour(hsv: bool = True) -> Callable:
    """:func:`jitter_colour` (same arguments, but ``hsv`` fixed) as two XLA computations: compiled as one, XLA
    would recompute the brightness/contrast result for each of its uses by the HSV conversion."""
    linear = compiled(brightness_contrast)
    rest = compiled(saturation_hue if hsv else lambda x, colour: tf.clip_by_value(x, 0.0, 1.0))
    return lambda images, colour, region=None: rest(linear(images, colour, region), colour)


def occlude(images: tf.Tensor, points: tf.Tensor, visible: tf.Tensor, occluders: tf.Tensor):
    """Paints each example's applied :func:`sample_occluders` rectangles (in order, later ones on top) on a
    (B, H, W, 3) batch; the points (B, P, 2+) they cover become not visible (B, P)."""
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    ys = (tf.range(height, dtype=tf.float32) + 0.5)[None, :, None]
    xs = (tf.range(width, dtype=tf.float32) + 0.5)[None, None, :]
    px, py = points[..., 0], points[..., 1]
    for k in range(occluders.shape[1]):
        rect = occluders[:, k]
        apply = rect[:, 0] > 0.5
        x0, y0, x1, y1 = (rect[:, i] for i in range(1, 5))

        def inside(x, y, extra):
            return ((x >= x0[extra]) & (x < x1[extra]) & (y >= y0[extra]) & (y < y1[extra]) & apply[extra])
        covered = inside(xs, ys, (slice(None), None, None))
        images = tf.where(covered[..., None], rect[:, None, None, 5:8], images)
        visible = tf.where(inside(px, py, (slice(None), None)), tf.zeros_like(visible), visible)
    return images, visible
