"""Shared building blocks for the BlazePose detector and tracker (Keras 3 functional style).

Every helper takes a Keras tensor and a ``name`` prefix and returns a Keras tensor; every layer it creates is
named ``{name}_{part}`` (``enc2_block1_dw``, ``enc2_block1_pw``...), so weights can be addressed by name.

Initialization keeps activations at unit scale through any depth, in training and inference mode alike:
He-normal convolutions, variance-preserving depthwise kernels (:func:`depthwise_initializer`) and residual
branches that start at zero (BatchNorm gamma 0, or a zero pointwise kernel where there is no BatchNorm).
BatchNorm uses momentum 0.9 (:data:`BN_MOMENTUM`).

The few operations Keras has no layer for are small registered layers (no ``Lambda``, so ``.keras`` files
deserialize safely) that lower to TFLite builtins:

* :class:`ChannelPad` — zero channels appended on the last axis (``PAD``), BlazeFace's residual widening;
* :class:`StopGradient` — identity in the forward pass, blocks gradients (removed by the converter);
* :class:`ChannelAffine` — a constant per-channel ``x * scale + shift`` (folded into the preceding conv).
"""
from __future__ import annotations

from typing import Optional, Sequence

import keras
import numpy as np
from keras import layers, ops

PACKAGE = "blazepose_tf"


@keras.saving.register_keras_serializable(package=PACKAGE)
class ChannelPad(layers.Layer):
    """Appends ``pad`` zero channels (NHWC), for residual shortcuts that widen the feature map."""

    def __init__(self, pad: int, **kwargs):
        super().__init__(**kwargs)
        self.pad = int(pad)

    def call(self, x):
        return ops.pad(x, [[0, 0], [0, 0], [0, 0], [0, self.pad]])

    def compute_output_shape(self, input_shape):
        c = input_shape[-1]
        return (*input_shape[:-1], None if c is None else c + self.pad)

    def get_config(self) -> dict:
        return {**super().get_config(), "pad": self.pad}


@keras.saving.register_keras_serializable(package=PACKAGE)
class StopGradient(layers.Layer):
    """Identity whose gradient is zero: the paper's gradient-stopping skip connections (Fig. 4)."""

    def call(self, x):
        return ops.stop_gradient(x)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package=PACKAGE)
class ChannelAffine(layers.Layer):
    """Constant (non-trainable) per-channel ``x * scale + shift`` on the last axis."""

    def __init__(self, scale: Sequence[float], shift: Optional[Sequence[float]] = None, **kwargs):
        super().__init__(**kwargs)
        self.scale = [float(v) for v in scale]
        self.shift = [float(v) for v in shift] if shift is not None else [0.0] * len(self.scale)
        if len(self.shift) != len(self.scale):
            raise ValueError("scale and shift must have the same length")

    def call(self, x):
        scale = ops.convert_to_tensor(np.asarray(self.scale, np.float32), dtype=x.dtype)
        shift = ops.convert_to_tensor(np.asarray(self.shift, np.float32), dtype=x.dtype)
        return x * scale + shift

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "scale": list(self.scale), "shift": list(self.shift)}


@keras.saving.register_keras_serializable(package=PACKAGE)
class FusedBatchNorm(layers.BatchNormalization):
    """``BatchNormalization`` whose training pass runs TensorFlow's fused kernel (``FusedBatchNormV3``).

    Keras 3 normalizes with separate moment/normalize ops, about twice as slow on CPU for the large
    early feature maps. Inference (and any case the fused kernel does not cover) is Keras' own code path, so
    export and BatchNorm folding are unchanged.
    """

    def call(self, inputs, training=None, mask=None):
        if (training and self.trainable and mask is None and not self.renorm and not self.synchronized
                and len(inputs.shape) == 4 and self.axis in (-1, 3) and self.scale and self.center
                and keras.backend.backend() == "tensorflow" and inputs.dtype == "float32"):
            import tensorflow as tf

            y, mean, var = tf.compat.v1.nn.fused_batch_norm(inputs, self.gamma, self.beta, epsilon=self.epsilon,
                                                            is_training=True)
            m = self.momentum
            self.moving_mean.assign(self.moving_mean * m + mean * (1.0 - m))
            self.moving_variance.assign(self.moving_variance * m + var * (1.0 - m))
            return y
        return super().call(inputs, training=training, mask=mask)


def depthwise_initializer(kernel_size: int) -> keras.initializers.Initializer:
    """Variance-preserving init of a k×k depthwise kernel (std 1/k: each output sums k² inputs).

    Keras' default (Glorot) counts all C channels as fan-in for a depthwise kernel, so every depthwise
    layer would shrink activations about C-fold; without BatchNorm right after it (our high-resolution
    layers) the signal vanishes and BatchNorm's moving statistics later lag far behind the batch ones.
    """
    return keras.initializers.RandomNormal(stddev=1.0 / kernel_size)


CONV_INIT = "he_normal"  # ReLU networks; fan-in is right for regular convolutions
# Moving statistics follow the batch ones within ~50 steps (Keras' 0.99 needs ~500): short CPU runs and
# early checkpoints then behave the same in training and inference mode.
BN_MOMENTUM = 0.9


def _norm(x, name: str, batch_norm: bool, zero_init: bool = False):
    if not batch_norm:
        return x
    return FusedBatchNorm(momentum=BN_MOMENTUM, epsilon=1e-3, gamma_initializer="zeros" if zero_init else "ones",
                          name=f"{name}_bn")(x)


def conv_bn_act(x, filters: int, kernel_size: int, strides: int = 1, *, name: str, batch_norm: bool = True,
                activation: Optional[str] = "relu"):
    """Conv2D (``same`` padding) → optional BatchNorm → optional activation."""
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=not batch_norm,
                      kernel_initializer=CONV_INIT, name=name)(x)
    x = _norm(x, name, batch_norm)
    if activation:
        x = layers.Activation(activation, name=f"{name}_{activation}")(x)
    return x


def pointwise(x, filters: int, *, name: str, batch_norm: bool = True, activation: Optional[str] = None):
    """1×1 convolution (projection) with optional BatchNorm and activation."""
    return conv_bn_act(x, filters, 1, name=name, batch_norm=batch_norm, activation=activation)


def blaze_block(x, filters: int, strides: int = 1, kernel_size: int = 5, *, name: str, batch_norm: bool = True,
                activation: str = "relu", residual: Optional[bool] = None, dw_batch_norm: bool = False):
    """BlazeFace's BlazeBlock: depthwise k×k (stride) → pointwise 1×1, plus a residual shortcut, then the
    activation.

    With ``batch_norm``, BatchNorm follows the pointwise convolution (and the depthwise one too with
    ``dw_batch_norm``). ``residual=None`` keeps the shortcut for stride-1 blocks only (MobileNetV2's
    convention: on CPU, a max-pool shortcut at high resolution costs about as much to train as the block
    itself); ``True`` adds BlazeFace's 2×2 max-pool shortcut to stride-2 blocks too. A widening shortcut is
    zero-padded (:class:`ChannelPad`), a narrowing one projected (1×1). Layers: ``{name}_dw``, ``{name}_pw``,
    ``{name}_pw_bn``, ``{name}_pool``, ``{name}_pad`` / ``{name}_proj``, ``{name}_add``,
    ``{name}_{activation}``.
    """
    if strides not in (1, 2):
        raise ValueError(f"strides must be 1 or 2, got {strides}")
    if residual is None:
        residual = strides == 1
    c_in = int(x.shape[-1])
    # depthwise → pointwise is linear: one BatchNorm after the pointwise (which also absorbs the depthwise
    # bias) is BlazeFace's layout and ~12% cheaper to train than normalizing both.
    dw_bn = batch_norm and dw_batch_norm
    y = layers.DepthwiseConv2D(kernel_size, strides=strides, padding="same", use_bias=not batch_norm,
                               depthwise_initializer=depthwise_initializer(kernel_size), name=f"{name}_dw")(x)
    y = _norm(y, f"{name}_dw", dw_bn)
    # A residual block starts as the identity (its branch's last scale is zero: BatchNorm's gamma, or the
    # pointwise kernel without BatchNorm), so activations keep their scale through any depth at
    # initialization, in training and inference mode alike.
    pw_init = "zeros" if (residual and not batch_norm) else CONV_INIT
    y = layers.Conv2D(filters, 1, use_bias=not batch_norm, kernel_initializer=pw_init, name=f"{name}_pw")(y)
    y = _norm(y, f"{name}_pw", batch_norm, zero_init=residual)
    if residual:
        shortcut = x
        if strides == 2:
            shortcut = layers.MaxPooling2D(2, strides=2, padding="same", name=f"{name}_pool")(shortcut)
        if filters > c_in:
            shortcut = ChannelPad(filters - c_in, name=f"{name}_pad")(shortcut)
        elif filters < c_in:
            shortcut = pointwise(shortcut, filters, name=f"{name}_proj", batch_norm=batch_norm)
        y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.Activation(activation, name=f"{name}_{activation}")(y)


def blaze_stage(x, filters: int, num_blocks: int, strides: int = 2, kernel_size: int = 5, *, name: str,
                batch_norm: bool = True, downsample_residual: bool = False):
    """``num_blocks`` BlazeBlocks (``{name}_block1`` … ), the first with ``strides``."""
    for i in range(num_blocks):
        first = i == 0
        x = blaze_block(x, filters, strides if first else 1, kernel_size, name=f"{name}_block{i + 1}",
                        batch_norm=batch_norm, residual=(downsample_residual or None) if first else None)
    return x


def upsample_add(coarse, skip, filters: int, kernel_size: int = 3, *, name: str, batch_norm: bool = True):
    """Decoder step: bilinear ×2 of ``coarse`` + 1×1 projection of ``skip``, then one BlazeBlock.

    ``coarse`` must already have ``filters`` channels. Layers: ``{name}_up``, ``{name}_skip``, ``{name}_add``,
    ``{name}_block``.
    """
    up = layers.UpSampling2D(2, interpolation="bilinear", name=f"{name}_up")(coarse)
    lateral = pointwise(skip, filters, name=f"{name}_skip", batch_norm=batch_norm)
    x = layers.Add(name=f"{name}_add")([up, lateral])
    return blaze_block(x, filters, 1, kernel_size, name=f"{name}_block", batch_norm=batch_norm)


CUSTOM_OBJECTS = {"ChannelPad": ChannelPad, "StopGradient": StopGradient, "ChannelAffine": ChannelAffine,
                  "FusedBatchNorm": FusedBatchNorm}
