"""Alignment points from body keypoints (DESIGN.md §3/§4): the two points that define a person's ROI
(mid-hip centre and a scale/rotation point) and the upper-body pair used by the detector."""
from __future__ import annotations

from typing import Optional

import numpy as np

from blazepose_tf.topology import BLAZEPOSE_33, Topology

TORSO_NAMES = ("left_shoulder", "right_shoulder", "left_hip", "right_hip")


def torso_indices(topology: Topology = BLAZEPOSE_33) -> list[int]:
    """Indices of left/right shoulder and left/right hip."""
    return [topology.index(n) for n in TORSO_NAMES]


def alignment_points(keypoints: np.ndarray, available: np.ndarray,
                     topology: Topology = BLAZEPOSE_33) -> Optional[np.ndarray]:
    """(4, 2) detector alignment keypoints from body keypoints, or None without a full torso.

    kp0 = mid-hip; kp1 = mid-hip + r·unit(mid-hip → mid-shoulder), r = radius of the circle centred at mid-hip
    that encloses every available point; kp2 = mid-shoulder; kp3 = mid-shoulder + r_up·unit(same direction),
    r_up = radius around mid-shoulder of the available points above the hips (upper body).
    """
    pts = np.asarray(keypoints, np.float64)[:, :2]
    avail = np.asarray(available, bool)
    ls, rs, lh, rh = torso_indices(topology)
    if not avail[[ls, rs, lh, rh]].all():
        return None
    hip = (pts[lh] + pts[rh]) / 2
    sho = (pts[ls] + pts[rs]) / 2
    axis = sho - hip
    norm = float(np.linalg.norm(axis))
    if norm < 1e-6:
        return None
    unit = axis / norm
    vis = pts[avail]
    r = float(np.max(np.linalg.norm(vis - hip, axis=1)))
    upper = vis[(vis - hip) @ unit > 0]
    r_up = float(np.max(np.linalg.norm(upper - sho, axis=1))) if len(upper) else norm
    r_up = max(r_up, 1e-3)
    return np.stack([hip, hip + r * unit, sho, sho + r_up * unit]).astype(np.float32)
