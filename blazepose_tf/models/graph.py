"""Walking functional Keras graphs: which layers a tensor depends on. Used to tell a tracker's branches apart
(``--trainable=regression_branch`` trains the layers that feed the landmarks and not the heatmap)."""
from __future__ import annotations


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
