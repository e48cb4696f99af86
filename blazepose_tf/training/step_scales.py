"""Per-weight step sizes for fine-tuning folded weights (``--step_scale``, ``--first_layer_lr``).

MediaPipe's converted models have their BatchNorm folded into the convolutions, so the scale of a kernel's output
channels spans six orders of magnitude (the official Lite: channel RMS from about 1e-6 to 25). Adam moves every
weight by about the learning rate whatever its size, so a rate that moves the large channels wrecks the small ones
(issue #16: AdamW 1e-5 already costs the official Lite 2.5 dev crop PCK, 3e-5 costs 17).

``--step_scale=channel`` multiplies each weight's step by the RMS its kernel output channel had when training
started (biases and other weights: by the RMS of the whole tensor; an all-zero tensor, which has no scale, by 1),
so the learning rate is a fraction of each channel's own scale. That is Adam on the well-conditioned
parametrization ``W = s ⊙ V`` (``s`` the fixed per-channel RMS, ``V`` of unit scale), without changing the model:
what is trained, saved and exported is ``W``.
``--first_layer_lr`` is a layer-wise learning rate: the rate's multiplier falls geometrically from 1 at the last
layer with trainable weights to this value at the first, in the model's topological order.

The multipliers are fixed at the initialized weights (:meth:`StepScales.reset`) and checkpointed with the run, so
a resumed run takes the same steps.
"""
from __future__ import annotations

from typing import Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from blazepose_tf.training.config import STEP_SCALES

# A channel's multiplier is at least this share of the median RMS of its tensor's non-zero channels (dead ones).
_FLOOR = 1e-3


def _channel_axes(layer, ndim: int, is_kernel: bool) -> Optional[tuple[int, ...]]:
    """Axes a kernel's RMS is taken over to leave one value per output channel (None: the whole tensor)."""
    if not is_kernel:
        return None
    if isinstance(layer, keras.layers.DepthwiseConv2D) and ndim == 4:
        return (0, 1)
    if isinstance(layer, keras.layers.Conv2DTranspose) and ndim == 4:
        return (0, 1, 3)
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)) and ndim >= 2:
        return tuple(range(ndim - 1))
    return None


def channel_scale(value: np.ndarray, layer, is_kernel: bool) -> np.ndarray:
    """The RMS of ``value`` per output channel of a kernel (kept as broadcastable axes), or of the whole tensor;
    floored at a small share of the median of the non-zero channels so that all-zero channels still move. A tensor
    that is all zero (e.g. the official Lite's depthwise biases) has no scale of its own: it takes the learning
    rate as is (multiplier 1)."""
    value = np.asarray(value, np.float64)
    axes = _channel_axes(layer, value.ndim, is_kernel)
    if axes is None:
        rms = np.full([1] * value.ndim, np.sqrt(np.mean(np.square(value))) if value.size else 0.0)
    else:
        rms = np.sqrt(np.mean(np.square(value), axis=axes, keepdims=True))
    live = rms[rms > 0]
    if not live.size:
        return np.ones_like(rms, np.float32)
    return np.maximum(rms, _FLOOR * float(np.median(live))).astype(np.float32)


def _variable_layers(model: keras.Model) -> dict[int, tuple[int, keras.layers.Layer, bool]]:
    """``id(variable) -> (rank of its layer among the layers with trainable weights, layer, is a kernel)``, over
    the model's innermost layers in topological order."""
    out: dict[int, tuple[int, keras.layers.Layer, bool]] = {}
    rank = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if list(layer._flatten_layers(include_self=False, recursive=False)) or not layer.trainable_weights:
            continue   # a container (its weights belong to its layers) or a layer without trainable weights
        for w in layer.trainable_weights:
            out[id(w)] = (rank, layer, w.name == "kernel")
        rank += 1
    return out


class StepScales(tf.Module):
    """The step multiplier of each variable of ``variables`` (a model's trainable variables, in the optimizer's
    order); create it inside the strategy's scope, :meth:`reset` it once the weights are initialized, and
    checkpoint it with the run."""

    def __init__(self, model: keras.Model, variables: Sequence, mode: str = "channel", first_layer_lr: float = 1.0):
        super().__init__(name="step_scales")
        if mode not in STEP_SCALES:
            raise ValueError(f"step scale must be one of {', '.join(STEP_SCALES)}, got {mode!r}")
        if not 0.0 < first_layer_lr <= 1.0:
            raise ValueError(f"the first layer's learning-rate ratio must be in (0, 1], got {first_layer_lr}")
        self.mode = mode
        self.first_layer_lr = first_layer_lr
        self._variables = list(variables)
        layers = _variable_layers(model)
        missing = [v.path for v in self._variables if id(v) not in layers]
        if missing:
            raise ValueError(f"variables without a layer in the model: {', '.join(missing[:3])}")
        self._where = [layers[id(v)] for v in self._variables]
        ranks = sorted({rank for rank, _, _ in self._where})
        self._position = {rank: i / max(len(ranks) - 1, 1) for i, rank in enumerate(ranks)}   # 0 first .. 1 last
        self.scales = [tf.Variable(tf.ones(self._shape(v, layer, kernel), tf.float32), trainable=False,
                                   name=f"step_scale_{i}")
                       for i, (v, (_, layer, kernel)) in enumerate(zip(self._variables, self._where))]

    def _shape(self, variable, layer, is_kernel: bool) -> list[int]:
        axes = _channel_axes(layer, len(variable.shape), is_kernel) if self.mode == "channel" else None
        shape = [int(d) for d in variable.shape]
        return [1] * len(shape) if axes is None else [1 if a in axes else d for a, d in enumerate(shape)]

    def reset(self) -> None:
        """Fixes every multiplier at the variables' current values (call after the weights are initialized)."""
        for scale, v, (rank, layer, kernel) in zip(self.scales, self._variables, self._where):
            layer_ratio = self.first_layer_lr ** (1.0 - self._position[rank])
            if self.mode == "channel":
                value = channel_scale(np.asarray(v), layer, kernel)
            else:
                value = np.ones(scale.shape, np.float32)
            scale.assign((value * layer_ratio).astype(np.float32))


class _Scaled:
    """Mixes per-variable step multipliers (:class:`StepScales`) into a Keras optimizer's update step."""

    step_scales: StepScales

    def update_step(self, gradient, variable, learning_rate):
        scale = self.step_scales.scales[self._get_variable_index(variable)]
        return super().update_step(gradient, variable,
                                   tf.cast(learning_rate, scale.dtype) * tf.convert_to_tensor(scale))


class ScaledAdamW(_Scaled, keras.optimizers.AdamW):
    """AdamW whose step of each variable is multiplied by its :class:`StepScales` entry."""


class ScaledSGD(_Scaled, keras.optimizers.SGD):
    """SGD whose step of each variable is multiplied by its :class:`StepScales` entry."""


def scaled_optimizer(base: type, step_scales: StepScales, **kwargs) -> keras.optimizers.Optimizer:
    """An optimizer of class ``base`` (``keras.optimizers.AdamW`` or ``SGD``) taking ``step_scales``' steps."""
    cls = {keras.optimizers.AdamW: ScaledAdamW, keras.optimizers.SGD: ScaledSGD}[base]
    optimizer = cls(**kwargs)
    optimizer.step_scales = step_scales
    return optimizer
