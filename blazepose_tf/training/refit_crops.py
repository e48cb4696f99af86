"""The crops a landmark-head refit learns from and is chosen on, and the tracker's features and outputs on them.

Training crops (:func:`training_items`), one of three sources per run:

* ``gt``: each scored person cropped on its ground-truth alignment
  (:func:`blazepose_tf.codecs.targets.gt_alignment_roi`, the ROI a perfect detector would give). The crop is
  centred on the *annotated* mid-hip and rotated on the annotated torso, so a head fitted on these crops learns
  where the labels put the hips from the crop itself: on ground-truth-aligned LSPET dev crops, moving the official
  Full's two hips so their midpoint is the crop centre, without any learning, takes hip PCK from 49 to 75. Behind a
  detector the crop centre is the detector's estimate and that gain is not there.
* ``jitter``: ``jitter_copies`` crops per person whose ground-truth ROI is moved as the detector moves it: the
  offset, scale and rotation of the detector's ROI relative to the ground-truth one, measured on the same split
  (:func:`detector_roi_errors`), drawn at random (:func:`jittered_roi`).
* ``detector``: the detector's own ROI on the training image (its first detection), when it found the person.

Pipeline crops (:func:`pipeline_crops`): what the runtime feeds the tracker in IMAGE mode behind a detector: one
ROI per scored image from the detector's first detection, cropped as the runtime crops. :func:`pipeline_pck`
scores any head on them with the evaluation's PCK (docs/design.md §8), as ``python -m blazepose_tf.evaluate`` would
score a tracker that differs from the extracted one only in its landmark head and heatmap channels: neither the
detector nor the tracker's features change.

:func:`extract` runs the tracker's feature model (:func:`blazepose_tf.training.head_residual.feature_model`) on
crops; :func:`cached` keeps results as ``.npz`` files.
"""
from __future__ import annotations

import hashlib
import math
import os
import sys
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
from tqdm import tqdm

from blazepose_tf.codecs import roi as roi_codec
from blazepose_tf.codecs.landmarks import refine_with_heatmap
from blazepose_tf.codecs.targets import gt_alignment_roi
from blazepose_tf.contract import INPUT_RANGES, INPUT_SHAPES, LANDMARKS, VALUES_PER_LANDMARK
from blazepose_tf.datasets.coco import ImageRecord, PersonAnnotation
from blazepose_tf.errors import InputError
from blazepose_tf.io.images import load_image
from blazepose_tf.metrics import MATCH_RADIUS, PckResult, pck, select_scored_person
from blazepose_tf.runtime.pipeline import PersonDetector, roi_from_detection
from blazepose_tf.topology import BLAZEPOSE_33, Topology
from blazepose_tf.types import Roi

#: Tracker input side (pixels) and the runtime's person presence threshold (a pose needs presence above it).
INPUT_SIZE = INPUT_SHAPES[LANDMARKS][0]
MIN_PRESENCE = 0.5
#: Training crop sources (see the module docstring).
CROP_SOURCES: tuple[str, ...] = ("gt", "jitter", "detector")

People = Sequence[tuple[ImageRecord, PersonAnnotation]]


@dataclass
class CropItem:
    """One crop to run: the image file and the ROI."""

    path: Path
    roi: Roi


@dataclass
class Features:
    """The tracker on N crops: ``features`` (N, F) float32 (the head's input), ``landmarks`` (N, P·5) float32,
    ``presence`` (N,) float32 and, when kept, ``heatmap`` (N, h, w, P) float32 logits."""

    features: np.ndarray
    landmarks: np.ndarray
    presence: np.ndarray
    heatmap: Optional[np.ndarray] = None

    def arrays(self) -> dict[str, np.ndarray]:
        """The non-empty fields by name (for :func:`cached`)."""
        out = {"features": self.features, "landmarks": self.landmarks, "presence": self.presence}
        return out if self.heatmap is None else {**out, "heatmap": self.heatmap}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "Features":
        """The inverse of :meth:`arrays`."""
        return cls(arrays["features"], arrays["landmarks"], arrays["presence"], arrays.get("heatmap"))


def scored_people(records: Sequence[ImageRecord], topology: Topology = BLAZEPOSE_33) -> list[tuple[ImageRecord,
                                                                                                   PersonAnnotation]]:
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
    log side ratio, and rotation difference (radians, wrapped)."""
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


def found_person(roi: Optional[Roi], gt: Optional[Roi]) -> bool:
    """Whether a detector ROI belongs to the person of ground-truth ROI ``gt``: its centre within
    :data:`~blazepose_tf.metrics.MATCH_RADIUS` of the alignment radius (the training log's rule)."""
    if roi is None or gt is None:
        return False
    radius = gt.width / 2  # r·ROI_SCALE: the matching is loose either way
    return math.hypot(roi.x_center - gt.x_center, roi.y_center - gt.y_center) <= MATCH_RADIUS * radius


def detector_roi_errors(rois: Sequence[Optional[Roi]], gt_rois: Sequence[Optional[Roi]]) -> np.ndarray:
    """(M, 4) :func:`roi_error` of the detector ROIs that found their person against the ground-truth ROIs."""
    errs = [roi_error(roi, gt) for roi, gt in zip(rois, gt_rois) if found_person(roi, gt)]
    return np.array(errs, np.float64).reshape(-1, 4)


def training_items(people: People, source: str, det_rois: Sequence[Optional[Roi]], jitter_copies: int = 2,
                   seed: int = 0) -> list[tuple[int, CropItem]]:
    """(person index, crop) pairs of a crop ``source`` (:data:`CROP_SOURCES`, module docstring); ``det_rois``
    are the detector's ROIs of the people's images."""
    if source not in CROP_SOURCES:
        raise ValueError(f"unknown crop source {source!r}; known: {', '.join(CROP_SOURCES)}")
    gts = [gt_alignment_roi(p.keypoints, p.available) for _, p in people]
    if source == "gt":
        return [(i, CropItem(people[i][0].file_path, gt)) for i, gt in enumerate(gts) if gt is not None]
    if source == "detector":
        return [(i, CropItem(people[i][0].file_path, roi)) for i, (roi, gt) in enumerate(zip(det_rois, gts))
                if found_person(roi, gt)]
    errors = detector_roi_errors(det_rois, gts)
    if not len(errors):
        raise InputError("the detector found nobody on the training split: no ROI errors to jitter with")
    rng = np.random.default_rng(seed)
    return [(i, CropItem(people[i][0].file_path, jittered_roi(gt, errors[rng.integers(len(errors))])))
            for i, gt in enumerate(gts) if gt is not None for _ in range(jitter_copies)]


def crop_targets(people: Sequence[PersonAnnotation], items: Sequence[CropItem],
                 topology: Topology = BLAZEPOSE_33) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth in the crops' pixels: (N, K, 2) points and (N, K) annotated masks."""
    pts = np.zeros((len(items), topology.num_keypoints, 2), np.float64)
    ok = np.zeros((len(items), topology.num_keypoints), bool)
    for n, (person, item) in enumerate(zip(people, items)):
        pts[n] = roi_codec.image_to_crop(person.keypoints, item.roi).astype(np.float64) * INPUT_SIZE
        ok[n] = person.available
    return pts, ok


# ------------------------------------------------------------------------------------------------ extraction
def crop_batches(items: Sequence[CropItem], batch_size: int = 32, progress: bool = True, desc: str = "crops"
                 ) -> Iterator[np.ndarray]:
    """The crops of ``items`` in batches (B, 256, 256, 3) float32 in the tracker's input range. An image is read
    once for consecutive items on the same file."""
    lo, hi = INPUT_RANGES[LANDMARKS]
    image, image_path = None, None
    batch: list[np.ndarray] = []
    for item in tqdm(items, desc=desc, unit="crop", disable=not progress, file=sys.stderr):
        if item.path != image_path:
            image, image_path = load_image(item.path), item.path
        batch.append(roi_codec.crop(image, item.roi, INPUT_SIZE, INPUT_SIZE, border="replicate"))
        if len(batch) == batch_size:
            yield np.stack(batch).astype(np.float32) * ((hi - lo) / 255.0) + lo
            batch = []
    if batch:
        yield np.stack(batch).astype(np.float32) * ((hi - lo) / 255.0) + lo


def extract(predict: Callable[[np.ndarray], dict], items: Sequence[CropItem], keep_heatmap: bool,
            batch_size: int = 32, progress: bool = True, desc: str = "features") -> Features:
    """Runs ``predict`` (a batch of crops in the tracker's input range → the outputs of
    :func:`~blazepose_tf.training.head_residual.feature_model`) on every crop (:func:`crop_batches`)."""
    parts: dict[str, list[np.ndarray]] = {"features": [], "landmarks": [], "presence": [], "heatmap": []}
    for batch in crop_batches(items, batch_size, progress, desc):
        out = predict(batch)
        for name in ("features", "landmarks", "presence") + (("heatmap",) if keep_heatmap else ()):
            parts[name].append(np.asarray(out[name], np.float32))
    if not parts["features"]:
        raise InputError("no crop to extract features from")
    return Features(np.concatenate(parts["features"]), np.concatenate(parts["landmarks"]),
                    np.concatenate(parts["presence"]).reshape(-1),
                    np.concatenate(parts["heatmap"]) if keep_heatmap else None)


def cache_key(*parts: object) -> str:
    """A short stable hash of the things a cached result depends on."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def photo_key(paths: Sequence[Path]) -> list[tuple[str, int, int]]:
    """What identifies the photos a cached result was computed on: each file's resolved path, size and modification
    time (ns; ``-1, -1`` for a file that cannot be read), so another copy of the photos, a changed photo or one that
    appears later is a new cache entry."""
    return [(str(p.resolve()), *_stat(p)) for p in paths]


def _stat(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:
        return (-1, -1)
    return (st.st_size, st.st_mtime_ns)


def holds_nothing(arrays: dict[str, np.ndarray]) -> bool:
    """Whether a result holds nothing worth keeping: every array is empty or has no finite value (no photo read,
    nobody found)."""
    return all(not np.isfinite(np.asarray(a, np.float64)).any() for a in arrays.values())


def cached(path: Path, compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays stored at ``path`` (``.npz``), computed and stored (atomically: a temporary sibling renamed) when
    absent. A file that cannot be read (truncated, corrupt, not a ``.npz``) is a miss: one ``warning:`` line, and
    the result is computed again and replaces it. A result that :func:`holds_nothing` is returned but not stored,
    so a mistake (a wrong images folder) is not kept for later runs."""
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
            print(f"warning: cache file {path} cannot be read ({type(e).__name__}: {e}); computing it again",
                  file=sys.stderr)
    arrays = compute()
    if holds_nothing(arrays):
        return arrays
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.npz")
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
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
    (None = no detection), the crops of the images that have one (``items``; ``rows``: each person's crop, −1
    without) and the tracker's :class:`Features` (with heatmaps) on them."""

    people: list[PersonAnnotation]
    rois: list[Optional[Roi]]
    rows: np.ndarray
    items: list[CropItem]
    features: Features

    def with_features(self, features: Features) -> "PipelineCrops":
        """The same crops with another tracker's features."""
        return PipelineCrops(self.people, self.rois, self.rows, self.items, features)


def pipeline_items(people: People, rois: Sequence[Optional[Roi]]) -> tuple[np.ndarray, list[CropItem]]:
    """The crops of the images that have a ROI, and each person's row among them (−1 without)."""
    rows = np.full(len(people), -1, np.int64)
    items = []
    for i, ((rec, _), roi) in enumerate(zip(people, rois)):
        if roi is not None:
            rows[i] = len(items)
            items.append(CropItem(rec.file_path, roi))
    return rows, items


def refined_points(landmarks: np.ndarray, heatmap: Optional[np.ndarray]) -> np.ndarray:
    """(P, 2) points of one crop in [0, 1] crop coordinates from its (P·5,) landmarks, refined with its (h, w, P)
    heatmap logits as the runtime refines them (None, or a heatmap of other points: not refined)."""
    xy = np.asarray(landmarks, np.float32).reshape(-1, VALUES_PER_LANDMARK)[:, :2] / INPUT_SIZE
    if heatmap is not None and heatmap.shape[-1] == xy.shape[0]:
        xy = refine_with_heatmap(xy, heatmap)
    return xy


def pipeline_pck(crops: PipelineCrops, landmarks: np.ndarray, heatmap: Optional[np.ndarray],
                 topology: Topology = BLAZEPOSE_33) -> PckResult:
    """PCK@0.2 (mid-torso) of the pipeline whose tracker emits ``landmarks`` (N, P·5) and ``heatmap`` (N, h, w, P)
    logits (None: no refinement) on ``crops``: poses whose presence is not above the threshold are misses; the
    others are refined with the heatmap as the runtime refines them, projected into the image and scored."""
    k = topology.num_keypoints
    preds: list[Optional[np.ndarray]] = []
    for i, roi in enumerate(crops.rois):
        row = crops.rows[i]
        if row < 0 or not crops.features.presence[row] > MIN_PRESENCE:
            preds.append(None)
            continue
        xy = refined_points(landmarks[row], heatmap[row] if heatmap is not None else None)
        preds.append(roi_codec.project_to_image(xy[:k], roi))
    return pck(crops.people, preds, topology=topology)
