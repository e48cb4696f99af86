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
            for point, shown, radius, colour in ((g[j], m[j] > 0, 3, (0, 255, 0)), (p[j], True, 2, (255, 0, 0))):
                if shown and np.isfinite(point[:2]).all():   # an untrained model may predict anything
                    x, y = np.clip(point[:2], -1e4, 1e4).astype(int)
                    cv2.circle(canvas, (int(x), int(y)), radius, colour, -1)
        out.append(canvas)
    return np.stack(out).astype(np.float32) / 255.0
