"""The crops a landmark-head refit learns and is chosen on, and the tracker's features and outputs on them.

* **Training crops** (:func:`training_rois`): each scored person of the training split cropped on its ground-truth
  alignment (:func:`blazepose_tf.codecs.targets.gt_alignment_roi`, the ROI a perfect detector would give), plus
  ``jitter_copies`` copies whose ROI is moved as the official detector moves it: offsets, scale and rotation of
  the detector's ROI relative to the ground-truth one, measured on the same split (:func:`detector_roi_errors`)
  and drawn at random (:func:`jittered_roi`); optionally each crop mirrored too (left/right labels swapped).
* **Pipeline crops** (:func:`pipeline_crops`): what the runtime feeds the tracker in IMAGE mode behind a detector:
  one ROI per scored image from the detector's first detection (:class:`blazepose_tf.runtime.pipeline.PersonDetector`,
  :func:`~blazepose_tf.runtime.pipeline.roi_from_detection`), cropped as the runtime crops
  (:func:`blazepose_tf.codecs.roi.crop`, replicate border). :func:`pipeline_pck` then scores any head on them with
  the evaluation's PCK (docs/design.md §8), exactly as ``python -m blazepose_tf.evaluate`` would with a tracker
  that differs only in its head and heatmap: the detector and the tracker's features do not change.

:func:`extract` runs the tracker's feature model (:func:`blazepose_tf.training.head_residual.feature_model`) on
crops; results are cached as ``.npz`` files (:func:`cached`).
"""
from __future__ import annotations

import hashlib
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from tqdm import tqdm

from blazepose_tf.codecs import roi as roi_codec
from blazepose_tf.codecs.landmarks import refine_with_heatmap
from blazepose_tf.codecs.targets import gt_alignment_roi
from blazepose_tf.contract import INPUT_RANGES, LANDMARKS, VALUES_PER_LANDMARK
from blazepose_tf.datasets.coco import ImageRecord, PersonAnnotation
from blazepose_tf.errors import InputError
from blazepose_tf.io.images import load_image
from blazepose_tf.metrics import PckResult, pck, select_scored_person
from blazepose_tf.runtime.pipeline import PersonDetector, roi_from_detection
from blazepose_tf.topology import BLAZEPOSE_33, Topology
from blazepose_tf.training.evaluation import MATCH_RADIUS
from blazepose_tf.types import Roi

#: Tracker input side (pixels) and the runtime's minimum person presence.
INPUT_SIZE = 256
MIN_PRESENCE = 0.5


@dataclass
class CropItem:
    """One crop to run: the image, the ROI and whether the crop is mirrored."""

    path: Path
    roi: Roi
    flip: bool = False


@dataclass
class Features:
    """The tracker on N crops: ``features`` (N, F) float32 (the head's input), ``landmarks`` (N, P·5) float32,
    ``presence`` (N,) float32 and, when kept, ``heatmap`` (N, h, w, P) float16 logits."""

    features: np.ndarray
    landmarks: np.ndarray
    presence: np.ndarray
    heatmap: Optional[np.ndarray] = None


def scored_people(records: Sequence[ImageRecord], topology: Topology = BLAZEPOSE_33
                  ) -> list[tuple[ImageRecord, PersonAnnotation]]:
    """(record, scored person) of every record that has one (docs/design.md §8)."""
    pairs = [(r, select_scored_person(r, topology)) for r in records]
    return [(r, p) for r, p in pairs if p is not None]


# ---------------------------------------------------------------------------------------------- detector ROIs
def detector_rois(detector: PersonDetector, paths: Sequence[Path], progress: bool = True) -> list[Optional[Roi]]:
    """The runtime's IMAGE-mode ROI of each image (its first detection), None when nothing is detected or the
    image cannot be read."""
    out: list[Optional[Roi]] = []
    for path in tqdm(paths, desc="detector", unit="img", disable=not progress, file=sys.stderr):
        try:
            dets = detector(load_image(path))
        except InputError:
            dets = []
        out.append(roi_from_detection(dets[0]) if dets else None)
    return out


def roi_error(roi: Roi, reference: Roi) -> np.ndarray:
    """How ``roi`` departs from ``reference``: centre offset in the reference's frame over its side (x, y),
    log side ratio and rotation difference (radians, wrapped)."""
    c, s = math.cos(reference.rotation), math.sin(reference.rotation)
    dx, dy = roi.x_center - reference.x_center, roi.y_center - reference.y_center
    return np.array([(c * dx + s * dy) / reference.width, (-s * dx + c * dy) / reference.width,
                     math.log(roi.width / reference.width),
                     roi_codec.normalize_radians(roi.rotation - reference.rotation)])


def jittered_roi(reference: Roi, error: np.ndarray) -> Roi:
    """The inverse of :func:`roi_error`: ``reference`` moved by an error vector."""
    c, s = math.cos(reference.rotation), math.sin(reference.rotation)
    ex, ey = error[0] * reference.width, error[1] * reference.width
    side = reference.width * math.exp(error[2])
    return Roi(reference.x_center + c * ex - s * ey, reference.y_center + s * ex + c * ey, side, side,
               roi_codec.normalize_radians(reference.rotation + error[3]))


def detector_roi_errors(rois: Sequence[Optional[Roi]], gt_rois: Sequence[Optional[Roi]]) -> np.ndarray:
    """(M, 4) :func:`roi_error` of the detector ROIs that found their person (centre within
    :data:`~blazepose_tf.training.evaluation.MATCH_RADIUS` of the alignment radius, the training log's matching
    rule) against the ground-truth ROIs."""
    errs = []
    for roi, gt in zip(rois, gt_rois):
        if roi is None or gt is None:
            continue
        radius = gt.width / 2  # side = 2·r·ROI_SCALE, so r·ROI_SCALE; matching is loose either way
        if math.hypot(roi.x_center - gt.x_center, roi.y_center - gt.y_center) <= MATCH_RADIUS * radius:
            errs.append(roi_error(roi, gt))
    return np.array(errs, np.float64).reshape(-1, 4)


def training_rois(people: Sequence[tuple[ImageRecord, PersonAnnotation]], errors: Optional[np.ndarray],
                  jitter_copies: int, flip: bool, seed: int = 0) -> list[tuple[int, CropItem]]:
    """(person index, crop) pairs: each person's ground-truth ROI, ``jitter_copies`` ROIs moved by detector errors
    drawn from ``errors`` (rows of :func:`roi_error`), and with ``flip`` the mirror of each."""
    if jitter_copies and (errors is None or not len(errors)):
        raise ValueError("jittered crops need measured detector errors")
    rng = np.random.default_rng(seed)
    items = []
    for i, (rec, person) in enumerate(people):
        gt = gt_alignment_roi(person.keypoints, person.available)
        if gt is None:
            continue
        rois = [gt] + [jittered_roi(gt, errors[rng.integers(len(errors))]) for _ in range(jitter_copies)]
        for roi in rois:
            items.extend((i, CropItem(rec.file_path, roi, f)) for f in ((False, True) if flip else (False,)))
    return items


def crop_targets(people: Sequence[PersonAnnotation], items: Sequence[CropItem],
                 topology: Topology = BLAZEPOSE_33) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth in the crops' pixels: (N, K, 2) points and (N, K) annotated masks (mirrored crops: x → size − x
    and left/right swapped)."""
    pts = np.zeros((len(items), topology.num_keypoints, 2), np.float64)
    ok = np.zeros((len(items), topology.num_keypoints), bool)
    for n, (person, item) in enumerate(zip(people, items)):
        xy = roi_codec.image_to_crop(person.keypoints, item.roi).astype(np.float64) * INPUT_SIZE
        avail = person.available.copy()
        if item.flip:
            perm = topology.flip_indices
            xy, avail = xy[perm], avail[perm]
            xy[:, 0] = INPUT_SIZE - xy[:, 0]
        pts[n], ok[n] = xy, avail
    return pts, ok


# ------------------------------------------------------------------------------------------------ extraction
def extract(predict: Callable[[np.ndarray], dict], items: Sequence[CropItem], keep_heatmap: bool,
            batch_size: int = 32, progress: bool = True, desc: str = "features") -> Features:
    """Runs ``predict`` (a batch of crops in the tracker's input range → the outputs of
    :func:`~blazepose_tf.training.head_residual.feature_model`) on every crop. Images are read once per run of
    consecutive items on the same file."""
    lo, hi = INPUT_RANGES[LANDMARKS]
    feats, lms, pres, hms = [], [], [], []
    image, image_path = None, None
    batch: list[np.ndarray] = []

    def flush() -> None:
        out = predict(np.stack(batch).astype(np.float32) * ((hi - lo) / 255.0) + lo)
        feats.append(np.asarray(out["features"], np.float32))
        lms.append(np.asarray(out["landmarks"], np.float32))
        pres.append(np.asarray(out["presence"], np.float32).reshape(-1))
        if keep_heatmap:
            hms.append(np.asarray(out["heatmap"], np.float16))
        batch.clear()

    for item in tqdm(items, desc=desc, unit="crop", disable=not progress, file=sys.stderr):
        if item.path != image_path:
            image, image_path = load_image(item.path), item.path
        pixels = roi_codec.crop(image, item.roi, INPUT_SIZE, INPUT_SIZE, border="replicate")
        batch.append(pixels[:, ::-1] if item.flip else pixels)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    if not feats:
        raise InputError("no crop to extract features from")
    return Features(np.concatenate(feats), np.concatenate(lms), np.concatenate(pres),
                    np.concatenate(hms) if keep_heatmap else None)


def cache_key(*parts: object) -> str:
    """A short stable hash of the things a cached result depends on."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file (identifies a model's weights in cache keys)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cached(path: Path, compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays stored at ``path`` (``.npz``), computed and stored (atomically) when absent."""
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    arrays = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return arrays


def rois_to_array(rois: Sequence[Optional[Roi]]) -> np.ndarray:
    """(N, 5) x, y, w, h, rotation; NaN rows for None."""
    return np.array([[r.x_center, r.y_center, r.width, r.height, r.rotation] if r is not None else [np.nan] * 5
                     for r in rois], np.float64).reshape(-1, 5)


def rois_from_array(array: np.ndarray) -> list[Optional[Roi]]:
    """The inverse of :func:`rois_to_array`."""
    return [None if not np.isfinite(row).all() else Roi(*map(float, row)) for row in np.asarray(array)]


# -------------------------------------------------------------------------------------------- pipeline score
@dataclass
class PipelineCrops:
    """The tracker behind a detector on the scored images of a split: the scored ``people``, each image's ROI
    (None = no detection) and the tracker's :class:`Features` on the images that have one (``rows``: index of
    each person's crop in ``features``, −1 without)."""

    people: list[PersonAnnotation]
    rois: list[Optional[Roi]]
    rows: np.ndarray
    features: Features


def pipeline_crops(people: Sequence[tuple[ImageRecord, PersonAnnotation]], rois: Sequence[Optional[Roi]],
                   run: Callable[[Sequence[CropItem]], Features]) -> PipelineCrops:
    """Runs the tracker (``run``: crops → :class:`Features` with heatmaps) on each image's detector ROI."""
    rows = np.full(len(people), -1, np.int64)
    items = []
    for i, ((rec, _), roi) in enumerate(zip(people, rois)):
        if roi is not None:
            rows[i] = len(items)
            items.append(CropItem(rec.file_path, roi))
    return PipelineCrops([p for _, p in people], list(rois), rows, run(items))


def pipeline_pck(crops: PipelineCrops, landmarks: np.ndarray, heatmap: Optional[np.ndarray],
                 topology: Topology = BLAZEPOSE_33, diagonal: bool = False) -> PckResult:
    """PCK@0.2 of the pipeline whose tracker emits ``landmarks`` (N, P·5) (and ``heatmap`` (N, h, w, P) logits for
    the runtime's refinement, None for none) on ``crops``: poses under the presence threshold are misses, the
    rest are refined, projected into the image and scored as ``evaluate`` scores them."""
    k = topology.num_keypoints
    preds: list[Optional[np.ndarray]] = []
    for i, roi in enumerate(crops.rois):
        row = crops.rows[i]
        if row < 0 or not crops.features.presence[row] > MIN_PRESENCE:
            preds.append(None)
            continue
        xy = landmarks[row].reshape(-1, VALUES_PER_LANDMARK)[:, :2] / INPUT_SIZE
        if heatmap is not None and heatmap.shape[-1] == xy.shape[0]:
            xy = refine_with_heatmap(xy, heatmap[row].astype(np.float32))
        preds.append(roi_codec.project_to_image(xy[:k], roi))
    return pck(crops.people, preds, topology=topology, diagonal=diagonal)
