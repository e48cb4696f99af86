"""Training targets: tracker regression targets normalized to the crop and the two auxiliary ROI points, both from
the detector's alignment keypoints (docs/design.md §4–§6). The person detector's anchor targets, built on the same
alignment keypoints, are in :mod:`blazepose_tf.codecs.detector_targets`.

Tracker targets (TensorFlow, usable inside ``tf.data``; see :func:`tracker_targets`) are computed from
keypoints already in crop pixels.

Alignment keypoints (the official detector's, checked against it on 184 LSPET images: median
|kp1 − kp0| / r = 1.00, |kp3 − kp2| / r_upper = 1.03)::

    kp0 = mid-hip                       kp1 = kp0 + r · u        r = max |p − kp0| over available points
    kp2 = mid-shoulder                  kp3 = kp2 + r_upper · u  r_upper = same around kp2, upper-body points
    u = unit(mid-hip → mid-shoulder)

The tracker's auxiliary ROI points (centre, scale/rotation) are kp0 and kp1: from them the runtime's
``alignment_roi`` rebuilds the next frame's crop (docs/design.md §5).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import numpy as np

from blazepose_tf.codecs.roi import alignment_roi
from blazepose_tf.contract import DETECTOR_NUM_KEYPOINTS, ROI_SCALE
from blazepose_tf.topology import BLAZEPOSE_33, Topology
from blazepose_tf.types import Roi

LOWER_BODY_WORDS = ("knee", "ankle", "heel", "foot")


# ------------------------------------------------------------------------------------------- alignment points
def _midpoint(points: np.ndarray, valid: np.ndarray, topology: Topology, a: str, b: str) -> Optional[np.ndarray]:
    if a not in topology.keypoints or b not in topology.keypoints:
        return None
    i, j = topology.index(a), topology.index(b)
    if not (valid[i] and valid[j]):
        return None
    return (points[i] + points[j]) / 2


def upper_body_indices(topology: Topology) -> list[int]:
    """Indices of keypoints above the knees (face, arms, hands, shoulders, hips), by name."""
    return [i for i, n in enumerate(topology.keypoints) if not any(w in n for w in LOWER_BODY_WORDS)]


class _Alignment(NamedTuple):
    points: np.ndarray   # (4, 2) float64: kp0..kp3
    torso: float         # |mid-shoulder − mid-hip|
    radius: float        # r = |kp1 − kp0|


def _alignment(keypoints: np.ndarray, valid: np.ndarray, topology: Topology) -> Optional[_Alignment]:
    """The alignment keypoints in float64 (module docstring), or None when hips or shoulders are missing or
    coincide (the direction u is then undefined)."""
    pts = np.asarray(keypoints, dtype=np.float64)[:, :2]
    ok = np.asarray(valid, dtype=bool) & np.isfinite(pts).all(axis=1)
    hip = _midpoint(pts, ok, topology, "left_hip", "right_hip")
    sho = _midpoint(pts, ok, topology, "left_shoulder", "right_shoulder")
    if hip is None or sho is None:
        return None
    torso = sho - hip
    length = float(np.linalg.norm(torso))
    if length <= 1e-9:
        return None
    u = torso / length
    r = float(np.max(np.linalg.norm(pts[ok] - hip, axis=1)))
    upper = np.zeros_like(ok)
    upper[upper_body_indices(topology)] = True
    r_up = float(np.max(np.linalg.norm(pts[ok & upper] - sho, axis=1)))
    return _Alignment(np.stack([hip, hip + u * r, sho, sho + u * r_up]), length, r)


def alignment_keypoints(keypoints: np.ndarray, valid: np.ndarray,
                        topology: Topology = BLAZEPOSE_33) -> tuple[np.ndarray, np.ndarray]:
    """The detector's 4 alignment keypoints from body keypoints (any coordinate units).

    Args:
        keypoints: (K, 2+) in ``topology`` order.
        valid: (K,) availability.
    Returns:
        (4, 2) kp0..kp3 and a (4,) bool mask (all False when hips or shoulders are missing, since the
        direction u is then undefined).
    """
    out = np.zeros((DETECTOR_NUM_KEYPOINTS, 2), np.float32)
    mask = np.zeros(DETECTOR_NUM_KEYPOINTS, bool)
    found = _alignment(keypoints, valid, topology)
    if found is not None:
        out[:] = found.points.astype(np.float32)
        mask[:] = True
    return out, mask


def gt_alignment_roi(keypoints: np.ndarray, valid: np.ndarray, topology: Topology = BLAZEPOSE_33,
                     scale: float = ROI_SCALE) -> Optional[Roi]:
    """The tracker ROI a perfect detector would give a person (image pixels): centred on kp0 (mid-hip), side
    2·r·``scale``, rotated so that the torso points up (:func:`blazepose_tf.codecs.roi.alignment_roi` of kp0,
    kp1); None when hips or shoulders are missing or the person is degenerate. The one ground-truth alignment:
    ``data.prepare`` crops on the same points (:func:`alignment_keypoints`), the export's evaluation crops on
    this ROI.

    Args:
        keypoints: (K, 2+) in ``topology`` order, image pixels.
        valid: (K,) availability.
        scale: ROI side over the alignment circle's diameter.
    """
    found = _alignment(keypoints, valid, topology)
    if found is None or found.torso < 1e-6 or not found.radius >= 1e-6 or not math.isfinite(found.radius):
        return None
    roi = alignment_roi(found.points[0], found.points[1], scale=scale)
    return roi if roi.width > 1e-3 else None


def aux_roi_points(keypoints: np.ndarray, valid: np.ndarray,
                   topology: Topology = BLAZEPOSE_33) -> tuple[np.ndarray, np.ndarray]:
    """The tracker's two auxiliary points (ROI centre, scale/rotation point) = alignment kp0, kp1.

    Returns (2, 2) points (same units as ``keypoints``) and a (2,) mask.
    """
    kps, mask = alignment_keypoints(keypoints, valid, topology)
    return kps[:2], mask[:2]


def with_aux_points(keypoints: np.ndarray, valid: np.ndarray,
                    topology: Topology = BLAZEPOSE_33) -> tuple[np.ndarray, np.ndarray]:
    """Appends the auxiliary ROI points to K keypoints: (K, D) → (K + 2, D) and validity (K + 2,).

    Extra columns (z) of the auxiliary points are 0.
    """
    kp = np.asarray(keypoints, dtype=np.float32)
    aux, aux_ok = aux_roi_points(kp, valid, topology)
    extra = np.zeros((2, kp.shape[1]), np.float32)
    extra[:, :2] = aux
    return np.concatenate([kp, extra]), np.concatenate([np.asarray(valid, bool), aux_ok])


# ------------------------------------------------------------------------------------------- tracker targets
def tracker_targets(keypoints, availability, visibility=None, visibility_available=None, person_present=True,
                    input_size: int = 256):
    """Regression targets of one crop (or a batch), normalized to the crop (TensorFlow).

    Args:
        keypoints: (..., P, 2|3) x, y (, z) in crop pixels, P = K + 2 (see :func:`with_aux_points`); z is at
            the scale of x.
        availability: (..., P) or (..., P, 3) annotation mask (1 = annotated). A (..., P) mask covers x and y,
            and z only when ``keypoints`` has a z column.
        visibility: (..., P) 1 visible / 0 occluded; default: visible wherever annotated.
        visibility_available: (..., P) where the visibility label is known; default: ``availability``.
        person_present: scalar or (...,) — 0 for negative crops (then only presence is supervised).
        input_size: crop side in pixels.

    Returns:
        dict of float32 tensors: ``coords`` (..., P, 3) in [0, 1] crop units (z / input_size),
        ``coord_mask`` (..., P, 3), ``visibility`` / ``visibility_mask`` (..., P), ``point_presence`` (1 when
        the point lies inside the crop) / ``point_presence_mask`` (..., P), ``presence`` (..., 1).
    """
    import tensorflow as tf

    kp = tf.convert_to_tensor(keypoints, tf.float32)
    avail = tf.cast(tf.convert_to_tensor(availability), tf.float32)
    has_z = kp.shape[-1] is not None and kp.shape[-1] >= 3
    if not has_z:
        kp = tf.concat([kp[..., :2], tf.zeros_like(kp[..., :1])], axis=-1)
    kp = kp[..., :3]
    if avail.shape.rank == kp.shape.rank:  # (..., P, 3)
        coord_mask = avail
        point_mask = tf.reduce_max(avail[..., :2], axis=-1)
    else:
        point_mask = avail
        z_mask = point_mask if has_z else tf.zeros_like(point_mask)
        coord_mask = tf.stack([point_mask, point_mask, z_mask], axis=-1)
    present = tf.cast(tf.convert_to_tensor(person_present), tf.float32)
    present_p = present[..., None] if present.shape.rank else present
    coord_mask = coord_mask * present_p[..., None]
    point_mask = point_mask * present_p
    vis = point_mask if visibility is None else tf.cast(tf.convert_to_tensor(visibility), tf.float32)
    vis_mask = point_mask if visibility_available is None else \
        tf.cast(tf.convert_to_tensor(visibility_available), tf.float32) * present_p
    coords = kp / float(input_size)
    inside = tf.reduce_all((coords[..., :2] >= 0.0) & (coords[..., :2] <= 1.0), axis=-1)
    coords = tf.where(coord_mask > 0, coords, tf.zeros_like(coords))  # no NaNs from unannotated points
    return {
        "coords": coords,
        "coord_mask": coord_mask,
        "visibility": vis,
        "visibility_mask": vis_mask,
        "point_presence": tf.cast(inside, tf.float32),
        "point_presence_mask": point_mask,
        "presence": tf.broadcast_to(present, tf.shape(kp)[:-2])[..., None],
    }
