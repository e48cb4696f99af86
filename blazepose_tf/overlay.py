"""Drawing poses (skeleton, keypoints, tracking ROI) on images, and saving the result.

Colours (RGB): left-side keypoints/edges orange, right-side blue, centre (and left-right links) white,
ROI green. Keypoints whose visibility is below ``min_visibility`` are drawn as hollow, dimmer circles, and
edges touching such a point are dimmer and thinner. Line widths scale with the image size.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence, Union

import cv2
import numpy as np

from blazepose_tf.errors import UserError
from blazepose_tf.io.provenance import mark_image
from blazepose_tf.io.video import write_bytes_atomic
from blazepose_tf.topology import BLAZEPOSE_33, Topology
from blazepose_tf.types import Pose

PathLike = Union[str, "os.PathLike[str]"]

LEFT_COLOR = (255, 138, 0)
RIGHT_COLOR = (0, 150, 255)
CENTER_COLOR = (255, 255, 255)
ROI_COLOR = (0, 220, 0)
OUTLINE_COLOR = (0, 0, 0)
DIM_FACTOR = 0.5

SAVE_EXTENSIONS = (".png", ".jpg", ".jpeg")

_SHIFT = 4                      # sub-pixel bits for cv2 drawing
_SCALE = 1 << _SHIFT
_MAX_COORD = 1e6                # points farther than this from the origin are not drawn


def _side(name: str) -> str:
    if name.startswith("left_") or name.endswith("_left"):
        return "left"
    if name.startswith("right_") or name.endswith("_right"):
        return "right"
    return "center"


_SIDE_COLORS = {"left": LEFT_COLOR, "right": RIGHT_COLOR, "center": CENTER_COLOR}


def _dim(color: tuple[int, int, int]) -> tuple[int, int, int]:
    return tuple(int(round(c * DIM_FACTOR)) for c in color)  # type: ignore[return-value]


def line_thickness(height: int, width: int) -> int:
    """Skeleton line thickness in pixels for an image of this size (2 px at 640 px, at least 1)."""
    return max(1, int(round(2.0 * max(height, width) / 640.0)))


def _fixed(point: np.ndarray) -> tuple[int, int]:
    return int(round(float(point[0]) * _SCALE)), int(round(float(point[1]) * _SCALE))


def _drawable(point: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(point[:2])) and np.all(np.abs(point[:2]) < _MAX_COORD))


def draw_poses(image_rgb: np.ndarray, poses: Sequence[Pose], topology: Topology = BLAZEPOSE_33,
               draw_roi: bool = True, min_visibility: float = 0.5) -> np.ndarray:
    """Returns a copy of ``image_rgb`` (H, W, 3) uint8 with each pose's ROI, skeleton and keypoints drawn.

    Args:
        image_rgb: the image; left untouched. A 2-D grayscale image is drawn on as RGB.
        poses: poses in image pixel coordinates; an empty list returns a plain copy.
        topology: names (for the left/right colouring) and edges of the keypoints.
        draw_roi: also draw each pose's ROI as a rotated rectangle.
        min_visibility: keypoints below this visibility are drawn hollow and dimmer.
    """
    image = np.asarray(image_rgb)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
    canvas = np.ascontiguousarray(image).copy()
    if not poses:
        return canvas

    height, width = canvas.shape[:2]
    thickness = line_thickness(height, width)
    radius = thickness + 2
    sides = [_side(n) for n in topology.keypoints]

    for pose in poses:
        points = np.asarray(pose.keypoints, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] < 2:
            points = points.reshape(-1, 2) if points.size else np.zeros((0, 2))
        n = len(points)
        vis = np.ones(n) if pose.visibility is None else np.asarray(pose.visibility, dtype=np.float64).ravel()
        if len(vis) != n:
            vis = np.ones(n)
        visible = np.where(np.isfinite(vis), vis, 0.0) >= min_visibility
        ok = np.array([_drawable(p) for p in points], dtype=bool)

        if draw_roi and pose.roi is not None:
            corners = np.asarray(pose.roi.corners(), dtype=np.float64)
            if all(_drawable(c) for c in corners):
                poly = np.array([_fixed(c) for c in corners], dtype=np.int32).reshape(-1, 1, 2)
                cv2.polylines(canvas, [poly], True, ROI_COLOR, thickness, cv2.LINE_AA, _SHIFT)
                # A dot on the top side shows which way is "up" in a rotated ROI.
                top_mid = (corners[0] + corners[1]) / 2
                cv2.circle(canvas, _fixed(top_mid), radius * _SCALE, ROI_COLOR, -1, cv2.LINE_AA, _SHIFT)

        for a, b in topology.edges:
            if a >= n or b >= n or not (ok[a] and ok[b]):
                continue
            side_a, side_b = sides[a], sides[b]
            color = _SIDE_COLORS[side_a] if side_a == side_b else CENTER_COLOR
            if visible[a] and visible[b]:
                cv2.line(canvas, _fixed(points[a]), _fixed(points[b]), color, thickness, cv2.LINE_AA, _SHIFT)
            else:
                cv2.line(canvas, _fixed(points[a]), _fixed(points[b]), _dim(color),
                         max(1, thickness // 2), cv2.LINE_AA, _SHIFT)

        for i in range(n):
            if not ok[i]:
                continue
            color = _SIDE_COLORS[sides[i]] if i < len(sides) else CENTER_COLOR
            center = _fixed(points[i])
            if visible[i]:
                cv2.circle(canvas, center, radius * _SCALE, color, -1, cv2.LINE_AA, _SHIFT)
                cv2.circle(canvas, center, radius * _SCALE, OUTLINE_COLOR, 1, cv2.LINE_AA, _SHIFT)
            else:
                cv2.circle(canvas, center, radius * _SCALE, _dim(color), 1, cv2.LINE_AA, _SHIFT)
    return canvas


def save_image(path: PathLike, image_rgb: np.ndarray) -> None:
    """Writes an (H, W, 3) uint8 RGB image (or a 2-D grayscale one) to a .png, .jpg or .jpeg file.

    The file is written atomically (a temporary file in the same folder, then renamed over ``path``): a failed
    write (disk full) leaves no partial image under ``path``, and an earlier file there unchanged. The file carries
    this package's mark (:mod:`blazepose_tf.io.provenance`), so a rerun knows it may replace it.

    Raises:
        UserError: unsupported extension, or the location cannot be written (missing directory,
            permission denied, path is a directory, disk full).
    """
    p = Path(path)
    ext = p.suffix.lower()
    if ext not in SAVE_EXTENSIONS:
        raise UserError(f"unsupported image output extension {p.suffix or '(none)'} for {p}; "
                        f"use {', '.join(SAVE_EXTENSIONS)}")
    image = np.asarray(image_rgb)
    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"expected an (H, W, 3) or (H, W) uint8 image, got {image.shape} {image.dtype}")
    bgr = image if image.ndim == 2 else image[:, :, ::-1]
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if ext in (".jpg", ".jpeg") else []
    ok, encoded = cv2.imencode(ext, np.ascontiguousarray(bgr), params)
    if not ok:
        raise UserError(f"cannot encode image for {p}")
    if p.is_dir():
        raise UserError(f"cannot write image {p}: it is a directory")
    if not p.parent.is_dir():
        raise UserError(f"cannot write image {p}: directory {p.parent} does not exist")
    try:
        write_bytes_atomic(p, mark_image(encoded.tobytes(), ext))
    except OSError as e:
        raise UserError(f"cannot write image {p}: {e.strerror or e}") from None
