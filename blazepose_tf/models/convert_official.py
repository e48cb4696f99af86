"""Official-weight conversion: MediaPipe's BlazePose .tflite graphs → fine-tunable Keras models.

    python -m blazepose_tf.models.convert_official [--output_dir DIR] [--models pose_detection,pose_landmark_full]
                                                   [--check_export]

Reads ``pose_detection.tflite`` and ``pose_landmark_full.tflite`` (fetched by :mod:`data.fetch_official`),
translates each graph op for op into a Keras 3 functional model with the official weights loaded (fp16
weights dequantized, the detector's sparse weights densified, both from the flatbuffer itself), saves it as
``.keras`` and prints its parameter count and its parity with the .tflite on the offline sample photo.

How the translation works: the TFLite subgraph's operators are walked in order; weight-producing
``DEQUANTIZE``/``DENSIFY`` ops are folded into constants, and every other op becomes one named Keras layer:
``Conv2D``/``DepthwiseConv2D`` with the fused activation, ``Add`` (followed by an ``Activation`` layer when
the add has a fused ReLU6), ``MaxPooling2D``, ``Concatenate``, ``Activation("sigmoid")``, and the custom
layers of :mod:`blazepose_tf.models.official_layers` for ``PAD``, ``RESIZE_BILINEAR`` (exact flags),
``DEPTH_TO_SPACE`` and ``RESHAPE``, so converting the Keras model back to .tflite gives the official op list
(minus the weight ops). Layer names come from the TFLite tensor names where they identify the layer
(``conv2d_12``, ``depthwise_conv2d_3``, ``add_5``...). The outputs are named by role in the official order:
``landmarks, presence, segmentation, heatmap, world`` for the tracker and ``regressors, scores`` for the
detector, so :class:`blazepose_tf.runtime.runners.KerasRunner` and ``PoseTracker`` use them unchanged.
Loading a saved model needs the custom layers registered: ``import blazepose_tf.models.official_layers``
first (:func:`load_converted` does).

The official graphs are inference graphs: batch normalisation is already folded into the convolution kernels
and biases, so the Keras models have no BatchNormalization layers (fine-tuning trains the folded kernels and
biases directly; add normalisation yourself if you need it). See :func:`pose_landmark_full` and
:func:`pose_detection` for how each official architecture differs from the paper's. The paper-style presets
in :mod:`blazepose_tf.models.presets` remain our own trainable architectures.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Optional, Sequence

import numpy as np

from blazepose_tf.errors import ModelError

OFFICIAL_NAMES = ("pose_detection", "pose_landmark_full")
CONVERTER_VERSION = 1  # bump when the translation changes, so cached .keras files are rebuilt

# Parity tolerances (issue acceptance criteria).
LANDMARK_PX_TOL = 0.5       # crop pixels
PROBABILITY_TOL = 1e-3      # visibility / presence after sigmoid
REGRESSOR_PX_TOL = 0.5      # detector input pixels
NMS_TOL = 1e-3              # normalized box / keypoint coordinates and scores after NMS

_FUSED_ACTIVATIONS = {0: None, 1: "relu", 3: "relu6", 4: "tanh"}
_ACTIVATION_NAMES = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}
_WEIGHT_OPS = ("DEQUANTIZE", "DENSIFY")


# --------------------------------------------------------------------------------------------------------------
# Reading the flatbuffer
# --------------------------------------------------------------------------------------------------------------

def load_schema() -> ModuleType:
    """The TFLite flatbuffer schema (generated Python, extracted from the mediapipe wheel by data.fetch_official)."""
    name = "_blazepose_tf_tflite_schema"
    if name in sys.modules:
        return sys.modules[name]
    from blazepose_tf.official import cache_dir, fetch

    path = cache_dir() / "metadata" / "schema_py_generated.py"
    if not path.is_file():
        fetch()
    if not path.is_file():
        raise ModelError(f"TFLite schema not found at {path}; run `python -m data.fetch_official`")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - a broken schema file is a model-setup problem for the user
        del sys.modules[name]
        raise ModelError(f"cannot load the TFLite schema {path}: {e}") from None
    return module


@dataclass
class TensorInfo:
    """One tensor of the subgraph."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str          # TFLite TensorType name, e.g. FLOAT32
    buffer: int


@dataclass
class OpInfo:
    """One operator: its builtin name, tensor indices (-1 = absent optional input) and parsed options."""

    index: int
    kind: str
    inputs: list[int]
    outputs: list[int]
    options: dict = field(default_factory=dict)


_NP_TYPES = {"FLOAT32": np.float32, "FLOAT16": np.float16, "INT32": np.int32, "INT8": np.int8,
             "UINT8": np.uint8, "INT64": np.int64, "INT16": np.int16, "BOOL": np.bool_}


class TFLiteGraph:
    """The first subgraph of a .tflite file (path, or the flatbuffer's bytes): tensors, operators, constants.

    Constants behind ``DEQUANTIZE`` (fp16 or int8) and ``DENSIFY`` (sparse) ops are resolved by
    :meth:`constant`, so weights are read straight from the file, with no interpreter.
    """

    def __init__(self, path: str | os.PathLike | bytes):
        if isinstance(path, (bytes, bytearray)):
            self.path = Path("<memory>.tflite")
            self._raw = bytes(path)
        else:
            self.path = Path(path)
            try:
                self._raw = self.path.read_bytes()
            except OSError as e:
                raise ModelError(f"cannot read {self.path}: {e.strerror}") from None
        S = self._schema = load_schema()
        try:
            self._model = S.Model.GetRootAs(self._raw, 0)
            sg = self._model.Subgraphs(0)
            if sg is None:
                raise ValueError("no subgraph")
            self._sg = sg
        except Exception as e:  # noqa: BLE001 - anything unparsable is a bad model file
            raise ModelError(f"{self.path} is not a TFLite flatbuffer: {e}") from None
        type_names = {v: k for k, v in vars(S.TensorType).items() if not k.startswith("_")}
        op_names = {v: k for k, v in vars(S.BuiltinOperator).items() if not k.startswith("_")}
        self.tensors: list[TensorInfo] = []
        for i in range(sg.TensorsLength()):
            t = sg.Tensors(i)
            shape = tuple(int(v) for v in t.ShapeAsNumpy()) if t.ShapeLength() else ()
            self.tensors.append(TensorInfo(i, (t.Name() or b"").decode(), shape, type_names.get(t.Type(), "?"),
                                           int(t.Buffer())))
        self.ops: list[OpInfo] = []
        for k in range(sg.OperatorsLength()):
            op = sg.Operators(k)
            oc = self._model.OperatorCodes(op.OpcodeIndex())
            code = max(int(oc.BuiltinCode()), int(oc.DeprecatedBuiltinCode()))
            kind = op_names.get(code, f"CUSTOM({(oc.CustomCode() or b'').decode()})")
            info = OpInfo(k, kind, [int(v) for v in op.InputsAsNumpy()], [int(v) for v in op.OutputsAsNumpy()])
            info.options = self._options(op, kind)
            self.ops.append(info)
        self.inputs = [int(v) for v in sg.InputsAsNumpy()]
        self.outputs = [int(v) for v in sg.OutputsAsNumpy()]
        self.producer = {o: op for op in self.ops for o in op.outputs}
        self._cache: dict[int, Optional[np.ndarray]] = {}

    # -- options ------------------------------------------------------------------------------------------
    def _options(self, op, kind: str) -> dict:
        S = self._schema
        table = op.BuiltinOptions()
        classes = {"CONV_2D": "Conv2DOptions", "DEPTHWISE_CONV_2D": "DepthwiseConv2DOptions",
                   "ADD": "AddOptions", "MUL": "MulOptions", "MAX_POOL_2D": "Pool2DOptions",
                   "AVERAGE_POOL_2D": "Pool2DOptions", "RESIZE_BILINEAR": "ResizeBilinearOptions",
                   "CONCATENATION": "ConcatenationOptions", "DEPTH_TO_SPACE": "DepthToSpaceOptions"}
        if kind not in classes or table is None:
            return {}
        o = getattr(S, classes[kind])()
        o.Init(table.Bytes, table.Pos)
        get = {"padding": "Padding", "stride_h": "StrideH", "stride_w": "StrideW",
               "dilation_h": "DilationHFactor", "dilation_w": "DilationWFactor",
               "activation": "FusedActivationFunction", "depth_multiplier": "DepthMultiplier",
               "filter_h": "FilterHeight", "filter_w": "FilterWidth", "align_corners": "AlignCorners",
               "half_pixel_centers": "HalfPixelCenters", "axis": "Axis", "block_size": "BlockSize"}
        out = {key: getattr(o, method)() for key, method in get.items() if hasattr(o, method)}
        if "padding" in out:
            out["padding"] = "same" if out["padding"] == S.Padding.SAME else "valid"
        return out

    # -- constants ----------------------------------------------------------------------------------------
    def _buffer_bytes(self, index: int) -> Optional[bytes]:
        if index <= 0 or index >= self._model.BuffersLength():
            return None
        buf = self._model.Buffers(index)
        offset = int(buf.Offset()) if hasattr(buf, "Offset") else 0
        if offset > 1:  # large models keep buffers after the flatbuffer
            return self._raw[offset:offset + int(buf.Size())]
        if buf.DataLength() == 0:
            return None
        return buf.DataAsNumpy().tobytes()

    def _index_vector(self, kind: int, table) -> np.ndarray:
        S = self._schema
        cls = {S.SparseIndexVector.Int32Vector: S.Int32Vector, S.SparseIndexVector.Uint16Vector: S.Uint16Vector,
               S.SparseIndexVector.Uint8Vector: S.Uint8Vector}.get(kind)
        if cls is None or table is None:
            raise ModelError(f"{self.path.name}: unsupported sparse index vector type {kind}")
        vec = cls()
        vec.Init(table.Bytes, table.Pos)
        return np.asarray(vec.ValuesAsNumpy(), dtype=np.int64).reshape(-1)

    def _densify(self, values: np.ndarray, sparsity, shape: tuple[int, ...]) -> np.ndarray:
        """Decodes TFLite's sparse format (per-dimension DENSE / SPARSE_CSR, no block sparsity)."""
        S = self._schema
        if sparsity.BlockMapLength():
            raise ModelError(f"{self.path.name}: block-sparse tensors are not supported")
        order = [int(v) for v in sparsity.TraversalOrderAsNumpy()] if sparsity.TraversalOrderLength() \
            else list(range(len(shape)))
        pos = np.zeros(1, dtype=np.int64)
        coords = np.zeros((1, 0), dtype=np.int64)
        for level in range(sparsity.DimMetadataLength()):
            dm = sparsity.DimMetadata(level)
            if dm.Format() == S.DimensionType.DENSE:
                size = int(dm.DenseSize())
                n = len(pos)
                pos = (pos[:, None] * size + np.arange(size)[None, :]).reshape(-1)
                coords = np.concatenate([np.repeat(coords, size, axis=0),
                                         np.tile(np.arange(size), n)[:, None]], axis=1)
            else:
                segments = self._index_vector(dm.ArraySegmentsType(), dm.ArraySegments())
                indices = self._index_vector(dm.ArrayIndicesType(), dm.ArrayIndices())
                starts = segments[pos]
                counts = segments[pos + 1] - starts
                first = np.cumsum(counts) - counts
                child = np.repeat(starts, counts) + (np.arange(int(counts.sum())) - np.repeat(first, counts))
                coords = np.concatenate([np.repeat(coords, counts, axis=0), indices[child][:, None]], axis=1)
                pos = child
        dense = np.zeros([shape[o] for o in order], dtype=values.dtype)
        dense[tuple(coords.T)] = values[pos]
        return np.transpose(dense, np.argsort(order))

    def constant(self, index: int) -> Optional[np.ndarray]:
        """The value of a constant tensor as float32/int array (None when the tensor is computed at run time)."""
        if index < 0:
            return None
        if index in self._cache:
            return self._cache[index]
        t = self.tensors[index]
        raw = self._buffer_bytes(t.buffer)
        value: Optional[np.ndarray] = None
        if raw is not None:
            if t.dtype not in _NP_TYPES:
                raise ModelError(f"{self.path.name}: constant {t.name!r} has unsupported type {t.dtype}")
            values = np.frombuffer(raw, dtype=_NP_TYPES[t.dtype])
            sparsity = self._sg.Tensors(index).Sparsity()
            value = self._densify(values, sparsity, t.shape) if sparsity is not None else values.reshape(t.shape)
        elif index in self.producer and self.producer[index].kind in _WEIGHT_OPS:
            op = self.producer[index]
            src = self.constant(op.inputs[0])
            if src is not None:
                value = src if op.kind == "DENSIFY" else self._dequantize(op.inputs[0], src)
        self._cache[index] = value
        return value

    def _dequantize(self, index: int, value: np.ndarray) -> np.ndarray:
        if value.dtype in (np.float16, np.float32):
            return value.astype(np.float32)
        q = self._sg.Tensors(index).Quantization()
        if q is None or q.ScaleLength() == 0:
            raise ModelError(f"{self.path.name}: integer constant {self.tensors[index].name!r} has no scale")
        scale = np.asarray(q.ScaleAsNumpy(), np.float32)
        zero = np.asarray(q.ZeroPointAsNumpy(), np.float32) if q.ZeroPointLength() else np.zeros_like(scale)
        if scale.size > 1:
            shape = [1] * value.ndim
            shape[q.QuantizedDimension()] = -1
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        return ((value.astype(np.float32) - zero) * scale).astype(np.float32)

    def op_counts(self) -> Counter:
        """Number of operators of each builtin kind."""
        return Counter(op.kind for op in self.ops)


# --------------------------------------------------------------------------------------------------------------
# Translation
# --------------------------------------------------------------------------------------------------------------

def _name_parts(segment: str) -> tuple[str, str]:
    parts = [p for p in segment.split("/") if p]
    while parts and re.fullmatch(r"model(_\d+)?", parts[0]):
        parts = parts[1:]
    if not parts:
        return "", ""
    return parts[0], (parts[1] if len(parts) > 1 else "")


def _matches(kind: str, layer: str, op: str) -> bool:
    if kind == "CONV_2D":
        return not layer.startswith("depthwise") and op.startswith(("Conv2D", "BiasAdd"))
    if kind == "DEPTHWISE_CONV_2D":
        return layer.startswith("depthwise_conv2d") and op.startswith(("depthwise", "BiasAdd"))
    prefix = {"ADD": "add", "PAD": "zero_padding2d", "RESIZE_BILINEAR": "up_sampling2d",
              "MAX_POOL_2D": "max_pooling2d", "DEPTH_TO_SPACE": "d2sp"}.get(kind)
    return layer.startswith(prefix) if prefix else not layer.lower().startswith("identity")


class _Namer:
    """Unique Keras layer names derived from the TFLite tensor names (fused names list several layers)."""

    def __init__(self):
        self.used: set[str] = set()

    def __call__(self, kind: str, tensor_name: str, index: int, fixed: Optional[str] = None) -> str:
        if fixed:
            name = fixed
        else:
            candidates = [layer for layer, op in map(_name_parts, tensor_name.split(";")) if layer
                          and _matches(kind, layer, op)]
            candidates = [re.sub(r"[^A-Za-z0-9_.\-]", "_", c) for c in candidates]
            free = [c for c in candidates if c not in self.used]
            name = free[-1] if free else f"{kind.lower()}_op{index}"
        if name in self.used:
            name = f"{name}_op{index}"
        self.used.add(name)
        return name


def _activation(op: OpInfo, graph: TFLiteGraph) -> Optional[str]:
    code = int(op.options.get("activation", 0))
    if code not in _FUSED_ACTIVATIONS:
        raise ModelError(f"{graph.path.name}: op {op.index} {op.kind} has unsupported fused activation "
                         f"{_ACTIVATION_NAMES.get(code, code)}")
    return _FUSED_ACTIVATIONS[code]


def _activation_layer_namer(namer: _Namer, role: Optional[str], index: int):
    """Names the activation layer that follows a split op: the output role if any, else ``<base>_<act>``."""
    def name(base: str, act: str) -> str:
        return namer("ACTIVATION", "", index, fixed=role or f"{base}_{act}")
    return name


def translate(graph: TFLiteGraph, model_name: str, output_roles: Optional[Sequence[str]] = None):
    """Builds a Keras functional model reproducing ``graph`` op for op, with its weights loaded.

    Args:
        graph: the parsed .tflite subgraph.
        model_name: the Keras model's name.
        output_roles: names for the graph outputs, in the graph's output order (default: the runner roles
            assigned by :func:`blazepose_tf.runtime.runners.assign_roles`).
    Raises:
        ModelError: the graph uses an op or option this translator does not handle.
    """
    import keras

    from blazepose_tf.models.official_layers import BatchReshape, DepthToSpace, ResizeBilinear, ZeroPad
    from blazepose_tf.runtime.runners import assign_roles

    if len(graph.inputs) != 1 or len(graph.tensors[graph.inputs[0]].shape) != 4:
        raise ModelError(f"{graph.path.name}: expected one NHWC image input")
    in_t = graph.tensors[graph.inputs[0]]
    if output_roles is None:
        output_roles = assign_roles([graph.tensors[i].shape for i in graph.outputs],
                                    [graph.tensors[i].name for i in graph.outputs], in_t.shape[1:3])
    role_of = dict(zip(graph.outputs, output_roles))
    namer = _Namer()
    image = keras.Input(shape=in_t.shape[1:], batch_size=None, name="image", dtype="float32")
    values: dict[int, Any] = {in_t.index: image}

    def data(i: int):
        if i not in values:
            raise ModelError(f"{graph.path.name}: tensor {graph.tensors[i].name!r} is used before it is computed "
                             "or is an unsupported constant operand")
        return values[i]

    def weights(i: int, what: str) -> np.ndarray:
        w = graph.constant(i)
        if w is None:
            raise ModelError(f"{graph.path.name}: {what} {graph.tensors[i].name!r} is not a constant")
        return np.asarray(w, dtype=np.float32)

    for op in graph.ops:
        out = op.outputs[0]
        if op.kind in _WEIGHT_OPS:
            if graph.constant(out) is None:
                raise ModelError(f"{graph.path.name}: op {op.index} {op.kind} on a run-time tensor is not supported")
            continue
        tname = graph.tensors[out].name
        role = role_of.get(out)
        # An op with a fused activation that Keras cannot fuse (ADD, pools, CONCATENATION) becomes two layers;
        # the role name then goes to the activation, the last one.
        split = op.kind in ("ADD", "MAX_POOL_2D", "AVERAGE_POOL_2D", "CONCATENATION") \
            and _activation(op, graph) is not None
        name = namer(op.kind, tname, op.index, fixed=None if split else role)
        act_name = _activation_layer_namer(namer, role, op.index)
        if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            x = data(op.inputs[0])
            w = weights(op.inputs[1], "weight")
            bias = graph.constant(op.inputs[2]) if len(op.inputs) > 2 else None
            o = op.options
            common = dict(strides=(o["stride_h"], o["stride_w"]), padding=o["padding"],
                          dilation_rate=(o.get("dilation_h", 1), o.get("dilation_w", 1)),
                          activation=_activation(op, graph), use_bias=bias is not None, name=name)
            in_ch = int(x.shape[-1])
            if op.kind == "CONV_2D":
                if w.shape[3] != in_ch:
                    raise ModelError(f"{graph.path.name}: grouped CONV_2D (op {op.index}) is not supported")
                layer = keras.layers.Conv2D(w.shape[0], w.shape[1:3], **common)
                kernel = w.transpose(1, 2, 3, 0)
            else:
                mult = w.shape[3] // in_ch
                layer = keras.layers.DepthwiseConv2D(w.shape[1:3], depth_multiplier=mult, **common)
                kernel = w.reshape(w.shape[1], w.shape[2], in_ch, mult)
            y = layer(x)
            layer.set_weights([kernel] + ([np.asarray(bias, np.float32)] if bias is not None else []))
        elif op.kind == "ADD":
            if any(graph.constant(i) is not None for i in op.inputs):
                raise ModelError(f"{graph.path.name}: ADD with a constant operand (op {op.index}) is not supported")
            act = _activation(op, graph)
            y = keras.layers.Add(name=name)([data(i) for i in op.inputs])
            if act:
                y = keras.layers.Activation(act, name=act_name(name, act))(y)
        elif op.kind == "PAD":
            pads = graph.constant(op.inputs[1])
            if pads is None or len(op.inputs) > 2 and graph.constant(op.inputs[2]) is not None \
                    and np.any(graph.constant(op.inputs[2])):
                raise ModelError(f"{graph.path.name}: PAD (op {op.index}) needs constant zero padding")
            pads = np.asarray(pads, np.int64).reshape(-1, 2)
            if pads.shape[0] != 4 or np.any(pads[0]):
                raise ModelError(f"{graph.path.name}: PAD (op {op.index}) must pad an NHWC tensor, not its batch")
            y = ZeroPad(pads[1:].tolist(), name=name)(data(op.inputs[0]))
        elif op.kind in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
            o = op.options
            cls = keras.layers.MaxPooling2D if op.kind == "MAX_POOL_2D" else keras.layers.AveragePooling2D
            act = _activation(op, graph)
            y = cls((o["filter_h"], o["filter_w"]), strides=(o["stride_h"], o["stride_w"]), padding=o["padding"],
                    name=name)(data(op.inputs[0]))
            if act:
                y = keras.layers.Activation(act, name=act_name(name, act))(y)
        elif op.kind == "RESIZE_BILINEAR":
            size = graph.constant(op.inputs[1])
            if size is None:
                raise ModelError(f"{graph.path.name}: RESIZE_BILINEAR (op {op.index}) needs a constant size")
            y = ResizeBilinear([int(v) for v in np.asarray(size).reshape(-1)],
                               align_corners=bool(op.options.get("align_corners", False)),
                               half_pixel_centers=bool(op.options.get("half_pixel_centers", False)),
                               name=name)(data(op.inputs[0]))
        elif op.kind == "DEPTH_TO_SPACE":
            y = DepthToSpace(op.options["block_size"], name=name)(data(op.inputs[0]))
        elif op.kind == "RESHAPE":
            target = graph.tensors[out].shape
            y = BatchReshape(target[1:], name=name)(data(op.inputs[0]))
        elif op.kind == "CONCATENATION":
            act = _activation(op, graph)
            axis = int(op.options.get("axis", -1))
            y = keras.layers.Concatenate(axis=axis, name=name)([data(i) for i in op.inputs])
            if act:
                y = keras.layers.Activation(act, name=act_name(name, act))(y)
        elif op.kind in ("LOGISTIC", "RELU", "RELU6", "TANH"):
            act = {"LOGISTIC": "sigmoid", "RELU": "relu", "RELU6": "relu6", "TANH": "tanh"}[op.kind]
            y = keras.layers.Activation(act, name=name)(data(op.inputs[0]))
        else:
            raise ModelError(f"{graph.path.name}: TFLite op {op.kind} (op {op.index}) is not supported by the "
                             "converter")
        got = tuple(int(d) for d in y.shape[1:])
        want = graph.tensors[out].shape[1:]
        if got != tuple(want):
            raise ModelError(f"{graph.path.name}: op {op.index} {op.kind} gives shape {got}, TFLite says {want}")
        values[out] = y
    outputs = [data(i) for i in graph.outputs]
    return keras.Model(image, outputs, name=model_name)


# --------------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------------

def convert(name: str):
    """Converts an official model (``pose_detection`` or ``pose_landmark_full``) to a Keras model.

    The official .tflite is fetched if needed. See :func:`pose_detection` and :func:`pose_landmark_full` for
    the architectures. Raises ModelError when the model cannot be fetched or translated.
    """
    if name not in OFFICIAL_NAMES:
        raise ModelError(f"unknown official model {name!r}; known: {', '.join(OFFICIAL_NAMES)}")
    from blazepose_tf.official import official_model_path

    graph = TFLiteGraph(official_model_path(name))
    return translate(graph, f"{name}_official")


def pose_landmark_full():
    """MediaPipe's official BlazePose **Full** landmark model (``pose_landmark_full.tflite``) as Keras.

    Input ``(256, 256, 3)`` RGB in [0, 1]. Outputs, in the official order: ``landmarks`` (195 = 39 × (x, y, z
    in crop pixels, visibility logit, presence logit)), ``presence`` (1, already a sigmoid probability),
    ``segmentation`` (256×256×1 logits), ``heatmap`` (64×64×39 logits), ``world`` (117 = 39 × xyz metres).
    About 3.2M parameters.

    Architecture (read from the graph; BatchNorm is folded into the convolutions):

    * Shared encoder, MobileNetV2-style inverted residuals with linear bottlenecks and ReLU6, 3×3 and 5×5
      depthwise kernels, expansion 6 (stride-2 depthwise convolutions use explicit zero ``PAD`` + VALID):
      stem 3×3/2 conv (24 ch, 128²) → 16 ch (128²) → 24 (64², 2 blocks) → 32 (32², 2) → 64 (16², 3) → 88 (16², 3)
      → 144 (8², 4) → 1×1 expansion to 864 + depthwise 3×3 = the 8×8×864 bottleneck.
    * Heatmap decoder (kept at inference): the bottleneck goes through depthwise + 1×1 to 48 channels, then
      three bilinear ×2 upsamplings (half-pixel centres), each added to a lateral depthwise + 1×1 (48 ch)
      projection of the encoder at 16², 32², 64² → a 64×64×48 map → 1×1 conv → 39 heatmaps. There are no
      offset maps in the released graph.
    * Segmentation decoder (not in the paper): from the 64² map, depthwise + 1×1 to 8 ch, ×2 upsample + a
      lateral from the 128² encoder stage, two residual blocks (depthwise + 1×1, add + ReLU6), ×2 upsample to
      256², two more residual blocks, 3×3 conv → one logit map.
    * Regression branch: BlazeBlocks (depthwise 3×3 + 1×1 linear, residual add + ReLU6; stride-2 blocks with
      a 2×2 max-pool shortcut) at 288 channels: depthwise + 1×1 to 288 on the 8×8 bottleneck, stride-2 block +
      4 blocks at 4×4, stride-2 block + 5 blocks at 2×2, then three 2×2 VALID convolutions: 195 landmark
      values, 117 world coordinates, and 1 presence logit followed by a sigmoid.

    How this differs from the paper's Fig. 4: the paper feeds the regression encoder with (stop-gradient)
    skip connections from every resolution of the heatmap decoder; in the released Full graph the regression
    branch reads **only the encoder's 8×8 bottleneck** — the decoder never reaches it, so heatmap and
    regression are two heads on one shared encoder. The heatmap head is not dropped (MediaPipe uses it to
    refine the landmarks), it has 39 channels and no offsets; and the graph adds a segmentation decoder and a
    metric ``world`` head (GHUM-fitted 3D) that the paper does not describe. 39 points are regressed: the
    33 body points, the 2 auxiliary ROI points and 4 unused ones.
    """
    return convert("pose_landmark_full")


def pose_detection():
    """MediaPipe's official BlazePose person detector (``pose_detection.tflite``) as Keras.

    Input ``(224, 224, 3)`` RGB in [-1, 1], letterboxed. Outputs, in the official order: ``regressors``
    (2254 × 12: box cx, cy, w, h and 4 keypoints x, y, input pixels relative to the anchor centre) and
    ``scores`` (2254 × 1 logits); anchors 28²×2 + 14²×2 + 7²×6. About 3.0M parameters (the .tflite stores
    them pruned and sparse — 0.9M non-zero — the Keras model holds them dense, zeros included, so pruned
    weights start at zero but are free to train).

    Architecture (read from the graph; BatchNorm folded into the convolutions):

    * Backbone: MobileNetV2-style inverted residuals (ReLU6, linear bottlenecks, 3×3/5×5 depthwise,
      explicit ``PAD`` before stride-2 depthwise): stem 3×3/2 (24 ch, 112²) → 16 → 24 (56²) → 40 (28²) →
      80, 112 (14²) → 192 (7², 4 blocks, expansion 1152) → 1×1 to 1152 + depthwise 3×3: a 7×7×1152 map.
    * Feature pyramid (top-down): bilinear ×2 of the 7² map → 1×1 (192, ReLU6) + a lateral depthwise + 1×1
      of the 14² backbone stage → two residual blocks (depthwise + 1×1, add + ReLU6) → 14×14×192; the same
      again to 28×28×96.
    * Heads: each level (28²×96, 14²×192, 7²×1152) goes through ``DEPTH_TO_SPACE`` (block 2; 56²×24, 28²×48,
      14²×288), zero ``PAD`` and a stride-2 depthwise 3×3 (one per head), then a 1×1 classifier (2, 2, 6
      anchors per cell) and a 1×1 regressor (12 values per anchor); reshaped and concatenated in anchor
      order.

    How this differs from the paper: the paper describes a BlazeFace-like detector built from BlazeBlocks on
    a single-shot multi-scale head; the released detector is a MobileNetV2-style backbone with a two-level
    top-down feature pyramid and depth-to-space heads, and it is a *whole-body* person detector whose 4
    keypoints are the mid-hip centre, the body-circle scale point, the mid-shoulder and the upper-body scale
    point (DESIGN.md §3).
    """
    return convert("pose_detection")


def converted_model_path(name: str, directory: Optional[str | os.PathLike] = None, force: bool = False) -> Path:
    """Path of the converted ``<name>.keras``, converting and saving it on first use (atomic write).

    A stamp ``<name>.keras.json`` records the converter version and the source model's sha256; a file
    without a matching stamp is converted again.

    Args:
        name: ``pose_detection`` or ``pose_landmark_full``.
        directory: where to keep it (default ``data.fetch_official.cache_dir().parent / "converted"``).
        force: convert again even if the file exists.
    """
    if name not in OFFICIAL_NAMES:
        raise ModelError(f"unknown official model {name!r}; known: {', '.join(OFFICIAL_NAMES)}")
    from blazepose_tf.official import cache_dir

    folder = Path(directory) if directory else cache_dir().parent / "converted"
    path = folder / f"{name}.keras"
    if path.is_file() and not force:
        try:
            if json.loads((folder / f"{name}.keras.json").read_text()) == _stamp(name):
                return path
        except (OSError, ValueError):
            pass  # no or unreadable stamp: an older or foreign file, convert again
    return save_converted(convert(name), name, folder)


def _stamp(name: str) -> dict:
    from blazepose_tf.official import OFFICIAL_MODELS

    return {"converter_version": CONVERTER_VERSION, "source_sha256": OFFICIAL_MODELS[name][1]}


def save_converted(model, name: str, directory: str | os.PathLike) -> Path:
    """Saves a converted official model as ``<directory>/<name>.keras`` plus its stamp (both atomically)."""
    path = save_model(model, Path(directory) / f"{name}.keras")
    stamp_path = path.with_name(f"{name}.keras.json")
    tmp = stamp_path.with_name(f".{stamp_path.name}.{os.getpid()}.part")
    tmp.write_text(json.dumps(_stamp(name)))
    os.replace(tmp, stamp_path)
    return path


def save_model(model, path: str | os.PathLike) -> Path:
    """Saves a Keras model to ``path`` (``.keras``) atomically: a temporary file in the same folder, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".keras", dir=path.parent)
    os.close(fd)
    try:
        model.save(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_converted(name: str, directory: Optional[str | os.PathLike] = None):
    """The converted Keras model (from :func:`converted_model_path`, converting on first use)."""
    import keras

    import blazepose_tf.models.official_layers  # noqa: F401 - registers the custom layers

    return keras.models.load_model(converted_model_path(name, directory), compile=False)


def to_tflite(model) -> bytes:
    """Converts a Keras model back to a .tflite flatbuffer with builtin ops only (raises if that fails)."""
    import contextlib
    import io

    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    with contextlib.redirect_stdout(io.StringIO()):  # Keras prints the traced signature and its captures
        return converter.convert()


def count_params(model) -> tuple[int, int]:
    """(total parameters, trainable parameters) of a Keras model."""
    total = int(sum(int(np.prod(w.shape)) for w in model.weights))
    trainable = int(sum(int(np.prod(w.shape)) for w in model.trainable_weights))
    return total, trainable


# --------------------------------------------------------------------------------------------------------------
# Parity metrics (shared by the CLI, tests and benchmarks/converted_parity.py)
# --------------------------------------------------------------------------------------------------------------

def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


def landmark_parity(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]) -> dict[str, float]:
    """Differences between two landmark-model outputs (dicts by role, batched).

    Returns max/mean |Δ| of landmark x, y (crop pixels), z, visibility and per-landmark presence after sigmoid,
    pose presence, heatmap logits, segmentation logits and world coordinates (metres).
    """
    ref = np.asarray(reference["landmarks"], np.float64).reshape(-1, 5)
    cand = np.asarray(candidate["landmarks"], np.float64).reshape(-1, 5)
    d_xy = np.abs(ref[:, :2] - cand[:, :2])
    d_z = np.abs(ref[:, 2] - cand[:, 2])
    d_vis = np.abs(_sigmoid(ref[:, 3]) - _sigmoid(cand[:, 3]))
    d_pres = np.abs(_sigmoid(ref[:, 4]) - _sigmoid(cand[:, 4]))
    out = {"xy_px_max": float(d_xy.max()), "xy_px_mean": float(d_xy.mean()), "z_max": float(d_z.max()),
           "visibility_max": float(d_vis.max()), "landmark_presence_max": float(d_pres.max())}
    for role, key in (("presence", "presence"), ("heatmap", "heatmap"), ("segmentation", "segmentation"),
                      ("world", "world_m")):
        if role in reference and role in candidate:
            d = np.abs(np.asarray(reference[role], np.float64) - np.asarray(candidate[role], np.float64))
            out[f"{key}_max"] = float(d.max())
            out[f"{key}_mean"] = float(d.mean())
    if "segmentation" in reference and "segmentation" in candidate:  # logits reach ±1000: compare probabilities too
        out["segmentation_prob_max"] = float(np.abs(_sigmoid(reference["segmentation"])
                                                    - _sigmoid(candidate["segmentation"])).max())
    return out


def landmark_parity_ok(stats: dict[str, float]) -> bool:
    """The acceptance criteria: landmarks < 0.5 crop px, visibility and presences within 1e-3."""
    return bool(stats["xy_px_max"] < LANDMARK_PX_TOL and stats["visibility_max"] <= PROBABILITY_TOL
                and stats["landmark_presence_max"] <= PROBABILITY_TOL
                and stats.get("presence_max", 0.0) <= PROBABILITY_TOL)


def detector_parity(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray],
                    min_score: float = 0.5, iou_threshold: float = 0.3) -> dict[str, Any]:
    """Differences between two detector outputs for one letterboxed input each (dicts by role, batched).

    Returns regressor max/mean |Δ| (input pixels), score max |Δ| after sigmoid, and whether the detections
    after decoding and weighted NMS are identical (same count; boxes, keypoints and scores within 1e-3).
    """
    from blazepose_tf.codecs.anchors import generate_anchors
    from blazepose_tf.codecs.detection import decode_detections, weighted_nms

    r_reg = np.asarray(reference["regressors"], np.float64)
    c_reg = np.asarray(candidate["regressors"], np.float64)
    d_reg = np.abs(r_reg - c_reg)
    r_sc = np.clip(np.asarray(reference["scores"], np.float64), -100, 100)
    c_sc = np.clip(np.asarray(candidate["scores"], np.float64), -100, 100)
    anchors = generate_anchors()
    identical = True
    counts = []
    max_nms_diff = 0.0
    for b in range(r_reg.shape[0]):
        dets = [weighted_nms(decode_detections(reg[b], sc[b], anchors, min_score=min_score), iou_threshold)
                for reg, sc in ((reference["regressors"], reference["scores"]),
                                (candidate["regressors"], candidate["scores"]))]
        counts.append((len(dets[0]), len(dets[1])))
        if len(dets[0]) != len(dets[1]):
            identical = False
            continue
        if len(dets[0]):
            diff = max(float(np.abs(dets[0].boxes - dets[1].boxes).max()),
                       float(np.abs(dets[0].keypoints - dets[1].keypoints).max()),
                       float(np.abs(dets[0].scores - dets[1].scores).max()))
            max_nms_diff = max(max_nms_diff, diff)
            identical &= diff <= NMS_TOL
    return {"regressors_px_max": float(d_reg.max()), "regressors_px_mean": float(d_reg.mean()),
            "score_max": float(np.abs(_sigmoid(r_sc) - _sigmoid(c_sc)).max()),
            "nms_identical": bool(identical), "nms_max_diff": max_nms_diff,
            "detections": sum(c[0] for c in counts), "detections_candidate": sum(c[1] for c in counts)}


def detector_parity_ok(stats: dict[str, Any]) -> bool:
    """The acceptance criteria: regressors within 0.5 px and identical detections after NMS."""
    return bool(stats["regressors_px_max"] < REGRESSOR_PX_TOL and stats["nms_identical"])


def sample_inputs(image: np.ndarray) -> dict[str, np.ndarray]:
    """The detector input (letterboxed, [-1, 1]) and landmark input (crop of the official detector's first
    detection, or the centred square if there is none, [0, 1]) for one RGB image."""
    from blazepose_tf.codecs import roi as roi_codec
    from blazepose_tf.runtime.pipeline import (DETECTOR_INPUT_RANGE, LANDMARK_INPUT_RANGE, PersonDetector,
                                               roi_from_detection, to_tensor)
    from blazepose_tf.runtime.runners import TFLiteRunner
    from blazepose_tf.types import Roi
    from blazepose_tf.official import official_model_path

    h, w = image.shape[:2]
    padded, _ = roi_codec.letterbox_roi(w, h, 224, 224)
    det_in = to_tensor(roi_codec.crop(image, padded, 224, 224, border="zero"), DETECTOR_INPUT_RANGE)
    dets = PersonDetector(TFLiteRunner(official_model_path("pose_detection")))(image)
    roi = roi_from_detection(dets[0]) if dets else None
    if roi is None:
        side = float(min(h, w))
        roi = Roi(w / 2, h / 2, side, side, 0.0)
    lmk_in = to_tensor(roi_codec.crop(image, roi, 256, 256, border="replicate"), LANDMARK_INPUT_RANGE)
    return {"pose_detection": det_in, "pose_landmark_full": lmk_in}


def _format_stats(stats: dict[str, Any]) -> str:
    parts = []
    for k, v in stats.items():
        parts.append(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}")
    return " ".join(parts)


# --------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------

def _define_flags() -> None:
    from absl import flags

    flags.DEFINE_string("output_dir", None, "Where to write <name>.keras (default: the converted-model cache, "
                        "$BLAZEPOSE_TF_CACHE/converted or ~/.cache/blazepose_tf/converted).")
    flags.DEFINE_list("models", list(OFFICIAL_NAMES), f"Models to convert, from {', '.join(OFFICIAL_NAMES)}.")
    flags.DEFINE_bool("check_export", False, "Also convert each Keras model back to .tflite (builtin ops only).")


def main(argv: list[str]) -> int:
    from absl import flags

    from blazepose_tf.errors import UserError

    FLAGS = flags.FLAGS
    unknown = [m for m in FLAGS.models if m not in OFFICIAL_NAMES]
    if unknown or not FLAGS.models:
        raise UserError(f"--models must list names from {', '.join(OFFICIAL_NAMES)}, got {FLAGS.models}")
    from blazepose_tf.io.images import load_image
    from blazepose_tf.io.samples import sample_image_path
    from blazepose_tf.runtime.runners import KerasRunner, TFLiteRunner
    from blazepose_tf.official import cache_dir, official_model_path

    out_dir = Path(FLAGS.output_dir) if FLAGS.output_dir else cache_dir().parent / "converted"
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--output_dir is not a folder: {out_dir}")
    image = load_image(sample_image_path())
    inputs = sample_inputs(image)
    all_ok = True
    for name in FLAGS.models:
        model = convert(name)
        path = save_converted(model, name, out_dir)
        total, trainable = count_params(model)
        graph_ops = TFLiteGraph(official_model_path(name)).op_counts()
        print(f"{name}: {len(model.layers)} layers, {total:,} parameters ({trainable:,} trainable) -> {path}")
        print(f"  official graph ops: {', '.join(f'{k} {v}' for k, v in graph_ops.most_common())}")
        ref = TFLiteRunner(official_model_path(name))(inputs[name])
        got = KerasRunner(model)(inputs[name])
        if name == "pose_detection":
            stats = detector_parity(ref, got)
            ok = detector_parity_ok(stats)
        else:
            stats = landmark_parity(ref, got)
            ok = landmark_parity_ok(stats)
        all_ok &= ok
        print(f"  parity vs .tflite on the sample photo: {'PASS' if ok else 'FAIL'}  {_format_stats(stats)}")
        if FLAGS.check_export:
            blob = to_tflite(model)
            ops = TFLiteGraph(blob).op_counts()
            print(f"  re-export to .tflite with builtin ops only: ok ({len(blob) / 1e6:.2f} MB fp32; "
                  f"{', '.join(f'{k} {v}' for k, v in ops.most_common())})")
    return 0 if all_ok else 1


if __name__ == "__main__":
    from blazepose_tf import cli

    _define_flags()
    cli.run(main)
