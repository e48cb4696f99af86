"""Simulated int8 activations: a view of a float model (same layers, same weights) in which every tensor the
TFLite full-integer export quantizes per tensor goes through ``tf.quantization.fake_quant_with_min_max_vars``
with the range a min/max calibration gives it, as the converter's would.

Training through this view (``--quantization_noise``; straight-through gradients inside the range, none outside)
teaches the float weights to tolerate int8 activation rounding; the exported model stays a plain float model
and is quantized by the ordinary post-training converter. Weights are not fake-quantized: the converter
quantizes them per output channel, which costs far less than per-tensor activations.

Which tensors are quantized: the model input, and the output of every layer that computes new values
(convolutions, dense layers, adds, activations, resizes), except a layer whose only consumer is an activation
layer (TFLite fuses the activation into it, so only the activation's output is stored). Layers that only move or
select values (padding, pooling, reshapes) keep their input's range and are not quantized again.
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from blazepose_tf.models.graph import default_call, rewire

FAKE_QUANT_PREFIX = "fq_"
INPUT_POINT = "input"
# Layer types whose outputs are new values the int8 model stores at their own scale.
QUANTIZED_TYPES = ("Conv2D", "DepthwiseConv2D", "Dense", "Add", "Multiply", "Activation", "ReLU", "PReLU",
                   "ResizeBilinear", "UpSampling2D", "ChannelAffine", "Concatenate")
FUSED_ACTIVATIONS = ("relu", "relu6", "linear")


@keras.saving.register_keras_serializable("blazepose_tf")
class FakeQuant(keras.layers.Layer):
    """Per-tensor asymmetric 8-bit fake quantization with a fixed (calibrated, not trained) range."""

    def __init__(self, num_bits: int = 8, **kwargs):
        super().__init__(**kwargs)
        self.num_bits = int(num_bits)

    def build(self, input_shape) -> None:
        self.range_min = self.add_weight(shape=(), initializer="zeros", trainable=False, name="range_min")
        self.range_max = self.add_weight(shape=(), initializer="ones", trainable=False, name="range_max")

    def call(self, x):
        lo = tf.minimum(tf.convert_to_tensor(self.range_min), 0.0)   # int8 ranges always hold zero
        hi = tf.maximum(tf.convert_to_tensor(self.range_max), lo + 1e-6)
        return tf.quantization.fake_quant_with_min_max_vars(x, lo, hi, num_bits=self.num_bits)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "num_bits": self.num_bits}


def _consumers(model) -> dict[str, list]:
    out: dict[str, list] = {}
    for layer in model.layers:
        for t in layer._inbound_nodes[0].input_tensors if layer._inbound_nodes else ():
            out.setdefault(t._keras_history[0].name, []).append(layer)
    return out


def quantization_points(model) -> list[str]:
    """Names of ``model``'s layers whose outputs a full-integer TFLite export stores as int8 tensors (see the
    module docstring), in graph order."""
    consumers = _consumers(model)
    points = []
    for layer in model.layers:
        if type(layer).__name__ not in QUANTIZED_TYPES:
            continue
        after = consumers.get(layer.name, [])
        fused = (len(after) == 1 and type(after[0]).__name__ in ("Activation", "ReLU")
                 and getattr(getattr(after[0], "activation", None), "__name__", "relu") in FUSED_ACTIVATIONS
                 and type(layer).__name__ != "Activation")
        if not fused:
            points.append(layer.name)
    return points


class SimulatedInt8:
    """Fake-quant layers for one float model, shared by every view built from it (training and inference
    graphs of the same weights), so one calibration sets the ranges all views use."""

    def __init__(self, model, points: Optional[Sequence[str]] = None):
        self.model = model
        self.points = list(points) if points is not None else quantization_points(model)
        self.layers = {p: FakeQuant(name=FAKE_QUANT_PREFIX + p) for p in [INPUT_POINT, *self.points]}
        self._wanted = set(self.points)

    def view(self, model, outputs: Optional[Sequence[str]] = None, name: Optional[str] = None):
        """A functional model with ``model``'s layers (weights shared) and fake quantization at every point,
        whose outputs are a dict keyed by ``model``'s output names (default all of them)."""
        outputs = list(outputs or model.output_names)

        def call(layer, ins):
            out = default_call(layer, ins)
            return self.layers[layer.name](out) if layer.name in self._wanted else out

        wired = rewire(model, outputs, call, input_call=self.layers[INPUT_POINT])
        return keras.Model(wired["input"], {o: wired[o] for o in outputs}, name=name or model.name + "_int8sim")

    def calibrate(self, batches: Iterable[np.ndarray]) -> dict[str, tuple[float, float]]:
        """Sets every range to the min/max of the float model's tensors over ``batches`` (as the TFLite
        converter's calibration does) and returns them."""
        model = self.model
        probes = keras.Model(model.inputs, [model.get_layer(p)._inbound_nodes[0].output_tensors[0]
                                            for p in self.points])
        lo = {p: np.inf for p in [INPUT_POINT, *self.points]}
        hi = {p: -np.inf for p in lo}
        run = tf.function(lambda x: probes(x, training=False), reduce_retracing=True)
        seen = 0
        for batch in batches:
            batch = np.asarray(batch, np.float32)
            seen += len(batch)
            values = run(batch)
            values = values if isinstance(values, (list, tuple)) else [values]
            for p, v in [(INPUT_POINT, batch), *zip(self.points, values)]:
                v = np.asarray(v)
                lo[p], hi[p] = min(lo[p], float(v.min())), max(hi[p], float(v.max()))
        if not seen:
            raise ValueError("calibration needs at least one batch")
        for p, layer in self.layers.items():
            if not layer.built:
                layer.build(())
            layer.range_min.assign(lo[p])
            layer.range_max.assign(hi[p])
        return {p: (lo[p], hi[p]) for p in lo}


def find_fake_quant_layers(model) -> list[FakeQuant]:
    """The :class:`FakeQuant` layers of a model (empty for a plain float model)."""
    return [layer for layer in model.layers if isinstance(layer, FakeQuant)]
