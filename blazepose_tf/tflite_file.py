""".tflite files: the one flatbuffer reader and the one interpreter factory of the project.

* :func:`schema` — the TFLite flatbuffer schema (generated Python shipped with ai-edge-litert, falling back to the
  copy :mod:`blazepose_tf.official` extracts from the mediapipe wheel);
* :class:`TFLiteGraph` — the first subgraph of a model: tensors, operators with their parsed options, and constants
  read straight from the file (``DEQUANTIZE``d fp16/int8 weights and ``DENSIFY``d sparse weights resolved), used by
  the official-model converter (:mod:`blazepose_tf.models.official_translation`);
* :func:`inspect_model` — what export and benchmarks want to know of a file: op histogram, custom/Flex ops, I/O
  tensors, signatures, metadata names, a quantization guess;
* :func:`load_interpreter` — an allocated ``ai_edge_litert.interpreter.Interpreter`` for a path or the model's bytes
  (always given the bytes, so any file name loads), with a one-line :class:`blazepose_tf.errors.ModelError` naming
  the model when it cannot be loaded.

A truncated or corrupt flatbuffer fails anywhere in the generated reader (``struct.error``, ``IndexError``, a short
buffer...): every reader here turns that into the same one-line :class:`~blazepose_tf.errors.ModelError` naming the
file (:func:`flatbuffer_errors`).

Rewriting a model (object-API round trip, aligned buffers) is export's job: :mod:`export.tflite_model`.
"""
from __future__ import annotations

import importlib.util
import os
import struct
import sys
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator, Optional, Union

import numpy as np

from blazepose_tf.errors import ModelError, model_file
from blazepose_tf.official import cache_dir, fetch

TFLITE_IDENTIFIER = b"TFL3"
#: Ops that only turn a stored constant into the weight an op uses (fp16/int8 -> float, sparse -> dense).
WEIGHT_OPS: tuple[str, ...] = ("DEQUANTIZE", "DENSIFY")

ModelSource = Union[str, os.PathLike, bytes, bytearray]

_NP_TYPES = {"FLOAT32": np.float32, "FLOAT16": np.float16, "INT32": np.int32, "INT8": np.int8,
             "UINT8": np.uint8, "INT64": np.int64, "INT16": np.int16, "BOOL": np.bool_}


# --------------------------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def schema() -> ModuleType:
    """The TFLite flatbuffer schema module (generated Python).

    ai-edge-litert's own copy; without it, the copy extracted from the mediapipe wheel (:func:`wheel_schema`).
    Raises :class:`ModelError` when neither loads.
    """
    try:
        from ai_edge_litert import schema_py_generated  # type: ignore[attr-defined]  # optional: fallback below

        return schema_py_generated
    except ImportError:  # pragma: no cover - ai-edge-litert is pinned; the wheel's copy is the fallback
        return wheel_schema("schema_py_generated.py", "TFLite schema")


def wheel_schema(filename: str, what: str) -> ModuleType:
    """A generated-Python flatbuffer schema shipped in the mediapipe wheel (``schema_py_generated.py``,
    ``metadata_schema_py_generated.py``), from where :func:`blazepose_tf.official.fetch` extracts it (fetched on
    first use); ``what`` names it in the one-line :class:`ModelError` when it is missing or broken."""
    name = f"_blazepose_tf_{Path(filename).stem}"
    if name in sys.modules:
        return sys.modules[name]
    path = cache_dir() / "metadata" / filename
    if not path.is_file():
        fetch()
    if not path.is_file():
        raise ModelError(f"{what} not found at {path}; run `python -m data.fetch_official`")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except Exception as e:  # noqa: BLE001 - a broken schema file is a model-setup problem for the user
        del sys.modules[name]
        raise ModelError(f"cannot load the {what} {path}: {e}") from None
    return module


@contextmanager
def flatbuffer_errors(where: str) -> Iterator[None]:
    """Turns any error of reading a malformed flatbuffer inside the block (a truncated file fails in the generated
    reader with ``struct.error``, ``IndexError``, a short-buffer ``ValueError``...) into one line naming ``where``:
    ``ModelError: <where> is not a loadable TFLite model: truncated or corrupt flatbuffer (...)``."""
    try:
        yield
    except (struct.error, IndexError, ValueError, TypeError, AttributeError, OverflowError, UnicodeDecodeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelError(f"{where} is not a loadable TFLite model: truncated or corrupt flatbuffer ({first})") \
            from None


def _enum_names(enum: type) -> dict[int, str]:
    return {v: k for k, v in vars(enum).items() if not k.startswith("_") and isinstance(v, int)}


def builtin_op_names() -> dict[int, str]:
    """Builtin operator code -> name (``CONV_2D``...)."""
    return _enum_names(schema().BuiltinOperator)


def tensor_type_names() -> dict[int, str]:
    """TensorType code -> name (``FLOAT32``...)."""
    return _enum_names(schema().TensorType)


# --------------------------------------------------------------------------------------------------------------
# Tensors, operators
# --------------------------------------------------------------------------------------------------------------

@dataclass
class TensorInfo:
    """One tensor of a subgraph."""

    name: str
    shape: tuple[int, ...]
    dtype: str          # TFLite TensorType name, e.g. FLOAT32
    index: int = -1     # in its subgraph
    buffer: int = 0     # index of its buffer (0: none)


def tensor_info(subgraph: Any, index: int, type_names: dict[int, str]) -> TensorInfo:
    """The :class:`TensorInfo` of tensor ``index`` of a flatbuffer ``SubGraph``."""
    t = subgraph.Tensors(index)
    return TensorInfo(name=(t.Name() or b"").decode("utf-8", "replace"),
                      shape=tuple(int(v) for v in t.ShapeAsNumpy()) if t.ShapeLength() else (),
                      dtype=type_names.get(t.Type(), str(t.Type())), index=index, buffer=int(t.Buffer()))


@dataclass
class OpInfo:
    """One operator: its builtin name, tensor indices (-1 = absent optional input) and parsed options."""

    index: int
    kind: str
    inputs: list[int]
    outputs: list[int]
    options: dict = field(default_factory=dict)


# The options the converter reads: op kind -> options table class, and option key -> accessor.
_OPTION_CLASSES = {"CONV_2D": "Conv2DOptions", "DEPTHWISE_CONV_2D": "DepthwiseConv2DOptions",
                   "ADD": "AddOptions", "MUL": "MulOptions", "MAX_POOL_2D": "Pool2DOptions",
                   "AVERAGE_POOL_2D": "Pool2DOptions", "RESIZE_BILINEAR": "ResizeBilinearOptions",
                   "CONCATENATION": "ConcatenationOptions", "DEPTH_TO_SPACE": "DepthToSpaceOptions"}
_OPTION_GETTERS = {"padding": "Padding", "stride_h": "StrideH", "stride_w": "StrideW",
                   "dilation_h": "DilationHFactor", "dilation_w": "DilationWFactor",
                   "activation": "FusedActivationFunction", "depth_multiplier": "DepthMultiplier",
                   "filter_h": "FilterHeight", "filter_w": "FilterWidth", "align_corners": "AlignCorners",
                   "half_pixel_centers": "HalfPixelCenters", "axis": "Axis", "block_size": "BlockSize"}


# --------------------------------------------------------------------------------------------------------------
# The graph reader
# --------------------------------------------------------------------------------------------------------------

class TFLiteGraph:
    """The first subgraph of a .tflite file (path, or the flatbuffer's bytes): tensors, operators, constants.

    Constants behind ``DEQUANTIZE`` (fp16 or int8) and ``DENSIFY`` (sparse) ops are resolved by
    :meth:`constant`, so weights are read straight from the file, with no interpreter.
    """

    def __init__(self, path: ModelSource):
        if isinstance(path, (bytes, bytearray)):
            self.path = Path("<memory>.tflite")
            self._raw = bytes(path)
        else:
            self.path = Path(path)
            try:
                self._raw = self.path.read_bytes()
            except OSError as e:
                raise ModelError(f"cannot read {self.path}: {e.strerror}") from None
        S = self._schema = schema()
        with flatbuffer_errors(str(self.path)):
            self._model = S.Model.GetRootAs(self._raw, 0)
            sg = self._model.Subgraphs(0)
            if sg is None:
                raise ValueError("no subgraph")
            self._sg = sg
            type_names = tensor_type_names()
            op_names = builtin_op_names()
            self.tensors: list[TensorInfo] = [tensor_info(sg, i, type_names) for i in range(sg.TensorsLength())]
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
    def _options(self, op: Any, kind: str) -> dict:
        S = self._schema
        table = op.BuiltinOptions()
        if kind not in _OPTION_CLASSES or table is None:
            return {}
        o = getattr(S, _OPTION_CLASSES[kind])()
        o.Init(table.Bytes, table.Pos)
        out = {key: getattr(o, method)() for key, method in _OPTION_GETTERS.items() if hasattr(o, method)}
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
            size = int(buf.Size())
            if offset + size > len(self._raw):
                raise ValueError(f"buffer {index} ends at byte {offset + size}, after the end of the file")
            return self._raw[offset:offset + size]
        if buf.DataLength() == 0:
            return None
        return buf.DataAsNumpy().tobytes()

    def _index_vector(self, kind: int, table: Any) -> np.ndarray:
        S = self._schema
        cls = {S.SparseIndexVector.Int32Vector: S.Int32Vector, S.SparseIndexVector.Uint16Vector: S.Uint16Vector,
               S.SparseIndexVector.Uint8Vector: S.Uint8Vector}.get(kind)
        if cls is None or table is None:
            raise ModelError(f"{self.path.name}: unsupported sparse index vector type {kind}")
        vec = cls()
        vec.Init(table.Bytes, table.Pos)
        return np.asarray(vec.ValuesAsNumpy(), dtype=np.int64).reshape(-1)

    def _densify(self, values: np.ndarray, sparsity: Any, shape: tuple[int, ...]) -> np.ndarray:
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
        with flatbuffer_errors(str(self.path)):
            return self._constant(index)

    def _constant(self, index: int) -> Optional[np.ndarray]:
        t = self.tensors[index]
        raw = self._buffer_bytes(t.buffer)
        value: Optional[np.ndarray] = None
        if raw is not None:
            if t.dtype not in _NP_TYPES:
                raise ModelError(f"{self.path.name}: constant {t.name!r} has unsupported type {t.dtype}")
            values = np.frombuffer(raw, dtype=_NP_TYPES[t.dtype])
            sparsity = self._sg.Tensors(index).Sparsity()
            value = self._densify(values, sparsity, t.shape) if sparsity is not None else values.reshape(t.shape)
        elif index in self.producer and self.producer[index].kind in WEIGHT_OPS:
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
# Inspection (export, benchmarks)
# --------------------------------------------------------------------------------------------------------------

def source_label(model: ModelSource, default: str = "model buffer") -> str:
    """How messages name a model: its path, or ``default`` for the flatbuffer's bytes."""
    return default if isinstance(model, (bytes, bytearray)) else str(Path(model).expanduser())


def _model_bytes(model: ModelSource, label: Optional[str], default: str) -> tuple[bytes, str]:
    """The bytes of a .tflite path (a regular file: :func:`blazepose_tf.errors.model_file`) or the bytes themselves,
    and how messages name them: ``label``, else the path, else ``default``."""
    if isinstance(model, (bytes, bytearray)):
        return bytes(model), label or default
    path = model_file(model)
    try:
        return path.read_bytes(), label or str(path)
    except OSError as e:
        raise ModelError(f"cannot read {label or path}: {e.strerror or e}") from None


def read_bytes(model: ModelSource, *, label: Optional[str] = None) -> bytes:
    """The bytes of a .tflite file (or the bytes themselves), checked for the TFL3 identifier; ``label`` names the
    model in messages (default: the path, or ``model buffer``)."""
    buf, where = _model_bytes(model, label, "model buffer")
    if len(buf) < 8 or buf[4:8] != TFLITE_IDENTIFIER:
        raise ModelError(f"{where} is not a TFLite flatbuffer (no 'TFL3' identifier)")
    return buf


@dataclass
class ModelInfo:
    """What :func:`inspect_model` reads from a flatbuffer."""

    size_bytes: int
    op_histogram: dict[str, int]
    custom_ops: list[str]
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    signatures: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    metadata_names: list[str] = field(default_factory=list)
    weight_types: dict[str, int] = field(default_factory=dict)  # dtype -> number of constant tensors
    description: str = ""

    @property
    def flex_ops(self) -> list[str]:
        """Custom ops served by the TF Select (Flex) delegate, e.g. ``FlexMatrixInverse``."""
        return [op for op in self.custom_ops if op.startswith("Flex")]

    def guess_quantization(self) -> str:
        """``int8`` (quantized activations), ``dynamic`` (int8 weights, float activations), ``fp16`` (fp16
        weights) or ``none``, from op and constant-tensor types."""
        ops = self.op_histogram
        int_weights = self.weight_types.get("INT8", 0) + self.weight_types.get("UINT8", 0)
        if any(t.dtype in ("INT8", "UINT8") for t in self.inputs + self.outputs) or \
                (int_weights and "QUANTIZE" in ops):
            return "int8"
        if int_weights:
            return "dynamic"
        if self.weight_types.get("FLOAT16", 0):
            return "fp16"
        return "none"


def inspect_model(model: ModelSource, *, label: Optional[str] = None) -> ModelInfo:
    """Op histogram (all subgraphs), custom op names, main-subgraph I/O, signatures, metadata names.

    Every buffer is checked to lie inside the file, so a truncated or corrupt model is a one-line
    :class:`ModelError` naming it (``label``, else the path, else ``model buffer``; :func:`flatbuffer_errors`).
    """
    buf, where = _model_bytes(model, label, "model buffer")
    read_bytes(buf, label=where)
    with flatbuffer_errors(where):
        return _inspect(buf)


def _check_buffers(m: Any, size: int) -> None:
    """Raises ValueError when a buffer of model ``m`` (``size`` bytes) runs past the end of the file."""
    for i in range(m.BuffersLength()):
        buffer = m.Buffers(i)
        if buffer.DataLength():
            buffer.DataAsNumpy()  # a data vector cut short raises here
        elif buffer.Offset() > 1 and buffer.Offset() + buffer.Size() > size:
            raise ValueError(f"buffer {i} ends at byte {buffer.Offset() + buffer.Size()}, after the end of the file")


def _inspect(buf: bytes) -> ModelInfo:
    s = schema()
    m = s.Model.GetRootAs(buf, 0)
    _check_buffers(m, len(buf))
    builtin = builtin_op_names()
    ttypes = tensor_type_names()
    codes: list[str] = []
    custom: list[str] = []
    for i in range(m.OperatorCodesLength()):
        oc = m.OperatorCodes(i)
        code = max(int(oc.BuiltinCode()), int(oc.DeprecatedBuiltinCode()))
        if code == s.BuiltinOperator.CUSTOM:
            name = (oc.CustomCode() or b"?").decode("utf-8", "replace")
            custom.append(name)
        else:
            name = builtin.get(code, f"BUILTIN_{code}")
        codes.append(name)
    hist: Counter = Counter()
    weight_types: Counter = Counter()
    for g in range(m.SubgraphsLength()):
        sg = m.Subgraphs(g)
        for o in range(sg.OperatorsLength()):
            hist[codes[sg.Operators(o).OpcodeIndex()]] += 1
        for t in range(sg.TensorsLength()):
            tensor = sg.Tensors(t)
            b = tensor.Buffer()
            if 0 < b < m.BuffersLength():
                buffer = m.Buffers(b)
                if buffer.DataLength() > 0 or buffer.Size() > 0:
                    weight_types[ttypes.get(tensor.Type(), str(tensor.Type()))] += 1
    inputs, outputs = [], []
    if m.SubgraphsLength():
        sg = m.Subgraphs(0)
        inputs = [tensor_info(sg, int(i), ttypes) for i in sg.InputsAsNumpy()] if sg.InputsLength() else []
        outputs = [tensor_info(sg, int(i), ttypes) for i in sg.OutputsAsNumpy()] if sg.OutputsLength() else []
    signatures = {}
    for i in range(m.SignatureDefsLength()):
        sd = m.SignatureDefs(i)
        key = (sd.SignatureKey() or b"").decode()
        signatures[key] = {
            "inputs": [(sd.Inputs(j).Name() or b"").decode() for j in range(sd.InputsLength())],
            "outputs": [(sd.Outputs(j).Name() or b"").decode() for j in range(sd.OutputsLength())]}
    metadata = [(m.Metadata(i).Name() or b"").decode() for i in range(m.MetadataLength())]
    return ModelInfo(size_bytes=len(buf), op_histogram=dict(hist.most_common()), custom_ops=custom,
                     inputs=inputs, outputs=outputs, signatures=signatures, metadata_names=metadata,
                     weight_types=dict(weight_types), description=(m.Description() or b"").decode("utf-8", "replace"))


# --------------------------------------------------------------------------------------------------------------
# Interpreter
# --------------------------------------------------------------------------------------------------------------

def load_interpreter(model: ModelSource, num_threads: int = 1, use_xnnpack: bool = True, *,
                     label: Optional[str] = None, **kwargs: Any):
    """An allocated ``ai_edge_litert.interpreter.Interpreter`` for a .tflite path or the model's bytes (a path is
    read and its bytes given to the interpreter, so any file name loads).

    Args:
        model: a path (of a regular file), or the flatbuffer's bytes.
        num_threads: CPU threads of the interpreter (and of XNNPACK).
        use_xnnpack: apply XNNPACK, ai-edge-litert's default delegate (False: builtin kernels only).
        label: how messages name the model (default: the path, or ``<tflite bytes>``).
        kwargs: further ``Interpreter`` arguments, e.g. ``experimental_preserve_all_tensors=True``.
    Raises:
        ModelError: ai-edge-litert is missing, or the model does not load (one line naming it).
    """
    try:  # imported here: the native runtime loads only when a model runs, and a missing package is a ModelError
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError as e:  # pragma: no cover - the project pins ai-edge-litert
        raise ModelError(f"ai-edge-litert is not installed: {e}") from None
    # The bytes, never model_path: LiteRT takes a path only if it encodes as UTF-8 (a file name with a byte of
    # another encoding is a TypeError there), and one way of opening a .tflite is one set of errors.
    content, label = _model_bytes(model, label, "<tflite bytes>")
    if not content:
        raise ModelError(f"{label} is not a loadable TFLite model: it is empty (0 bytes)")
    if not use_xnnpack:
        kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        it = Interpreter(model_content=content, num_threads=num_threads, **kwargs)
        it.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelError(f"{label} is not a loadable TFLite model: {first}") from None
    return it


def invoke(interpreter: Any, batch: np.ndarray) -> list[np.ndarray]:
    """Runs a batch-1 interpreter on every example of ``batch`` (N, ...) in turn; its outputs, in the
    interpreter's output order, concatenated over the batch."""
    x = np.asarray(batch, dtype=np.float32)
    index = interpreter.get_input_details()[0]["index"]
    outputs = [d["index"] for d in interpreter.get_output_details()]
    per_example = []
    for b in range(x.shape[0]):
        interpreter.set_tensor(index, x[b:b + 1])
        interpreter.invoke()
        per_example.append([interpreter.get_tensor(i) for i in outputs])
    return [np.concatenate([o[k] for o in per_example], axis=0) for k in range(len(outputs))]
