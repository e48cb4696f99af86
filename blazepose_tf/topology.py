"""Keypoint topologies: names, left/right flip pairs, skeleton edges and name-based mappings.

The 33-point BlazePose topology is the default; any other keypoint set (a user's own, COCO-17, LSPET's 14)
is a :class:`Topology` too, and datasets are mapped onto a tracker's topology by keypoint *name*.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Topology:
    """An ordered set of named keypoints with a skeleton.

    Args:
        name: short identifier (``blazepose33``, ``coco17``...).
        keypoints: keypoint names in model output order.
        edges: skeleton edges as pairs of indices, used for drawing.
    """

    name: str
    keypoints: tuple[str, ...]
    edges: tuple[tuple[int, int], ...] = field(default=())

    def __post_init__(self) -> None:
        if len(set(self.keypoints)) != len(self.keypoints):
            raise ValueError(f"topology {self.name!r} has duplicate keypoint names")
        n = len(self.keypoints)
        for a, b in self.edges:
            if not (0 <= a < n and 0 <= b < n):
                raise ValueError(f"topology {self.name!r}: edge ({a}, {b}) out of range for {n} keypoints")

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoints)

    def index(self, name: str) -> int:
        """Index of a keypoint by name (``KeyError`` with the known names if absent)."""
        try:
            return self.keypoints.index(name)
        except ValueError:
            raise KeyError(f"{name!r} is not a keypoint of topology {self.name!r}") from None

    @property
    def flip_indices(self) -> np.ndarray:
        """Permutation that maps every ``left_*`` point to its ``right_*`` twin and back (others fixed)."""
        perm = np.arange(self.num_keypoints)
        for i, name in enumerate(self.keypoints):
            twin = _mirror_name(name)
            if twin != name and twin in self.keypoints:
                perm[i] = self.keypoints.index(twin)
        return perm

    @property
    def flip_pairs(self) -> list[tuple[int, int]]:
        """(left, right) index pairs."""
        perm = self.flip_indices
        return [(i, int(perm[i])) for i in range(self.num_keypoints) if perm[i] > i]

    def mapping_from(self, source_names: Sequence[str]) -> np.ndarray:
        """For each of our keypoints, the index in ``source_names`` with the same name, or -1."""
        lookup = {n: i for i, n in enumerate(source_names)}
        return np.array([lookup.get(n, -1) for n in self.keypoints], dtype=np.int64)

    def mapping_to(self, target: "Topology") -> np.ndarray:
        """For each keypoint of ``target``, our index with the same name, or -1."""
        return target.mapping_from(self.keypoints)


def _mirror_name(name: str) -> str:
    for a, b in (("left", "right"), ("right", "left")):
        if name.startswith(a + "_"):
            return b + "_" + name[len(a) + 1:]
        if name.endswith("_" + a):
            return name[: -len(a)] + b
    return name


BLAZEPOSE_33 = Topology(
    name="blazepose33",
    keypoints=(
        "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
        "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder",
        "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_pinky",
        "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb", "left_hip", "right_hip",
        "left_knee", "right_knee", "left_ankle", "right_ankle", "left_heel", "right_heel",
        "left_foot_index", "right_foot_index",
    ),
    edges=(
        (0, 1), (1, 2), (2, 3), (3, 7), (0, 4), (4, 5), (5, 6), (6, 8), (9, 10), (11, 12), (11, 13),
        (13, 15), (15, 17), (15, 19), (15, 21), (17, 19), (12, 14), (14, 16), (16, 18), (16, 20),
        (16, 22), (18, 20), (11, 23), (12, 24), (23, 24), (23, 25), (24, 26), (25, 27), (26, 28),
        (27, 29), (28, 30), (29, 31), (30, 32), (27, 31), (28, 32),
    ),
)

COCO_17 = Topology(
    name="coco17",
    keypoints=(
        "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
        "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
        "right_knee", "left_ankle", "right_ankle",
    ),
    edges=(
        (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
        (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
    ),
)

# The two auxiliary ROI points the official tracker emits after the 33 body points.
AUX_ROI_POINTS = ("roi_center", "roi_scale")

TOPOLOGIES = {t.name: t for t in (BLAZEPOSE_33, COCO_17)}


def get_topology(name: str) -> Topology:
    """Looks a built-in topology up by name."""
    try:
        return TOPOLOGIES[name]
    except KeyError:
        raise KeyError(f"unknown topology {name!r}; known: {sorted(TOPOLOGIES)}") from None


def torso_size(points: np.ndarray, topology: Topology = BLAZEPOSE_33, diagonal: bool = False) -> float:
    """Torso size of one person, as used by PCK@0.2 (docs/design.md §8).

    Args:
        points: (N, >=2) keypoints in ``topology`` order, pixels.
        diagonal: False -> |mid-shoulder - mid-hip|; True -> max(|ls - rh|, |rs - lh|).
    """
    ls, rs, lh, rh = (points[topology.index(n), :2] for n in
                      ("left_shoulder", "right_shoulder", "left_hip", "right_hip"))
    if diagonal:
        return float(max(np.linalg.norm(ls - rh), np.linalg.norm(rs - lh)))
    return float(np.linalg.norm((ls + rs) / 2 - (lh + rh) / 2))
