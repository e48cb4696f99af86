"""Keras 3 model builders: the BlazePose tracker (heatmap + regression, paper Fig. 4) and the BlazeFace-style
person detector, each with its presets beside its builder (one table per family: ``TRACKER_PRESETS``,
``DETECTOR_PRESETS``, which also name MediaPipe's converted models and the smoke-test presets).

    >>> from blazepose_tf.models import build_tracker, build_detector
    >>> tracker = build_tracker("lite")          # .training / .inference / .inference_with_heatmap
    >>> detector = build_detector("detector")

``python -m blazepose_tf.models.summary`` prints parameters and FLOPs of every preset.

The names below are imported on first use (PEP 562), so that a command of this package answers ``--help`` or a
bad flag without importing Keras and TensorFlow; the first one used also registers every custom layer of the
package for loading (:func:`register_custom_layers`).
"""
from __future__ import annotations

import importlib

from blazepose_tf.models.lazy_exports import lazy_getattr

_SOURCES = {
    "blazepose_tf.models.blocks": ("CUSTOM_OBJECTS", "ChannelAffine", "ChannelPad", "FusedBatchNorm", "StopGradient"),
    "blazepose_tf.models.detector": ("BUILT_DETECTOR_PRESETS", "DETECTOR_PRESETS", "DetectorConfig", "build_detector"),
    "blazepose_tf.models.detector_gate": ("ScoreGate", "gate_detector"),
    "blazepose_tf.models.tracker": ("BUILT_TRACKER_PRESETS", "TRACKER_PRESETS", "TrackerConfig", "TrackerModels",
                                    "build_tracker"),
}
# The modules whose layers are registered as Keras serializables (a saved model names them).
_REGISTERING = ("blazepose_tf.models.blocks", "blazepose_tf.models.official_layers",
                "blazepose_tf.models.detector_gate", "blazepose_tf.models.fake_quant")

__all__ = [name for names in _SOURCES.values() for name in names] + ["register_custom_layers"]


def register_custom_layers() -> None:
    """Imports every module of the package that registers Keras layers, so that any saved model of this project
    (built, converted or gated) deserializes."""
    for module in _REGISTERING:
        importlib.import_module(module)


__getattr__ = lazy_getattr(__name__, _SOURCES, before=register_custom_layers)
