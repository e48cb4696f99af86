"""Closed-form refit of a tracker's heatmap channels toward a teacher's heatmap logits (step 3 of the teacher refit,
:mod:`blazepose_tf.training.refit_teacher`).

The runtime refines each landmark with the heatmap cells in a 7×7 window around it (:func:`blazepose_tf.codecs.
landmarks.refine_with_heatmap`), so for points whose labels follow a teacher the heatmap matters as much as the
regression rows: on the yoga photos, the zoo Lite's rows refined with MediaPipe's Full heatmap (same crops) agree
with the Full on the feet 70.9% of the time against 55.0% with its own.

The heatmap is a ``k×k`` convolution (``Conv2D``, ``same`` padding) of a feature map. Per point, its kernel and bias
are refit by ridge regression from the ``k×k×C`` input patches to the teacher's logits, on the cells within
``radius`` cells of the teacher's point (about where refinement looks; the runtime's window is 7×7 around the
student's point), the targets floored at ``floor`` (a linear fit in logits otherwise spends itself on the deep
background; the floor also fattens the blob's tail a little, which the choice of ``floor`` on held-out photos
weighs), pulled toward the current weights by the penalty ``lam`` × the number of crops:
``min Σ (x·w − y)² + lam·N·|w − w₀|²``.
"""
from __future__ import annotations

from dataclasses import dataclass
import numpy as np


@dataclass
class NormalEquations:
    """Per point: ``xtx`` (P, D, D) and ``xty`` (P, D) of the patches (with a trailing 1 for the bias) and their
    targets, summed over ``crops`` crops."""

    xtx: np.ndarray
    xty: np.ndarray
    crops: int


def patch_rows(fmap: np.ndarray, rows: np.ndarray, cols: np.ndarray, k: int, padded: bool = False) -> np.ndarray:
    """(n, k·k·C) input patches of a ``same``-padded k×k convolution of ``fmap`` (H, W, C; already padded by
    k // 2 on each side when ``padded``) at cells (``rows``, ``cols``), in the kernel's (dy, dx, c) order."""
    pad = k // 2
    if not padded:
        fmap = np.pad(fmap, ((pad, pad), (pad, pad), (0, 0)))
    return np.stack([fmap[rows + dy, cols + dx] for dy in range(k) for dx in range(k)], axis=1).reshape(
        len(rows), -1)


def accumulate(fmaps: np.ndarray, teacher: np.ndarray, centres: np.ndarray, k: int, radius: int,
               floor: float) -> NormalEquations:
    """The normal equations of every point from ``fmaps`` (N, H, W, C), the teacher's logits ``teacher``
    (N, H, W, P) and its points ``centres`` (N, P, 2: x, y in heatmap cells); non-finite centres are skipped."""
    n, h, w, c = fmaps.shape
    points = teacher.shape[-1]
    d = k * k * c + 1
    pad = k // 2
    xtx, xty = np.zeros((points, d, d)), np.zeros((points, d))
    for i in range(n):
        padded = np.pad(np.asarray(fmaps[i], np.float64), ((pad, pad), (pad, pad), (0, 0)))
        for p in range(points):
            if not np.isfinite(centres[i, p]).all():
                continue
            cx, cy = (int(v) for v in centres[i, p])
            ys = np.arange(max(0, cy - radius), min(h, cy + radius + 1))
            xs = np.arange(max(0, cx - radius), min(w, cx + radius + 1))
            if not len(ys) or not len(xs):
                continue
            rows, cols = (a.ravel() for a in np.meshgrid(ys, xs, indexing="ij"))
            x = np.concatenate([patch_rows(padded, rows, cols, k, padded=True), np.ones((len(rows), 1))], axis=1)
            y = np.maximum(teacher[i, rows, cols, p].astype(np.float64), floor)
            xtx[p] += x.T @ x
            xty[p] += x.T @ y
    return NormalEquations(xtx, xty, n)


def solve(equations: NormalEquations, kernel: np.ndarray, bias: np.ndarray, lam: float
          ) -> tuple[np.ndarray, np.ndarray]:
    """The refit (kernel (k, k, C, P), bias (P,)) of the points' current ``kernel`` and ``bias``."""
    k, _, c, points = kernel.shape
    new_kernel, new_bias = np.empty(kernel.shape), np.empty(points)
    penalty = lam * max(equations.crops, 1)
    eye = np.eye(k * k * c + 1)
    for p in range(points):
        w0 = np.concatenate([np.asarray(kernel[..., p], np.float64).reshape(-1), [float(bias[p])]])
        w = np.linalg.solve(equations.xtx[p] + penalty * eye, equations.xty[p] + penalty * w0)
        new_kernel[..., p], new_bias[p] = w[:-1].reshape(k, k, c), w[-1]
    return new_kernel, new_bias


def convolve(fmaps: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """(N, H, W, P) logits of the ``same``-padded convolution of ``fmaps`` (N, H, W, C)."""
    n, h, w, _ = fmaps.shape
    k = kernel.shape[0]
    rows, cols = (a.ravel() for a in np.meshgrid(np.arange(h), np.arange(w), indexing="ij"))
    flat = np.asarray(kernel, np.float64).reshape(-1, kernel.shape[-1])
    out = np.empty((n, h, w, kernel.shape[-1]), np.float32)
    for i in range(n):
        out[i] = (patch_rows(np.asarray(fmaps[i], np.float64), rows, cols, k) @ flat + bias).reshape(h, w, -1)
    return out


def centres_in_cells(points: np.ndarray, input_size: int, heatmap_size: int) -> np.ndarray:
    """Points (N, P, 2) in crop pixels as (N, P, 2) heatmap cells (x, y), floored: the runtime's truncation for a
    point inside the crop (one outside it is not refined by the runtime; its fit cells clip to the edge)."""
    return np.floor(np.asarray(points, np.float64) / input_size * heatmap_size)

