"""Metadata embedded in exported .tflite files.

Every model :mod:`export.to_tflite` writes carries a JSON blob in the flatbuffer's ``metadata`` table under the
name ``blazepose_tf`` (a named buffer; TFLite runtimes ignore names they do not know)::

    {"format": "blazepose_tf.tflite", "format_version": 1,
     "name": "tracker_lite", "kind": "tracker" | "detector", "version": "1", "blazepose_tf_version": "0.1.0",
     "topology": {"name": "blazepose33", "keypoints": [...], "auxiliary": ["roi_center", "roi_scale"]},
     "input": {"name": "image", "shape": [1, 256, 256, 3], "layout": "NHWC", "color": "RGB",
               "dtype": "float32", "range": [0.0, 1.0], "mean": [0, 0, 0], "std": [255, 255, 255]},
     "outputs": {"landmarks": [1, 195], "presence": [1, 1]},
     "quantization": "none" | "fp16" | "dynamic" | "int8", "source": "model.keras", "created": "<ISO time>"}

The input normalization is ``x = (pixel - mean) / std`` on 0..255 RGB values: the tracker takes [0, 1]
(mean 0, std 255), the detector [-1, 1] (mean 127.5, std 127.5). Full-int8 models keep float32 input and
output tensors (quantization happens inside the graph), so this contract is the same for every mode.

:func:`set_metadata_buffers` is the generic writer (any named buffers, replacing same-named ones). MediaPipe's
TFLite-Metadata (``TFLITE_METADATA``, a ``ModelMetadata`` flatbuffer with NormalizationOptions) can be added
through it later, next to the JSON blob.
"""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

import blazepose_tf
from blazepose_tf.contract import INPUT_RANGES, ROLE_KINDS
from blazepose_tf.errors import ModelError
from blazepose_tf.tflite_file import flatbuffer_errors, source_label
from export.tflite_model import pack, read_bytes, rename_signature_tensors, schema, unpack

METADATA_NAME = "blazepose_tf"
FORMAT = "blazepose_tf.tflite"
FORMAT_VERSION = 1

DETECTOR_KEYPOINTS = ("mid_hip", "full_body_scale", "mid_shoulder", "upper_body_scale")


def normalization_for_range(value_range: Sequence[float]) -> dict[str, Any]:
    """Mean/std (per RGB channel, on 0..255 values) mapping pixels onto ``value_range``."""
    lo, hi = float(value_range[0]), float(value_range[1])
    if hi <= lo:
        raise ValueError(f"invalid input range {value_range}")
    std = 255.0 / (hi - lo)
    mean = 0.0 - lo * std + 0.0
    return {"range": [lo, hi], "mean": [mean] * 3, "std": [std] * 3}


def _range_mean_std(value_range: tuple[float, float]) -> tuple[tuple[float, float], float, float]:
    norm = normalization_for_range(value_range)
    return tuple(value_range), norm["mean"][0], norm["std"][0]


# (range, mean, std) per model kind ("detector", "tracker"), from the contract's input ranges; x = (pixel - mean) / std.
NORMALIZATION: dict[str, tuple[tuple[float, float], float, float]] = {
    kind: _range_mean_std(INPUT_RANGES[role]) for role, kind in ROLE_KINDS.items()}


def build_metadata(*, name: str, kind: str, input_shape: Sequence[int], outputs: Mapping[str, Sequence[int]],
                   quantization: str, value_range: Sequence[float], topology_name: Optional[str] = None,
                   keypoints: Optional[Sequence[str]] = None, auxiliary: Sequence[str] = (),
                   version: str = "1", source: Optional[str] = None,
                   extra: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """The JSON metadata document described in the module docstring."""
    doc: dict[str, Any] = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "name": name, "kind": kind, "version": str(version),
        "blazepose_tf_version": blazepose_tf.__version__,
        "topology": {"name": topology_name, "keypoints": list(keypoints or []), "auxiliary": list(auxiliary)},
        "input": {"name": "image", "shape": [int(v) for v in input_shape], "layout": "NHWC", "color": "RGB",
                  "dtype": "float32", **normalization_for_range(value_range)},
        "outputs": {k: [int(v) for v in s] for k, s in outputs.items()},
        "quantization": quantization,
        "source": source,
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
    }
    if extra:
        doc.update(extra)
    return doc


def get_metadata_buffers(model: Union[bytes, str, Path]) -> dict[str, bytes]:
    """All named metadata buffers of a model (``min_runtime_version``, ``blazepose_tf``, ...)."""
    buf = read_bytes(model)
    s = schema()
    out = {}
    with flatbuffer_errors(source_label(model)):  # a truncated or corrupt model: one line naming it
        m = s.Model.GetRootAs(buf, 0)
        for i in range(m.MetadataLength()):
            md = m.Metadata(i)
            name = (md.Name() or b"").decode("utf-8", "replace")
            b = m.Buffers(md.Buffer())
            if b.DataLength():
                out[name] = b.DataAsNumpy().tobytes()
            elif b.Size():
                out[name] = buf[b.Offset():b.Offset() + b.Size()]
            else:
                out[name] = b""
    return out


def set_metadata_buffers(model: Union[bytes, str, Path], entries: Mapping[str, bytes],
                         description: Optional[str] = None, name_io_tensors: bool = True) -> bytes:
    """Adds (or replaces) named metadata buffers; optionally sets the model description and names the I/O
    tensors after their signature keys. Returns the new model bytes."""
    s = schema()
    tree = unpack(model)
    tree.buffers = tree.buffers or []
    tree.metadata = [md for md in (tree.metadata or [])
                     if (md.name.decode() if isinstance(md.name, bytes) else md.name) not in entries]
    for name, data in entries.items():
        buf = s.BufferT()
        buf.data = np.frombuffer(bytes(data), dtype=np.uint8)
        tree.buffers.append(buf)
        md = s.MetadataT()
        md.name = name
        md.buffer = len(tree.buffers) - 1
        tree.metadata.append(md)
    if description is not None:
        tree.description = description
    if name_io_tensors:
        rename_signature_tensors(tree)
    return pack(tree)


def write_metadata(model: Union[bytes, str, Path], doc: Mapping[str, Any], description: Optional[str] = None) -> bytes:
    """Embeds ``doc`` as the ``blazepose_tf`` JSON blob; returns the new model bytes."""
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return set_metadata_buffers(model, {METADATA_NAME: blob}, description=description)


def read_metadata(model: Union[bytes, str, Path]) -> Optional[dict[str, Any]]:
    """The ``blazepose_tf`` JSON blob of a model, or None when it has none (e.g. MediaPipe's models)."""
    blob = get_metadata_buffers(model).get(METADATA_NAME)
    if blob is None:
        return None
    try:
        doc = json.loads(blob.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"the model's {METADATA_NAME!r} metadata is not valid JSON: {e}") from None
    return doc if isinstance(doc, dict) else None
