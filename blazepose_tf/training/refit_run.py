"""One landmark-head refit run (``python -m blazepose_tf.training.refit_head``): the base tracker and the detector,
their cached outputs on the training and dev crops, the fits and their dev scores, and the written model.

Cache files (``.npz`` under the cache folder, :func:`~blazepose_tf.training.refit_crops.cached`) are keyed on
what they depend on: the annotations and splits files (path, size, modification time), the images folder (resolved)
and each of the split's scored images (resolved path, size, modification time), the split, the detector's and the
base model's sha256, the crop source and its settings, and :data:`CACHE_VERSION`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import sys

import numpy as np
import tensorflow as tf

from blazepose_tf.codecs.targets import gt_alignment_roi
from blazepose_tf.datasets.coco import load_coco_keypoints
from blazepose_tf.errors import InputError
from blazepose_tf.models.loading import check_keras_file, load_keras_model
from blazepose_tf.models.official_cache import converted_model_path, save_model
from blazepose_tf.official import official_model_path, sha256
from blazepose_tf.runtime.pipeline import PersonDetector
from blazepose_tf.runtime.runners import load_runner
from blazepose_tf.training import refit_crops as crops
from blazepose_tf.training.head_residual import (Residual, add_residual, coordinate_columns, feature_model,
                                                 silence_heatmap_channels, weights_restored)
from blazepose_tf.training.refit_search import (OPTIONS, POINT_GROUPS, TrainingSet, choose_options,
                                                combined_counts, group_points, option_counts, pck_counts, percent)

#: ``--base`` names of the converted official trackers.
OFFICIAL_BASES = {"official": "pose_landmark_full", "official_lite": "pose_landmark_lite"}
OFFICIAL_DETECTOR = "pose_detection"
CACHE_VERSION = 1   # bump when what is cached for the same files changes


class RefitRun:
    """The models, data and caches of one refit run.

    Args:
        annotations, images, splits: the COCO-keypoints dataset (splits default: ``splits.json`` beside it).
        base: ``official`` or a ``.keras`` tracker path.
        detector: detector file, None for MediaPipe's.
        cache_dir: where ROIs and features are cached.
    """

    def __init__(self, annotations: Path, images: Path, splits: Optional[Path], base: str, detector: Optional[str],
                 cache_dir: Path, batch_size: int = 32, progress: bool = True):
        self.annotations, self.images, self.splits = annotations, images, splits
        self.base_path = (converted_model_path(OFFICIAL_BASES[base]) if base in OFFICIAL_BASES
                          else check_keras_file(base, "--base"))
        self.detector_path = Path(detector) if detector else official_model_path(OFFICIAL_DETECTOR)
        self.detector_label = str(detector) if detector else f"official:{OFFICIAL_DETECTOR}"
        self.cache_dir, self.batch_size, self.progress = cache_dir, batch_size, progress
        self._base_key = sha256(self.base_path)
        self._detector_key = sha256(self.detector_path)
        dataset_files = [annotations, splits or annotations.with_name("splits.json")]
        self._data_key = (CACHE_VERSION, crops.photo_key(dataset_files), str(images.resolve()))
        self._base = load_keras_model(self.base_path, "--base")   # shared: write_model restores what it changes
        self._predict = feature_predictor(self._base)
        self._detector: Optional[PersonDetector] = None
        self._people: dict[str, list] = {}
        self._photo_keys: dict[str, list] = {}   # per split: crops.photo_key of its scored images
        self.jitter: Optional[dict[str, Any]] = None  # the detector's ROI errors the jittered crops are drawn from

    # ------------------------------------------------------------------------------------------------- data
    def people(self, split: str) -> list:
        """(record, scored person) pairs of a split."""
        if split not in self._people:
            ds = load_coco_keypoints(self.annotations, self.images, split=split, splits_json=self.splits)
            people = crops.scored_people(ds.records)
            check_images_found([rec.file_path for rec, _ in people], split, self.images)
            self._people[split] = people
            self._photo_keys[split] = crops.photo_key([rec.file_path for rec, _ in people])
        return self._people[split]

    def cache_path(self, kind: str, split: str, *key: Any) -> Path:
        """The cache file of a result of ``kind`` on ``split``'s scored images that also depends on ``key``."""
        self.people(split)
        return self.cache_dir / f"{kind}-{crops.cache_key(self._data_key, self._photo_keys[split], split, *key)}.npz"

    def detector_rois(self, split: str) -> list:
        """The detector's IMAGE-mode ROI of each scored image of ``split`` (cached)."""
        def compute() -> dict[str, np.ndarray]:
            if self._detector is None:
                self._detector = PersonDetector(load_runner(self.detector_path))
            paths = [rec.file_path for rec, _ in self.people(split)]
            return {"rois": crops.rois_to_array(crops.detector_rois(self._detector, paths, self.progress))}

        return crops.rois_from_array(crops.cached(self.cache_path("rois", split, self._detector_key), compute)["rois"])

    def _features(self, kind: str, split: str, items: Sequence[crops.CropItem], keep_heatmap: bool, *key: Any
                  ) -> crops.Features:
        def compute() -> dict[str, np.ndarray]:
            return crops.extract(self._predict, items, keep_heatmap, self.batch_size, self.progress,
                                 desc=kind).arrays()

        return crops.Features.from_arrays(crops.cached(self.cache_path(kind, split, self._base_key, *key), compute))

    def pipeline(self, split: str) -> crops.PipelineCrops:
        """The base tracker behind the detector on the scored images of ``split``."""
        people = self.people(split)
        rois = self.detector_rois(split)
        rows, items = crops.pipeline_items(people, rois)
        feats = self._features(f"pipeline-{split}", split, items, True, self._detector_key)
        return crops.PipelineCrops([p for _, p in people], rois, rows, items, feats)

    def training_set(self, split: str, source: str, jitter_copies: int, seed: int) -> TrainingSet:
        """The base tracker on the training crops of ``source`` (see :mod:`blazepose_tf.training.refit_crops`)."""
        people = self.people(split)
        det = self.detector_rois(split) if source != "gt" else [None] * len(people)
        if source == "jitter":
            gts = [gt_alignment_roi(p.keypoints, p.available) for _, p in people]
            errors = crops.detector_roi_errors(det, gts)
            self.jitter = {"matched": len(errors), "mean": errors.mean(axis=0).round(4).tolist(),
                           "std": errors.std(axis=0).round(4).tolist(),
                           "fields": ["dx/side", "dy/side", "log side ratio", "rotation rad"]}
        pairs = crops.training_items(people, source, det, jitter_copies, seed)
        items = [item for _, item in pairs]
        key = (source,) + ((self._detector_key, jitter_copies, seed) if source != "gt" else ())
        feats = self._features(f"train-{source}", split, items, False, *key)
        target, annotated = crops.crop_targets([people[i][1] for i, _ in pairs], items)
        return TrainingSet(feats.features, feats.landmarks, target, annotated)

    # --------------------------------------------------------------------------------------------- choosing
    @staticmethod
    def score(dev: crops.PipelineCrops, residual: Residual, points: Sequence[int]) -> dict[str, Any]:
        """The dev result of a residual: the option chosen per group, the combined counts and PCK (overall and per
        group), and (``base_counts``) the base model's counts."""
        counts = option_counts(dev, residual, points)
        options = choose_options(counts, list(POINT_GROUPS))
        combined = combined_counts(counts, options)
        return {"pck": percent(combined), "options": options,
                "groups": {g: percent(combined, POINT_GROUPS[g]) for g in POINT_GROUPS},
                "option_pck": {o: {g: percent(counts[o], POINT_GROUPS[g]) for g in POINT_GROUPS} for o in OPTIONS},
                "counts": combined, "base_counts": counts["official"]}

    # ------------------------------------------------------------------------------------------------ output
    def write_model(self, path: Path, residual: Residual, options: dict[str, str], dev: crops.PipelineCrops
                    ) -> tuple[Path, dict[str, tuple[int, int]]]:
        """Writes the base model with the chosen groups' residual rows and silenced heatmap channels; returns the
        path and the written model's own (correct, annotated) counts on the dev pipeline crops."""
        with weights_restored(self._base) as model:
            refit = group_points([g for g, o in options.items() if o != "official"])
            if refit:
                add_residual(model, residual.subset(coordinate_columns(refit)))
            silence_heatmap_channels(model, group_points([g for g, o in options.items() if o == "off"]))
            save_model(model, path)
        predict = feature_predictor(load_keras_model(path, "refit model"))
        f = crops.extract(predict, dev.items, True, self.batch_size, self.progress, desc="check")
        return path, pck_counts(dev.with_features(f), f.landmarks, f.heatmap)

    def dev_metrics(self, counts: dict[str, tuple[int, int]], base_counts: dict[str, tuple[int, int]],
                    split: str) -> dict[str, Any]:
        """The sidecar metrics of the written model (dev numbers, labelled so)."""
        metrics: dict[str, Any] = {"split": split, "detector": self.detector_label,
                                   "pipeline_pck": percent(counts), "base_pipeline_pck": percent(base_counts)}
        for g in ("hips", "shoulders"):  # every group's numbers are in refit.json
            metrics[f"pck_{g}"] = percent(counts, POINT_GROUPS[g])
            metrics[f"base_pck_{g}"] = percent(base_counts, POINT_GROUPS[g])
        metrics["points"] = sum(t for _, t in counts.values())
        return metrics


def check_images_found(paths: Sequence[Path], split: str, images: Path) -> None:
    """A one-line :class:`InputError` when none of a split's scored images is a file (a wrong ``--images``: said
    before the slow detector pass, instead of a later "no crop"); one ``warning:`` line when some are missing."""
    missing = [p for p in paths if not p.is_file()]
    if missing and len(missing) == len(paths):
        raise InputError(f"none of the {len(paths)} scored images of split {split!r} is in --images {images} "
                         f"(first: {missing[0]} not found): is it the folder the annotations' file_name entries are "
                         "relative to?")
    if missing:
        print(f"warning: {len(missing)} of the {len(paths)} scored images of split {split!r} not found in --images "
              f"{images} (first: {missing[0]})", file=sys.stderr)

def feature_predictor(model):
    """A NumPy batch → {name: array} function of the model's feature view."""
    fm = feature_model(model)
    fn = tf.function(lambda x: fm(x, training=False), reduce_retracing=True, autograph=False)
    return lambda batch: {k: v.numpy() for k, v in fn(tf.constant(batch)).items()}
