"""Left/right label consistency: ground-truth pairs whose sides were swapped by the annotator, found against a
reference pose (a teacher's prediction on the same person).

Crowd-sourced labels (LSPET's Mechanical Turk annotations) name some limbs from the viewer's side instead of the
person's. Against the zoo's Full, the swapped ground truth is more than 10 px (of a 256 crop) closer to the model for
about 7-8% of the elbow, hip and knee pairs of LSPET's train crops. :func:`fix_swapped_sides` swaps such a pair back
when the reference pose clearly prefers the other assignment (both points annotated, the swapped assignment at most
``ratio`` of the kept one's distance and shorter by at least ``min_gain`` torso lengths), pair by pair.
"""
from __future__ import annotations

import numpy as np

from blazepose_tf.topology import Topology, torso_size

DEFAULT_RATIO = 0.5
DEFAULT_MIN_GAIN = 0.2


def fix_swapped_sides(points: np.ndarray, available: np.ndarray, reference: np.ndarray, topology: Topology,
                      ratio: float = DEFAULT_RATIO, min_gain: float = DEFAULT_MIN_GAIN
                      ) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Ground truth with the left/right pairs the reference pose says were swapped swapped back.

    Args:
        points: (K, D) ground-truth points (x, y first), ``topology``'s order.
        available: (K,) bool, which points are annotated.
        reference: (K, ≥2) the reference pose of the same person (same pixels).
        ratio: a pair is swapped only when its swapped assignment's distance to the reference is at most this
            fraction of the kept one's.
        min_gain: ... and at least this many torso lengths (of the ground truth) shorter.
    Returns:
        (points with the pairs swapped, a copy; the (left, right) names swapped). Nothing is swapped without a
        ground-truth torso.
    """
    out = np.array(points, copy=True)
    torso_points = [topology.index(n) for n in ("left_shoulder", "right_shoulder", "left_hip", "right_hip")]
    if not np.all(available[torso_points]):
        return out, []
    torso = torso_size(np.asarray(points, np.float64), topology)
    gt = np.asarray(points, np.float64)[:, :2]
    ref = np.asarray(reference, np.float64)[:, :2]
    swapped = []
    for i, j in topology.flip_pairs:
        if not (available[i] and available[j]):
            continue
        kept = np.linalg.norm(gt[i] - ref[i]) + np.linalg.norm(gt[j] - ref[j])
        cross = np.linalg.norm(gt[i] - ref[j]) + np.linalg.norm(gt[j] - ref[i])
        if cross <= ratio * kept and kept - cross >= min_gain * torso:
            out[[i, j]] = out[[j, i]]
            swapped.append((topology.keypoints[i], topology.keypoints[j]))
    return out, swapped
