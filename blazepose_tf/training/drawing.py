"""Sample images for TensorBoard: predicted and ground-truth keypoints drawn on dev crops."""
from __future__ import annotations

import cv2
import numpy as np


def draw_predictions(images: np.ndarray, pred: np.ndarray, gt: np.ndarray, is_gt: np.ndarray,
                     num_keypoints: int) -> np.ndarray:
    """(N, H, W, 3) float images in [0, 1] with the first ``num_keypoints`` predicted points (blue) and the
    ground-truth ones (green, where ``is_gt``) drawn, in crop pixels; returned as float images in [0, 1]."""
    out = []
    for img, p, g, m in zip(images, pred, gt, is_gt):
        canvas = np.ascontiguousarray((img * 255).astype(np.uint8))
        for j in range(num_keypoints):
            if m[j] > 0:
                cv2.circle(canvas, (int(g[j, 0]), int(g[j, 1])), 3, (0, 255, 0), -1)
            cv2.circle(canvas, (int(p[j, 0]), int(p[j, 1])), 2, (255, 0, 0), -1)
        out.append(canvas)
    return np.stack(out).astype(np.float32) / 255.0
