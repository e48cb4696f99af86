"""The graph of a calibrated model (:func:`export.conversion.calibrate`), for the int8 steps of the export: its
operators as named nodes (the quantizer's node names, short layer labels, MACs), its role-named outputs, and the
two edits the int8 steps make before quantizing (activation ranges, output biases); and the share of an int8
model's multiply-accumulates (MACs) that run in int8 (:func:`mac_split`).

A node's ``name`` is its output tensor's name in the calibrated model: what ``--float_layers`` and the MLIR
quantizer's ``denylisted_nodes`` take. Its ``layer`` is a short label: the Keras layer scope the converter put in
the tensor name (``conv2d_5_1``), or the output role (``heatmap``) for an op that writes a model output.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, Optional, Sequence

import numpy as np

from blazepose_tf.errors import UserError
from blazepose_tf.tflite_file import TFLiteGraph, builtin_op_names
from export.tflite_model import pack, unpack

# Ops whose work is multiply-accumulates: MACs = output elements × the weights one output element reads.
MAC_KINDS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")
# Ops the quantizer never needs to keep in float: exact in int8 (they move or pick values at the same scale) or
# the quantization edges themselves.
EXACT_KINDS = ("QUANTIZE", "DEQUANTIZE", "RESHAPE", "SQUEEZE", "PAD", "PADV2", "MAX_POOL_2D")
SHAPE_KINDS = ("RESHAPE", "SQUEEZE")
FUSED_NONE = 0  # ActivationFunctionType.NONE


def op_macs(kind: str, output_shape: Sequence[int], weight_shape: Optional[Sequence[int]]) -> int:
    """Multiply-accumulates of one op: CONV_2D (weights O×kh×kw×I) output elements × kh·kw·I; DEPTHWISE_CONV_2D
    (1×kh×kw×C) × kh·kw; FULLY_CONNECTED (O×I) × I; TRANSPOSE_CONV (O×kh×kw×I) counted as a convolution;
    anything else 0."""
    if kind not in MAC_KINDS or weight_shape is None or len(weight_shape) == 0:
        return 0
    out = int(np.prod(output_shape))
    w = [int(v) for v in weight_shape]
    if kind == "DEPTHWISE_CONV_2D":
        return out * w[1] * w[2]
    if kind == "FULLY_CONNECTED":
        return out * w[-1]
    return out * int(np.prod(w[1:]))


@dataclass
class MacSplit:
    """MACs of an int8 model by precision."""

    int8: int
    total: int

    @property
    def int8_share(self) -> float:
        """Share of the MACs that run in int8 (1.0 for a model without MACs)."""
        return self.int8 / self.total if self.total else 1.0


def mac_split(model) -> MacSplit:
    """MACs of a .tflite model (path or bytes) in int8 (ops whose activation input is INT8) and in total."""
    g = TFLiteGraph(model)
    int8 = total = 0
    for op in g.ops:
        if op.kind not in MAC_KINDS:
            continue
        data, weights = (op.inputs[2], op.inputs[1]) if op.kind == "TRANSPOSE_CONV" else (op.inputs[0], op.inputs[1])
        macs = op_macs(op.kind, g.tensors[op.outputs[0]].shape, g.tensors[weights].shape)
        total += macs
        if g.tensors[data].dtype == "INT8":
            int8 += macs
    return MacSplit(int8=int8, total=total)


def quantized_outputs(quantized) -> dict[str, int]:
    """{calibrated node name: index of the tensor holding that op's result in the int8 model}. The quantizer keeps
    each op's output name, except for an int8 op that writes a model output: the DEQUANTIZE after it takes the
    name, and the op's own (int8) output is the DEQUANTIZE's input."""
    g = TFLiteGraph(quantized)
    found = {t.name: i for i, t in enumerate(g.tensors)}
    for op in g.ops:
        if op.kind == "DEQUANTIZE" and op.inputs[0] in g.producer:
            found[g.tensors[op.outputs[0]].name] = op.inputs[0]
    return found


def layer_label(tensor_name: str, layer_names: Optional[Collection[str]] = None) -> str:
    """The Keras layer a converter tensor name comes from: ``m_inference_1/m_1/conv2d_5_1/Relu6;...`` →
    ``conv2d_5`` (the scope after the wrapper and model scopes, without the ``_N`` TensorFlow appends to make
    scope names unique, when ``layer_names`` knows the name without it)."""
    first = tensor_name.split(";")[0]
    parts = first.split("/")
    scope = parts[2] if len(parts) > 3 else parts[-2] if len(parts) >= 2 else first
    stem, sep, suffix = scope.rpartition("_")
    if layer_names is not None and sep and suffix.isdigit() and stem in layer_names:
        return stem
    return scope


@dataclass
class Node:
    """One operator of the calibrated model."""

    index: int                  # operator index
    kind: str                   # builtin op name
    name: str                   # output tensor name (the quantizer's node name)
    layer: str                  # short label (Keras layer scope, or the output role)
    output: int                 # output tensor index
    inputs: list[int]           # input tensor indices (-1: absent)
    shape: tuple[int, ...]      # output shape
    macs: int

    @property
    def candidate(self) -> bool:
        """Whether keeping this op in float can change the int8 model's result (see :data:`EXACT_KINDS`)."""
        return self.kind not in EXACT_KINDS


class CalibratedGraph:
    """A calibrated model (float, with each activation's calibrated min/max), readable and editable.

    Args:
        calibrated: the flatbuffer from :func:`export.conversion.calibrate`.
        layer_names: the Keras model's layer names, for the nodes' ``layer`` labels (:func:`layer_label`).
    """

    def __init__(self, calibrated: bytes, layer_names: Optional[Collection[str]] = None):
        self.tree = unpack(calibrated)
        self.subgraph = self.tree.subgraphs[0]
        names = builtin_op_names()
        codes = [names.get(max(int(c.builtinCode), int(c.deprecatedBuiltinCode)), "CUSTOM")
                 for c in self.tree.operatorCodes]
        self.outputs: dict[str, int] = {}
        for sd in self.tree.signatureDefs or []:
            for tmap in sd.outputs or []:
                key = tmap.name.decode() if isinstance(tmap.name, bytes) else tmap.name
                self.outputs[key] = int(tmap.tensorIndex)
        role_of = {i: r for r, i in self.outputs.items()}
        self.nodes: list[Node] = []
        for k, op in enumerate(self.subgraph.operators or []):
            kind = codes[op.opcodeIndex]
            out = int(op.outputs[0])
            ins = [int(v) for v in op.inputs]
            weights = ins[1] if kind in MAC_KINDS and len(ins) > 1 else -1
            name = self.tensor_name(out)
            label = role_of.get(out, layer_label(name, layer_names))
            macs = op_macs(kind, self.shape(out), self.shape(weights) if weights >= 0 else None)
            self.nodes.append(Node(index=k, kind=kind, name=name, layer=label, output=out, inputs=ins,
                                   shape=self.shape(out), macs=macs))
        self.producer = {n.output: n for n in self.nodes}
        self.total_macs = sum(n.macs for n in self.nodes)

    # -- tensors ------------------------------------------------------------------------------------------
    def shape(self, index: int) -> tuple[int, ...]:
        shape = self.subgraph.tensors[index].shape
        return tuple(int(v) for v in shape) if shape is not None else ()

    def tensor_name(self, index: int) -> str:
        name = self.subgraph.tensors[index].name
        return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)

    def constant(self, index: int) -> Optional[np.ndarray]:
        """A float32 constant tensor's values (a view to edit in place), or None."""
        t = self.subgraph.tensors[index]
        data = self.tree.buffers[t.buffer].data if t.buffer else None
        if data is None or len(data) == 0 or t.type != 0:  # 0: FLOAT32
            return None
        arr = np.frombuffer(np.asarray(data, np.uint8).tobytes(), np.float32).copy()
        return arr.reshape(self.shape(index)) if self.shape(index) else arr

    def set_constant(self, index: int, value: np.ndarray) -> None:
        """Replaces a float32 constant tensor's values (in a buffer of its own: the converter shares a buffer
        between constants with the same bytes, e.g. a zero bias and an integer zero)."""
        t = self.subgraph.tensors[index]
        data = np.frombuffer(np.asarray(value, np.float32).tobytes(), np.uint8)
        if sum(1 for other in self.subgraph.tensors if other.buffer == t.buffer) > 1:
            buffer = type(self.tree.buffers[t.buffer])()
            self.tree.buffers.append(buffer)
            t.buffer = len(self.tree.buffers) - 1
        self.tree.buffers[t.buffer].data = data

    def own_bias(self, node: Node, channels: int) -> int:
        """The float32 bias tensor of a FULLY_CONNECTED / (DEPTHWISE_)CONV_2D op, made its own to edit: the
        converter shares one constant tensor between ops with identical biases (a copy is made) and drops
        all-zero biases (a zero bias of ``channels`` entries is added). Returns its tensor index."""
        op = self.subgraph.operators[node.index]
        inputs = [int(v) for v in op.inputs] + [-1] * (3 - len(op.inputs))
        old = inputs[2]
        if old >= 0 and sum(int(v) == old for other in self.subgraph.operators for v in other.inputs) == 1:
            return old
        value = self.constant(old) if old >= 0 else np.zeros(channels, np.float32)
        tensor = type(self.subgraph.tensors[node.output])()
        tensor.shape, tensor.type = np.asarray([value.size], np.int32), 0   # 0: FLOAT32
        tensor.name = f"{self.tensor_name(node.output)}/bias"
        self.tree.buffers.append(type(self.tree.buffers[0])())
        tensor.buffer = len(self.tree.buffers) - 1
        self.subgraph.tensors.append(tensor)
        inputs[2] = len(self.subgraph.tensors) - 1
        self.set_constant(inputs[2], np.asarray(value, np.float32).ravel())
        op.inputs = np.asarray(inputs, np.int32)
        node.inputs = inputs
        return inputs[2]

    def is_constant(self, index: int) -> bool:
        t = self.subgraph.tensors[index]
        data = self.tree.buffers[t.buffer].data if t.buffer else None
        return data is not None and len(data) > 0

    def range(self, index: int) -> Optional[tuple[float, float]]:
        """A tensor's calibrated (min, max), or None when it has none (constants, int tensors)."""
        q = self.subgraph.tensors[index].quantization
        if q is None or q.min is None or q.max is None or len(q.min) != 1:
            return None
        return float(q.min[0]), float(q.max[0])

    def set_range(self, index: int, lo: float, hi: float) -> None:
        """Replaces a tensor's calibrated range (what the quantizer derives its int8 scale from)."""
        q = self.subgraph.tensors[index].quantization
        q.min = np.asarray([lo], np.float32)
        q.max = np.asarray([hi], np.float32)

    def activation_tensors(self) -> list[int]:
        """Computed tensors that carry a calibrated range (the model input included)."""
        seen = [int(i) for i in self.subgraph.inputs] + [n.output for n in self.nodes]
        return [i for i in dict.fromkeys(seen) if self.range(i) is not None and not self.is_constant(i)]

    def fused_activation(self, node: Node) -> int:
        """The op's fused activation (0: none; ops without the option count as none)."""
        options = self.subgraph.operators[node.index].builtinOptions
        return int(getattr(options, "fusedActivationFunction", FUSED_NONE) or FUSED_NONE)

    def to_bytes(self) -> bytes:
        """The (edited) calibrated model."""
        return pack(self.tree)

    # -- names --------------------------------------------------------------------------------------------
    def resolve(self, items: Sequence[str]) -> list[Node]:
        """The nodes ``--float_layers`` names: each item is a node's full tensor name, its layer label (every op
        with that label), or ``#K`` (operator K). Raises :class:`UserError` on an unknown item."""
        chosen: dict[int, Node] = {}
        for item in items:
            item = item.strip()
            if not item:
                continue
            if item.startswith("#") and item[1:].isdigit() and int(item[1:]) < len(self.nodes):
                found = [self.nodes[int(item[1:])]]
            else:
                found = [n for n in self.nodes if item in (n.name, n.layer)]
            found = [n for n in found if n.candidate]
            if not found:
                known = ", ".join(n.layer for n in self.nodes if n.candidate)
                raise UserError(f"--float_layers: no quantizable layer named {item!r} (layers: {known[:400]}...)")
            chosen.update({n.index: n for n in found})
        return [chosen[k] for k in sorted(chosen)]


@dataclass
class FloatGroup:
    """The ops to keep in float so that one activation tensor stays float: its producer and its consumers (through
    exact ops such as PAD, which must stay float with it). Keeping a single op float removes only its weights' and
    its own rounding error: its int8 input and its output, quantized again for the next op, stay quantized."""

    layer: str                  # the producer's label
    nodes: list[Node]

    @property
    def names(self) -> list[str]:
        return [n.name for n in self.nodes]


def float_groups(graph: CalibratedGraph) -> list[FloatGroup]:
    """One :class:`FloatGroup` per tensor a quantizable op writes, in graph order."""
    consumers: dict[int, list[Node]] = {}
    for n in graph.nodes:
        for i in n.inputs:
            if i >= 0:
                consumers.setdefault(i, []).append(n)
    groups = []
    for n in graph.nodes:
        if not n.candidate:
            continue
        members, stack = {n.index: n}, list(consumers.get(n.output, []))
        while stack:
            c = stack.pop()
            if c.index not in members and c.kind not in ("QUANTIZE", "DEQUANTIZE"):
                members[c.index] = c
                if not c.candidate:                      # PAD, RESHAPE, ...: their output must stay float too
                    stack.extend(consumers.get(c.output, []))
        groups.append(FloatGroup(n.layer, [members[k] for k in sorted(members)]))
    return groups
