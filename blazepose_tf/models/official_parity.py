"""Parity of a converted official model with MediaPipe's .tflite: the metrics and acceptance criteria (shared by
``python -m blazepose_tf.models.convert_official``, the tests and ``benchmarks/converted_parity.py``), and the
sample inputs they are measured on.

Everything here runs on the foundations only (:mod:`blazepose_tf.tflite_file`'s interpreter, the codecs and the
contract), not on :mod:`blazepose_tf.runtime`: the .tflite runs as the runtime's ``TFLiteRunner`` runs it (one
thread, XNNPACK, one example at a time) and the Keras model as its ``KerasRunner`` does (one ``tf.function``
call, ``training=False``), so the numbers are the runners'.
"""
from __future__ import annotations

from typing import Any, Optional

import keras
import numpy as np
import tensorflow as tf

from blazepose_tf import contract
from blazepose_tf.codecs import roi as roi_codec
from blazepose_tf.codecs.anchors import generate_anchors
from blazepose_tf.codecs.detection import RawDetections, decode_detections, weighted_nms
from blazepose_tf.models.official_translation import official_role
from blazepose_tf.official import official_model_path
from blazepose_tf.tflite_file import invoke, load_interpreter
from blazepose_tf.types import Roi

# Parity tolerances (issue acceptance criteria).
LANDMARK_PX_TOL = 0.5       # crop pixels
PROBABILITY_TOL = 1e-3      # visibility / presence after sigmoid
REGRESSOR_PX_TOL = 0.5      # detector input pixels
NMS_TOL = 1e-3              # normalized box / keypoint coordinates and scores after NMS


# --------------------------------------------------------------------------------------------------------------
# Running the two models
# --------------------------------------------------------------------------------------------------------------

def official_outputs(name: str, batch: np.ndarray, num_threads: int = 1) -> dict[str, np.ndarray]:
    """The official .tflite's outputs on ``batch`` (N, H, W, 3), by role (its outputs are in the contract's
    order, :data:`blazepose_tf.contract.OUTPUT_ROLES`; checked against the contract)."""
    role = official_role(name)
    path = official_model_path(name)
    it = load_interpreter(path, num_threads)
    roles = contract.OUTPUT_ROLES[role]
    shapes = [tuple(int(v) for v in d["shape"]) for d in it.get_output_details()]
    input_shape = tuple(int(v) for v in it.get_input_details()[0]["shape"][1:])
    contract.check_model(role, str(path), input_shape, list(zip(roles, shapes)))
    return dict(zip(roles, invoke(it, batch)))


def keras_outputs(model: keras.Model, batch: np.ndarray) -> dict[str, np.ndarray]:
    """A converted model's outputs on ``batch``, by output name (the converter names them by role)."""
    run = tf.function(lambda t: model(t, training=False), reduce_retracing=True, autograph=False)
    outs = run(np.asarray(batch, np.float32))
    if not isinstance(outs, (list, tuple)):
        outs = [outs]
    return {name: np.asarray(o) for name, o in zip(model.output_names, outs)}


def detections(outputs: dict[str, np.ndarray], index: int = 0, anchors: Optional[np.ndarray] = None,
               min_score: float = 0.5, iou_threshold: float = 0.3) -> RawDetections:
    """Example ``index`` of detector outputs decoded and weighted-NMS'ed, as the runtime's ``PersonDetector``
    does (input pixels of the letterboxed input, normalised)."""
    anchors = generate_anchors() if anchors is None else anchors
    return weighted_nms(decode_detections(outputs["regressors"][index], outputs["scores"][index], anchors,
                                          min_score=min_score), iou_threshold)


def sample_inputs(image: np.ndarray) -> dict[str, np.ndarray]:
    """Each official model's input for one RGB image, by name: the detector's (letterboxed, [-1, 1]) and, for every
    landmark model, the crop of the official detector's first detection (or the centred square if there is none,
    [0, 1])."""
    h, w = image.shape[:2]
    det_h, det_w = contract.INPUT_SHAPES[contract.DETECTOR][:2]
    lmk_h, lmk_w = contract.INPUT_SHAPES[contract.LANDMARKS][:2]
    padded, _ = roi_codec.letterbox_roi(w, h, det_w, det_h)
    det_in = roi_codec.to_tensor(roi_codec.crop(image, padded, det_w, det_h, border="zero"),
                        contract.INPUT_RANGES[contract.DETECTOR])
    dets = detections(official_outputs("pose_detection", det_in))
    roi: Optional[Roi] = None
    if len(dets):  # the pipeline's ROI from the first detection's centre and scale keypoints
        keypoints = roi_codec.project_to_image(dets.keypoints[0], padded)
        roi = roi_codec.alignment_roi(keypoints[0], keypoints[1], scale=contract.ROI_SCALE)
        roi = roi if roi.width > 1e-3 else None
    if roi is None:
        side = float(min(h, w))
        roi = Roi(w / 2, h / 2, side, side, 0.0)
    lmk_in = roi_codec.to_tensor(roi_codec.crop(image, roi, lmk_w, lmk_h, border="replicate"),
                        contract.INPUT_RANGES[contract.LANDMARKS])
    return {name: det_in if role == contract.DETECTOR else lmk_in
            for name, role in contract.OFFICIAL_MODEL_ROLES.items()}


# --------------------------------------------------------------------------------------------------------------
# Metrics
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
        dets = [detections(out, b, anchors, min_score, iou_threshold) for out in (reference, candidate)]
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


def check_parity(name: str, model: keras.Model, batch: np.ndarray) -> tuple[bool, dict[str, Any]]:
    """(within the acceptance criteria, statistics) of a converted official model against its .tflite on
    ``batch``."""
    ref = official_outputs(name, batch)
    got = keras_outputs(model, batch)
    if official_role(name) == contract.DETECTOR:
        stats = detector_parity(ref, got)
        return detector_parity_ok(stats), stats
    stats = landmark_parity(ref, got)
    return landmark_parity_ok(stats), stats


def format_stats(stats: dict[str, Any]) -> str:
    """``key=value`` pairs, floats with 3 significant digits."""
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in stats.items())
