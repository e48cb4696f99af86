"""Plain data types passed between the pipeline's steps. All coordinates are image pixels."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np


@dataclass
class Roi:
    """A rotated rectangle in image pixels; ``rotation`` in radians (positive = clockwise on screen)."""

    x_center: float
    y_center: float
    width: float
    height: float
    rotation: float = 0.0

    def to_dict(self) -> dict:
        return {"x_center": float(self.x_center), "y_center": float(self.y_center),
                "width": float(self.width), "height": float(self.height), "rotation": float(self.rotation)}

    def corners(self) -> np.ndarray:
        """(4, 2) corners: top-left, top-right, bottom-right, bottom-left of the rotated rectangle."""
        c, s = np.cos(self.rotation), np.sin(self.rotation)
        hw, hh = self.width / 2, self.height / 2
        local = np.array([[-hw, -hh], [hw, -hh], [hw, hh], [-hw, hh]])
        rot = np.array([[c, -s], [s, c]])
        return local @ rot.T + np.array([self.x_center, self.y_center])


@dataclass
class Detection:
    """A person detection: box (xmin, ymin, xmax, ymax) and 4 alignment keypoints, in image pixels."""

    box: np.ndarray          # (4,)
    keypoints: np.ndarray    # (4, 2)
    score: float


@dataclass
class Pose:
    """One tracked person.

    Attributes:
        keypoints: (N, 3) x, y in image pixels; z in the same pixel scale (relative depth, hips ≈ 0).
        visibility: (N,) probability that the point is visible (not occluded).
        presence: (N,) probability that the point is inside the image.
        score: person presence probability from the tracker.
        roi: the crop rectangle the tracker ran on.
        aux_keypoints: (2, 2) auxiliary ROI points (center, scale/rotation point), image pixels.
        detection: the detection that seeded this track, if the detector ran for it.
        world: (N, 3) metric world coordinates (metres, hip-centred) when the model provides them.
    """

    keypoints: np.ndarray
    visibility: np.ndarray
    presence: np.ndarray
    score: float
    roi: Roi
    aux_keypoints: np.ndarray
    detection: Optional[Detection] = None
    world: Optional[np.ndarray] = field(default=None)
