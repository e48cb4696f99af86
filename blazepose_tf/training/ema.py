"""Exponential moving average of a model's weights (``--ema_momentum``): a shadow copy of every float weight
(trainable ones and BatchNorm statistics) that follows training, ``shadow ← d·shadow + (1 − d)·weight`` after each
step, with ``d = min(momentum, (1 + step) / (10 + step))`` so that early steps, whose shadow still holds the
initial weights, catch up (TensorFlow's ``ExponentialMovingAverage`` with ``num_updates``). The average is what a
run evaluates and exports; the weights training moves are evaluated beside it."""
from __future__ import annotations

import contextlib
from typing import Iterator

import tensorflow as tf


class WeightAverage(tf.Module):
    """The shadow weights of ``model``; create it inside the strategy's scope and checkpoint it with the run."""

    def __init__(self, model, momentum: float):
        super().__init__(name="weight_average")
        if not 0.0 < momentum < 1.0:
            raise ValueError(f"EMA momentum must be in (0, 1), got {momentum}")
        self.momentum = momentum
        self._weights = [w for w in model.weights if "float" in str(w.dtype)]   # not seed states
        self.shadow = [tf.Variable(tf.convert_to_tensor(w), trainable=False, name=f"ema_{i}")
                       for i, w in enumerate(self._weights)]
        self._update = tf.function(self._update_fn, autograph=False)

    def _update_fn(self, step: tf.Tensor) -> None:
        step = tf.cast(step, tf.float32)
        decay = tf.minimum(self.momentum, (1.0 + step) / (10.0 + step))
        for s, w in zip(self.shadow, self._weights):
            s.assign(decay * s + (1.0 - decay) * tf.convert_to_tensor(w))

    def reset(self) -> None:
        """The average restarts at the model's current weights (after they are initialized)."""
        for s, w in zip(self.shadow, self._weights):
            s.assign(tf.convert_to_tensor(w))

    def update(self, step: int) -> None:
        """Moves the average toward the current weights after training step ``step`` (0-based)."""
        self._update(tf.constant(step, tf.int64))

    @contextlib.contextmanager
    def swapped(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block, its own again after it."""
        own = [tf.convert_to_tensor(w) for w in self._weights]
        for s, w in zip(self.shadow, self._weights):
            w.assign(tf.convert_to_tensor(s))
        try:
            yield
        finally:
            for value, w in zip(own, self._weights):
                w.assign(value)
