"""tf.data input pipeline for the person detector, in core TensorFlow.

Records come from ``python -m data.prepare --kind detector`` (a downscaled whole image and every person's
33 keypoints in its pixels). Each example is letterboxed onto the detector's square input exactly as at
inference (:class:`blazepose_tf.runtime.pipeline.PersonDetector`: image centred, scaled to fit, zero
borders), then augmented in the same affine warp (random scale, shift, small rotation, horizontal flip that
swaps left/right points) after colour jitter, and the anchor targets are encoded by
:func:`blazepose_tf.codecs.targets.tf_detector_targets`. Seeding and resume work as for the tracker
(:func:`blazepose_tf.training.data.seeded_records`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import tensorflow as tf

from blazepose_tf.codecs.anchors import AnchorOptions
from blazepose_tf.codecs.targets import AssignmentOptions, tf_detector_targets
from blazepose_tf.contract import DETECTOR, INPUT_RANGES
from blazepose_tf.topology import BLAZEPOSE_33, Topology
from blazepose_tf.training.augment import AugmentConfig, color_jitter, sample_affine, warp_image
from blazepose_tf.training.data import seeded_records

MAX_PEOPLE = 8  # people per example after padding; data.prepare stores at most this many (it imports it)


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


def parse_detector_fn(num_keypoints: int) -> Callable:
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
        return ex["image/encoded"], kps, valid
    return parse


def letterbox_affine(seed: tf.Tensor, height: tf.Tensor, width: tf.Tensor, out_size: int, cfg: AugmentConfig):
    """(A, b, flip) mapping image pixels onto the detector input: the runtime's letterbox (centred, longer
    side fitted) composed with a random scale/rotation/shift/flip about the input centre."""
    a, b, flip = sample_affine(seed, 0.0, float(out_size), cfg)   # in_size 0: b = centre + shift
    fit = float(out_size) / tf.maximum(height, width)
    a = a * fit
    b = b - tf.linalg.matvec(a, tf.stack([width / 2.0, height / 2.0]))
    return a, b, flip


def make_detector_example_fn(cfg: DetectorDataConfig, topology: Topology, training: bool) -> Callable:
    """(seed, serialized) → (image (S, S, 3) in the detector's input range, targets dict)."""
    aug = cfg.augment if training else AugmentConfig.none()
    size = cfg.anchor_options.input_size
    parse = parse_detector_fn(topology.num_keypoints)
    perm = tf.constant(topology.flip_indices, tf.int32)
    lo, hi = cfg.input_range

    def fn(seed, serialized):
        encoded, kps, valid = parse(serialized)
        image = tf.image.convert_image_dtype(tf.io.decode_jpeg(encoded, channels=3), tf.float32)
        seeds = tf.random.experimental.stateless_split(seed, 2)
        if training:
            image = color_jitter(image, seeds[1], aug)
        shape = tf.cast(tf.shape(image), tf.float32)
        a, b, flip = letterbox_affine(seeds[0], shape[0], shape[1], size, aug)
        image = warp_image(image, a, b, size, fill="constant")
        xy = tf.einsum("ij,pkj->pki", a, kps) + b
        xy, valid = tf.cond(flip, lambda: (tf.gather(xy, perm, axis=1), tf.gather(valid, perm, axis=1)),
                            lambda: (xy, valid))
        xy = xy / float(size)
        reg, labels, mask = tf_detector_targets(xy, valid, topology, cfg.anchor_options, cfg.assignment)
        image = image * (hi - lo) + lo
        return image, {"regressors": reg, "labels": labels, "regressor_mask": mask, "people": xy,
                       "people_valid": valid}
    return fn


def detector_dataset(pattern: str, cfg: DetectorDataConfig = DetectorDataConfig(), training: bool = True,
                     topology: Topology = BLAZEPOSE_33, epoch: int = 0, skip_batches: int = 0,
                     repeat: bool = False) -> tf.data.Dataset:
    """Batched (images, targets) for the detector; arguments as
    :func:`blazepose_tf.training.data.tracker_dataset`. Targets: ``regressors`` (A, 12), ``labels`` (A,),
    ``regressor_mask`` (A, 12), and for evaluation ``people`` (MAX_PEOPLE, K, 2) normalized to the input and
    ``people_valid`` (MAX_PEOPLE, K)."""
    ds = seeded_records(pattern, cfg.seed, cfg.shuffle_buffer, training, epoch, skip_batches * cfg.batch_size,
                        repeat)
    ds = ds.map(make_detector_example_fn(cfg, topology, training), num_parallel_calls=cfg.parallel_calls,
                deterministic=True)
    ds = ds.batch(cfg.batch_size, drop_remainder=training)
    return ds.prefetch(tf.data.AUTOTUNE)
