"""Temporal smoothing of landmarks with the One Euro filter, MediaPipe's pose defaults (docs/design.md §7).

Values are filtered in image pixels; the derivative is divided by the object's scale (the mean of the
landmarks' bounding-box width and height) so the filter behaves the same for near and far people.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass(frozen=True)
class OneEuroParams:
    """One Euro filter parameters (``frequency`` is only the initial guess; timestamps drive it)."""

    min_cutoff: float
    beta: float
    derivate_cutoff: float = 1.0
    frequency: float = 30.0


LANDMARKS = OneEuroParams(min_cutoff=0.05, beta=80.0)
AUX_LANDMARKS = OneEuroParams(min_cutoff=0.01, beta=10.0)
WORLD_LANDMARKS = OneEuroParams(min_cutoff=0.1, beta=40.0)
VISIBILITY_ALPHA = 0.1


class OneEuroFilter:
    """Vectorized One Euro filter over an array of values sharing one timestamp stream."""

    def __init__(self, params: OneEuroParams):
        self.params = params
        self.reset()

    def reset(self) -> None:
        self._x: Optional[np.ndarray] = None      # filtered value
        self._raw: Optional[np.ndarray] = None    # last raw value
        self._dx: Optional[np.ndarray] = None     # filtered derivative
        self._t: Optional[float] = None
        self._freq = self.params.frequency

    @staticmethod
    def _alpha(cutoff, freq: float):
        te = 1.0 / freq
        tau = 1.0 / (2 * math.pi * np.asarray(cutoff))
        return 1.0 / (1.0 + tau / te)

    def __call__(self, value: np.ndarray, timestamp: float, value_scale: float = 1.0) -> np.ndarray:
        """Filters ``value`` observed at ``timestamp`` (seconds, strictly increasing)."""
        value = np.asarray(value, dtype=np.float64)
        if self._t is not None and timestamp <= self._t:
            return value if self._x is None else self._x.copy()
        if self._t is not None:
            self._freq = 1.0 / (timestamp - self._t)
        self._t = timestamp
        if self._raw is None or self._raw.shape != value.shape:
            dvalue = np.zeros_like(value)
        else:
            dvalue = (value - self._raw) * value_scale * self._freq
        a_d = self._alpha(self.params.derivate_cutoff, self._freq)
        self._dx = dvalue if self._dx is None or self._dx.shape != value.shape else a_d * dvalue + (1 - a_d) * self._dx
        cutoff = self.params.min_cutoff + self.params.beta * np.abs(self._dx)
        a = self._alpha(cutoff, self._freq)
        self._x = value if self._x is None or self._x.shape != value.shape else a * value + (1 - a) * self._x
        self._raw = value
        return self._x.copy()


def object_scale(points: np.ndarray) -> float:
    """Mean of the width and height of the points' bounding box (pixels)."""
    p = np.asarray(points)[:, :2]
    span = p.max(0) - p.min(0)
    return float((span[0] + span[1]) / 2)


class LandmarkSmoother:
    """Smooths landmarks (x, y, z) with One Euro and visibility with a low-pass filter, per track."""

    def __init__(self, params: OneEuroParams = LANDMARKS, visibility_alpha: float = VISIBILITY_ALPHA,
                 min_object_scale: float = 1e-6):
        self.filter = OneEuroFilter(params)
        self.visibility_alpha = visibility_alpha
        self.min_object_scale = min_object_scale
        self._vis: Optional[np.ndarray] = None

    def reset(self) -> None:
        self.filter.reset()
        self._vis = None

    def __call__(self, xyz: np.ndarray, timestamp: float,
                 visibility: Optional[np.ndarray] = None) -> tuple[np.ndarray, Optional[np.ndarray]]:
        scale = object_scale(xyz)
        value_scale = 1.0 / scale if scale > self.min_object_scale else 1.0
        out = self.filter(xyz, timestamp, value_scale).astype(np.float32)
        vis = None
        if visibility is not None:
            v = np.asarray(visibility, dtype=np.float64)
            self._vis = v if self._vis is None or self._vis.shape != v.shape else (
                self.visibility_alpha * v + (1 - self.visibility_alpha) * self._vis)
            vis = self._vis.astype(np.float32)
        return out, vis
