"""Closed-form refit of a tracker's landmark head: a ridge-regression residual added to the head's own weights.

A tracker's landmarks are one linear layer (the *head*: a ``Dense``, or a ``Conv2D`` whose kernel covers its whole
input, as the official Full's 2×2 "valid" ``convld_3d`` on its 2×2×288 map) applied to the *penultimate features*
(the head's input, flattened: 1,152 values for the Full). Refitting a few of the head's output columns in closed
form, from those features to annotated coordinates, changes nothing else in the model: the untouched columns keep
the original weights bit for bit, and the residual is zero where no point was refit.

Ridge (per output column, the same features for all)::

    W, b = argmin  Σ_n ‖X_n W + b − R_n‖² / N  +  λ ‖W‖²        (b unpenalized; R = target − original output)

solved through one eigendecomposition of the centred features' covariance, so every λ of a grid costs one
matrix product (:class:`RidgeSolver`). λ is per training sample (the mean squared error is penalized), so it
keeps its meaning when the number of crops changes; the "λ = 10 on 3,000 crops" of issue #16 (a sum of squares)
is λ ≈ 3.3e-3 here.

The heatmap the runtime refines landmarks with (docs/design.md §6.2) can be switched off per point
(:func:`silence_heatmap_channels`): the channel's kernel becomes 0 and its bias a constant logit well below the
refinement's confidence gate, so neither this runtime nor MediaPipe's moves those points back to the heatmap's
(MediaPipe's) labelling convention.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Sequence

import keras
import numpy as np

from blazepose_tf.contract import VALUES_PER_LANDMARK
from blazepose_tf.errors import ModelError

#: A silenced heatmap channel's constant logit: sigmoid(−10) ≈ 4.5e-5, far under the refinement's 0.5 gate, and
#: within the range the official heatmap's other channels already span (so an int8 export keeps its scale).
SILENT_HEATMAP_LOGIT = -10.0
#: Output roles read by the refit (names of the tracker's outputs).
LANDMARKS_OUTPUT = "landmarks"
HEATMAP_OUTPUT = "heatmap"


def _output(model: keras.Model, name: str):
    """The symbolic output tensor named ``name`` of a functional model; None when it has none."""
    names = list(model.output_names)
    return model.outputs[names.index(name)] if name in names else None


def _weighted_producer(tensor) -> keras.layers.Layer:
    """The nearest layer with weights upstream of ``tensor``, through weightless single-input layers (reshapes)."""
    layer = tensor._keras_history[0]
    while not layer.weights:
        inputs = layer._inbound_nodes[0].input_tensors
        if len(inputs) != 1:
            raise ModelError(f"layer {layer.name!r} between the landmark head and the output has several inputs")
        layer = inputs[0]._keras_history[0]
    return layer


def landmark_head(model: keras.Model) -> keras.layers.Layer:
    """The layer computing the ``landmarks`` output: a ``Dense``, or a ``Conv2D`` whose kernel covers its input
    with "valid" padding (one output cell). Anything else is a one-line :class:`ModelError`."""
    out = _output(model, LANDMARKS_OUTPUT)
    if out is None:
        raise ModelError(f"model {model.name!r} has no {LANDMARKS_OUTPUT!r} output")
    layer = _weighted_producer(out)
    if isinstance(layer, keras.layers.Dense):
        return layer
    if isinstance(layer, keras.layers.Conv2D) and not isinstance(layer, keras.layers.DepthwiseConv2D):
        in_hw = tuple(layer.input.shape[1:3])
        if (tuple(layer.kernel_size) == in_hw and tuple(layer.output.shape[1:3]) == (1, 1)
                and layer.get_config().get("activation") in ("linear", None)):
            return layer
    raise ModelError(f"landmark head {layer.name!r} ({type(layer).__name__}) is not a linear Dense or a Conv2D "
                     "covering its whole input: it cannot be refit in closed form")


def heatmap_layer(model: keras.Model) -> keras.layers.Layer | None:
    """The ``Conv2D`` producing the ``heatmap`` output (one channel per landmark point), or None."""
    out = _output(model, HEATMAP_OUTPUT)
    if out is None:
        return None
    layer = _weighted_producer(out)
    if not isinstance(layer, keras.layers.Conv2D) or isinstance(layer, keras.layers.DepthwiseConv2D):
        raise ModelError(f"heatmap layer {layer.name!r} is a {type(layer).__name__}, not a Conv2D")
    return layer


def feature_model(model: keras.Model) -> keras.Model:
    """A model sharing ``model``'s layers whose outputs are ``features`` (the landmark head's input, flattened to
    (B, F)) followed by all of ``model``'s outputs, under the same names."""
    head = landmark_head(model)
    feats = keras.layers.Flatten(name="features")(head.input)
    names = ["features", *model.output_names]
    return keras.Model(model.inputs, dict(zip(names, [feats, *model.outputs])), name=f"{model.name}_features")


def head_matrix(layer: keras.layers.Layer) -> tuple[np.ndarray, np.ndarray]:
    """The head as a matrix on the flattened features: (F, O) weights and (O,) bias (float64)."""
    kernel, bias = (np.asarray(w, np.float64) for w in layer.get_weights()[:2])
    return kernel.reshape(-1, kernel.shape[-1]), bias


def coordinate_columns(points: Sequence[int]) -> np.ndarray:
    """Head output columns of the x and y of ``points`` (5 values per point: x, y, z, visibility, presence),
    in order x0, y0, x1, y1, ..."""
    return np.array([p * VALUES_PER_LANDMARK + axis for p in points for axis in (0, 1)], np.int64)


@dataclass
class Residual:
    """A fitted residual of some head columns: ``columns`` (C,), ``weights`` (F, C), ``bias`` (C,)."""

    columns: np.ndarray
    weights: np.ndarray
    bias: np.ndarray

    def predict(self, features: np.ndarray) -> np.ndarray:
        """(N, C) residual of (N, F) features."""
        return np.asarray(features, np.float64) @ self.weights + self.bias

    def subset(self, columns: Sequence[int]) -> "Residual":
        """The residual of some of its columns (by head column number)."""
        where = [int(np.nonzero(self.columns == c)[0][0]) for c in columns]
        return Residual(np.asarray(columns, np.int64), self.weights[:, where], self.bias[where])


class RidgeSolver:
    """Ridge regressions of several targets on one feature matrix, for any λ, from one eigendecomposition.

    Args:
        features: (N, F) training features.
    """

    def __init__(self, features: np.ndarray):
        x = np.asarray(features, np.float64)
        if x.ndim != 2 or len(x) < 2:
            raise ValueError(f"need an (N >= 2, F) feature matrix, got shape {x.shape}")
        self.mean = x.mean(axis=0)
        self._xc = x - self.mean
        cov = self._xc.T @ self._xc / len(x)
        self.eigenvalues, self.eigenvectors = np.linalg.eigh(cov)
        self.eigenvalues = np.clip(self.eigenvalues, 0.0, None)

    def fit(self, targets: np.ndarray, lam: float, columns: Sequence[int]) -> Residual:
        """The ridge fit of (N, C) ``targets`` at penalty ``lam`` (> 0), labelled with the head ``columns``."""
        if lam <= 0:
            raise ValueError(f"the ridge penalty must be > 0, got {lam}")
        y = np.asarray(targets, np.float64)
        y_mean = y.mean(axis=0)
        xty = self._xc.T @ (y - y_mean) / len(y)
        v = self.eigenvectors
        weights = v @ ((v.T @ xty) / (self.eigenvalues + lam)[:, None])
        return Residual(np.asarray(columns, np.int64), weights, y_mean - self.mean @ weights)


@contextlib.contextmanager
def weights_restored(model: keras.Model) -> Iterator[keras.Model]:
    """``model``, with every weight it has on entering put back on leaving (also after an error): a loaded model
    can be refit, saved and used again as it was."""
    weights = model.get_weights()
    try:
        yield model
    finally:
        model.set_weights(weights)


def add_residual(model: keras.Model, residual: Residual) -> None:
    """Adds ``residual`` to the head of ``model`` in place: its columns get weights += residual; every other
    column is left exactly as it was."""
    layer = landmark_head(model)
    weights, bias = head_matrix(layer)
    if residual.weights.shape[0] != weights.shape[0]:
        raise ModelError(f"residual has {residual.weights.shape[0]} features, head {layer.name!r} "
                         f"{weights.shape[0]}")
    kernel, old_bias = (np.array(w) for w in layer.get_weights()[:2])
    flat_k = kernel.reshape(-1, kernel.shape[-1])
    flat_b = old_bias.reshape(-1)
    cols = residual.columns
    # only the refit columns are rewritten (in float64, then cast), the others keep their stored values
    flat_k[:, cols] = (weights[:, cols] + residual.weights).astype(kernel.dtype)
    flat_b[cols] = (bias[cols] + residual.bias).astype(old_bias.dtype)
    layer.set_weights([flat_k.reshape(kernel.shape), flat_b.reshape(old_bias.shape), *layer.get_weights()[2:]])


def silence_heatmap_channels(model: keras.Model, points: Sequence[int],
                             logit: float = SILENT_HEATMAP_LOGIT) -> None:
    """Makes the heatmap channels of ``points`` a constant ``logit`` (kernel 0, bias ``logit``), in place, so
    heatmap refinement never fires for them; a model without a heatmap is left as it is."""
    layer = heatmap_layer(model)
    if layer is None:
        return
    kernel, bias = (np.array(w) for w in layer.get_weights()[:2])
    idx = list(points)
    kernel[..., idx] = 0.0
    bias[idx] = logit
    layer.set_weights([kernel, bias, *layer.get_weights()[2:]])


def heatmap_input_model(model: keras.Model) -> keras.Model:
    """A model sharing ``model``'s layers whose output is the input of its heatmap layer (the feature map the
    heatmap convolution reads)."""
    layer = _required_heatmap_layer(model)
    return keras.Model(model.inputs, layer.input, name=f"{model.name}_heatmap_input")


def _required_heatmap_layer(model: keras.Model, refittable: bool = False) -> keras.layers.Layer:
    """:func:`heatmap_layer`, or a one-line :class:`ModelError` when there is none (or, with ``refittable``, when
    it is not a convolution :func:`refittable_heatmap` accepts)."""
    layer = heatmap_layer(model)
    if layer is None:
        raise ModelError(f"{model.name} has no heatmap output")
    k = layer.kernel_size
    activation = getattr(layer.activation, "__name__", str(layer.activation))
    if refittable and (k[0] != k[1] or k[0] % 2 == 0 or tuple(layer.strides) != (1, 1)
                       or tuple(layer.dilation_rate) != (1, 1) or layer.padding != "same" or not layer.use_bias
                       or activation != "linear"):
        raise ModelError(f"{model.name}: its heatmap layer {layer.name!r} is not a stride-1, same-padded convolution "
                         f"with an odd square kernel, a bias and no activation; its heatmap cannot be refit")
    return layer


def refittable_heatmap(model: keras.Model) -> tuple[np.ndarray, np.ndarray]:
    """The heatmap convolution's kernel (k, k, C, P) and bias (P,), float64, when it is one a closed-form refit can
    rewrite (:mod:`blazepose_tf.training.heatmap_refit`: odd square kernel, stride 1, no dilation, ``same``
    padding, a bias, no activation); else a one-line :class:`ModelError`."""
    kernel, bias = _required_heatmap_layer(model, refittable=True).get_weights()[:2]
    return np.asarray(kernel, np.float64), np.asarray(bias, np.float64)


def set_heatmap_channels(model: keras.Model, points: Sequence[int], kernel: np.ndarray, bias: np.ndarray) -> None:
    """Replaces the heatmap layer's kernel (k, k, C, len(points)) and bias (len(points),) of ``points``, in place
    (a layer :func:`refittable_heatmap` accepts); every other channel is left bit for bit."""
    layer = _required_heatmap_layer(model, refittable=True)
    old_kernel, old_bias = (np.array(w) for w in layer.get_weights()[:2])
    idx = list(points)
    old_kernel[..., idx] = np.asarray(kernel, old_kernel.dtype)
    old_bias[idx] = np.asarray(bias, old_bias.dtype)
    layer.set_weights([old_kernel, old_bias, *layer.get_weights()[2:]])
