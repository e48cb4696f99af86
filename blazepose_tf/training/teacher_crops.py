"""The crops and targets of a teacher refit (``python -m blazepose_tf.training.refit_teacher``): on unlabelled
photos, the student pipeline's final ROI as the crop and the teacher pipeline's points as the targets; the base
tracker's features and outputs on those crops; agreement with the teacher as ``benchmarks.ood_guard`` counts it.

Both pipelines run as the runtime runs on images (:class:`blazepose_tf.runtime.pipeline.PoseTracker`, IMAGE mode,
its defaults), first pose of each. Results are cached as ``.npz`` files keyed on the photos (names, sizes,
modification times) and the sha256 of every model file involved.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from tqdm import tqdm

from blazepose_tf.codecs import roi as roi_codec
from blazepose_tf.contract import DETECTOR, LANDMARKS
from blazepose_tf.datasets.coco import unlabelled_photos
from blazepose_tf.errors import InputError, ModelError, model_file
from blazepose_tf.io.images import IMAGE_EXTENSIONS, load_image
from blazepose_tf.metrics import AGREEMENT_THRESHOLD, count_share, pck
from blazepose_tf.models.loading import check_keras_file, load_keras_model
from blazepose_tf.models.official_cache import save_model
from blazepose_tf.official import official_model_path, sha256
from blazepose_tf.runtime.pipeline import PoseTracker
from blazepose_tf.runtime.runners import check_runner, load_runner
from blazepose_tf.topology import BLAZEPOSE_33
from blazepose_tf.training import refit_crops as crops
from blazepose_tf.training.head_residual import (Residual, add_residual, coordinate_columns, heatmap_input_model,
                                                 set_heatmap_channels, weights_restored)
from blazepose_tf.training.refit_run import feature_predictor
from blazepose_tf.training.refit_search import TrainingSet, refit_landmarks

CACHE_VERSION = 1   # bump when what is cached for the same files changes


@dataclass
class TeacherSet:
    """The base tracker on the student's crops of some photos: its :class:`~refit_crops.Features` (with heatmaps),
    the crops (``items``) and the teacher's 33 points in each crop's pixels (``target``, (N, 33, 2))."""

    features: crops.Features
    items: list[crops.CropItem]
    target: np.ndarray

    def __len__(self) -> int:
        return len(self.items)

    def training_set(self) -> TrainingSet:
        """The set as :func:`~blazepose_tf.training.refit_search.fit_residuals` takes it (every point a target)."""
        return TrainingSet(self.features.features, self.features.landmarks, self.target,
                           np.ones(self.target.shape[:2], bool))


def agreement_counts(data: TeacherSet, residual: Optional[Residual],
                     features: Optional[crops.Features] = None) -> dict[str, tuple[int, int]]:
    """Per point name, (points within :data:`AGREEMENT_THRESHOLD` of the teacher's, points compared) of the base head
    with ``residual`` added (None: as it is), or of other ``features`` of the same crops, after the runtime's heatmap
    refinement. Distances are in crop pixels over the teacher's torso there: the crop is a similarity of the image,
    so the ratio is the guard's."""
    f = features if features is not None else data.features
    landmarks = refit_landmarks(f.landmarks, f.features, residual) if residual is not None else f.landmarks
    preds = [crops.refined_points(landmarks[row], f.heatmap[row] if f.heatmap is not None else None)
             [:BLAZEPOSE_33.num_keypoints] * crops.INPUT_SIZE for row in range(len(data))]
    everywhere = np.ones(BLAZEPOSE_33.num_keypoints, bool)
    return pck([(t, everywhere) for t in data.target], preds, threshold=AGREEMENT_THRESHOLD).keypoint_counts


def share(counts: dict[str, tuple[int, int]], points: Sequence[int]) -> float:
    """The share (0-1) of agreeing points among ``points`` (topology indices); 0 when none was compared."""
    return count_share(counts, [BLAZEPOSE_33.keypoints[p] for p in points]) or 0.0


class TeacherCrops:
    """The photos, pipelines and caches of one teacher refit (module docstring).

    Args:
        photos: folder of unlabelled photos; only its ``train`` split is read.
        base: the ``.keras`` tracker whose rows are refit (the student pipeline's tracker).
        detector: the student pipeline's detector file.
        teacher_detector, teacher_landmarks: the teacher pipeline's files (None: MediaPipe's detector and Full).
    """

    def __init__(self, photos: str, base: str, detector: str, teacher_detector: Optional[str],
                 teacher_landmarks: Optional[str], cache_dir: Path, batch_size: int = 32, progress: bool = True):
        self.base_path = check_keras_file(base, "--base")
        self.detector_path = model_file(detector, "--detector")
        self.teacher = (model_file(teacher_detector, "--teacher_detector") if teacher_detector
                        else official_model_path("pose_detection"),
                        model_file(teacher_landmarks, "--teacher_landmarks") if teacher_landmarks
                        else official_model_path("pose_landmark_full"))
        # the files as given, MediaPipe's by name (a label for reports: no local cache path)
        self.teacher_label = " + ".join(given or f"MediaPipe's {official}.tflite" for given, official in
                                        ((teacher_detector, "pose_detection"),
                                         (teacher_landmarks, "pose_landmark_full")))
        self._check_roles()
        self.photos = unlabelled_photos(photos, IMAGE_EXTENSIONS, "train", how="--photos")
        self.cache_dir, self.batch_size, self.progress = cache_dir, batch_size, progress
        self._photo_key = crops.photo_key(self.photos)
        self._base = self._predict = None   # the base tracker and its feature predictor, made on first use

    def _check_roles(self) -> None:
        """Each model meets the runtime's contract for its role (a detector given as a tracker is refused here,
        before any work); the trackers' heatmap shapes are kept for :meth:`check_teacher_heatmap`."""
        self._heatmap_shapes: dict[Path, Optional[tuple[int, ...]]] = {}
        for path, role in ((self.detector_path, DETECTOR), (self.base_path, LANDMARKS), (self.teacher[0], DETECTOR),
                           (self.teacher[1], LANDMARKS)):
            runner = load_runner(path)
            check_runner(runner, role)
            if role == LANDMARKS:
                self._heatmap_shapes[path] = dict(zip(runner.output_roles, runner.output_shapes)).get("heatmap")

    def check_teacher_heatmap(self) -> None:
        """A one-line model error unless the teacher tracker has a heatmap of the base's size."""
        theirs, ours = self._heatmap_shapes[self.teacher[1]], self._heatmap_shapes[self.base_path]
        if theirs is None:
            raise ModelError(f"the teacher tracker {self.teacher[1].name} has no heatmap output")
        if ours is None or tuple(theirs[1:3]) != tuple(ours[1:3]):
            raise ModelError(f"the teacher tracker's heatmap is {theirs[1]}x{theirs[2]}, the base's "
                             + (f"{ours[1]}x{ours[2]}" if ours else "missing") + ": they must match")

    def _pipelines_key(self) -> tuple:
        return (CACHE_VERSION, self._photo_key, sha256(self.detector_path), sha256(self.base_path),
                *(sha256(p) for p in self.teacher))

    def _pairs(self) -> dict[str, np.ndarray]:
        """Per photo: the student's final ROI (NaN: no pose) and the teacher's points (NaN: no pose)."""
        def compute() -> dict[str, np.ndarray]:
            student = PoseTracker(load_runner(self.detector_path), load_runner(self.base_path), mode="image")
            teacher = PoseTracker(load_runner(self.teacher[0]), load_runner(self.teacher[1]), mode="image")
            rois = np.full((len(self.photos), 5), np.nan)
            points = np.full((len(self.photos), BLAZEPOSE_33.num_keypoints, 2), np.nan)
            for i, path in enumerate(tqdm(self.photos, desc="pipelines", unit="photo", disable=not self.progress,
                                          file=sys.stderr)):
                try:
                    image = load_image(path)
                except InputError as e:
                    print(f"warning: skipped: {e}", file=sys.stderr)
                    continue
                ours, theirs = student.process(image), teacher.process(image)
                if ours and theirs:
                    rois[i] = crops.rois_to_array([ours[0].roi])[0]
                    points[i] = theirs[0].keypoints[:, :2]
            return {"rois": rois, "points": points}

        return crops.cached(self.cache_dir / f"pairs-{crops.cache_key(*self._pipelines_key())}.npz", compute)

    def sets(self, is_choose: Callable[[str], bool]) -> tuple[TeacherSet, TeacherSet]:
        """(fit, choose): the base tracker on the student's crop of every photo where both pipelines find a pose,
        parted by ``is_choose(file name)``; heatmaps (for the refinement agreement is scored after) only in the
        choose part."""
        pairs = self._pairs()
        rois = crops.rois_from_array(pairs["rois"])
        rows = [i for i, r in enumerate(rois) if r is not None and np.isfinite(pairs["points"][i]).all()]
        if not rows:
            raise InputError(f"no photo of {len(self.photos)} where both pipelines find a pose")
        out = []
        for part, keep_heatmap in (("fit", False), ("choose", True)):
            mine = [i for i in rows if is_choose(self.photos[i].name) == (part == "choose")]
            if not mine:
                raise InputError(f"the {part} part is empty: {len(rows)} photos with both poses")
            items = [crops.CropItem(self.photos[i], rois[i]) for i in mine]

            def compute(items=items, keep_heatmap=keep_heatmap, part=part) -> dict[str, np.ndarray]:
                return crops.extract(self._feature_predictor(), items, keep_heatmap, self.batch_size, self.progress,
                                     desc=part).arrays()

            key = crops.cache_key(*self._pipelines_key(), part, [str(it.path.name) for it in items])
            features = crops.Features.from_arrays(crops.cached(self.cache_dir / f"{part}-{key}.npz", compute))
            target = np.stack([roi_codec.image_to_crop(pairs["points"][i], rois[i]) for i in mine])
            out.append(TeacherSet(features, items, target.astype(np.float64) * crops.INPUT_SIZE))
        return out[0], out[1]

    def base_model(self):
        """The base tracker, loaded once (on first use) and shared: callers do not change its weights
        (:meth:`write_model` restores what it changes)."""
        if self._base is None:
            self._base = load_keras_model(self.base_path, "--base")
        return self._base

    def _feature_predictor(self):
        """The base tracker's :func:`feature_predictor`, made once (on first use)."""
        if self._predict is None:
            self._predict = feature_predictor(self.base_model())
        return self._predict

    def heatmap_data(self, part: TeacherSet, points: Sequence[int], teacher: bool = True
                     ) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """On ``part``'s crops: the base tracker's heatmap-layer input (N, H, W, C) and, with ``teacher``, the teacher
        tracker's heatmap logits (N, H, W, len(points)) of ``points`` on the same crops."""
        fmap_model = heatmap_input_model(self.base_model())
        runner = load_runner(self.teacher[1]) if teacher else None
        fmaps, logits = [], []
        for batch in crops.crop_batches(part.items, self.batch_size, self.progress, desc="heatmaps"):
            fmaps.append(np.asarray(fmap_model([batch], training=False), np.float32))
            if runner is not None:   # check_teacher_heatmap: it has a heatmap of the base's size
                logits.append(np.asarray(runner(batch)["heatmap"], np.float32)[..., list(points)])
        return np.concatenate(fmaps), (np.concatenate(logits) if runner is not None else None)

    def write_model(self, path: Path, residuals: dict[str, tuple[Residual, list[int]]], check: TeacherSet,
                    heatmap: Optional[tuple[Sequence[int], np.ndarray, np.ndarray]] = None
                    ) -> tuple[Path, dict[str, tuple[int, int]]]:
        """Writes the base with each group's residual rows added (``{group: (residual, its points)}``) and, given
        ``heatmap`` = (points, kernel, bias), those heatmap channels replaced; returns the path and the written
        model's own agreement counts on ``check``'s crops (run again)."""
        with weights_restored(self.base_model()) as model:
            for residual, points in residuals.values():
                add_residual(model, residual.subset(coordinate_columns(points)))
            if heatmap is not None and len(heatmap[0]):
                set_heatmap_channels(model, *heatmap)
            save_model(model, path)
        predict = feature_predictor(load_keras_model(path, "refit model"))
        f = crops.extract(predict, check.items, True, self.batch_size, self.progress, desc="check")
        return path, agreement_counts(check, None, f)

