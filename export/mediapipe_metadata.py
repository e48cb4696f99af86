"""TFLite Metadata (the ``TFLITE_METADATA`` buffer) that MediaPipe Tasks reads from a model.

MediaPipe Tasks configures its image preprocessing from the model's TFLite Metadata: a float32 image input
*must* carry ``NormalizationOptions`` (``x = (pixel - mean) / std`` on 0..255 RGB values), else
``PoseLandmarker`` creation fails with "Input tensor has type float32: it requires specifying
NormalizationOptions metadata". This module writes that metadata without the ``tflite-support`` or
``mediapipe`` packages: the metadata flatbuffer schema is plain generated Python
(``metadata_schema_py_generated.py``, only needs ``flatbuffers``), extracted from the mediapipe wheel by
:mod:`data.fetch_official` into ``cache_dir()/"metadata"``.

What is written (one ``ModelMetadata`` table, file identifier ``M001``, stored in the model's ``metadata``
list under the name ``TFLITE_METADATA``, next to the project's own ``blazepose_tf`` JSON blob):

* model: ``name``, ``description``, ``version``, ``author``, ``license``, ``min_parser_version`` 1.0.0;
* one subgraph; its input tensor: name ``image``, ``ImageProperties`` (RGB), a ``NormalizationOptions``
  process unit (one mean/std, MediaPipe rejects per-channel values) and ``stats`` min/max of the input range;
* one entry per output tensor, **in the model's output order** (MediaPipe pairs output metadata with output
  tensors by position): name, description, ``FeatureProperties``.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any, Optional, Sequence, Union

import flatbuffers
import numpy as np

from blazepose_tf.errors import ModelError
from blazepose_tf.tflite_file import wheel_schema
from export.metadata import get_metadata_buffers
from export.metadata import normalization_for_range as normalization_for_range_rgb

TFLITE_METADATA_NAME = "TFLITE_METADATA"
METADATA_FILE_IDENTIFIER = b"M001"
MIN_PARSER_VERSION = "1.0.0"  # NormalizationOptions / ImageProperties / FeatureProperties all date from 1.0.0


def metadata_schema() -> ModuleType:
    """The TFLite Metadata schema module (generated Python from the mediapipe wheel, fetched on first use)."""
    return wheel_schema("metadata_schema_py_generated.py", "TFLite metadata schema")


@dataclass(frozen=True)
class TensorDoc:
    """Name and description of one tensor, as stored in the metadata."""

    name: str
    description: str


@dataclass(frozen=True)
class ImageInputDoc:
    """The image input: name, description and normalization ``(pixel - mean) / std`` on 0..255 values."""

    name: str
    description: str
    mean: float
    std: float

    @property
    def value_range(self) -> tuple[float, float]:
        """The float range the model sees: ``((0 - mean) / std, (255 - mean) / std)``."""
        return ((0.0 - self.mean) / self.std, (255.0 - self.mean) / self.std)


def normalization_for_range(value_range: Sequence[float]) -> tuple[float, float]:
    """(mean, std) on 0..255 pixels that map onto ``value_range`` (e.g. [-1, 1] -> (127.5, 127.5))."""
    lo, hi = float(value_range[0]), float(value_range[1])
    if not hi > lo:
        raise ModelError(f"invalid input range {tuple(value_range)}: need LO < HI")
    norm = normalization_for_range_rgb((lo, hi))
    return norm["mean"][0], norm["std"][0]


def build_model_metadata(*, name: str, description: str, version: str, image: ImageInputDoc,
                         outputs: Sequence[TensorDoc], author: str = "blazepose_tf",
                         license_text: Optional[str] = None) -> bytes:
    """Serializes a ``ModelMetadata`` flatbuffer (identifier ``M001``) for a one-input image model."""
    s = metadata_schema()
    if not image.std or not np.isfinite(image.std) or not np.isfinite(image.mean):
        raise ModelError(f"invalid input normalization mean={image.mean} std={image.std}")

    img_props = s.ImagePropertiesT()
    img_props.colorSpace = s.ColorSpaceType.RGB
    content = s.ContentT()
    content.contentPropertiesType = s.ContentProperties.ImageProperties
    content.contentProperties = img_props
    norm = s.NormalizationOptionsT()
    norm.mean = np.array([image.mean], np.float32)
    norm.std = np.array([image.std], np.float32)
    unit = s.ProcessUnitT()
    unit.optionsType = s.ProcessUnitOptions.NormalizationOptions
    unit.options = norm
    stats = s.StatsT()
    lo, hi = image.value_range
    stats.max = np.array([hi], np.float32)
    stats.min = np.array([lo], np.float32)
    inp = s.TensorMetadataT()
    inp.name = image.name
    inp.description = image.description
    inp.content = content
    inp.processUnits = [unit]
    inp.stats = stats

    outs = []
    for doc in outputs:
        t = s.TensorMetadataT()
        t.name = doc.name
        t.description = doc.description
        c = s.ContentT()
        c.contentPropertiesType = s.ContentProperties.FeatureProperties
        c.contentProperties = s.FeaturePropertiesT()
        t.content = c
        t.stats = s.StatsT()
        outs.append(t)

    sub = s.SubGraphMetadataT()
    sub.inputTensorMetadata = [inp]
    sub.outputTensorMetadata = outs
    meta = s.ModelMetadataT()
    meta.name = name
    meta.description = description
    meta.version = str(version)
    meta.author = author
    if license_text:
        meta.license = license_text
    meta.subgraphMetadata = [sub]
    meta.minParserVersion = MIN_PARSER_VERSION
    builder = flatbuffers.Builder(1024)
    builder.Finish(meta.Pack(builder), file_identifier=METADATA_FILE_IDENTIFIER)
    return bytes(builder.Output())


def _text(v: Any) -> Optional[str]:
    if v is None:
        return None
    return v.decode("utf-8", "replace") if isinstance(v, (bytes, bytearray)) else str(v)


def parse_model_metadata(blob: bytes) -> dict[str, Any]:
    """A ``ModelMetadata`` flatbuffer as a plain dict (name, description, version, input, outputs...)."""
    s = metadata_schema()
    if len(blob) < 8 or blob[4:8] != METADATA_FILE_IDENTIFIER:
        raise ModelError("not a TFLite ModelMetadata buffer (no 'M001' identifier)")
    m = s.ModelMetadataT.InitFromObj(s.ModelMetadata.GetRootAs(blob, 0))
    out: dict[str, Any] = {"name": _text(m.name), "description": _text(m.description),
                           "version": _text(m.version), "author": _text(m.author), "license": _text(m.license),
                           "min_parser_version": _text(m.minParserVersion), "inputs": [], "outputs": []}
    for sub in (m.subgraphMetadata or [])[:1]:
        for t in sub.inputTensorMetadata or []:
            entry: dict[str, Any] = {"name": _text(t.name), "description": _text(t.description)}
            for u in t.processUnits or []:
                if u.optionsType == s.ProcessUnitOptions.NormalizationOptions:
                    entry["mean"] = [float(v) for v in np.asarray(u.options.mean).reshape(-1)]
                    entry["std"] = [float(v) for v in np.asarray(u.options.std).reshape(-1)]
            if t.content is not None and t.content.contentPropertiesType == s.ContentProperties.ImageProperties:
                entry["color_space"] = int(t.content.contentProperties.colorSpace)
            out["inputs"].append(entry)
        for t in sub.outputTensorMetadata or []:
            out["outputs"].append({"name": _text(t.name), "description": _text(t.description)})
    return out


def read_tflite_metadata(model: Union[bytes, str, Any]) -> Optional[dict[str, Any]]:
    """The ``TFLITE_METADATA`` of a .tflite file or buffer as a dict, or None when it has none."""
    blob = get_metadata_buffers(model).get(TFLITE_METADATA_NAME)
    return None if blob is None else parse_model_metadata(blob)
