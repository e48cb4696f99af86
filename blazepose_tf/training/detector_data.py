"""tf.data input pipeline for the person detector, in core TensorFlow.

Records come from ``python -m data.prepare --kind detector`` (a downscaled whole image and every person's
33 keypoints in its pixels). Each example is letterboxed onto the detector's square input exactly as at
inference (:class:`blazepose_tf.runtime.pipeline.PersonDetector`: image centred, scaled to fit, zero
borders), then augmented in the same affine warp (random scale, shift, small rotation, horizontal flip that
swaps left/right points) after colour jitter of the image, and the anchor targets are encoded by
:func:`blazepose_tf.codecs.detector_targets.tf_detector_targets`. Caching, seeding, resume and the per-example
draws / per-batch XLA work are those of the tracker's pipeline (:func:`blazepose_tf.training.data.build_pipeline`).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

import tensorflow as tf

from blazepose_tf.codecs.anchors import AnchorOptions
from blazepose_tf.codecs.detector_targets import MAX_PEOPLE, AssignmentOptions, tf_detector_targets
from blazepose_tf.contract import DETECTOR, INPUT_RANGES
from blazepose_tf.topology import BLAZEPOSE_33, Topology
from blazepose_tf.training.augment import (AugmentConfig, compiled, compiled_colour, sample_affine, sample_colour,
                                           transform_points, warp)
from blazepose_tf.training.data import Examples, Parser, build_pipeline, flip_points


def detector_augment() -> AugmentConfig:
    """Default detector augmentation: people appear at many sizes and positions, rarely rotated much."""
    return AugmentConfig(scale=0.3, shift=0.15, rotation_deg=10.0, occlusion_prob=0.0)


@dataclass(frozen=True)
class DetectorDataConfig:
    """Input-pipeline settings for the detector."""

    batch_size: int = 32
    shuffle_buffer: int = 2048
    seed: int = 0
    augment: AugmentConfig = field(default_factory=detector_augment)
    anchor_options: AnchorOptions = field(default_factory=AnchorOptions)
    assignment: AssignmentOptions = field(default_factory=AssignmentOptions)
    input_range: tuple[float, float] = INPUT_RANGES[DETECTOR]
    parallel_calls: int = tf.data.AUTOTUNE
    cache_mb: float = 0.0     # decoded images kept in memory up to this size (MiB); 0: decoded as read


def detector_parser(num_keypoints: int) -> Parser:
    """Parses one serialized detector example into image bytes and padded people arrays."""
    spec = {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "people/keypoints": tf.io.VarLenFeature(tf.float32),
        "people/valid": tf.io.VarLenFeature(tf.float32),
    }

    def parse(serialized):
        ex = tf.io.parse_single_example(serialized, spec)
        kps = tf.reshape(tf.sparse.to_dense(ex["people/keypoints"]), (-1, num_keypoints, 2))[:MAX_PEOPLE]
        valid = tf.reshape(tf.sparse.to_dense(ex["people/valid"]), (-1, num_keypoints))[:MAX_PEOPLE]
        pad = MAX_PEOPLE - tf.shape(kps)[0]
        kps = tf.pad(kps, [[0, pad], [0, 0], [0, 0]])
        valid = tf.pad(valid, [[0, pad], [0, 0]])
        kps.set_shape((MAX_PEOPLE, num_keypoints, 2))
        valid.set_shape((MAX_PEOPLE, num_keypoints))
        return ex["image/encoded"], {"people": kps, "people_valid": valid}
    return parse


def letterbox_affine(seed: tf.Tensor, height: tf.Tensor, width: tf.Tensor, out_size: int, cfg: AugmentConfig):
    """(A, b, flip) mapping image pixels onto the detector input: the runtime's letterbox (centred, longer
    side fitted) composed with a random scale/rotation/shift/flip about the input centre."""
    a, b, flip = sample_affine(seed, 0.0, float(out_size), cfg)   # in_size 0: b = centre + shift
    fit = float(out_size) / tf.maximum(height, width)
    a = a * fit
    b = b - tf.linalg.matvec(a, tf.stack([width / 2.0, height / 2.0]))
    return a, b, flip


def detector_example_fn(cfg: DetectorDataConfig, training: bool) -> Callable[[tf.Tensor, dict], dict]:
    """(seed, example) → the example with its letterbox warp (augmented in training) and colour jitter drawn."""
    aug = cfg.augment if training else AugmentConfig.none()
    size = cfg.anchor_options.input_size

    def fn(seed, ex):
        seeds = tf.random.experimental.stateless_split(seed, 2)
        hw = tf.cast(ex["image_size"], tf.float32)
        a, b, flip = letterbox_affine(seeds[0], hw[0], hw[1], size, aug)
        ex = dict(ex, affine=a, shift=b, flip=flip)
        if training and aug.colour:
            ex["colour"] = sample_colour(seeds[1], aug)
        return ex
    return fn


@functools.lru_cache(maxsize=16)
def detector_batch_fn(cfg: DetectorDataConfig, topology: Topology, training: bool) -> Callable:
    """(uint8 images, drawn batch) → (images in the detector's input range, ``people`` (B, MAX_PEOPLE, K, 2)
    normalized to the input and ``people_valid`` (B, MAX_PEOPLE, K)), as a few XLA computations (colour, letterbox
    warp).

    Cached per arguments: pipelines built alike share the functions, so XLA compiles them once per input shape
    in a process instead of once per pipeline.
    """
    aug = cfg.augment if training else AugmentConfig.none()
    size = cfg.anchor_options.input_size
    perm = tf.constant(topology.flip_indices, tf.int32)
    lo, hi = cfg.input_range
    colour = compiled_colour(hsv=aug.saturation > 0 or aug.hue > 0)

    @compiled
    def to_unit(images, sizes):  # [0, 1], and where each image's content is (B, H, W, 1)
        rows = tf.range(tf.shape(images)[1])[None, :, None] < sizes[:, 0, None, None]
        cols = tf.range(tf.shape(images)[2])[None, None, :] < sizes[:, 1, None, None]
        return tf.cast(images, tf.float32) * (1.0 / 255.0), tf.cast(rows & cols, tf.float32)[..., None]

    @compiled
    def letterbox(images, ex):  # uint8 images, or in [0, 1] after colour jitter
        a, b = ex["affine"], ex["shift"]
        unit = 1.0 / 255.0 if images.dtype == tf.uint8 else 1.0
        image = warp(images, a, b, size, ex["image_size"], fill="constant") * (unit * (hi - lo)) + lo
        xy = flip_points(transform_points(ex["people"], a, b), ex["flip"], perm, axis=2) / float(size)
        return image, {"people": xy, "people_valid": flip_points(ex["people_valid"], ex["flip"], perm, axis=2)}

    def fn(images, ex):
        if "colour" in ex:  # on the image itself (contrast around its own mean), before the letterbox
            unit, region = to_unit(images, ex["image_size"])
            images = colour(unit, ex["colour"], region)
        return letterbox(images, ex)
    return fn


@functools.lru_cache(maxsize=16)
def detector_target_encoder(cfg: DetectorDataConfig, topology: Topology) -> Callable:
    """Batched ``(images, {people, people_valid}) -> (images, targets)`` adding the anchor targets ``regressors``
    (B, A, 12), ``labels`` (B, A) and ``regressor_mask`` (B, A, 12) (:func:`tf_detector_targets`, one XLA
    computation).

    Cached per arguments: pipelines built alike share the functions, so XLA compiles them once per input shape
    in a process instead of once per pipeline.
    """
    @compiled
    def encode(images, targets):
        reg, labels, mask = tf_detector_targets(targets["people"], targets["people_valid"], topology,
                                                cfg.anchor_options, cfg.assignment)
        return images, dict(targets, regressors=reg, labels=labels, regressor_mask=mask)
    return encode


def detector_examples(pattern: str, topology: Topology = BLAZEPOSE_33, cache_mb: float = 0.0) -> Examples:
    """The detector examples of a glob of shards (see :class:`blazepose_tf.training.data.Examples`)."""
    return Examples(pattern, detector_parser(topology.num_keypoints), cache_mb)


def detector_dataset(data: Union[str, Examples], cfg: DetectorDataConfig = DetectorDataConfig(),
                     training: bool = True, topology: Topology = BLAZEPOSE_33, epoch: int = 0, skip_batches: int = 0,
                     repeat: bool = False, input_context: Optional[tf.distribute.InputContext] = None
                     ) -> tf.data.Dataset:
    """Batched (images, targets) for the detector; arguments as
    :func:`blazepose_tf.training.data.tracker_dataset` (``data``: a glob or :func:`detector_examples`)."""
    examples = data if isinstance(data, Examples) else detector_examples(data, topology, cfg.cache_mb)
    augment = detector_batch_fn(cfg, topology, training)
    encode = detector_target_encoder(cfg, topology)
    return build_pipeline(examples, cfg.batch_size, cfg.seed, cfg.shuffle_buffer, training,
                          detector_example_fn(cfg, training), lambda images, batch: encode(*augment(images, batch)),
                          epoch=epoch, skip_batches=skip_batches, repeat=repeat, input_context=input_context,
                          parallel_calls=cfg.parallel_calls)
