"""Reading and rewriting .tflite flatbuffers: op histogram, Flex/custom ops, I/O tensors, quantization guess,
and an object-API round trip that keeps weight buffers 16-byte aligned.

Uses the flatbuffer schema generated Python that ships with ai-edge-litert (``ai_edge_litert.schema_py_generated``),
falling back to the copy :mod:`data.fetch_official` extracts from the mediapipe wheel.
"""
from __future__ import annotations

import importlib.util
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Optional, Union

import numpy as np

from blazepose_tf.errors import ModelError

TFLITE_IDENTIFIER = b"TFL3"
BUFFER_ALIGNMENT = 16  # the schema's force_align for Buffer.data
_SCHEMA: Optional[ModuleType] = None


def schema() -> ModuleType:
    """The TFLite flatbuffer schema module (generated Python)."""
    global _SCHEMA
    if _SCHEMA is None:
        try:
            from ai_edge_litert import schema_py_generated as mod  # type: ignore[attr-defined]
        except ImportError:  # pragma: no cover - ai-edge-litert is pinned; the wheel's copy is the fallback
            from blazepose_tf.official import cache_dir
            path = cache_dir() / "metadata" / "schema_py_generated.py"
            if not path.is_file():
                raise ModelError("no TFLite schema module: install ai-edge-litert or run `python -m data.fetch_official`")
            spec = importlib.util.spec_from_file_location("tflite_schema_py_generated", path)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)  # type: ignore[union-attr]
        _SCHEMA = mod
    return _SCHEMA


def read_bytes(model: Union[bytes, bytearray, str, Path]) -> bytes:
    """The bytes of a .tflite file (or the bytes themselves), checked for the TFL3 identifier."""
    if isinstance(model, (bytes, bytearray)):
        buf = bytes(model)
        where = "model buffer"
    else:
        path = Path(model)
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        buf = path.read_bytes()
        where = str(path)
    if len(buf) < 8 or buf[4:8] != TFLITE_IDENTIFIER:
        raise ModelError(f"{where} is not a TFLite flatbuffer (no 'TFL3' identifier)")
    return buf


def _builtin_names() -> dict[int, str]:
    return {v: k for k, v in vars(schema().BuiltinOperator).items() if not k.startswith("_") and isinstance(v, int)}


def _tensor_type_names() -> dict[int, str]:
    return {v: k for k, v in vars(schema().TensorType).items() if not k.startswith("_") and isinstance(v, int)}


@dataclass
class TensorInfo:
    """One input or output tensor of the main subgraph."""

    name: str
    shape: tuple[int, ...]
    dtype: str


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


def inspect_model(model: Union[bytes, bytearray, str, Path]) -> ModelInfo:
    """Op histogram (all subgraphs), custom op names, main-subgraph I/O, signatures, metadata names."""
    buf = read_bytes(model)
    s = schema()
    m = s.Model.GetRootAs(buf, 0)
    builtin = _builtin_names()
    ttypes = _tensor_type_names()
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

    def _tensor(sg, idx: int) -> TensorInfo:
        t = sg.Tensors(idx)
        return TensorInfo(name=(t.Name() or b"").decode("utf-8", "replace"),
                          shape=tuple(int(v) for v in t.ShapeAsNumpy()) if t.ShapeLength() else (),
                          dtype=ttypes.get(t.Type(), str(t.Type())))

    inputs, outputs = [], []
    if m.SubgraphsLength():
        sg = m.Subgraphs(0)
        inputs = [_tensor(sg, int(i)) for i in sg.InputsAsNumpy()] if sg.InputsLength() else []
        outputs = [_tensor(sg, int(i)) for i in sg.OutputsAsNumpy()] if sg.OutputsLength() else []
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


# ---------------------------------------------------------------------------------------------------------
# Object-API round trip


def unpack(model: Union[bytes, bytearray, str, Path]):
    """The mutable object tree (``ModelT``) of a model."""
    buf = read_bytes(model)
    s = schema()
    tree = s.ModelT.InitFromObj(s.Model.GetRootAs(buf, 0))
    for b in tree.buffers or []:
        if b.offset:  # >2 GB models keep buffers after the flatbuffer; inline them again
            b.data = np.frombuffer(buf, np.uint8, count=b.size, offset=b.offset)
            b.offset, b.size = 0, 0
    return tree


def _aligned_buffer_class():
    s = schema()

    class AlignedBufferT(s.BufferT):  # type: ignore[name-defined, misc]
        """A BufferT whose data vector is aligned to 16 bytes (the schema's force_align)."""

        def Pack(self, builder):  # noqa: N802 - flatbuffers API name
            data_off = None
            if self.data is not None:
                payload = np.ascontiguousarray(np.asarray(self.data, dtype=np.uint8)).tobytes()
                builder.StartVector(1, len(payload), BUFFER_ALIGNMENT)
                builder.head = builder.head - len(payload)
                builder.Bytes[builder.head:builder.head + len(payload)] = payload
                data_off = builder.EndVector()
            s.BufferStart(builder)
            if data_off is not None:
                s.BufferAddData(builder, data_off)
            s.BufferAddOffset(builder, self.offset)
            s.BufferAddSize(builder, self.size)
            return s.BufferEnd(builder)

    return AlignedBufferT


def pack(tree) -> bytes:
    """Serializes a ``ModelT`` back to .tflite bytes (weight buffers 16-byte aligned)."""
    import flatbuffers

    cls = _aligned_buffer_class()
    for i, b in enumerate(tree.buffers or []):
        if not isinstance(b, cls):
            nb = cls()
            nb.data, nb.offset, nb.size = b.data, b.offset, b.size
            tree.buffers[i] = nb
    builder = flatbuffers.Builder(1 << 20)
    builder.Finish(tree.Pack(builder), file_identifier=TFLITE_IDENTIFIER)
    return bytes(builder.Output())


def rename_signature_tensors(tree) -> None:
    """Names the main subgraph's input/output tensors after their signature keys (``image``, ``landmarks``...),
    so that tools that only see tensor names (``get_output_details``, Netron, benchmark_model) see the roles."""
    for sd in tree.signatureDefs or []:
        sg = tree.subgraphs[sd.subgraphIndex or 0]
        for tmap in list(sd.inputs or []) + list(sd.outputs or []):
            name = tmap.name.decode() if isinstance(tmap.name, bytes) else tmap.name
            if name and 0 <= tmap.tensorIndex < len(sg.tensors):
                sg.tensors[tmap.tensorIndex].name = name
