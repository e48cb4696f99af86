"""Depth-pruned official Full: Lite-cost trackers that start from MediaPipe's Full weights.

The converted official Full (:func:`blazepose_tf.models.convert_official.pose_landmark_full`) computes its
landmarks from the backbone and the regression head only: the heatmap decoder and the 256×256 segmentation
branch feed nothing the pipeline needs. A pruned tracker keeps the graph and the official weights but

* drops those two branches (outputs ``landmarks``, ``presence`` and ``world``; no heatmap, so the pipeline
  skips heatmap refinement), and
* skips whole residual blocks of the backbone: the block's ``Add`` is replaced by its shortcut input, so the
  block's expand / depthwise / project convolutions disappear from the graph.

Skipping even one block of the folded-BatchNorm official network drops dev PCK from 60.6 to about 5, so each
run of skipped blocks is first replaced by its best linear approximation: the blocks start right after a
linear 1×1 projection, so ``y ≈ A·x + b`` (fitted by least squares on real crops, :func:`fit_linear_skips`)
folds into that projection's kernel and bias at no cost. Distillation from the official Full then recovers
the rest (``configs/lite_pruned.flags``). The architecture lives here with its presets; its weights come from the
converted official model, so there is no separate weight conversion.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from blazepose_tf.models.graph import default_call, rewire, upstream_layers

OUTPUTS = ("landmarks", "presence", "world")
# Activations present in the official Full and in every pruned preset, matched during distillation: the
# expand convolution after each stage (its input is the stage's last residual sum, or its shortcut when that
# block is skipped) and the regression head's last block.
FEATURE_LAYERS = ("conv2d_6", "conv2d_10", "conv2d_16", "conv2d_22", "conv2d_30", "add_22_relu6")
FEATURE_PREFIX = "feature/"


@dataclass(frozen=True)
class PrunedConfig:
    """Which residual ``Add`` layers of the converted official Full to skip, and the linear fits that stand in
    for them: ``(projection conv, teacher add)`` pairs, the conv's output mapped onto the add's."""

    name: str
    skip_adds: tuple[str, ...]
    linear_fits: tuple[tuple[str, str], ...] = ()


# Residual blocks of the official Full backbone by resolution (layer names of the converted model):
# 64×64: add; 32×32: add_1; 16×16: add_2, add_3 (64 ch), add_4, add_5 (88 ch); 8×8: add_6, add_7, add_8.
# Each stage's first block follows the linear projection conv2d_3 / conv2d_7 / conv2d_11 / conv2d_17 / conv2d_23.
PRUNED_PRESETS: dict[str, PrunedConfig] = {
    "pruned_none": PrunedConfig("pruned_none", ()),
    "pruned_lite": PrunedConfig(
        "pruned_lite", ("add", "add_1", "add_2", "add_4", "add_6", "add_7"),
        (("conv2d_3", "add"), ("conv2d_7", "add_1"), ("conv2d_11", "add_2"), ("conv2d_17", "add_4"),
         ("conv2d_23", "add_7"))),
    "pruned_lite_min": PrunedConfig(
        "pruned_lite_min", ("add", "add_1", "add_2", "add_3", "add_4", "add_5", "add_6", "add_7", "add_8"),
        (("conv2d_3", "add"), ("conv2d_7", "add_1"), ("conv2d_11", "add_3"), ("conv2d_17", "add_5"),
         ("conv2d_23", "add_8"))),
}


def prune_full(full, skip_adds: Sequence[str], outputs: Sequence[str] = OUTPUTS, name: str = "pruned_full"):
    """A new functional model sharing ``full``'s layers with the named residual adds replaced by their
    shortcut and only ``outputs`` kept. Raises ``ValueError`` for an unknown or non-residual add."""
    import keras

    layers = {layer.name: layer for layer in full.layers}
    for add in skip_adds:
        layer = layers.get(add)
        if layer is None or type(layer).__name__ != "Add":
            raise ValueError(f"{add!r} is not an Add layer of {full.name}")
    shortcut_of: dict[str, int] = {}
    for add in skip_adds:
        a, b = layers[add]._inbound_nodes[0].input_tensors
        if a._keras_history[0].name in upstream_layers(b):
            shortcut_of[add] = 0
        elif b._keras_history[0].name in upstream_layers(a):
            shortcut_of[add] = 1
        else:
            raise ValueError(f"{add!r} has no identity shortcut (a downsampling or merge add): cannot skip it")

    def call(layer, ins):
        return ins[shortcut_of[layer.name]] if layer.name in shortcut_of else default_call(layer, ins)

    try:
        out = rewire(full, outputs, call)
    except ValueError as e:
        raise ValueError(f"pruning: {e}") from None
    return keras.Model(out["input"], [out[o] for o in outputs], name=name)


def build_pruned(preset: str | PrunedConfig, full=None, calibration=None):
    """The pruned tracker of ``preset`` with independent copies of the official weights (``full`` defaults to
    the converted official Full). ``calibration``: crops (N, 256, 256, 3) in [0, 1] for
    :func:`fit_linear_skips`; without them the preset's linear fits are not applied."""
    import keras
    cfg = PRUNED_PRESETS[preset] if isinstance(preset, str) else preset
    if full is None:
        from blazepose_tf.models.convert_official import load_converted
        full = load_converted("pose_landmark_full")
    shared = prune_full(full, cfg.skip_adds, name=cfg.name)
    model = keras.models.clone_model(shared)
    model.set_weights(shared.get_weights())
    if calibration is not None and cfg.linear_fits:
        fit_linear_skips(model, full, cfg.linear_fits, calibration)
    return model


def fit_linear_skips(model, full, fits: Sequence[tuple[str, str]], images: np.ndarray,
                     max_rows: int = 200_000, seed: int = 0) -> dict[str, float]:
    """For each ``(conv, add)`` pair in order: least-squares ``A, b`` with ``full``'s ``add`` output ≈
    ``A·conv + b`` per pixel on ``images``, where ``conv`` is ``model``'s own (linear) projection output after
    the fits before it, so errors do not compound; the fit is folded into that conv's kernel and bias.
    Returns each fit's residual relative to the target's variance."""
    import keras
    rng = np.random.default_rng(seed)
    targets = keras.Model(full.inputs, [full.get_layer(add).output for _, add in fits])
    ys = targets.predict(images, batch_size=16, verbose=0)
    ys = [np.asarray(a) for a in (ys if isinstance(ys, (list, tuple)) else [ys])]
    residuals = {}
    for (conv_name, add_name), y in zip(fits, ys):
        conv = model.get_layer(conv_name)
        if conv.activation is not keras.activations.linear or not conv.use_bias:
            raise ValueError(f"{conv_name} is not a linear convolution with a bias: cannot fold a fit into it")
        x = np.asarray(keras.Model(model.inputs, conv.output).predict(images, batch_size=16, verbose=0))
        x = x.reshape(-1, x.shape[-1]).astype(np.float64)
        y = y.reshape(-1, y.shape[-1]).astype(np.float64)
        if len(x) > max_rows:
            keep = rng.choice(len(x), max_rows, replace=False)
            x, y = x[keep], y[keep]
        xb = np.concatenate([x, np.ones((len(x), 1))], axis=1)
        sol, *_ = np.linalg.lstsq(xb, y, rcond=None)
        a_t, b = sol[:-1], sol[-1]                   # y ≈ x @ a_t + b
        residuals[add_name] = float(((xb @ sol - y) ** 2).mean() / max(y.var(axis=0).mean(), 1e-12))
        kernel, bias = (np.asarray(w, np.float64) for w in conv.get_weights())
        conv.set_weights([(kernel @ a_t).astype(np.float32), (bias @ a_t + b).astype(np.float32)])
    return residuals


def with_features(model, layer_names: Sequence[str] = FEATURE_LAYERS,
                  outputs: Sequence[str] = ("landmarks", "presence")):
    """A view of ``model`` (same weights) whose outputs are a dict: the named ``outputs`` plus
    ``feature/<layer>`` activations for distillation. ``model``'s layers must not be shared with another
    graph (use :func:`build_pruned`'s copies, not :func:`prune_full`'s shared view). Raises ``ValueError``
    for a missing layer."""
    import keras
    by_name = dict(zip(model.output_names, model.outputs))
    out = {name: by_name[name] for name in outputs}
    names = {layer.name for layer in model.layers}
    for n in layer_names:
        if n not in names:
            raise ValueError(f"{model.name} has no layer {n!r} to distil")
        out[FEATURE_PREFIX + n] = model.get_layer(n).output
    return keras.Model(model.inputs, out, name=model.name + "_features")
