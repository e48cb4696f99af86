"""Tracker output decoding: landmark tensor → normalized crop coordinates, visibility and presence, and
MediaPipe's heatmap refinement (RefineLandmarksFromHeatmap)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from blazepose_tf.codecs.detection import sigmoid

VALUES_PER_LANDMARK = 5  # x, y, z, visibility logit, presence logit


@dataclass
class CropLandmarks:
    """Landmarks of one crop, normalized to the crop ([0, 1]; z normalized like x).

    Attributes:
        xyz: (K, 3).
        visibility: (K,) probabilities.
        presence: (K,) probabilities.
    """

    xyz: np.ndarray
    visibility: np.ndarray
    presence: np.ndarray


def decode_landmarks(raw: np.ndarray, input_size: int = 256) -> CropLandmarks:
    """Decodes a flat (K·5,) tensor of x, y, z in crop pixels and visibility/presence logits."""
    raw = np.asarray(raw, dtype=np.float32).reshape(-1, VALUES_PER_LANDMARK)
    return CropLandmarks(xyz=raw[:, :3] / float(input_size), visibility=sigmoid(raw[:, 3]),
                         presence=sigmoid(raw[:, 4]))


def encode_landmarks(xyz: np.ndarray, visibility_logits: np.ndarray, presence_logits: np.ndarray,
                     input_size: int = 256) -> np.ndarray:
    """Inverse of :func:`decode_landmarks` (normalized xyz and logits → flat tensor)."""
    out = np.concatenate([np.asarray(xyz, np.float32) * input_size,
                          np.asarray(visibility_logits, np.float32)[:, None],
                          np.asarray(presence_logits, np.float32)[:, None]], axis=1)
    return out.reshape(-1)


def refine_with_heatmap(xy: np.ndarray, heatmap: np.ndarray, kernel_size: int = 7,
                        min_confidence: float = 0.5) -> np.ndarray:
    """Replaces each landmark by the sigmoid-weighted mean position of the heatmap cells in a
    ``kernel_size`` window around it, when the window's max confidence reaches ``min_confidence``.

    Args:
        xy: (K, 2+) normalized crop coordinates (extra columns are passed through).
        heatmap: (H, W, K) logits (a leading batch dimension of 1 is accepted).
    Returns: a refined copy of ``xy``. Mirrors MediaPipe, including its integer truncation of the centre and
    its bounds check (a row index past the bottom is not rejected, the window just clips).
    """
    hm = np.asarray(heatmap, dtype=np.float32)
    if hm.ndim == 4:
        hm = hm[0]
    h, w, k = hm.shape
    out = np.array(xy, dtype=np.float32, copy=True)
    if out.shape[0] != k:
        raise ValueError(f"heatmap has {k} channels for {out.shape[0]} landmarks")
    offset = (kernel_size - 1) // 2
    for i in range(k):
        col = int(out[i, 0] * w)  # C++ float→int truncates toward zero
        row = int(out[i, 1] * h)
        if col < 0 or col >= w or row < 0:
            continue
        r0, r1 = max(0, row - offset), min(h, row + offset + 1)
        c0, c1 = max(0, col - offset), min(w, col + offset + 1)
        if r1 <= r0 or c1 <= c0:
            continue
        win = sigmoid(hm[r0:r1, c0:c1, i])
        total = float(win.sum())
        if total <= 0 or float(win.max()) < min_confidence:
            continue
        out[i, 0] = float(win.sum(axis=0) @ np.arange(c0, c1)) / w / total
        out[i, 1] = float(win.sum(axis=1) @ np.arange(r0, r1)) / h / total
    return out
