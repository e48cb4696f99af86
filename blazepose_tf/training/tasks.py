"""What differs between training a tracker and a detector (:class:`Task`: models, data, losses, dev evaluation;
``--simulate_int8`` for trackers); the loop that runs either is :mod:`blazepose_tf.training.loop`. The settings are
checked first (:func:`blazepose_tf.training.preflight.check_run`, as ``loop.train`` does): a task does not check them
again."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import keras

from blazepose_tf.errors import UserError
from blazepose_tf.training import evaluation, weighted_losses
from blazepose_tf.training.augment import AugmentConfig
from blazepose_tf.training.config import SIMULATED_PREFIX, TrainConfig
from blazepose_tf.training.data import Examples, TrackerDataConfig, tracker_dataset, tracker_examples
from blazepose_tf.training.detector_data import (DetectorDataConfig, detector_augment, detector_dataset,
                                                 detector_examples)
from blazepose_tf.training.distillation import check_heatmap_distillation, load_teacher, teacher_targets
from blazepose_tf.training.registry import Models, build_detector_models, build_models, restrict_trainable
from blazepose_tf.training.simulated_int8 import SimulatedTraining
from blazepose_tf.training.tracker_targets import target_encoder


@dataclass
class Task:
    """What differs between training a tracker and a detector; the loop itself is shared.

    Attributes:
        models: training and inference views of the model.
        dataset: (input_context, epoch, skip_batches) → this input pipeline's endless per-replica batches
            (images, targets).
        losses: (outputs, targets) → weighted loss terms (summed into the loss).
        evaluate: (writer, step) → dev metrics, including ``metric`` (None without dev data).
        metric: the dev metric that selects ``best.keras`` (higher is better).
        extra_targets: optional (images, targets) → targets (distillation from a teacher).
        forward: the model the training step calls, when not ``models.training`` (a view sharing its weights:
            ``--simulate_int8``).
        prepare: called once on a fresh start, after the initial weights are set (calibration of that view).
        state: extra checkpointed variables (the view's ranges).
    """

    models: Models
    dataset: Callable
    losses: Callable
    evaluate: Optional[Callable]
    metric: str
    extra_targets: Optional[Callable] = None
    forward: Optional[keras.Model] = None
    prepare: Optional[Callable[[], None]] = None
    state: dict = field(default_factory=dict)


def _examples(build: Callable[..., Examples], pattern: Optional[str], topology, cache_mb: float,
              what: str) -> Optional[Examples]:
    """The examples of a data flag, decoded into memory now when they fit in ``cache_mb`` (reported)."""
    if not pattern:
        return None
    t0 = time.time()
    examples = build(pattern, topology, cache_mb)
    size = f"{examples.cache_bytes / 2 ** 20:.0f} MiB"
    if examples.cached:
        print(f"{what}: {examples.num_examples} examples decoded into memory ({size}) in {time.time() - t0:.1f} s",
              file=sys.stderr)
    else:
        print(f"{what}: {examples.num_examples} examples, decoded as read ({size} > --decode_cache_mb "
              f"{cache_mb:g})", file=sys.stderr)
    return examples


def tracker_augment(cfg: TrainConfig) -> AugmentConfig:
    """The tracker's augmentation: :class:`AugmentConfig`'s defaults with the ``--augment_scale``,
    ``--augment_shift`` and ``--augment_rotation`` ranges; none with ``--noaugment``."""
    if not cfg.augment:
        return AugmentConfig.none()
    return AugmentConfig(scale=cfg.augment_scale, shift=cfg.augment_shift, rotation_deg=cfg.augment_rotation)


def tracker_task(cfg: TrainConfig, topology, strategy) -> Task:
    """A tracker (our presets or the converted official Full) on aligned person crops."""
    data_cfg = TrackerDataConfig(batch_size=cfg.batch_size, shuffle_buffer=cfg.shuffle_buffer, seed=cfg.seed,
                                 augment=tracker_augment(cfg))
    with strategy.scope():
        models = build_models(cfg.preset, topology)
        restrict_trainable(models, cfg.trainable)
    if cfg.best_metric.endswith("pck_refined") and "heatmap" not in models.inference.output_names:
        raise UserError(f"--best_metric={cfg.best_metric} needs a tracker with a heatmap output "
                        f"(--preset={cfg.preset})")
    simulated = None   # refused early (one line) for models it cannot simulate, before the data is read
    if cfg.simulate_int8:
        with strategy.scope():
            simulated = SimulatedTraining(models, cfg.preset)
    encode = target_encoder(models.num_points, models.input_size, with_offsets=models.has_offsets)
    weights = dict(cfg.loss_weights)
    teacher = load_teacher(cfg.distill_from) if cfg.distill_from else None
    train = _examples(tracker_examples, cfg.train_data, topology, cfg.decode_cache_mb, "train")
    dev = _examples(tracker_examples, cfg.dev_data, topology, cfg.decode_cache_mb, "dev")

    distill_heatmap = teacher is not None and weights.get("distill_heatmap", 0.0) > 0
    if distill_heatmap:
        check_heatmap_distillation(teacher, models.training)

    def extra(images, targets):
        return dict(targets, **teacher_targets(teacher, images, models.num_points, models.input_size,
                                               heatmap=distill_heatmap))

    # the simulated-int8 view is scored on the same dev crops, in the same pass
    views = {SIMULATED_PREFIX: simulated.inference_view} if simulated is not None else None
    task = Task(
        models=models,
        dataset=lambda context, epoch, skip: tracker_dataset(
            train, data_cfg, training=True, topology=topology, epoch=epoch, skip_batches=skip,
            encode_targets=encode, repeat=True, input_context=context),
        losses=lambda outputs, targets: weighted_losses.tracker_losses(outputs, targets, weights,
                                                                       models.input_size, cfg.distill_points),
        evaluate=evaluation.TrackerDevEvaluation(models, dev, topology, data_cfg, cfg.eval_batches, views)
        if dev else None,
        metric=cfg.best_metric, extra_targets=extra if teacher is not None else None)
    if simulated is not None:
        task.forward, task.state = simulated.forward, simulated.state
        task.losses = simulated.losses(task.losses)
        task.prepare = simulated.calibrator(lambda: tracker_dataset(
            train, data_cfg, training=False, topology=topology, encode_targets=encode))
    return task


def detector_task(cfg: TrainConfig, topology, strategy) -> Task:
    """The person detector (our presets or the converted official one) on letterboxed whole images."""
    data_cfg = DetectorDataConfig(batch_size=cfg.batch_size, shuffle_buffer=cfg.shuffle_buffer, seed=cfg.seed,
                                  augment=detector_augment() if cfg.augment else AugmentConfig.none())
    with strategy.scope():
        models = build_detector_models(cfg.preset)
        restrict_trainable(models, cfg.trainable)
    weights = dict(cfg.loss_weights)
    train = _examples(detector_examples, cfg.train_data, topology, cfg.decode_cache_mb, "train")
    dev = _examples(detector_examples, cfg.dev_data, topology, cfg.decode_cache_mb, "dev")
    return Task(
        models=models,
        dataset=lambda context, epoch, skip: detector_dataset(
            train, data_cfg, training=True, topology=topology, epoch=epoch, skip_batches=skip, repeat=True,
            input_context=context),
        losses=lambda outputs, targets: weighted_losses.detector_losses(
            outputs, targets, weights, cfg.classification_loss, cfg.score_targets, cfg.score_tolerance),
        evaluate=evaluation.DetectorDevEvaluation(models, dev, topology, data_cfg, cfg.eval_batches)
        if dev else None,
        metric="detection_rate")


TASKS = {"tracker": tracker_task, "detector": detector_task}
