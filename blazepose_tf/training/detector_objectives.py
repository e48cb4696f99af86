"""What detector training optimizes and measures: model construction (our presets or the converted official
detector), the weighted classification + regression loss, and the dev detection rate. The tracker's
counterparts live in :mod:`blazepose_tf.training.objectives`."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import tensorflow as tf

from blazepose_tf.codecs.anchors import AnchorOptions, generate_anchors
from blazepose_tf.codecs.detection import decode_detections, weighted_nms
from blazepose_tf.codecs.targets import person_target
from blazepose_tf.errors import UserError
from blazepose_tf.losses import detector_classification_loss, detector_regression_loss
from blazepose_tf.topology import BLAZEPOSE_33, Topology
from blazepose_tf.training.objectives import Models

OFFICIAL_DETECTOR_PRESET = "official_detector"
SMOKE_DETECTOR_PRESET = "detector_smoke"
# A person counts as detected when a detection's centre keypoint (mid-hip) lies within this fraction of the
# person's body radius |kp1 - kp0| of the person's own: the tracker's crop is then roughly right.
MATCH_RADIUS = 0.5


def build_detector_models(preset: str) -> Models:
    """Our detector presets (``detector``, ``detector_lite``; ``detector_smoke`` for tests) or
    ``official_detector``: the converted official detector, for fine-tuning. The same model is trained and
    exported (no training-only heads)."""
    if preset == OFFICIAL_DETECTOR_PRESET:
        from blazepose_tf.models.convert_official import load_converted
        model = load_converted("pose_detection")
    else:
        from blazepose_tf.models.detector import build_detector, with_detector_config
        if preset == SMOKE_DETECTOR_PRESET:  # a tiny detector that builds and traces fast: for smoke tests only
            preset = with_detector_config("detector_lite", name=SMOKE_DETECTOR_PRESET, stem_filters=8,
                                          stage_filters=(8, 16, 16, 16), stage_blocks=(1, 1, 1, 1),
                                          fpn_filters=(8, 16, 16))
        try:
            model = build_detector(preset)
        except KeyError as e:
            raise UserError(str(e).strip("'\"")) from None
    return Models(training=model, inference=model, num_points=0, input_size=int(model.inputs[0].shape[1]))


def detector_losses(outputs, targets: Mapping[str, tf.Tensor], weights: Mapping[str, float],
                    classification: str = "focal") -> dict:
    """Weighted loss terms: anchor classification (focal or hard-negative BCE) and box/keypoint regression."""
    if not isinstance(outputs, Mapping):
        outputs = dict(zip(("regressors", "scores"), outputs))
    return {
        "classification": weights.get("classification", 1.0) * detector_classification_loss(
            targets["labels"], outputs["scores"], classification),
        "regression": weights.get("regression", 1.0) * detector_regression_loss(
            targets["regressors"], outputs["regressors"], targets["regressor_mask"]),
    }


def match_detections(keypoints: np.ndarray, people: np.ndarray, valid: np.ndarray,
                     topology: Topology = BLAZEPOSE_33) -> tuple[int, int, int]:
    """Greedily matches detections to people by their centre keypoint.

    Args:
        keypoints: (M, 4, 2) detections' keypoints, normalized to the input.
        people: (P, K, 2) people's keypoints (normalized); valid: (P, K).
    Returns: (people that could be placed, people detected, detections matched to nobody).
    """
    used = np.zeros(len(keypoints), bool)
    placed = found = 0
    for pts, ok in zip(people, valid > 0):
        target = person_target(pts, ok, topology) if ok.any() else None
        if target is None or not target.keypoint_mask[:2].all():
            continue
        placed += 1
        r = float(np.linalg.norm(target.keypoints[1] - target.keypoints[0]))
        if not len(keypoints):
            continue
        d = np.linalg.norm(keypoints[:, 0] - target.keypoints[0], axis=1)
        d[used] = np.inf
        j = int(np.argmin(d))
        if d[j] <= MATCH_RADIUS * max(r, 1e-6):
            used[j] = True
            found += 1
    return placed, found, int((~used).sum())


def evaluate_detector_dev(models: Models, dev_data: str, topology: Topology, data_cfg, max_batches: int, writer,
                          step: int, min_score: float = 0.5, iou_threshold: float = 0.3) -> dict:
    """Detection rate on the dev images (after decoding and weighted NMS, at the runtime's thresholds) and
    unmatched detections per image."""
    from blazepose_tf.training.detector_data import detector_dataset

    anchors = generate_anchors(AnchorOptions(input_size=models.input_size))
    ds = detector_dataset(dev_data, data_cfg, training=False, topology=topology)
    model = tf.function(lambda x: models.inference(x, training=False))
    placed = found = extra = images = 0
    for i, (batch, t) in enumerate(ds):
        if max_batches and i >= max_batches:
            break
        out = model(batch)
        out = dict(zip(("regressors", "scores"), out)) if not isinstance(out, Mapping) else out
        regs, scores = out["regressors"].numpy(), out["scores"].numpy()
        people, valid = t["people"].numpy(), t["people_valid"].numpy()
        for b in range(len(regs)):
            dets = weighted_nms(decode_detections(regs[b], scores[b], anchors, min_score=min_score,
                                                  input_size=float(models.input_size)), iou_threshold)
            p, f, e = match_detections(dets.keypoints, people[b], valid[b], topology)
            placed, found, extra, images = placed + p, found + f, extra + e, images + 1
    metrics = {"detection_rate": 100.0 * found / max(placed, 1), "people": placed,
               "unmatched_per_image": extra / max(images, 1)}
    with writer.as_default(step=step):
        tf.summary.scalar("dev/detection_rate", metrics["detection_rate"])
        tf.summary.scalar("dev/unmatched_per_image", metrics["unmatched_per_image"])
    return metrics
