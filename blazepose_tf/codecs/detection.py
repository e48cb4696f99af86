"""Person-detector tensor decoding and weighted NMS (MediaPipe TensorsToDetections + NonMaxSuppression).

All coordinates here are normalized to the detector's (letterboxed) input square, [0, 1].
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NUM_DETECTOR_KEYPOINTS = 4
NUM_COORDS = 4 + 2 * NUM_DETECTOR_KEYPOINTS


@dataclass
class RawDetections:
    """Decoded detector candidates, normalized input coordinates.

    Attributes:
        boxes: (M, 4) xmin, ymin, xmax, ymax.
        keypoints: (M, K, 2) x, y.
        scores: (M,) probabilities.
    """

    boxes: np.ndarray
    keypoints: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    def take(self, idx) -> "RawDetections":
        return RawDetections(self.boxes[idx], self.keypoints[idx], self.scores[idx])


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function, without overflow warnings for large logits."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float32)))


def decode_boxes(raw: np.ndarray, anchors: np.ndarray, input_size: float = 224.0) -> tuple[np.ndarray, np.ndarray]:
    """Decodes (N, 4+2K) regressors against (N, 4) anchors.

    Box = (cx, cy, w, h) then K keypoints (x, y), all in input pixels relative to the anchor centre, scaled by
    the anchor size (1 for fixed-size anchors). Returns boxes (N, 4) as xmin, ymin, xmax, ymax and keypoints
    (N, K, 2), normalized.
    """
    raw = np.asarray(raw, dtype=np.float32)
    raw = raw.reshape(len(anchors), raw.shape[-1] if raw.ndim > 1 else NUM_COORDS)
    ax, ay, aw, ah = (anchors[:, i:i + 1] for i in range(4))
    cx = raw[:, 0:1] / input_size * aw + ax
    cy = raw[:, 1:2] / input_size * ah + ay
    w = raw[:, 2:3] / input_size * aw
    h = raw[:, 3:4] / input_size * ah
    boxes = np.concatenate([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    k = (raw.shape[1] - 4) // 2
    kp = raw[:, 4:4 + 2 * k].reshape(-1, k, 2)
    kx = kp[..., 0] / input_size * aw + ax
    ky = kp[..., 1] / input_size * ah + ay
    return boxes, np.stack([kx, ky], axis=-1)


def encode_boxes(boxes: np.ndarray, keypoints: np.ndarray, anchors: np.ndarray,
                 input_size: float = 224.0) -> np.ndarray:
    """Inverse of :func:`decode_boxes`: (N, 4) xyxy boxes and (N, K, 2) keypoints → (N, 4+2K) regressors."""
    ax, ay, aw, ah = (anchors[:, i:i + 1] for i in range(4))
    cx = (boxes[:, 0:1] + boxes[:, 2:3]) / 2
    cy = (boxes[:, 1:2] + boxes[:, 3:4]) / 2
    w = boxes[:, 2:3] - boxes[:, 0:1]
    h = boxes[:, 3:4] - boxes[:, 1:2]
    out = [(cx - ax) / aw * input_size, (cy - ay) / ah * input_size, w / aw * input_size, h / ah * input_size]
    kx = (keypoints[..., 0] - ax) / aw * input_size
    ky = (keypoints[..., 1] - ay) / ah * input_size
    kps = np.stack([kx, ky], axis=-1).reshape(len(anchors), -1)
    return np.concatenate(out + [kps], axis=1).astype(np.float32)


def decode_detections(raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray,
                      min_score: float = 0.5, score_clip: float = 100.0,
                      input_size: float = 224.0) -> RawDetections:
    """Decodes detector outputs and keeps candidates with sigmoid(clip(logit)) >= ``min_score``."""
    logits = np.clip(np.asarray(raw_scores, dtype=np.float32).reshape(-1), -score_clip, score_clip)
    scores = sigmoid(logits)
    keep = np.nonzero(scores >= min_score)[0]
    raw_boxes = np.asarray(raw_boxes, dtype=np.float32).reshape(len(anchors), -1)
    boxes, kps = decode_boxes(raw_boxes[keep], anchors[keep], input_size)
    return RawDetections(boxes, kps, scores[keep])


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box against (M, 4) boxes (0 where they do not intersect)."""
    ix0 = np.maximum(box[0], boxes[:, 0])
    iy0 = np.maximum(box[1], boxes[:, 1])
    ix1 = np.minimum(box[2], boxes[:, 2])
    iy1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(union > 0, inter / union, 0.0)
    return out


def weighted_nms(dets: RawDetections, iou_threshold: float = 0.3, max_detections: int = -1) -> RawDetections:
    """Weighted ("blending") NMS: each kept detection is the score-weighted mean of the box corners and
    keypoints of every remaining candidate overlapping it by IoU > ``iou_threshold`` (itself included), with
    the top candidate's score."""
    order = np.argsort(-dets.scores, kind="stable")
    boxes_out, kps_out, scores_out = [], [], []
    while len(order) and (max_detections < 0 or len(scores_out) < max_detections):
        top = order[0]
        overlap = iou(dets.boxes[top], dets.boxes[order]) > iou_threshold
        scores_out.append(dets.scores[top])
        if not overlap.any():
            # Only a degenerate (zero-area) top box overlaps nothing, not even itself: keep it as is and stop,
            # as MediaPipe does when an iteration removes no candidate.
            boxes_out.append(dets.boxes[top])
            kps_out.append(dets.keypoints[top])
            break
        cand = order[overlap]
        w = dets.scores[cand]
        total = w.sum()
        boxes_out.append((dets.boxes[cand] * w[:, None]).sum(0) / total)
        kps_out.append((dets.keypoints[cand] * w[:, None, None]).sum(0) / total)
        order = order[~overlap]
    if not scores_out:
        k = dets.keypoints.shape[1] if dets.keypoints.ndim == 3 else NUM_DETECTOR_KEYPOINTS
        return RawDetections(np.zeros((0, 4), np.float32), np.zeros((0, k, 2), np.float32), np.zeros(0, np.float32))
    return RawDetections(np.asarray(boxes_out, np.float32), np.asarray(kps_out, np.float32),
                         np.asarray(scores_out, np.float32))
