"""ROI geometry: letterboxing, detection/landmarks → rotated square ROI, rotated crops as warps, and the
inverse projection of crop coordinates back to the image (docs/design.md §5). Everything is in image pixels.

Conventions follow MediaPipe's ImageToTensor (OpenCV path): the ROI's four corners map exactly onto the
output tensor's corners (0 and ``size``, not ``size - 1``), sampled with bilinear interpolation on the uint8
image; a crop point (u, v) in [0, 1]² maps to ``center + R(rotation) · ((u - ½)·w, (v - ½)·h)``.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from blazepose_tf.contract import ROI_SCALE
from blazepose_tf.types import Roi

BORDER_MODES = {"replicate": cv2.BORDER_REPLICATE, "zero": cv2.BORDER_CONSTANT}


def normalize_radians(angle: float) -> float:
    """Wraps an angle to [-π, π)."""
    return angle - 2 * math.pi * math.floor((angle + math.pi) / (2 * math.pi))


def letterbox_roi(width: int, height: int, out_width: int = 224, out_height: int = 224) -> tuple[Roi, np.ndarray]:
    """The whole image padded (centred) to the output aspect ratio.

    Returns the ROI and the normalized padding (left, top, right, bottom) of the output tensor.
    """
    roi = Roi(width / 2, height / 2, float(width), float(height), 0.0)
    return pad_roi_to_aspect(roi, out_width, out_height)


def pad_roi_to_aspect(roi: Roi, out_width: int, out_height: int) -> tuple[Roi, np.ndarray]:
    """Grows ``roi`` to the output aspect ratio (keep-aspect-ratio letterboxing); returns it and the padding."""
    target = out_height / out_width
    aspect = roi.height / roi.width
    if target > aspect:
        pad = (1 - aspect / target) / 2
        new = Roi(roi.x_center, roi.y_center, roi.width, roi.width * target, roi.rotation)
        return new, np.array([0.0, pad, 0.0, pad])
    pad = (1 - target / aspect) / 2
    new = Roi(roi.x_center, roi.y_center, roi.height / target, roi.height, roi.rotation)
    return new, np.array([pad, 0.0, pad, 0.0])


def remove_letterbox(points: np.ndarray, padding: np.ndarray) -> np.ndarray:
    """Maps normalized (..., 2+) points from a letterboxed tensor to the un-padded content, [0, 1]."""
    left, top, right, bottom = padding
    out = np.array(points, dtype=np.float32, copy=True)
    out[..., 0] = (out[..., 0] - left) / (1 - left - right)
    out[..., 1] = (out[..., 1] - top) / (1 - top - bottom)
    return out


def alignment_roi(center: np.ndarray, scale_point: np.ndarray, scale: float = ROI_SCALE,
                  target_angle: float = math.pi / 2) -> Roi:
    """ROI from two alignment points (pixels): centre ``center``, side 2·|scale_point − center|·``scale``,
    rotated so that the centre→scale_point direction points up in the crop.

    Used both for a detection (keypoints 0 and 1) and for the previous frame's auxiliary landmarks.
    """
    x0, y0 = float(center[0]), float(center[1])
    x1, y1 = float(scale_point[0]), float(scale_point[1])
    side = 2.0 * math.hypot(x1 - x0, y1 - y0) * scale
    rotation = normalize_radians(target_angle - math.atan2(-(y1 - y0), x1 - x0))
    return Roi(x0, y0, side, side, rotation)


def crop_matrix(roi: Roi, out_width: int, out_height: int) -> np.ndarray:
    """2×3 affine matrix mapping image pixels to crop pixels (the ROI's corners to the crop's corners)."""
    c, s = math.cos(roi.rotation), math.sin(roi.rotation)
    # crop → image: p = center + R · ((u/W - 1/2)·w, (v/H - 1/2)·h)
    a = np.array([[c * roi.width / out_width, -s * roi.height / out_height],
                  [s * roi.width / out_width, c * roi.height / out_height]], dtype=np.float64)
    t = np.array([roi.x_center, roi.y_center]) - a @ np.array([out_width / 2, out_height / 2])
    inv = np.linalg.inv(a)
    return np.hstack([inv, (-inv @ t)[:, None]])


def crop(image: np.ndarray, roi: Roi, out_width: int, out_height: int, border: str = "replicate") -> np.ndarray:
    """Rotated crop of ``roi`` resized to (out_height, out_width), bilinear, uint8 in → uint8 out."""
    if roi.width <= 0 or roi.height <= 0 or not np.isfinite([roi.x_center, roi.y_center, roi.width,
                                                              roi.height, roi.rotation]).all():
        raise ValueError(f"invalid ROI {roi}")
    m = crop_matrix(roi, out_width, out_height)
    persp = np.vstack([m, [0.0, 0.0, 1.0]])
    return cv2.warpPerspective(image, persp, (out_width, out_height), flags=cv2.INTER_LINEAR,
                               borderMode=BORDER_MODES[border], borderValue=0)


def project_to_image(points: np.ndarray, roi: Roi) -> np.ndarray:
    """Maps (N, 2|3) points normalized to the crop ([0, 1]) to image pixels. A third (z) column, normalized
    like x, is scaled by the ROI width."""
    pts = np.asarray(points, dtype=np.float64)
    c, s = math.cos(roi.rotation), math.sin(roi.rotation)
    x = pts[:, 0] - 0.5
    y = pts[:, 1] - 0.5
    out = np.empty_like(pts)
    x = x * roi.width
    y = y * roi.height
    out[:, 0] = c * x - s * y + roi.x_center
    out[:, 1] = s * x + c * y + roi.y_center
    if pts.shape[1] > 2:
        out[:, 2] = pts[:, 2] * roi.width
    return out.astype(np.float32)


def image_to_crop(points: np.ndarray, roi: Roi) -> np.ndarray:
    """Inverse of :func:`project_to_image` for (N, 2) pixel points → normalized crop coordinates."""
    pts = np.asarray(points, dtype=np.float64)[:, :2]
    c, s = math.cos(roi.rotation), math.sin(roi.rotation)
    dx = pts[:, 0] - roi.x_center
    dy = pts[:, 1] - roi.y_center
    u = (c * dx + s * dy) / roi.width + 0.5
    v = (-s * dx + c * dy) / roi.height + 0.5
    return np.stack([u, v], axis=1).astype(np.float32)


def to_tensor(crop: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    """uint8 crop → float32 batch of one, scaled to ``value_range`` (a model's input range,
    :data:`blazepose_tf.contract.INPUT_RANGES`)."""
    lo, hi = value_range
    return (crop.astype(np.float32) * ((hi - lo) / 255.0) + lo)[None]


# ------------------------------------------------------------------------------------------ rotated-ROI overlap
def roi_corners(roi: Roi) -> np.ndarray:
    """(4, 2) float64 image-pixel corners of a (rotated) ROI: where the crop's top-left, top-right, bottom-right and
    bottom-left corners come from (:func:`project_to_image` of (0, 0), (1, 0), (1, 1), (0, 1)); positive
    :func:`polygon_area`."""
    c, s = math.cos(roi.rotation), math.sin(roi.rotation)
    half = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64) * [roi.width / 2, roi.height / 2]
    rot = np.array([[c, -s], [s, c]])
    return half @ rot.T + [roi.x_center, roi.y_center]


def polygon_area(polygon: np.ndarray) -> float:
    """Signed shoelace area of an (N, 2) polygon (positive for counter-clockwise vertices in x-right/y-up axes,
    i.e. clockwise on screen); 0 for fewer than three vertices."""
    p = np.asarray(polygon, np.float64).reshape(-1, 2)
    if len(p) < 3:
        return 0.0
    x, y = p[:, 0], p[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def convex_intersection(subject: np.ndarray, clip: np.ndarray) -> np.ndarray:
    """The intersection of two convex (N, 2) polygons (Sutherland–Hodgman: ``subject`` clipped by each edge of
    ``clip``); vertices in either winding order. Returns the (M, 2) intersection polygon (M = 0 when they do not
    overlap; a shared edge or corner has zero area)."""
    out = np.asarray(subject, np.float64).reshape(-1, 2)
    clip = np.asarray(clip, np.float64).reshape(-1, 2)
    if polygon_area(out) < 0:
        out = out[::-1]
    if polygon_area(clip) < 0:
        clip = clip[::-1]
    for a, b in zip(clip, np.roll(clip, -1, axis=0)):
        if len(out) == 0:
            break
        edge = b - a
        # > 0: left of the edge a→b, inside a counter-clockwise polygon
        side = edge[0] * (out[:, 1] - a[1]) - edge[1] * (out[:, 0] - a[0])
        kept = []
        for i in range(len(out)):
            j = (i + 1) % len(out)
            p, q, sp, sq = out[i], out[j], side[i], side[j]
            if sp >= 0:
                kept.append(p)
            if (sp >= 0) != (sq >= 0):
                kept.append(p + (q - p) * (sp / (sp - sq)))
        out = np.array(kept, np.float64).reshape(-1, 2)
    return out


def roi_iou(a: Roi, b: Roi) -> float:
    """Exact intersection over union of two rotated rectangular ROIs (image pixels; 0 for an empty or non-finite
    ROI)."""
    values = [a.x_center, a.y_center, a.width, a.height, a.rotation, b.x_center, b.y_center, b.width, b.height,
              b.rotation]
    if not np.isfinite(values).all() or min(a.width, a.height, b.width, b.height) <= 0:
        return 0.0
    inter = abs(polygon_area(convex_intersection(roi_corners(a), roi_corners(b))))
    union = a.width * a.height + b.width * b.height - inter
    return float(min(1.0, max(0.0, inter / union))) if union > 0 else 0.0
