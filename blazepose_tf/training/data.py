"""tf.data input pipelines for the tracker, in core TensorFlow.

Records come from ``python -m data.prepare`` (aligned crops with margin, per-point targets). Per epoch the
shards are read in a seeded order and shuffled with a seeded buffer; each example gets a stateless seed from
(seed, epoch, position), so an epoch is reproducible and a resumed run can skip exactly the batches it had
already consumed (:func:`tracker_dataset` ``skip_batches``) before any decoding happens.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from typing import Callable, Optional

import tensorflow as tf

from blazepose_tf.contract import NUM_ROI_POINTS
from blazepose_tf.errors import UserError
from blazepose_tf.topology import BLAZEPOSE_33, Topology
from blazepose_tf.training.augment import AugmentConfig, color_jitter, occlude, sample_affine, warp_image


@dataclass(frozen=True)
class TrackerDataConfig:
    """Input-pipeline settings."""

    input_size: int = 256
    batch_size: int = 32
    shuffle_buffer: int = 2048
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    parallel_calls: int = tf.data.AUTOTUNE


def list_shards(pattern: str) -> list[str]:
    """Sorted shard files (not folders) for a glob pattern (raises FileNotFoundError naming the pattern when
    none)."""
    files = sorted(f for f in glob.glob(pattern) if os.path.isfile(f))
    if not files:
        raise FileNotFoundError(f"no TFRecord shards match {pattern}")
    return files


def parse_fn(num_points: int) -> Callable:
    """Parses one serialized example written by ``data.prepare``."""
    spec = {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "keypoints": tf.io.FixedLenFeature([num_points * 3], tf.float32),
        "weight": tf.io.FixedLenFeature([num_points], tf.float32),
        "visible": tf.io.FixedLenFeature([num_points], tf.float32),
        "vis_weight": tf.io.FixedLenFeature([num_points], tf.float32),
        "z_weight": tf.io.FixedLenFeature([num_points], tf.float32),
        "source": tf.io.FixedLenFeature([num_points], tf.int64),
    }

    def parse(serialized):
        ex = tf.io.parse_single_example(serialized, spec)
        ex["keypoints"] = tf.reshape(ex["keypoints"], (num_points, 3))
        return ex
    return parse


def flip_permutation(topology: Topology) -> tf.Tensor:
    """Left/right permutation over body + auxiliary points (auxiliary points are not swapped)."""
    k = topology.num_keypoints
    return tf.constant(list(topology.flip_indices) + [k, k + 1], tf.int32)


def make_example_fn(cfg: TrackerDataConfig, topology: Topology, training: bool) -> Callable:
    """(seed, parsed example) → (image (S, S, 3) in [0, 1], targets dict) with the alignment crop and
    augmentation applied to image and keypoints alike."""
    perm = flip_permutation(topology)
    aug = cfg.augment if training else AugmentConfig.none()
    out = cfg.input_size

    def fn(seed, ex):
        image = tf.image.convert_image_dtype(tf.io.decode_jpeg(ex["image/encoded"], channels=3), tf.float32)
        in_size = tf.cast(tf.shape(image)[0], tf.float32)
        seeds = tf.random.experimental.stateless_split(seed, 3)
        a, b, flip = sample_affine(seeds[0], in_size, float(out), aug)
        image = warp_image(image, a, b, out)
        kps = ex["keypoints"]
        xy = tf.linalg.matvec(a, kps[:, :2]) + b
        z = kps[:, 2:3] * tf.sqrt(tf.abs(tf.linalg.det(a)))
        targets = {"keypoints": tf.concat([xy, z], 1), "weight": ex["weight"], "visible": ex["visible"],
                   "vis_weight": ex["vis_weight"], "z_weight": ex["z_weight"],
                   "is_gt": tf.cast(tf.equal(ex["source"], 1), tf.float32)}
        targets = {k: tf.cond(flip, lambda v=v: tf.gather(v, perm), lambda v=v: v) for k, v in targets.items()}
        if training:
            image = color_jitter(image, seeds[1], aug)
            if aug.occlusion_prob > 0:
                image, vis = occlude(image, targets["keypoints"], targets["visible"], seeds[2], aug)
                targets["visible"] = vis
        targets["presence"] = tf.ones((1,), tf.float32)
        return image, targets
    return fn


def seeded_records(pattern: str, seed: int, shuffle_buffer: int, training: bool = True, epoch: int = 0,
                   skip_records: int = 0, repeat: bool = False) -> tf.data.Dataset:
    """(per-example seed (2,), serialized record) pairs for one epoch (or forever with ``repeat``).

    In training each epoch reads the shards in a stateless (seed, epoch) order through a seeded windowed
    shuffle; the per-example seed depends only on (seed, epoch, position), so an epoch is reproducible
    whatever the parallelism, and ``skip_records`` (resume) drops records before any decoding.
    """
    files = list_shards(pattern)

    def one_epoch(e):
        e = tf.cast(e, tf.int64)
        names = tf.constant(files)
        if training:  # shard order: a stateless permutation of (seed, epoch)
            keys = tf.random.stateless_uniform((len(files),), seed=tf.stack([tf.cast(seed, tf.int64), e]))
            names = tf.gather(names, tf.argsort(keys))
        ds = tf.data.TFRecordDataset(tf.data.Dataset.from_tensor_slices(names), num_parallel_reads=1)
        if training:
            ds = _seeded_shuffle(ds, shuffle_buffer, seed, e)
        ds = ds.enumerate()
        ds = ds.map(lambda i, s: (tf.stack([tf.cast(seed, tf.int64) * 1_000_003 + e, i]), s))
        return ds

    ds = tf.data.Dataset.counter(start=epoch).flat_map(one_epoch) if repeat else one_epoch(epoch)
    if skip_records:
        ds = ds.skip(skip_records)
    return ds


def tracker_dataset(pattern: str, cfg: TrackerDataConfig = TrackerDataConfig(), training: bool = True,
                    topology: Topology = BLAZEPOSE_33, epoch: int = 0, skip_batches: int = 0,
                    encode_targets: Optional[Callable] = None, repeat: bool = False) -> tf.data.Dataset:
    """Batched (images, targets) for one epoch (or forever with ``repeat``, epochs counting up from ``epoch``).

    Args:
        pattern: glob of TFRecord shards.
        epoch: epoch number (selects the shuffle order and augmentation seeds).
        skip_batches: batches of the first epoch already consumed (resume); skipped before decoding.
        encode_targets: optional ``(image, targets) -> (image, targets)`` run per example after augmentation
            (e.g. heatmap encoding from :mod:`blazepose_tf.codecs.heatmap`).
    """
    ds = seeded_records(pattern, cfg.seed, cfg.shuffle_buffer, training, epoch, skip_batches * cfg.batch_size,
                        repeat)
    num_points = topology.num_keypoints + NUM_ROI_POINTS
    example_fn = make_example_fn(cfg, topology, training)
    parse = parse_fn(num_points)
    ds = ds.map(lambda sd, s: example_fn(sd, parse(s)), num_parallel_calls=cfg.parallel_calls, deterministic=True)
    if encode_targets is not None:
        ds = ds.map(encode_targets, num_parallel_calls=cfg.parallel_calls, deterministic=True)
    ds = ds.batch(cfg.batch_size, drop_remainder=training)
    return ds.prefetch(tf.data.AUTOTUNE)


def _seeded_shuffle(ds: tf.data.Dataset, buffer: int, seed: int, epoch: tf.Tensor) -> tf.data.Dataset:
    """Shuffle whose order depends only on (seed, epoch): random sort keys from a stateless RNG, applied
    within windows of ``buffer`` records (deterministic, unlike a seeded ``shuffle`` across iterators)."""
    def keyed(i, s):
        key = tf.random.stateless_uniform((), seed=tf.stack([tf.cast(seed, tf.int64) + 7919 * epoch, i]),
                                          dtype=tf.float32)
        return key, s

    ds = ds.enumerate().map(keyed)
    ds = ds.batch(buffer)

    def sort_window(keys, records):
        order = tf.argsort(keys)
        return tf.data.Dataset.from_tensor_slices(tf.gather(records, order))
    return ds.flat_map(sort_window)


def count_records(pattern: str) -> int:
    """Number of records in the shards (reads them once); a one-line :class:`UserError` naming a shard that is
    not a readable TFRecord file."""
    total = 0
    for f in list_shards(pattern):
        try:
            total += sum(1 for _ in tf.data.TFRecordDataset(f))
        except tf.errors.DataLossError:
            raise UserError(f"{f} is not a readable TFRecord shard (corrupt or truncated)") from None
        except tf.errors.OpError as e:
            raise UserError(f"cannot read the TFRecord shard {f} ({type(e).__name__})") from None
    return total
