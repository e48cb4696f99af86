"""Rewriting .tflite flatbuffers for export: an object-API round trip that keeps weight buffers 16-byte aligned, and
signature-named I/O tensors.

Reading a model (schema, op histogram, Flex/custom ops, I/O tensors, quantization guess) is
:mod:`blazepose_tf.tflite_file`'s job; its names are re-exported here for the export modules that import them
from this one.
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

import flatbuffers
import numpy as np

from blazepose_tf.tflite_file import (TFLITE_IDENTIFIER, ModelInfo, TensorInfo, flatbuffer_errors, inspect_model,
                                      read_bytes, schema, source_label)

__all__ = ["BUFFER_ALIGNMENT", "TFLITE_IDENTIFIER", "ModelInfo", "TensorInfo", "inspect_model", "pack", "read_bytes",
           "rename_signature_tensors", "schema", "unpack"]

BUFFER_ALIGNMENT = 16  # the schema's force_align for Buffer.data


# ---------------------------------------------------------------------------------------------------------
# Object-API round trip


def unpack(model: Union[bytes, bytearray, str, Path]):
    """The mutable object tree (``ModelT``) of a model; a truncated or corrupt one is a one-line ModelError naming
    it (:func:`blazepose_tf.tflite_file.flatbuffer_errors`)."""
    buf = read_bytes(model)
    s = schema()
    with flatbuffer_errors(source_label(model)):
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
