"""Keras 3 model builders: the BlazePose tracker (heatmap + regression, paper Fig. 4) and the BlazeFace-style
person detector, each with its presets beside its builder (one table per family: ``TRACKER_PRESETS``,
``DETECTOR_PRESETS``, which also name MediaPipe's converted models and the smoke-test presets).

    >>> from blazepose_tf.models import build_tracker, build_detector
    >>> tracker = build_tracker("lite")          # .training / .inference / .inference_with_heatmap
    >>> detector = build_detector("detector")

``python -m blazepose_tf.models.summary`` prints parameters and FLOPs of every preset.
"""
from blazepose_tf.models import official_layers  # noqa: F401  registers the converted official models' layers
from blazepose_tf.models.blocks import CUSTOM_OBJECTS, ChannelAffine, ChannelPad, FusedBatchNorm, StopGradient
from blazepose_tf.models.detector import BUILT_DETECTOR_PRESETS, DETECTOR_PRESETS, DetectorConfig, build_detector
from blazepose_tf.models.detector_gate import ScoreGate, gate_detector
from blazepose_tf.models.tracker import (BUILT_TRACKER_PRESETS, TRACKER_PRESETS, TrackerConfig, TrackerModels,
                                         build_tracker)

__all__ = [
    "CUSTOM_OBJECTS", "ChannelAffine", "ChannelPad", "FusedBatchNorm", "StopGradient",
    "BUILT_DETECTOR_PRESETS", "DETECTOR_PRESETS", "DetectorConfig", "build_detector", "ScoreGate", "gate_detector",
    "BUILT_TRACKER_PRESETS", "TRACKER_PRESETS", "TrackerConfig", "TrackerModels", "build_tracker",
]
