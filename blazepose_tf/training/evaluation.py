"""Dev evaluation during training: a tracker's PCK@0.2 on the dev split's aligned crops ("crop PCK"), a
detector's detection rate on the dev images; both logged to TensorBoard and returned as the run's dev metrics.

The crop PCK is :func:`blazepose_tf.metrics.pck` (the one PCK implementation; ``export.to_tflite`` reports its
crop PCK with it too), but on other crops than the export report's: here every person of the dev shards written by
``data.prepare``, each on the crop aligned on its ground truth *merged with the teacher's pseudo-labels* (the
alignment radius covers both), read back from the stored JPEG crop and scored on its ground-truth points in crop
pixels; the export report (and MODEL_ZOO.md's crop PCK) takes the one scored person per dev image
(:func:`blazepose_tf.metrics.select_scored_person`), crops the original image on the ground truth alone
(:func:`blazepose_tf.codecs.targets.gt_alignment_roi`) and scores in image pixels. The crop is a similarity
transform, so the pixel units do not change a PCK; the people and the alignment do, so the two numbers differ.
"""
from __future__ import annotations

from typing import Optional, Union

import numpy as np
import tensorflow as tf

from blazepose_tf.codecs.anchors import AnchorOptions, generate_anchors
from blazepose_tf.codecs.detection import decode_detections, weighted_nms
from blazepose_tf.codecs.landmarks import refine_with_heatmap
from blazepose_tf.codecs.detector_targets import person_target
from blazepose_tf.contract import DETECTOR_ROLES
from blazepose_tf.losses import split_landmarks
from blazepose_tf.metrics import MATCH_RADIUS, TORSO_POINTS, PckResult, pck
from blazepose_tf.topology import BLAZEPOSE_33, Topology
from blazepose_tf.training.data import Examples, tracker_dataset
from blazepose_tf.training.detector_data import detector_dataset
from blazepose_tf.training.drawing import draw_predictions
from blazepose_tf.training.registry import Models, outputs_by_name
from blazepose_tf.training.tracker_targets import target_encoder


# ------------------------------------------------------------------------------------------------- tracker
def crop_pck(pred_px: np.ndarray, gt_px: np.ndarray, is_gt: np.ndarray, topology: Topology,
             threshold: float = 0.2) -> PckResult:
    """:func:`blazepose_tf.metrics.pck` of a batch of aligned crops: (B, P, 2+) predicted and ground-truth points
    in crop pixels, ``is_gt`` (B, P) where the ground truth annotates a point; crops whose torso (both shoulders
    and hips) is not all ground truth are not scored. See the module docstring for how these crops differ from
    the export report's."""
    k = topology.num_keypoints
    torso = [topology.index(n) for n in TORSO_POINTS]
    scored = [b for b in range(len(gt_px)) if is_gt[b, torso].all()]
    return pck([(gt_px[b, :k, :2], is_gt[b, :k] > 0) for b in scored], [pred_px[b, :k, :2] for b in scored],
               threshold=threshold, topology=topology)


class TrackerDevEvaluation:
    """Crop PCK@0.2 of the inference model on the dev crops (ground-truth points only; see the module docstring),
    also after heatmap refinement when the model's heatmap refines every point, coordinate L1, and sample
    images. The dev pipeline and the compiled inference are built once and reused by every evaluation; call
    with (writer, step) → metrics.

    Args:
        dev: glob of dev shards, or :func:`blazepose_tf.training.data.tracker_examples` (decoded once).
        max_batches: batches per evaluation (0: the whole dev set).
        views: other models scored on the same crops in the same pass, {metric prefix: model} (e.g. the
            simulated-int8 view of ``--simulate_int8``): their crop PCK and coordinate L1 under that prefix.
    """

    def __init__(self, models: Models, dev: Union[str, Examples], topology: Topology, data_cfg,
                 max_batches: int = 0, views: Optional[dict] = None):
        self.models, self.topology = models, topology
        ds = tracker_dataset(dev, data_cfg, training=False, topology=topology,
                             encode_targets=target_encoder(models.num_points, models.input_size, with_offsets=False))
        self.dataset = ds.take(max_batches) if max_batches else ds
        self.infer = _compiled(models.inference)
        self.views = {prefix: _compiled(view) for prefix, view in (views or {}).items()}

    def __call__(self, writer, step: int) -> dict:
        score = _CropScore()
        view_scores = {prefix: _CropScore() for prefix in self.views}
        first = None
        for images, t in self.dataset:
            gt = t["keypoints_px"].numpy()
            is_gt = t["is_gt"].numpy()
            pred = score.add(self.infer(images), gt, is_gt, self.topology, self.models.input_size)
            for prefix, infer in self.views.items():
                view_scores[prefix].add(infer(images), gt, is_gt, self.topology, self.models.input_size)
            if first is None:
                first = (images.numpy()[:4], pred[:4], gt[:4], is_gt[:4])
        metrics = score.metrics()
        for prefix, view_score in view_scores.items():
            metrics.update({prefix + k: v for k, v in view_score.metrics().items() if k.startswith(("pck", "coord"))})
        with writer.as_default(step=step):
            tf.summary.scalar("dev/pck@0.2", metrics["pck"])
            tf.summary.scalar("dev/coord_l1_px", metrics["coord_l1_px"])
            if first is not None:
                tf.summary.image("dev/predictions", draw_predictions(*first, self.topology.num_keypoints),
                                 max_outputs=4)
        return metrics


def _compiled(model):
    """The model's inference as a compiled function of an image batch → {output name: tensor}."""
    return tf.function(lambda x: outputs_by_name(model(x, training=False), model.output_names),
                       reduce_retracing=True, autograph=False)


class _CropScore:
    """Running crop PCK (regressed, and after heatmap refinement when the heatmap refines every point, as in
    the runtime) and coordinate L1."""

    def __init__(self) -> None:
        self.correct = self.total = 0
        self.correct_refined: Optional[int] = None
        self.coord_err: list[float] = []

    def add(self, out: dict, gt: np.ndarray, is_gt: np.ndarray, topology: Topology, size: int) -> np.ndarray:
        xyz, _, _ = split_landmarks(out["landmarks"], size)
        pred = xyz.numpy() * size
        result = crop_pck(pred, gt, is_gt, topology)
        self.correct, self.total = self.correct + result.num_correct, self.total + result.num_points
        if "heatmap" in out and out["heatmap"].shape[-1] == pred.shape[1]:
            hm = out["heatmap"].numpy()
            refined = pred.copy()
            for b in range(len(pred)):
                refined[b, :, :2] = refine_with_heatmap(pred[b, :, :2] / size, hm[b]) * size
            self.correct_refined = (self.correct_refined or 0) + crop_pck(refined, gt, is_gt, topology).num_correct
        self.coord_err.append(float(np.abs(pred[..., :2] - gt[..., :2])[is_gt > 0].mean()))
        return pred

    def metrics(self) -> dict:
        m = {"pck": 100.0 * self.correct / max(self.total, 1), "points": self.total,
             "coord_l1_px": float(np.mean(self.coord_err)) if self.coord_err else float("nan")}
        if self.correct_refined is not None:
            m["pck_refined"] = 100.0 * self.correct_refined / max(self.total, 1)  # after heatmap refinement
        return m


# ------------------------------------------------------------------------------------------------ detector
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


class DetectorDevEvaluation:
    """Detection rate on the dev images (after decoding and weighted NMS, at the runtime's thresholds) and
    unmatched detections per image; the dev pipeline and compiled inference are built once (as
    :class:`TrackerDevEvaluation`); call with (writer, step) → metrics."""

    def __init__(self, models: Models, dev: Union[str, Examples], topology: Topology, data_cfg,
                 max_batches: int = 0, min_score: float = 0.5, iou_threshold: float = 0.3):
        self.topology, self.min_score, self.iou_threshold = topology, min_score, iou_threshold
        self.input_size = models.input_size
        self.anchors = generate_anchors(AnchorOptions(input_size=models.input_size))
        ds = detector_dataset(dev, data_cfg, training=False, topology=topology)
        self.dataset = ds.take(max_batches) if max_batches else ds
        self.infer = tf.function(lambda x: outputs_by_name(models.inference(x, training=False), DETECTOR_ROLES),
                                 reduce_retracing=True, autograph=False)

    def __call__(self, writer, step: int) -> dict:
        placed = found = extra = images = 0
        for batch, t in self.dataset:
            out = self.infer(batch)
            regs, scores = out["regressors"].numpy(), out["scores"].numpy()
            people, valid = t["people"].numpy(), t["people_valid"].numpy()
            for b in range(len(regs)):
                dets = weighted_nms(decode_detections(regs[b], scores[b], self.anchors, min_score=self.min_score,
                                                      input_size=float(self.input_size)), self.iou_threshold)
                p, f, e = match_detections(dets.keypoints, people[b], valid[b], self.topology)
                placed, found, extra, images = placed + p, found + f, extra + e, images + 1
        metrics = {"detection_rate": 100.0 * found / max(placed, 1), "people": placed,
                   "unmatched_per_image": extra / max(images, 1)}
        with writer.as_default(step=step):
            tf.summary.scalar("dev/detection_rate", metrics["detection_rate"])
            tf.summary.scalar("dev/unmatched_per_image", metrics["unmatched_per_image"])
        return metrics
