"""Evaluation metrics (docs/design.md §8): PCK@0.2 with torso normalisation and COCO keypoint AP (OKS).

Ground truth comes from :mod:`blazepose_tf.datasets.coco` (keypoints already mapped onto the evaluated topology
by name); predictions are (N, 2) pixel arrays in the same topology, or :class:`~blazepose_tf.types.Pose` objects.

:func:`pck` is the project's one PCK: ``evaluate`` scores whole images with it, and the two "crop PCK"s call it
too — the training log's (:func:`blazepose_tf.training.evaluation.crop_pck`, on the prepared dev crops) and the
export report's / MODEL_ZOO.md's (:func:`export.report.tracker_pck`, on crops of the original images aligned on
the ground truth); the two differ only in the crops they score (see those functions).
"""
from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from blazepose_tf.datasets.coco import ImageRecord, KeypointDataset, PersonAnnotation, bbox_from_keypoints
from blazepose_tf.topology import BLAZEPOSE_33, COCO_17, Topology, torso_size

TORSO_POINTS = ("left_shoulder", "right_shoulder", "left_hip", "right_hip")

# Keypoint groups reported by ``pck``; names absent from the topology/dataset are simply not counted.
KEYPOINT_GROUPS: dict[str, tuple[str, ...]] = {
    "face": ("nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
             "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right"),
    "arms": ("left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
             "left_pinky", "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb"),
    "legs": ("left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "left_heel",
             "right_heel", "left_foot_index", "right_foot_index"),
}

#: LSPET's keypoint names (its annotations.json category); 12 of them are BlazePose-33 names.
LSPET_KEYPOINTS: tuple[str, ...] = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "right_wrist", "right_elbow",
    "right_shoulder", "left_shoulder", "left_elbow", "left_wrist", "neck", "head_top")
#: BlazePose-33 points LSPET annotates (12) and does not (21: face, hands, feet), in topology order.
_LSPET_MAPPING = BLAZEPOSE_33.mapping_from(LSPET_KEYPOINTS)
ANNOTATED: tuple[str, ...] = tuple(n for n, i in zip(BLAZEPOSE_33.keypoints, _LSPET_MAPPING) if i >= 0)
UNANNOTATED: tuple[str, ...] = tuple(n for n, i in zip(BLAZEPOSE_33.keypoints, _LSPET_MAPPING) if i < 0)
#: The unannotated points by body part (from :data:`KEYPOINT_GROUPS`).
UNANNOTATED_GROUPS: dict[str, tuple[str, ...]] = {
    part: tuple(n for n in UNANNOTATED if n in KEYPOINT_GROUPS[group])
    for part, group in (("face", "face"), ("hands", "arms"), ("feet", "legs"))}
#: A point agrees with a reference model's (the out-of-domain guard, teacher refits) within this many torso lengths of
#: the reference's pose.
AGREEMENT_THRESHOLD = 0.1
# A person counts as detected when a detection's centre keypoint (mid-hip) lies within this fraction of the
# person's body radius |kp1 - kp0| of the person's own: the tracker's crop is then roughly right (the training
# log's rule; also the detector's regression-quality targets' background radius).
MATCH_RADIUS = 0.5

# A prediction: (N, >=2) array, or anything with a ``.keypoints`` (N, >=2) attribute (e.g. a Pose).
Prediction = Any
GtPerson = Union[PersonAnnotation, tuple[np.ndarray, np.ndarray]]


def _pred_xy(pred: Prediction) -> np.ndarray:
    kps = getattr(pred, "keypoints", pred)
    return np.asarray(kps, dtype=np.float64)[:, :2]


def _gt_arrays(person: GtPerson) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(person, PersonAnnotation) or hasattr(person, "available"):
        kps, avail = person.keypoints, person.available
    else:
        kps, avail = person
    return np.asarray(kps, dtype=np.float64)[:, :2], np.asarray(avail, dtype=bool)


def select_scored_person(record: ImageRecord, topology: Topology = BLAZEPOSE_33) -> Optional[PersonAnnotation]:
    """The person of an image that PCK scores (docs/design.md §8), or None if the image is not scored.

    That is the largest (bbox area; keypoint extent when the file has no bbox) non-crowd person with both
    shoulders and both hips annotated. Ties keep the first in file order.
    """
    torso = [topology.index(n) for n in TORSO_POINTS]
    best, best_area = None, -1.0
    for person in record.people:
        if person.iscrowd or not np.all(person.available[torso]):
            continue
        box = person.box()
        area = box[2] * box[3] if box is not None else 0.0
        if area > best_area:
            best, best_area = person, area
    return best


def match_prediction(gt_person: GtPerson, poses: Sequence[Prediction]) -> Optional[Prediction]:
    """Picks, among an image's predicted poses, the one that corresponds to ``gt_person``.

    Rule: the pose with the smallest mean pixel error over the GT person's annotated keypoints (non-finite
    predicted points count as infinitely far); ties keep the earliest pose. Returns None when ``poses`` is empty.
    """
    if len(poses) == 0:
        return None
    gt, avail = _gt_arrays(gt_person)
    best, best_err = poses[0], math.inf
    for pose in poses:
        err = np.linalg.norm(_pred_xy(pose)[avail] - gt[avail], axis=1)
        err = np.where(np.isfinite(err), err, np.inf)
        mean = float(err.mean()) if err.size else math.inf
        if mean < best_err:
            best, best_err = pose, mean
    return best


@dataclass
class PckResult:
    """PCK of a set of scored people. Percentages are 0-100 (NaN when nothing was counted).

    Attributes:
        pck: overall PCK over every annotated keypoint of every scored person.
        per_keypoint: name -> PCK, only names with at least one annotated point (topology order).
        per_group: group (face/arms/legs) -> PCK, only groups with at least one annotated point.
        detection_rate: percent of scored people that had a prediction.
        num_people / num_detected: scored people / those with a prediction.
        num_points / num_correct: annotated keypoints / correct ones.
        keypoint_counts: name -> (correct, annotated).
        per_person: (correct, annotated) of each scored person, in input order (paired comparisons,
            :func:`paired_pck_delta`); not in :meth:`to_dict`.
        threshold / diagonal: the settings used.
    """

    pck: float
    per_keypoint: dict[str, float]
    per_group: dict[str, float]
    detection_rate: float
    num_people: int
    num_detected: int
    num_points: int
    num_correct: int
    keypoint_counts: dict[str, tuple[int, int]] = field(default_factory=dict)
    threshold: float = 0.2
    diagonal: bool = False
    per_person: list[tuple[int, int]] = field(default_factory=list)   # (correct, annotated), input order

    def to_dict(self) -> dict:
        """JSON-friendly dict."""
        return {"pck": self.pck, "per_keypoint": dict(self.per_keypoint), "per_group": dict(self.per_group),
                "detection_rate": self.detection_rate, "num_people": self.num_people,
                "num_detected": self.num_detected, "num_points": self.num_points,
                "num_correct": self.num_correct,
                "keypoint_counts": {k: list(v) for k, v in self.keypoint_counts.items()},
                "threshold": self.threshold, "diagonal": self.diagonal}


def count_share(counts: Mapping[str, tuple[int, int]], names: Optional[Iterable[str]] = None) -> Optional[float]:
    """Pooled share (0-1) of (correct, compared) ``counts`` over ``names`` (default all; names without counts are
    skipped); None when nothing was compared."""
    chosen = [counts[n] for n in (names if names is not None else counts) if n in counts]
    total = sum(t for _, t in chosen)
    return sum(c for c, _ in chosen) / total if total else None


def _percent(num: float, den: float) -> float:
    return 100.0 * num / den if den > 0 else float("nan")


def pck(gt_people: Sequence[GtPerson], predictions: Sequence[Optional[Prediction]], threshold: float = 0.2,
        diagonal: bool = False, topology: Topology = BLAZEPOSE_33) -> PckResult:
    """Percentage of correct keypoints (docs/design.md §8).

    Args:
        gt_people: one entry per scored person: a :class:`PersonAnnotation` or a ``(keypoints (N,2),
            available (N,))`` pair, in ``topology`` order.
        predictions: aligned with ``gt_people``: predicted (N, >=2) keypoints (or a Pose), None = missed.
        threshold: a point is correct when its error is < ``threshold`` x torso size of the GT person.
        diagonal: torso size = max(|ls - rh|, |rs - lh|) instead of |mid-shoulder - mid-hip|.
        topology: keypoint order of both GT and predictions.

    Every annotated GT point is scored (predicted visibility is ignored); a missed detection makes all of
    that person's annotated points wrong.
    """
    if len(gt_people) != len(predictions):
        raise ValueError(f"{len(gt_people)} GT people but {len(predictions)} predictions")
    n = topology.num_keypoints
    correct = np.zeros(n, dtype=np.int64)
    total = np.zeros(n, dtype=np.int64)
    detected = 0
    per_person = []
    torso = [topology.index(name) for name in TORSO_POINTS]
    for person, pred in zip(gt_people, predictions):
        gt, avail = _gt_arrays(person)
        if gt.shape[0] != n:
            raise ValueError(f"GT person has {gt.shape[0]} keypoints, topology {topology.name!r} has {n}")
        if not avail[torso].all():
            raise ValueError("GT person lacks an annotated torso (both shoulders and hips); "
                             "pick scored people with select_scored_person")
        total += avail
        if pred is None:
            per_person.append((0, int(avail.sum())))
            continue
        detected += 1
        xy = _pred_xy(pred)
        if xy.shape[0] != n:
            raise ValueError(f"prediction has {xy.shape[0]} keypoints, topology {topology.name!r} has {n}")
        limit = threshold * torso_size(gt, topology, diagonal=diagonal)
        err = np.linalg.norm(xy - gt, axis=1)
        ok = avail & np.isfinite(err) & (err < limit)  # NaN/inf predictions are wrong
        correct += ok
        per_person.append((int(ok.sum()), int(avail.sum())))
    names = topology.keypoints
    counts = {names[i]: (int(correct[i]), int(total[i])) for i in range(n) if total[i] > 0}
    per_group = {}
    for group, members in KEYPOINT_GROUPS.items():
        c = sum(counts[m][0] for m in members if m in counts)
        t = sum(counts[m][1] for m in members if m in counts)
        if t > 0:
            per_group[group] = _percent(c, t)
    return PckResult(
        pck=_percent(correct.sum(), total.sum()),
        per_keypoint={k: _percent(c, t) for k, (c, t) in counts.items()},
        per_group=per_group,
        detection_rate=_percent(detected, len(gt_people)),
        num_people=len(gt_people), num_detected=detected,
        num_points=int(total.sum()), num_correct=int(correct.sum()),
        keypoint_counts=counts, threshold=threshold, diagonal=diagonal, per_person=per_person)


PAIRED_RESAMPLES = 2000


def paired_pck_delta(a: Sequence[Sequence[int]], b: Sequence[Sequence[int]], resamples: int = PAIRED_RESAMPLES,
                     seed: int = 0) -> tuple[float, list[float]]:
    """PCK(b) − PCK(a) in points over the same people (rows (correct, annotated), e.g.
    :attr:`PckResult.per_person` of two pipelines' evaluations on the same records) and its 95 %
    paired bootstrap interval (people resampled with replacement, ``resamples`` times).

    Raises:
        ValueError: the lists are not (correct, annotated) rows with 0 <= correct <= annotated and annotated >= 1,
            differ in length or in any person's annotated count, are empty, or ``resamples`` < 1.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    for rows in (a, b):
        if rows.ndim != 2 or rows.shape[1] != 2 or not len(rows):
            raise ValueError("paired PCK needs the same non-empty people as (correct, annotated) rows")
        if (rows[:, 1] < 1).any() or (rows[:, 0] < 0).any() or (rows[:, 0] > rows[:, 1]).any():
            raise ValueError("paired PCK rows need 0 <= correct <= annotated and annotated >= 1")
    if a.shape != b.shape or not np.array_equal(a[:, 1], b[:, 1]):
        raise ValueError("paired PCK needs the same non-empty people (same annotated points)")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    delta = 100.0 * (b[:, 0].sum() - a[:, 0].sum()) / a[:, 1].sum()
    idx = np.random.default_rng(seed).integers(0, len(a), (resamples, len(a)))
    boot = 100.0 * (b[idx, 0].sum(1) - a[idx, 0].sum(1)) / a[idx, 1].sum(1)
    return float(delta), [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))]


def format_pck_table(result: PckResult) -> str:
    """Human-readable table of a :class:`PckResult`."""
    def pct(v: float) -> str:
        return "   n/a" if math.isnan(v) else f"{v:6.1f}"

    variant = "diagonal torso" if result.diagonal else "mid-shoulder to mid-hip torso"
    lines = [
        f"PCK@{result.threshold:g} ({variant})",
        f"  people scored   {result.num_people:7d}   detected {result.num_detected} "
        f"(detection rate {pct(result.detection_rate).strip()}%)",
        f"  overall PCK     {pct(result.pck)}%   ({result.num_correct}/{result.num_points} keypoints)",
    ]
    if result.per_group:
        lines.append("  groups:")
        lines += [f"    {g:<20s}{pct(v)}%" for g, v in result.per_group.items()]
    if result.per_keypoint:
        lines.append("  keypoints:")
        for name, v in result.per_keypoint.items():
            c, t = result.keypoint_counts.get(name, (0, 0))
            lines.append(f"    {name:<20s}{pct(v)}%   ({c}/{t})")
    return "\n".join(lines)


_COCO_STAT_NAMES = ("AP", "AP50", "AP75", "AP_M", "AP_L", "AR", "AR50", "AR75", "AR_M", "AR_L")


def _to_coco17(points: np.ndarray, available: np.ndarray, mapping: np.ndarray) -> tuple[list[float], int]:
    out: list[float] = []
    num = 0
    for src in mapping:
        if src >= 0 and available[src]:
            x, y = points[src]
            out += [float(x), float(y), 2.0]
            num += 1
        else:
            out += [0.0, 0.0, 0.0]
    return out, num


def coco_keypoint_ap(dataset_records: Union[KeypointDataset, Sequence[ImageRecord]],
                     predictions_per_image: Union[Mapping[Any, Sequence[Any]], Sequence[Sequence[Any]]],
                     topology: Optional[Topology] = None, use_annotation_area: bool = False) -> dict:
    """COCO keypoint AP/AR (OKS, standard COCO-17 sigmas) computed with pycocotools.

    Args:
        dataset_records: a :class:`KeypointDataset` or its records; every person of every image is GT
            (crowd people are ignored by COCOeval; people with no COCO-17 point annotated are ignored too).
        predictions_per_image: ``{image_id: [(keypoints (N, >=2) pixels, score), ...]}`` (a Pose works as
            an item too), or a list aligned with ``dataset_records``. Images without an entry have none.
        topology: order of GT and predicted keypoints; defaults to the dataset's, else BlazePose-33.
            Points are mapped to COCO-17 by name; COCO points missing from the GT source are v=0.
        use_annotation_area: take the GT ``area`` (OKS scale) from the file instead of the bbox (w*h).
            The default follows docs/design.md: GT area = bbox area (bbox from the keypoints if the file has none).

    Returns:
        ``{"AP", "AP50", "AP75", "AP_M", "AP_L", "AR", "AR50", "AR75", "AR_M", "AR_L"}`` as fractions (0-1;
        NaN when undefined, e.g. no GT person in an area range), plus ``num_images``, ``num_gt``,
        ``num_detections``. With no predictions at all every value is 0 (NaN if there is no GT either).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    records = list(dataset_records)
    if topology is None:
        topology = getattr(dataset_records, "topology", BLAZEPOSE_33)
    mapping = COCO_17.mapping_from(topology.keypoints)
    if isinstance(predictions_per_image, Mapping):
        preds = predictions_per_image
    else:
        if len(predictions_per_image) != len(records):
            raise ValueError(f"{len(predictions_per_image)} prediction lists for {len(records)} images")
        preds = {r.image_id: p for r, p in zip(records, predictions_per_image)}

    images, gt_anns, dets = [], [], []
    num_scorable = 0
    for record in records:
        images.append({"id": record.image_id, "width": record.width, "height": record.height})
        for person in record.people:
            kps, num = _to_coco17(person.keypoints, person.available, mapping)
            box = person.bbox or bbox_from_keypoints(person.keypoints, person.available) or (0.0, 0.0, 0.0, 0.0)
            area = float(box[2] * box[3])
            if use_annotation_area and person.area is not None:
                area = float(person.area)
            gt_anns.append({"id": len(gt_anns) + 1, "image_id": record.image_id, "category_id": 1,
                            "keypoints": kps, "num_keypoints": num, "bbox": [float(v) for v in box],
                            "area": area, "iscrowd": int(person.iscrowd)})
            num_scorable += int(num > 0 and not person.iscrowd)
        items = preds.get(record.image_id)
        for item in (items if items is not None else ()):
            if hasattr(item, "keypoints") and hasattr(item, "score"):
                points, score = item.keypoints, item.score
            else:
                points, score = item
            xy = np.asarray(points, dtype=np.float64)[:, :2]
            if xy.shape[0] != topology.num_keypoints:
                raise ValueError(f"prediction has {xy.shape[0]} keypoints, topology {topology.name!r} "
                                 f"has {topology.num_keypoints}")
            kps, _ = _to_coco17(xy, np.isfinite(xy).all(axis=1), mapping)
            for i in range(2, len(kps), 3):
                kps[i] = 1.0  # COCOeval ignores detection visibility; mark all present
            dets.append({"image_id": record.image_id, "category_id": 1, "keypoints": kps,
                         "score": float(score)})

    result: dict = {"num_images": len(records), "num_gt": num_scorable, "num_detections": len(dets)}
    if num_scorable == 0:
        result.update({k: float("nan") for k in _COCO_STAT_NAMES})
        return result
    if not dets:
        result.update({k: 0.0 for k in _COCO_STAT_NAMES})
        return result

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "annotations": gt_anns,
                           "categories": [{"id": 1, "name": "person", "keypoints": list(COCO_17.keypoints)}]}
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(dets)
        evaluator = COCOeval(coco_gt, coco_dt, iouType="keypoints")
        evaluator.params.imgIds = [r.image_id for r in records]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    for name, value in zip(_COCO_STAT_NAMES, evaluator.stats):
        result[name] = float(value) if value >= 0 else float("nan")
    return result
