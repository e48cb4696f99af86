"""Fitting and choosing a landmark-head refit: ridge residuals per annotated point, and per point group the option
that scores best in the pipeline on the dev split.

Each annotated point gets its own ridge fit (:class:`~blazepose_tf.training.head_residual.RidgeSolver`) on the
training crops where it is annotated and where the original head is within ``inlier_torso`` torso lengths of the
label: PCK counts a point right within 0.2 torso, so the fit learns the labelling convention from the crops the
head already roughly gets, not from the gross failures (a swapped or lost limb) a linear correction cannot repair
and whose squared errors would otherwise dominate it.

Per point group (left and right together, :data:`POINT_GROUPS`) the choice is one of :data:`OPTIONS`:

* ``official``: the original head rows (and heatmap) for the group;
* ``keep``: the refit rows, the heatmap refinement as it is (issue #16 option (a): where the refinement fires it
  moves the point back to the heatmap's, i.e. MediaPipe's, convention);
* ``off``: the refit rows and the group's heatmap channels silenced, so refinement never overrides them (option
  (b); :func:`~blazepose_tf.training.head_residual.silence_heatmap_channels`).

A point's pipeline result depends only on its own rows and heatmap channel, so the groups are chosen independently
(:func:`choose_options`), and the whole choice is one pipeline PCK per option (:func:`option_counts`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from blazepose_tf.metrics import count_share
from blazepose_tf.topology import BLAZEPOSE_33, Topology, torso_size
from blazepose_tf.training.head_residual import SILENT_HEATMAP_LOGIT, Residual, RidgeSolver, coordinate_columns
from blazepose_tf.training.refit_crops import PipelineCrops, pipeline_pck

#: The point groups a refit chooses for, in the order they are reported.
POINT_GROUPS: dict[str, tuple[str, str]] = {
    "shoulders": ("left_shoulder", "right_shoulder"), "elbows": ("left_elbow", "right_elbow"),
    "wrists": ("left_wrist", "right_wrist"), "hips": ("left_hip", "right_hip"),
    "knees": ("left_knee", "right_knee"), "ankles": ("left_ankle", "right_ankle"),
}
#: What a group can get (module docstring), in order of preference on ties.
OPTIONS: tuple[str, ...] = ("official", "keep", "off")


def group_points(groups: Sequence[str], topology: Topology = BLAZEPOSE_33,
                 table: Mapping[str, Sequence[str]] = POINT_GROUPS) -> list[int]:
    """Topology indices of the points of ``groups`` (names of ``table``, default :data:`POINT_GROUPS`)."""
    return [topology.index(name) for g in groups for name in table[g]]


@dataclass
class TrainingSet:
    """Training crops for a refit: ``features`` (N, F), the original head's ``landmarks`` (N, P·5), the
    ground truth ``target`` (N, K, 2) in crop pixels and its ``annotated`` mask (N, K)."""

    features: np.ndarray
    landmarks: np.ndarray
    target: np.ndarray
    annotated: np.ndarray

    def __len__(self) -> int:
        return len(self.features)


def fit_residuals(train: TrainingSet, points: Sequence[int], lambdas: Sequence[float], inlier_torso: float,
                  topology: Topology = BLAZEPOSE_33) -> dict[float, Residual]:
    """Ridge residuals of the x, y rows of ``points``, one per penalty of ``lambdas`` (module docstring).

    Raises:
        ValueError: a point has fewer than 2 usable training crops.
    """
    n = len(train)
    xy = np.asarray(train.landmarks, np.float64).reshape(n, -1, 5)[:, :topology.num_keypoints, :2]
    torso = np.array([torso_size(t, topology) for t in train.target])
    with np.errstate(invalid="ignore", divide="ignore"):
        err = np.linalg.norm(train.target - xy, axis=2) / torso[:, None]
    features = np.asarray(train.features, np.float64)
    cols = coordinate_columns(points)
    weights = {lam: np.zeros((features.shape[1], len(cols))) for lam in lambdas}
    bias = {lam: np.zeros(len(cols)) for lam in lambdas}
    for j, p in enumerate(points):
        rows = train.annotated[:, p] & (err[:, p] < inlier_torso)
        if rows.sum() < 2:
            raise ValueError(f"point {topology.keypoints[p]!r}: {int(rows.sum())} usable training crops")
        solver = RidgeSolver(features[rows])
        for lam in lambdas:
            r = solver.fit(train.target[rows, p] - xy[rows, p], lam, cols[2 * j:2 * j + 2])
            weights[lam][:, 2 * j:2 * j + 2], bias[lam][2 * j:2 * j + 2] = r.weights, r.bias
    return {lam: Residual(cols, weights[lam], bias[lam]) for lam in lambdas}


def refit_landmarks(base: np.ndarray, features: np.ndarray, residual: Residual) -> np.ndarray:
    """(N, P·5) landmarks of a head with ``residual`` added, from the base head's landmarks and its features."""
    out = np.asarray(base, np.float64).copy()
    out[:, residual.columns] += residual.predict(features)
    return out


def silenced(heatmap: np.ndarray, points: Sequence[int]) -> np.ndarray:
    """A copy of (N, h, w, P) heatmap logits whose ``points`` channels are the silenced constant."""
    out = np.array(heatmap, copy=True)
    out[..., list(points)] = SILENT_HEATMAP_LOGIT
    return out


def option_counts(crops: PipelineCrops, residual: Residual, points: Sequence[int],
                  topology: Topology = BLAZEPOSE_33) -> dict[str, dict[str, tuple[int, int]]]:
    """Per option of :data:`OPTIONS`: (correct, annotated) per keypoint name of the pipeline on ``crops`` when
    every point of ``points`` takes that option."""
    f = crops.features
    refit = refit_landmarks(f.landmarks, f.features, residual)
    runs = {"official": (f.landmarks, f.heatmap), "keep": (refit, f.heatmap),
            "off": (refit, silenced(f.heatmap, points) if f.heatmap is not None else None)}
    return {opt: pck_counts(crops, lm, hm, topology) for opt, (lm, hm) in runs.items()}


def pck_counts(crops: PipelineCrops, landmarks: np.ndarray, heatmap, topology: Topology = BLAZEPOSE_33
               ) -> dict[str, tuple[int, int]]:
    """(correct, annotated) per keypoint name of :func:`~blazepose_tf.training.refit_crops.pipeline_pck`."""
    return dict(pipeline_pck(crops, landmarks, heatmap, topology).keypoint_counts)


def choose_options(counts: dict[str, dict[str, tuple[int, int]]], groups: Sequence[str]) -> dict[str, str]:
    """Per group, the option with the most correct points (ties: the earlier option of :data:`OPTIONS`)."""
    def correct(opt: str, group: str) -> int:
        return sum(counts[opt].get(name, (0, 0))[0] for name in POINT_GROUPS[group])

    return {g: max(OPTIONS, key=lambda o: (correct(o, g), -OPTIONS.index(o))) for g in groups}


def combined_counts(counts: dict[str, dict[str, tuple[int, int]]], options: dict[str, str]
                    ) -> dict[str, tuple[int, int]]:
    """(correct, annotated) per keypoint name when each group takes its option (other points: official)."""
    out = dict(counts["official"])
    for group, opt in options.items():
        for name in POINT_GROUPS[group]:
            if name in counts[opt]:
                out[name] = counts[opt][name]
    return out


def percent(counts: dict[str, tuple[int, int]], names: Sequence[str] | None = None) -> float:
    """PCK (%) of (correct, annotated) counts, over ``names`` (default all); NaN when none was annotated."""
    value = count_share(counts, names)
    return 100.0 * value if value is not None else float("nan")
