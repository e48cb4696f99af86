"""How this project's int8 export chooses activation ranges: the facts both the exporter (:mod:`export.ranges`,
:mod:`export.int8_export`, ``export.to_tflite``) and the training-time int8 simulation
(:mod:`blazepose_tf.models.fake_quant`) rely on, so that the simulation quantizes as the export does.
"""
from __future__ import annotations

#: The default activation range of a tensor: the ``RANGE_PERCENTILE``-th percentile of its values on the
#: calibration inputs (and the ``100 - RANGE_PERCENTILE``-th below), clipping the rest. Chosen on LSPET dev
#: (pipeline PCK@0.2 behind MediaPipe's detector, output bias correction and the layer correction when kept),
#: percentile / min-max / MSE ranges: official Full 53.6 / 51.3 / 52.3 (fp32 55.7; before :data:`MIN_POSITIONS`),
#: zoo Full 50.9 / 50.4 (fp32 56.7), official Lite 20.6 / 18.3 (fp32 44.4).
RANGE_PERCENTILE = 99.99

#: Tensors with at most this many spatial positions (per-image feature vectors: the 2×2 and 1×1 heads) keep their
#: min/max range: their rare large values are signal, not outliers. Clipped at the 99.99th percentile, the official
#: Lite's 2×2×192 features before its dense heads lost them, and its presence and world heads' int8 error reached
#: 1.07× their RMS. On LSPET dev (pipeline PCK@0.2) the zoo Full's plain int8 scores less with them kept (50.9
#: against 53.1), but its int8-selective (the single-tensor ranking of session 9, experiments/README.md) met its
#: target (56.0, fp32 56.7) with 12 float tensors, where with them narrowed 21 tensors (the whole 20% MAC budget)
#: reached 55.7.
MIN_POSITIONS = 4
