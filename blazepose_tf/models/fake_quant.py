"""Simulated int8: a view of a float tracker (same layers, same weights) that computes what its int8-selective
export computes, up to rounding details, so that training through it (``--simulate_int8``) teaches the float weights
to survive int8.

What is simulated, as the export (``export.to_tflite --quantize int8``) quantizes:

* convolution kernels per output channel, symmetric over [-max|w|, max|w|] at 255 levels (the converter's);
* every activation tensor the int8 model stores, per tensor over a fixed range (:class:`FakeQuant`): the model
  input and the output of each layer that computes new values (convolutions, adds, activations), except a layer
  whose only consumer is an activation layer (TFLite fuses the activation into it and stores only its output).
  Layers that only move or resample values (padding, pooling, reshapes, resizes) keep their input's scale.
* the low-resolution tail stays float (``float_tail``): the layers whose outputs have at most
  :data:`~blazepose_tf.int8_ranges.MIN_POSITIONS` spatial positions (the 2×2 and 1×1 heads), neither their
  kernels nor their outputs rounded. The int8-selective export keeps them float too (``--float_layers auto``,
  0.55% of the Lite's MACs): in int8 they alone take the zoo Lite's simulated dev crop PCK from 54 to 29
  (session 14).

The ranges are set once by :meth:`SimulatedInt8.calibrate` from the float model on calibration crops: the
``percentile``-th percentile of each tensor's values, as the export's default ``percentile`` ranges, except where
the export keeps min/max (the model input and the tensors that compute an output, ``export/ranges.py``).
Checked against the converter on a small model (``tests/test_fake_quant.py``): the same int8 tensors up to the
first residual add, closer to its output than float after it. Gradients pass straight through inside the ranges.
The weights stay float: what is saved and exported is a plain float model that the ordinary post-training
converter quantizes.
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from blazepose_tf.int8_ranges import MIN_POSITIONS, RANGE_PERCENTILE
from blazepose_tf.models.graph import default_call, rewire

FAKE_QUANT_PREFIX = "fq_"
INPUT_POINT = "input"
# Layer types whose outputs are new values the int8 model stores at their own scale.
QUANTIZED_TYPES = ("Conv2D", "DepthwiseConv2D", "Add", "Activation", "ReLU")
# Layer types that keep their input's scale in the int8 model (they move, pick or resample values).
SCALE_KEEPING_TYPES = ("InputLayer", "ZeroPad", "ZeroPadding2D", "MaxPooling2D", "BatchReshape", "Reshape",
                       "Flatten", "ResizeBilinear", "UpSampling2D")
FUSABLE = ("relu", "relu6", "linear")
# Values kept per tensor and batch to estimate a percentile (a uniform sample of the tensor).
SAMPLE_PER_BATCH = 200_000


@keras.saving.register_keras_serializable("blazepose_tf")
class FakeQuant(keras.layers.Layer):
    """Per-tensor asymmetric 8-bit fake quantization over a fixed (calibrated, not trained) range."""

    def build(self, input_shape) -> None:
        self.range_min = self.add_weight(shape=(), initializer="zeros", trainable=False, name="range_min")
        self.range_max = self.add_weight(shape=(), initializer="ones", trainable=False, name="range_max")

    def call(self, x):
        lo = tf.minimum(tf.convert_to_tensor(self.range_min), 0.0)   # int8 ranges always hold zero
        hi = tf.maximum(tf.convert_to_tensor(self.range_max), lo + 1e-6)
        return tf.quantization.fake_quant_with_min_max_vars(x, lo, hi, num_bits=8)

    def compute_output_shape(self, input_shape):
        return input_shape


def quantize_kernel(kernel: tf.Tensor, depthwise: bool) -> tf.Tensor:
    """A convolution kernel rounded as the converter rounds it: per output channel, symmetric, 255 levels
    (straight-through gradient). Conv2D kernels are (h, w, in, out), depthwise ones (h, w, channels, 1)."""
    shape = tf.shape(kernel)
    k = tf.reshape(kernel, tf.concat([shape[:2], [-1]], 0)) if depthwise else kernel
    axes = list(range(len(k.shape) - 1))
    m = tf.stop_gradient(tf.maximum(tf.reduce_max(tf.abs(k), axis=axes), 1e-12))
    q = tf.quantization.fake_quant_with_min_max_vars_per_channel(k, -m, m, num_bits=8, narrow_range=True)
    return tf.reshape(q, shape) if depthwise else q


class QuantizedWeights(keras.layers.Layer):
    """Calls a Conv2D or DepthwiseConv2D layer with its kernel rounded by :func:`quantize_kernel` (the wrapped
    layer's own variables: trained through this view, saved with the float model)."""

    def __init__(self, layer, **kwargs):
        super().__init__(name=f"wq_{layer.name}", **kwargs)
        self.inner = layer

    def call(self, x):
        layer = self.inner
        depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
        kernel = quantize_kernel(layer.kernel, depthwise)
        if depthwise:
            y = keras.ops.depthwise_conv(x, kernel, strides=layer.strides, padding=layer.padding,
                                         data_format=layer.data_format, dilation_rate=layer.dilation_rate)
        else:
            y = layer.convolution_op(x, kernel)
        if layer.use_bias:
            y = y + layer.bias
        return layer.activation(y) if layer.activation is not None else y

    def compute_output_shape(self, input_shape):
        return self.inner.compute_output_shape(input_shape)


def _consumers(model) -> dict[str, list]:
    out: dict[str, list] = {}
    for layer in model.layers:
        for t in layer._inbound_nodes[0].input_tensors if layer._inbound_nodes else ():
            out.setdefault(t._keras_history[0].name, []).append(layer)
    return out


def _is_fusable_activation(layer) -> bool:
    return (type(layer).__name__ in ("Activation", "ReLU")
            and getattr(getattr(layer, "activation", None), "__name__", "relu") in FUSABLE)


def quantization_points(model) -> list[str]:
    """Names of ``model``'s layers whose outputs a full-integer TFLite export stores as int8 tensors (see the
    module docstring), in graph order."""
    consumers = _consumers(model)
    points = []
    for layer in model.layers:
        kind = type(layer).__name__
        if kind not in QUANTIZED_TYPES:
            continue
        after = consumers.get(layer.name, [])
        fused = kind not in ("Activation", "ReLU") and len(after) == 1 and _is_fusable_activation(after[0])
        if not fused:
            points.append(layer.name)
    return points


def _positions(layer) -> int:
    shape = layer._inbound_nodes[0].output_tensors[0].shape
    return int(np.prod(shape[1:-1])) if len(shape) > 2 else 1


def head_points(model, points: Sequence[str]) -> set[str]:
    """The points that compute a model output, directly or through layers that keep values or apply a fixed
    function (reshapes, a sigmoid): the export leaves their ranges at min/max (clipping them moves keypoints)."""
    wanted, heads = set(points), set()
    for t in model.outputs:
        layer = t._keras_history[0]
        while layer.name not in wanted:
            ins = layer._inbound_nodes[0].input_tensors
            if len(ins) != 1 or type(layer).__name__ not in ("BatchReshape", "Reshape", "Activation"):
                break
            layer = ins[0]._keras_history[0]
        if layer.name in wanted:
            heads.add(layer.name)
    return heads


def unsupported_layers(model) -> list[str]:
    """``name (type)`` of the layers of ``model`` the simulation cannot map one to one onto the int8 export: layer
    types it does not know (e.g. BatchNormalization, which the converter folds into the convolution before it),
    channels-first or grouped convolutions, and activations TFLite would not fuse as plain ReLUs."""
    bad = []
    for layer in model.layers:
        kind = type(layer).__name__
        ok = kind in QUANTIZED_TYPES + SCALE_KEEPING_TYPES
        if kind in ("Conv2D", "DepthwiseConv2D"):
            ok = (layer.data_format == "channels_last" and getattr(layer, "groups", 1) == 1
                  and getattr(layer, "depth_multiplier", 1) == 1)
        elif kind == "ReLU":
            ok = not layer.negative_slope and not layer.threshold
        elif kind == "Activation":
            ok = layer.activation.__name__ in FUSABLE + ("sigmoid",)
        if not ok:
            bad.append(f"{layer.name} ({kind})")
    return bad


class SimulatedInt8:
    """The fake-quant layers of one float model, shared by every view built from it, so one calibration sets
    the ranges all views use."""

    def __init__(self, model, points: Optional[Sequence[str]] = None, float_tail: bool = True):
        problems = unsupported_layers(model)
        if problems:
            raise ValueError(f"{model.name} has layers the simulation does not map to the int8 export: "
                             + ", ".join(problems[:5]) + (" ..." if len(problems) > 5 else ""))
        self.model = model
        self.points = list(points) if points is not None else quantization_points(model)
        # The low-resolution tail (outputs of at most MIN_POSITIONS positions) in float, as int8-selective keeps it.
        self.float_layers = {layer.name for layer in model.layers
                             if float_tail and layer._inbound_nodes and _positions(layer) <= MIN_POSITIONS}
        self.points = [p for p in self.points if p not in self.float_layers]
        self.layers = {p: FakeQuant(name=FAKE_QUANT_PREFIX + p) for p in [INPUT_POINT, *self.points]}
        self._weighted = {}

    def view(self, model, outputs: Optional[Sequence[str]] = None, name: Optional[str] = None):
        """A functional model with ``model``'s layers (weights shared), kernels rounded and activations fake-
        quantized, whose outputs are a dict of ``model``'s named ``outputs`` (default all of them)."""
        outputs = list(model.output_names if outputs is None else outputs)
        wanted = set(self.points)

        def call(layer, ins):
            if (isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))
                    and layer.name not in self.float_layers):
                if layer.name not in self._weighted:
                    self._weighted[layer.name] = QuantizedWeights(layer)
                wrapper = self._weighted[layer.name]
                out = wrapper(ins[0])
            else:
                out = default_call(layer, ins)
            return self.layers[layer.name](out) if layer.name in wanted else out

        wired = rewire(model, outputs, call, input_call=self.layers[INPUT_POINT])
        return keras.Model(wired["input"], {o: wired[o] for o in outputs}, name=name or model.name + "_int8sim")

    def calibrate(self, batches: Iterable[np.ndarray], percentile: float = RANGE_PERCENTILE,
                  seed: int = 0) -> dict[str, tuple[float, float]]:
        """Sets every range from the float model's tensors over ``batches`` (see the module docstring) and
        returns them."""
        model = self.model
        probes = keras.Model(model.inputs, [model.get_layer(p)._inbound_nodes[0].output_tensors[0]
                                            for p in self.points])
        keep_minmax = {INPUT_POINT} | head_points(model, self.points) | {
            p for p in self.points if _positions(model.get_layer(p)) <= MIN_POSITIONS}
        rng = np.random.default_rng(seed)
        lo = {p: np.inf for p in [INPUT_POINT, *self.points]}
        hi = {p: -np.inf for p in lo}
        samples: dict[str, list] = {p: [] for p in lo}
        run = tf.function(lambda x: probes(x, training=False), reduce_retracing=True, autograph=False)
        seen = 0
        for batch in batches:
            batch = np.asarray(batch, np.float32)
            seen += len(batch)
            values = run(batch)
            values = values if isinstance(values, (list, tuple)) else [values]
            for p, v in [(INPUT_POINT, batch), *zip(self.points, values)]:
                v = np.asarray(v).ravel()
                lo[p], hi[p] = min(lo[p], float(v.min())), max(hi[p], float(v.max()))
                if p not in keep_minmax:
                    samples[p].append(v if v.size <= SAMPLE_PER_BATCH
                                      else rng.choice(v, SAMPLE_PER_BATCH, replace=False))
        if not seen:
            raise ValueError("calibration needs at least one batch")
        ranges = {}
        for p, layer in self.layers.items():
            a, b = lo[p], hi[p]
            if p not in keep_minmax:
                v = np.concatenate(samples[p])
                a = min(float(np.percentile(v, 100.0 - percentile)), 0.0) if a < 0 else a
                b = max(float(np.percentile(v, percentile)), 0.0) if b > 0 else b
            if not layer.built:
                layer.build(())
            layer.range_min.assign(a)
            layer.range_max.assign(b)
            ranges[p] = (a, b)
        return ranges
