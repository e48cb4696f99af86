"""Walking and re-wiring functional Keras graphs: which layers a tensor depends on (to tell a tracker's branches
apart: ``--trainable=regression_branch`` trains the layers that feed the landmarks and not the heatmap), and a copy
of a model's graph, sharing its layers and weights, in which each layer's call may be replaced or followed by
something else (the simulated-int8 views of :mod:`blazepose_tf.models.fake_quant`)."""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence


def upstream_layers(tensor) -> set[str]:
    """Names of all layers a Keras tensor depends on (its own layer included), through each layer's first
    call: the graph of the functional model the layers were built in."""
    seen: set[str] = set()
    stack = [tensor]
    while stack:
        t = stack.pop()
        layer = t._keras_history[0]
        if layer.name in seen:
            continue
        seen.add(layer.name)
        node = layer._inbound_nodes[0]
        stack.extend(node.input_tensors)
    return seen


# call(layer, inputs) -> the layer's new output tensor; inputs is a list of the already re-wired input tensors.
LayerCall = Callable[[Any, list], Any]


def default_call(layer, inputs: list):
    """Calls ``layer`` as it was called in its own graph (one input, or a list of them)."""
    return layer(inputs if len(inputs) > 1 else inputs[0])


def rewire(model, outputs: Sequence[str], call: LayerCall = default_call,
           input_call: Optional[Callable[[Any], Any]] = None) -> dict[str, Any]:
    """Re-runs ``model``'s graph (its layers and weights, shared) from a new input, layer by layer in order,
    through ``call``; returns ``{"input": new input, <output name>: new tensor}`` for the named ``outputs``.
    ``input_call`` may transform the new input before the first layer sees it. Raises ``ValueError`` for an
    output ``model`` does not have."""
    import keras

    by_name = dict(zip(model.output_names, model.outputs))
    unknown = [o for o in outputs if o not in by_name]
    if unknown:
        raise ValueError(f"{model.name} has no outputs {unknown} (it has {list(by_name)})")
    wanted = [by_name[o] for o in outputs]
    needed = set().union(*(upstream_layers(t) for t in wanted))
    src = model.inputs[0]
    inp = keras.Input(src.shape[1:], name="image")
    mapped = {id(src): input_call(inp) if input_call else inp}
    for layer in model.layers:
        if type(layer).__name__ == "InputLayer" or layer.name not in needed:
            continue
        node = layer._inbound_nodes[0]
        mapped[id(node.output_tensors[0])] = call(layer, [mapped[id(t)] for t in node.input_tensors])
    return {"input": inp, **{o: mapped[id(t)] for o, t in zip(outputs, wanted)}}
