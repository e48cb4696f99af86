"""Runs a pose pipeline over a COCO-keypoints dataset and scores it (PCK@0.2 both torso variants, COCO AP).

Library side of ``python -m blazepose_tf.evaluate``; also used by benchmarks and training."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
from tqdm import tqdm

from blazepose_tf.datasets.coco import ImageRecord, KeypointDataset
from blazepose_tf.errors import InputError
from blazepose_tf.io.images import load_image
from blazepose_tf.metrics import PckResult, coco_keypoint_ap, match_prediction, pck, select_scored_person
from blazepose_tf.types import Pose


@dataclass
class EvaluationResult:
    """PCK (mid-torso and diagonal variants; ``pck.per_person`` for paired comparisons,
    :func:`blazepose_tf.metrics.paired_pck_delta`), COCO AP, per-image predictions and unreadable images."""

    pck: PckResult
    pck_diagonal: PckResult
    coco: dict
    predictions: dict = field(default_factory=dict)   # image_id -> list[Pose]
    errors: list = field(default_factory=list)         # (file, message)

    def summary(self) -> dict:
        return {"pck": self.pck.to_dict(), "pck_diagonal": self.pck_diagonal.to_dict(), "coco": self.coco,
                "errors": [{"source": s, "error": m} for s, m in self.errors]}


def scored_records(dataset: KeypointDataset | Sequence[ImageRecord], limit: Optional[int] = None) -> list[ImageRecord]:
    """The records that have a scored person (docs/design.md §8), first ``limit`` of them."""
    out = [r for r in dataset if select_scored_person(r) is not None]
    return out[:limit] if limit else out


def evaluate(predict: Callable[[np.ndarray], list[Pose]], records: Sequence[ImageRecord],
             progress: bool = True, desc: str = "evaluate") -> EvaluationResult:
    """Runs ``predict`` (image → poses) on every record and scores the results.

    Unreadable images are reported in ``errors`` and scored as missed detections, so a broken file cannot
    raise the score.
    """
    gts, preds, per_image, errors = [], [], {}, []
    for rec in tqdm(records, desc=desc, unit="img", disable=not progress, file=sys.stderr):
        try:
            poses = predict(load_image(rec.file_path))
        except InputError as e:
            errors.append((str(rec.file_path), str(e)))
            poses = []
        per_image[rec.image_id] = poses
        person = select_scored_person(rec)
        if person is not None:
            gts.append(person)
            preds.append(match_prediction(person, poses) if poses else None)
    coco = coco_keypoint_ap(list(records), {k: [(p.keypoints, p.score) for p in v] for k, v in per_image.items()})
    return EvaluationResult(pck=pck(gts, preds), pck_diagonal=pck(gts, preds, diagonal=True), coco=coco,
                            predictions=per_image, errors=errors)
