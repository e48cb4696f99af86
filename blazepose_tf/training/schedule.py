"""The learning-rate schedule of a run (``--schedule``, ``--learning_rate``, ``--warmup_steps``)."""
from __future__ import annotations

from typing import Union

import keras
from keras import ops

from blazepose_tf.training.config import TrainConfig


class WarmupCosineDecay(keras.optimizers.schedules.CosineDecay):
    """Keras' ``CosineDecay`` with its warm-up chosen by ``where`` instead of ``cond``: the same rates, but a graph of
    a few ops. A Keras optimizer reads its rate once per variable inside the traced training step (for the weight
    decay and again for the update), and a ``cond`` is traced there as two sub-graphs each time: seconds of every
    run's start for a model of a few hundred variables."""

    def __call__(self, step):
        if self.warmup_target is None:
            return super().__call__(step)
        with keras.name_scope(self.name):
            initial = ops.convert_to_tensor(self.initial_learning_rate)
            dtype = initial.dtype
            decay_steps = ops.cast(self.decay_steps, dtype)
            warmup_steps = ops.cast(self.warmup_steps, dtype)
            target = ops.cast(self.warmup_target, dtype)
            step = ops.minimum(ops.cast(step, dtype), decay_steps + warmup_steps)
            return ops.where(step < warmup_steps,
                             self._warmup_function(step, warmup_steps, target, initial),
                             self._decay_function(step - warmup_steps, decay_steps, target, dtype))


def make_schedule(cfg: TrainConfig) -> Union[WarmupCosineDecay, float]:
    """Linear warm-up then cosine decay to 1% (``--schedule=cosine``), or the constant ``--learning_rate``."""
    decay_steps = max(cfg.steps - cfg.warmup_steps, 1)
    if cfg.schedule == "cosine":
        return WarmupCosineDecay(
            initial_learning_rate=cfg.learning_rate * (0.01 if cfg.warmup_steps else 1.0),
            decay_steps=decay_steps, alpha=0.01, warmup_target=cfg.learning_rate if cfg.warmup_steps else None,
            warmup_steps=cfg.warmup_steps)
    return cfg.learning_rate
