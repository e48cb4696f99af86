"""Gaussian heatmap + offset-map targets for the tracker's training heads, and their sub-pixel decoding.

Convention (the official model's — measured on its heatmap output — and MediaPipe's heatmap refinement,
:func:`blazepose_tf.codecs.landmarks.refine_with_heatmap`): heatmap cell (row i, column j) stands for crop pixel
(x, y) = (j·s, i·s) with s = input_size / heatmap_size (4 for 256 → 64). A keypoint at crop pixel (x, y) is
thus at heatmap coordinate (x/s, y/s).

* heatmap target, channel p: ``exp(-((j - x/s)² + (i - y/s)²) / (2σ²))`` (peak 1 at the keypoint, σ in cells);
* offsets, channels 2p and 2p+1: ``(x/s - j, y/s - i)``, the vector from the cell to the keypoint, in cells;
* offset mask: cells within ``offset_radius`` cells of the keypoint — only there are offsets supervised.

Encoding is TensorFlow (graph-compatible, for ``tf.data``; TensorFlow is imported when called); decoding is
NumPy (host side).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

DEFAULT_SIGMA = 2.0
DEFAULT_OFFSET_RADIUS = 2.0


def encode_heatmaps(keypoints, weights=None, heatmap_size: int = 64, input_size: int = 256,
                    sigma: float = DEFAULT_SIGMA, offset_radius: float = DEFAULT_OFFSET_RADIUS):
    """Heatmap, offset and offset-mask targets for keypoints in crop pixels (TensorFlow).

    Args:
        keypoints: (..., P, 2+) x, y in crop pixels (extra columns such as z are ignored); leading batch
            dimensions are allowed.
        weights: (..., P) availability (1 annotated, 0 not); unannotated points get all-zero maps.
        heatmap_size: side of the (square) heatmap.
        input_size: side of the crop.
        sigma: Gaussian standard deviation, in heatmap cells.
        offset_radius: offsets are supervised within this many cells of the keypoint.

    Returns:
        heatmap (..., H, W, P) in [0, 1], offsets (..., H, W, 2P) (dx, dy interleaved, in cells) and
        offset_mask (..., H, W, P) in {0, 1}, all float32.
    """
    import tensorflow as tf

    kp = tf.convert_to_tensor(keypoints, tf.float32)[..., :2]
    stride = float(input_size) / float(heatmap_size)
    hx = kp[..., 0] / stride  # (..., P)
    hy = kp[..., 1] / stride
    if weights is None:
        w = tf.ones_like(hx)
    else:
        w = tf.cast(tf.convert_to_tensor(weights), tf.float32)
    grid = tf.range(heatmap_size, dtype=tf.float32)
    # (..., 1, W, P) and (..., H, 1, P)
    dx = hx[..., None, None, :] - grid[None, :, None]
    dy = hy[..., None, None, :] - grid[:, None, None]
    d2 = dx * dx + dy * dy  # (..., H, W, P)
    wmap = w[..., None, None, :]
    heatmap = tf.exp(-d2 / (2.0 * sigma * sigma)) * wmap
    mask = tf.cast(d2 <= offset_radius * offset_radius, tf.float32) * wmap
    full = tf.ones_like(d2)
    offsets = tf.stack([dx * full, dy * full], axis=-1)  # (..., H, W, P, 2)
    shape = tf.concat([tf.shape(d2)[:-1], [2 * tf.shape(d2)[-1]]], axis=0)
    offsets = tf.reshape(offsets, shape) * tf.repeat(wmap, 2, axis=-1)
    return heatmap, offsets, mask


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


def decode_heatmaps(heatmap: np.ndarray, offsets: Optional[np.ndarray] = None, input_size: int = 256,
                    logits: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel keypoints from heatmaps (NumPy).

    The peak cell of each channel is refined by the offset map at that cell when ``offsets`` is given, else by
    a parabola fitted to the log-heatmap across the peak (exact for a Gaussian) in x and y separately.

    Args:
        heatmap: (..., H, W, P) logits (``logits=True``, as the model emits) or probabilities.
        offsets: optional (..., H, W, 2P), dx/dy interleaved, in cells.
        input_size: crop side (pixels).
        logits: whether ``heatmap`` holds logits.

    Returns:
        points (..., P, 2) in crop pixels and scores (..., P) (the peak value, as a probability).
    """
    hm = np.asarray(heatmap, dtype=np.float32)
    *lead, h, w, p = hm.shape
    stride = float(input_size) / float(w)
    flat = hm.reshape(-1, h * w, p)
    n = flat.shape[0]
    idx = np.argmax(flat, axis=1)  # (N, P)
    rows, cols = idx // w, idx % w
    peak = np.take_along_axis(flat, idx[:, None, :], axis=1)[:, 0, :]
    if offsets is not None:
        off = np.asarray(offsets, dtype=np.float32).reshape(n, h * w, p, 2)
        at = np.take_along_axis(off, idx[:, None, :, None], axis=1)[:, 0]  # (N, P, 2)
        x = cols + at[..., 0]
        y = rows + at[..., 1]
    else:
        logh = _log_sigmoid(flat) if logits else np.log(np.clip(flat, 1e-12, None))
        logh = logh.reshape(n, h, w, p)
        bi, pi = np.meshgrid(np.arange(n), np.arange(p), indexing="ij")

        def refine(center, size, get):
            ok = (center > 0) & (center < size - 1)
            c0 = np.clip(center - 1, 0, size - 1)
            c2 = np.clip(center + 1, 0, size - 1)
            a, b, c = get(c0), get(center), get(c2)
            den = a - 2 * b + c
            with np.errstate(divide="ignore", invalid="ignore"):
                delta = np.where(ok & (den < 0), 0.5 * (a - c) / den, 0.0)
            return center + np.clip(delta, -0.5, 0.5)

        x = refine(cols, w, lambda c: logh[bi, rows, c, pi])
        y = refine(rows, h, lambda r: logh[bi, r, cols, pi])
    points = np.stack([x, y], axis=-1).astype(np.float32) * stride
    scores = 0.5 * (1.0 + np.tanh(0.5 * peak)) if logits else peak
    return points.reshape(*lead, p, 2), scores.astype(np.float32).reshape(*lead, p)
