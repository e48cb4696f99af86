"""A converted tracker run at a lower resolution inside its own input contract (issue #17's ``lite_fast``).

:func:`at_resolution` rewrites a converted tracker's graph (:mod:`blazepose_tf.models.official_translation`) so
that it takes the same 256² crop, resizes it to ``size``² first (bilinear, half-pixel centres), runs every layer
of the original at that size, and resizes its spatial outputs (``heatmap``, ``segmentation``) back to their
contract sizes. Inputs, output names, shapes and units are the original's, so the runtime, the exports and the
evaluation take it unchanged; its convolutions cost about (size / 256)² of the original's.

Every layer keeps its name and its weights (they do not depend on the spatial size), so a model at 256 starts
the lower-resolution one (``--init_from`` matches layers by name and shape). Two things change beside the sizes:
the graph's fixed upsampling sizes (:class:`ResizeBilinear`) scale with the input, and its 2×2 max-pooling
shortcuts pool with ``same`` padding, so that at sizes whose feature maps become odd (160: 5² at 1/32) they round
up as the stride-2 ``same`` convolutions beside them do (identical at even sizes). The landmarks stay in pixels of
the 256 crop: the regression head has to learn that its features now come from a smaller image, so a model made
here is a start point for training, not a finished model.
"""
from __future__ import annotations

import copy
import re
from typing import Any

import keras

from blazepose_tf.errors import ModelError
from blazepose_tf.models.official_layers import ResizeBilinear

#: The layer the rewritten graph inserts after the input.
INPUT_RESIZE = "input_resize"
#: Suffix of the original spatial output layers, now followed by a resize named as the output.
LOW_SUFFIX = "_low"


def _rename_inputs(node: Any, renames: dict[str, str]) -> Any:
    """``node`` (a layer's serialized inbound nodes) with every reference to a renamed layer renamed."""
    if isinstance(node, dict):
        out = {key: _rename_inputs(value, renames) for key, value in node.items()}
        history = out.get("keras_history")
        if history and history[0] in renames:
            out["keras_history"] = [renames[history[0]], *history[1:]]
        return out
    if isinstance(node, (list, tuple)):
        return [_rename_inputs(value, renames) for value in node]
    return node


def _resize_layer(name: str, size: tuple[int, int], source: str, shape: tuple) -> dict:
    """The serialized config of a :class:`ResizeBilinear` layer ``name`` reading layer ``source``."""
    layer = ResizeBilinear(size, half_pixel_centers=True, name=name)
    return {"module": ResizeBilinear.__module__, "class_name": "ResizeBilinear", "config": layer.get_config(),
            "registered_name": keras.saving.get_registered_name(ResizeBilinear), "name": name,
            "inbound_nodes": [{"args": [{"class_name": "__keras_tensor__", "config": {
                "shape": list(shape), "dtype": "float32", "keras_history": [source, 0, 0]}}], "kwargs": {}}]}


def at_resolution(model: keras.Model, size: int, name: str = "") -> keras.Model:
    """``model`` (a converted tracker: one square image input) running at ``size``² inside its own input size,
    with its weights (see the module docstring).

    Raises:
        ModelError: the model is not a single-input functional tracker, ``size`` is not below its input size and
            a multiple of 16, or the graph does not fit at that size.
    """
    full = int(model.inputs[0].shape[1]) if len(model.inputs) == 1 else 0
    if not full or not hasattr(model, "get_config") or "layers" not in (config := model.get_config()):
        raise ModelError(f"{model.name}: expected a functional tracker with one image input")
    if not 0 < size < full or size % 16:
        raise ModelError(f"input resolution {size} must be a multiple of 16 below the model's {full}")
    config = copy.deepcopy(config)
    image = config["input_layers"][0][0] if isinstance(config["input_layers"][0], list) \
        else config["input_layers"][0]
    spatial = [n for n, t in zip(model.output_names, model.outputs) if len(t.shape) == 4]  # heatmap, segmentation
    renames = {image: INPUT_RESIZE, **{n: n + LOW_SUFFIX for n in spatial}}
    ratio = size / full
    layers = []
    for layer in config["layers"]:
        if layer["name"] == image:
            layers += [layer, _resize_layer(INPUT_RESIZE, (size, size), image, (None, full, full, 3))]
            continue
        layer["inbound_nodes"] = _rename_inputs(layer["inbound_nodes"], renames)
        if layer["class_name"] == "MaxPooling2D":
            layer["config"]["padding"] = "same"
        elif layer["class_name"] == "ResizeBilinear":
            layer["config"]["size"] = [int(round(v * ratio)) for v in layer["config"]["size"]]
        if layer["name"] in renames:
            layer["name"] = layer["config"]["name"] = renames[layer["name"]]
        layers.append(layer)
    for out in spatial:
        shape = tuple(model.get_layer(out).output.shape)
        low = int(round(shape[1] * ratio))
        layers.append(_resize_layer(out, shape[1:3], out + LOW_SUFFIX, (None, low, low, shape[3])))
    config["layers"], config["name"] = layers, name or f"{model.name}_{size}"
    try:
        rebuilt = keras.Model.from_config(config)
    except ValueError as e:
        why = " ".join(line.strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", str(e)).splitlines()[:3] if line.strip())
        raise ModelError(f"{model.name} does not fit at input resolution {size}: {why}") from None
    original = {renames.get(layer.name, layer.name): layer for layer in model.layers}
    for layer in rebuilt.layers:
        if layer.weights:
            layer.set_weights(original[layer.name].get_weights())
    return rebuilt


def internal_resolution(model: keras.Model) -> int:
    """The side a model made by :func:`at_resolution` runs at (its input side otherwise)."""
    try:
        return int(model.get_layer(INPUT_RESIZE).output.shape[1])
    except ValueError:
        return int(model.inputs[0].shape[1])
