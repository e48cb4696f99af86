"""tf.data input pipelines for the tracker, and the machinery the detector's shares, in core TensorFlow.

Records come from ``python -m data.prepare`` (aligned crops with margin, per-point targets). A pipeline is:

1. **Examples** (:class:`Examples`): the shards' examples, their JPEGs decoded once to uint8 and kept in memory
   when they fit in ``cache_mb`` (else decoded as they are read; both give the same batches).
2. **Order**: per epoch the shards are read in a stateless (seed, epoch) order through a windowed stateless
   shuffle, and the epoch's i-th example gets the seed (seed·1_000_003 + epoch, i); the same ordering code runs on
   record indices (in memory) or on the records themselves, so an epoch is reproducible whatever the caching or
   parallelism, and a resumed run skips the batches it had consumed (``skip_batches``) before any decoding.
3. **Per example**, scalars only: its augmentation drawn from its seed (:mod:`blazepose_tf.training.augment`).
4. **Per batch**, compiled with XLA: images gathered from memory, warped, colour-jittered, occluded; keypoints
   moved; then the loss targets encoded (heatmaps, offsets, masks: :mod:`blazepose_tf.training.tracker_targets`).

Under a tf.distribute strategy each input pipeline (worker) cuts every global batch into per-replica batches in
order and keeps the rows of its own replicas (:func:`build_pipeline`), so any split of the same global batch
sees the same examples augmented the same way.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

import numpy as np
import tensorflow as tf

from blazepose_tf.contract import NUM_ROI_POINTS
from blazepose_tf.errors import UserError
from blazepose_tf.io.shards import list_shards
from blazepose_tf.topology import BLAZEPOSE_33, Topology
from blazepose_tf.training.augment import (AugmentConfig, compiled, compiled_colour, occlude, sample_affine,
                                           sample_colour, sample_occluders, transform_points, warp)

# serialized record → (JPEG bytes, fixed-shape label tensors)
Parser = Callable[[tf.Tensor], tuple[tf.Tensor, dict]]


@dataclass(frozen=True)
class TrackerDataConfig:
    """Input-pipeline settings."""

    input_size: int = 256
    batch_size: int = 32
    shuffle_buffer: int = 2048
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    parallel_calls: int = tf.data.AUTOTUNE
    cache_mb: float = 0.0     # decoded images kept in memory up to this size (MiB); 0: decoded as read


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


def tracker_parser(num_points: int) -> Parser:
    """Parses one serialized tracker example written by ``data.prepare``."""
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
        encoded = ex.pop("image/encoded")
        ex["keypoints"] = tf.reshape(ex["keypoints"], (num_points, 3))
        return encoded, ex
    return parse


def _aligned_empty(shape: tuple[int, ...]) -> np.ndarray:
    """An uninitialized uint8 array whose data is 64-byte aligned (TensorFlow can then use it without a copy)."""
    size = int(np.prod(shape))
    raw = np.empty(size + 64, np.uint8)
    start = -raw.ctypes.data % 64
    return raw[start:start + size].reshape(shape)


class Examples:
    """The examples of a glob of TFRecord shards, read in a seeded order (:meth:`ordered`), with their JPEG images
    decoded once into memory when all of them fit in ``cache_mb`` MiB (as uint8, zero-padded to the largest
    image), else decoded as they are read. Either way an example is its labels, ``image_size`` (height, width)
    and its pixels (:meth:`load`, :meth:`pixels`).

    Args:
        pattern: glob of TFRecord shards.
        parse: serialized record → (JPEG bytes, labels).
        cache_mb: memory budget of the decoded images (0: never cached).
    """

    def __init__(self, pattern: str, parse: Parser, cache_mb: float = 0.0):
        self.pattern = pattern
        self.files = list_shards(pattern)
        self.parse = parse
        sizes, shapes = self._scan()
        self.shard_sizes = sizes
        self.num_examples = int(sum(sizes))
        self.image_shape = tuple(int(v) for v in shapes.max(axis=0)) if len(shapes) else (1, 1)
        self.cache_bytes = self.num_examples * self.image_shape[0] * self.image_shape[1] * 3
        self.cached = 0 < self.cache_bytes <= cache_mb * 2 ** 20
        self._images: Optional[tf.Tensor] = None
        self._labels: dict[str, tf.Tensor] = {}
        if self.cached:
            self._decode_all()

    def _scan(self) -> tuple[list[int], np.ndarray]:
        """Records per shard and every image's (height, width), from the JPEG headers (no decoding)."""
        sizes, shapes = [], []
        for f in self.files:
            ds = tf.data.TFRecordDataset(f).map(lambda s: tf.io.extract_jpeg_shape(self.parse(s)[0])[:2],
                                                num_parallel_calls=tf.data.AUTOTUNE)
            count = 0
            for batch in ds.batch(4096):
                shapes.append(batch.numpy())
                count += len(batch)
            sizes.append(count)
        return sizes, np.concatenate(shapes) if shapes else np.zeros((0, 2), np.int32)

    def _decode(self, serialized: tf.Tensor) -> dict:
        encoded, labels = self.parse(serialized)
        image = tf.io.decode_jpeg(encoded, channels=3)
        size = tf.shape(image)[:2]
        image = tf.pad(image, [[0, self.image_shape[0] - size[0]], [0, self.image_shape[1] - size[1]], [0, 0]])
        image.set_shape((*self.image_shape, 3))
        return dict(labels, image=image, image_size=size)

    def _decode_all(self) -> None:
        """Decodes every record once (in file order) into one uint8 array shared with TensorFlow without a copy."""
        images = _aligned_empty((self.num_examples, *self.image_shape, 3))
        labels: dict[str, list] = {}
        ds = tf.data.TFRecordDataset(self.files).map(self._decode, num_parallel_calls=tf.data.AUTOTUNE)
        start = 0
        for batch in ds.batch(256).prefetch(1):
            pixels = batch.pop("image").numpy()
            images[start:start + len(pixels)] = pixels
            start += len(pixels)
            for k, v in batch.items():
                labels.setdefault(k, []).append(v.numpy())
        self._images = tf.experimental.dlpack.from_dlpack(images.__dlpack__())
        self._labels = {k: tf.constant(np.concatenate(v)) for k, v in labels.items()}

    def ordered(self, seed: int, shuffle_buffer: int, training: bool = True, epoch: int = 0, skip_records: int = 0,
                repeat: bool = False) -> tf.data.Dataset:
        """(per-example seed (2,), element) pairs for one epoch (or forever with ``repeat``): the element is the
        record's index in file order when cached, else the serialized record.

        In training each epoch reads the shards in a stateless (seed, epoch) order through a seeded windowed
        shuffle; the per-example seed depends only on (seed, epoch, position), so an epoch is reproducible
        whatever the parallelism, and ``skip_records`` (resume) drops records before any decoding.
        """
        if self.cached:
            offsets = tf.constant(np.cumsum([0] + self.shard_sizes[:-1]), tf.int64)
            sizes = tf.constant(self.shard_sizes, tf.int64)

            def read(ids: tf.data.Dataset) -> tf.data.Dataset:
                return ids.flat_map(lambda i: tf.data.Dataset.range(offsets[i], offsets[i] + sizes[i]))
        else:
            names = tf.constant(self.files)

            def read(ids: tf.data.Dataset) -> tf.data.Dataset:
                return tf.data.TFRecordDataset(ids.map(lambda i: names[i]), num_parallel_reads=1)
        return _epochs(len(self.files), read, seed, shuffle_buffer, training, epoch, skip_records, repeat)

    def load(self, element: tf.Tensor) -> dict:
        """One example without its pixels when cached (``index`` names them), with them (``image``) when not."""
        if self.cached:
            return dict({k: v[element] for k, v in self._labels.items()}, index=element)
        return self._decode(element)

    def pixels(self, batch: dict) -> tuple[tf.Tensor, dict]:
        """(B, H, W, 3) uint8 images of a batch of :meth:`load` examples, and the batch without them."""
        batch = dict(batch)
        if self.cached:
            return tf.gather(self._images, batch.pop("index")), batch
        return batch.pop("image"), batch


def _epochs(num_shards: int, read: Callable[[tf.data.Dataset], tf.data.Dataset], seed: int, shuffle_buffer: int,
            training: bool, epoch: int, skip_records: int, repeat: bool) -> tf.data.Dataset:
    """The seeded order of :meth:`Examples.ordered`, over the elements ``read`` yields for a stream of shard
    ids."""
    def one_epoch(e):
        e = tf.cast(e, tf.int64)
        ids = tf.range(num_shards, dtype=tf.int64)
        if training:  # shard order: a stateless permutation of (seed, epoch)
            keys = tf.random.stateless_uniform((num_shards,), seed=tf.stack([tf.cast(seed, tf.int64), e]))
            ids = tf.gather(ids, tf.argsort(keys))
        ds = read(tf.data.Dataset.from_tensor_slices(ids))
        if training:
            ds = _seeded_shuffle(ds, shuffle_buffer, seed, e)
        ds = ds.enumerate()
        return ds.map(lambda i, x: (tf.stack([tf.cast(seed, tf.int64) * 1_000_003 + e, i]), x))

    ds = tf.data.Dataset.counter(start=epoch).flat_map(one_epoch) if repeat else one_epoch(epoch)
    return ds.skip(skip_records) if skip_records else ds


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


def pipeline_options() -> tf.data.Options:
    """Options of every training pipeline: deterministic, autotuned, and without tf.data's static graph
    rewrites (they serialize the dataset graph and so would copy the decoded images it captures; the pipeline
    is built already parallel, batched and prefetched)."""
    options = tf.data.Options()
    options.deterministic = True
    options.autotune.enabled = True
    options.experimental_optimization.apply_default_optimizations = False
    return options


def replica_batch_size(batch_size: int, replicas: int) -> int:
    """The per-replica batch of a global ``batch_size`` (a one-line :class:`UserError` when the replicas cannot
    share it evenly)."""
    if batch_size % replicas:
        raise UserError(f"--batch_size {batch_size} cannot be split evenly between {replicas} replicas")
    return batch_size // replicas


# The pipeline's functions have no Python control flow on tensors: traced as written, without AutoGraph's
# source conversion (a third of a small run's start-up time).
_plain = tf.autograph.experimental.do_not_convert


def build_pipeline(examples: Examples, batch_size: int, seed: int, shuffle_buffer: int, training: bool,
                   per_example: Callable[[tf.Tensor, dict], dict],
                   per_batch: Callable[[tf.Tensor, dict], tuple[tf.Tensor, dict]], epoch: int = 0,
                   skip_batches: int = 0, repeat: bool = False,
                   input_context: Optional[tf.distribute.InputContext] = None,
                   parallel_calls: int = tf.data.AUTOTUNE) -> tf.data.Dataset:
    """Batched (images, targets) of one input pipeline: the seeded order of ``examples`` (the first
    ``skip_batches`` global batches skipped), ``per_example(seed, example)`` (the augmentation draws), then
    ``per_batch(uint8 images, batch)`` on batches. With an ``input_context`` (tf.distribute) every global batch of
    ``batch_size`` is cut into per-replica batches in order and this pipeline yields those of its own replicas,
    one after the other."""
    local = replica_batch_size(batch_size, input_context.num_replicas_in_sync if input_context else 1)
    ds = examples.ordered(seed, shuffle_buffer, training, epoch, skip_batches * batch_size, repeat)
    if local != batch_size:
        rows = local * input_context.num_replicas_in_sync // input_context.num_input_pipelines
        first = input_context.input_pipeline_id * rows
        ds = ds.batch(batch_size, drop_remainder=True).map(
            lambda s, e: (s[first:first + rows], e[first:first + rows])).unbatch()
    ds = ds.map(_plain(lambda s, e: per_example(s, examples.load(e))), num_parallel_calls=parallel_calls,
                deterministic=True)
    ds = ds.batch(local, drop_remainder=training)
    ds = ds.map(_plain(lambda batch: per_batch(*examples.pixels(batch))), num_parallel_calls=parallel_calls,
                deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(pipeline_options())


def flip_permutation(topology: Topology) -> tf.Tensor:
    """Left/right permutation over body + auxiliary points (auxiliary points are not swapped)."""
    k = topology.num_keypoints
    return tf.constant(list(topology.flip_indices) + [k, k + 1], tf.int32)


def flip_points(values: tf.Tensor, flip: tf.Tensor, perm: tf.Tensor, axis: int) -> tf.Tensor:
    """Per example of a batch, ``values`` with its point ``axis`` permuted by ``perm`` where ``flip`` (B,)."""
    where = tf.reshape(flip, [-1] + [1] * (values.shape.rank - 1))
    return tf.where(where, tf.gather(values, perm, axis=axis), values)


def tracker_example_fn(cfg: TrackerDataConfig, training: bool) -> Callable[[tf.Tensor, dict], dict]:
    """(seed, example) → the example with its augmentation drawn: the warp onto the ``input_size`` crop (the
    alignment crop, augmented in training), colour jitter and occluders (training)."""
    aug = cfg.augment if training else AugmentConfig.none()
    out = float(cfg.input_size)

    def fn(seed, ex):
        seeds = tf.random.experimental.stateless_split(seed, 3)
        a, b, flip = sample_affine(seeds[0], ex["image_size"][0], out, aug)
        ex = dict(ex, affine=a, shift=b, flip=flip)
        if training and aug.colour:
            ex["colour"] = sample_colour(seeds[1], aug)
        if training and aug.occlusion:
            ex["occluders"] = sample_occluders(seeds[2], out, aug)
        return ex
    return fn


@functools.lru_cache(maxsize=16)
def tracker_batch_fn(cfg: TrackerDataConfig, topology: Topology, training: bool) -> Callable:
    """(uint8 images, drawn batch) → (images (B, S, S, 3) in [0, 1], targets: ``keypoints`` (B, P, 3) in crop
    pixels, ``weight``, ``visible``, ``vis_weight``, ``z_weight``, ``is_gt`` (B, P), ``presence`` (B, 1)), as a few
    XLA computations (warp, colour, occlusion).

    Cached per arguments: pipelines built alike share the functions, so XLA compiles them once per input shape
    in a process instead of once per pipeline.
    """
    perm = flip_permutation(topology)
    aug = cfg.augment if training else AugmentConfig.none()
    colour = compiled_colour(hsv=aug.saturation > 0 or aug.hue > 0)
    occlusion = compiled(occlude)

    @compiled
    def geometry(images, ex):
        a, b = ex["affine"], ex["shift"]
        image = warp(images, a, b, cfg.input_size, ex["image_size"], fill="nearest") * (1.0 / 255.0)
        targets = {"keypoints": transform_points(ex["keypoints"], a, b), "weight": ex["weight"],
                   "visible": ex["visible"], "vis_weight": ex["vis_weight"], "z_weight": ex["z_weight"],
                   "is_gt": tf.cast(tf.equal(ex["source"], 1), tf.float32)}
        targets = {k: flip_points(v, ex["flip"], perm, axis=1) for k, v in targets.items()}
        targets["presence"] = tf.ones_like(targets["weight"][:, :1])
        return image, targets

    def fn(images, ex):
        image, targets = geometry(images, ex)
        if "colour" in ex:
            image = colour(image, ex["colour"])
        if "occluders" in ex:
            image, targets["visible"] = occlusion(image, targets["keypoints"], targets["visible"], ex["occluders"])
        return image, targets
    return fn


def tracker_examples(pattern: str, topology: Topology = BLAZEPOSE_33, cache_mb: float = 0.0) -> Examples:
    """The tracker examples of a glob of shards (see :class:`Examples`)."""
    return Examples(pattern, tracker_parser(topology.num_keypoints + NUM_ROI_POINTS), cache_mb)


def tracker_dataset(data: Union[str, Examples], cfg: TrackerDataConfig = TrackerDataConfig(), training: bool = True,
                    topology: Topology = BLAZEPOSE_33, epoch: int = 0, skip_batches: int = 0,
                    encode_targets: Optional[Callable] = None, repeat: bool = False,
                    input_context: Optional[tf.distribute.InputContext] = None) -> tf.data.Dataset:
    """Batched (images, targets) for one epoch (or forever with ``repeat``, epochs counting up from ``epoch``).

    Args:
        data: glob of TFRecord shards (decoded as read unless ``cfg.cache_mb``), or :func:`tracker_examples`.
        epoch: epoch number (selects the shuffle order and augmentation seeds).
        skip_batches: global batches of the first epoch already consumed (resume); skipped before decoding.
        encode_targets: optional batched ``(images, targets) -> (images, targets)`` run after augmentation
            (:func:`blazepose_tf.training.tracker_targets.target_encoder`).
        input_context: this input pipeline's place under a tf.distribute strategy (per-replica batches).
    """
    examples = data if isinstance(data, Examples) else tracker_examples(data, topology, cfg.cache_mb)
    augment = tracker_batch_fn(cfg, topology, training)

    def per_batch(images, batch):
        images, targets = augment(images, batch)
        return encode_targets(images, targets) if encode_targets is not None else (images, targets)

    return build_pipeline(examples, cfg.batch_size, cfg.seed, cfg.shuffle_buffer, training,
                          tracker_example_fn(cfg, training), per_batch, epoch=epoch, skip_batches=skip_batches,
                          repeat=repeat, input_context=input_context, parallel_calls=cfg.parallel_calls)
