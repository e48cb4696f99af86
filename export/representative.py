"""Real model inputs for int8 calibration and export parity checks: aligned tracker crops or letterboxed
detector inputs, from an annotated dataset or a plain folder of images.

Dataset spec (``--representative`` / ``--eval`` of :mod:`export.to_tflite`)::

    PATH[:SPLIT][,images=DIR]

* ``PATH`` is a COCO-keypoints JSON file, or a dataset folder holding ``annotations.json`` (images in its
  ``images/`` sub-folder, splits in ``splits.json``), or a plain folder of images (no annotations).
* ``:SPLIT`` keeps the image ids listed under that name in the ``splits.json`` beside the annotations.
* ``,images=DIR`` overrides the images folder (default: ``images/`` beside the JSON, else the JSON's folder).

Examples: ``../shared/data/lspet:train``, ``coco/annotations/person_keypoints_val2017.json,images=coco/val2017``,
``my_photos/``.

Tracker crops from an annotated dataset are aligned on the ground truth, as the detector would align them
(docs/design.md §4/§5; :func:`blazepose_tf.codecs.targets.gt_alignment_roi`): centre = mid-hip, scale point =
mid-hip + r·unit(mid-hip → mid-shoulder) with r the radius of the circle around the annotated keypoints, ROI side
2r·:data:`~blazepose_tf.contract.ROI_SCALE`, rotated so that the torso points up. Tracker
crops from a plain folder are aligned on the official detector's first detection. Detector inputs are the
whole image letterboxed with zero borders. Samples are spread evenly over the dataset (deterministic).

An image that cannot be read (or, for plain-folder tracker crops, in which the detector finds nobody) is skipped and
the next one tried; :class:`SampleCount` keeps how many were used, of how many asked, and what was skipped and why,
which the exports print as a ``warning:`` (:meth:`SampleCount.shortfall`). A dataset of which no image is usable is
an :class:`~blazepose_tf.errors.InputError` (exit 3) that gives the same reasons.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

from blazepose_tf.codecs import roi as roi_codec
from blazepose_tf.codecs.targets import gt_alignment_roi
from blazepose_tf.datasets.coco import PersonAnnotation, load_coco_keypoints
from blazepose_tf.errors import InputError, UserError
from blazepose_tf.io.images import IMAGE_EXTENSIONS, load_image
from blazepose_tf.metrics import select_scored_person
from blazepose_tf.official import official_model_path
from blazepose_tf.runtime.pipeline import PersonDetector, roi_from_detection
from blazepose_tf.runtime.runners import TFLiteRunner
from blazepose_tf.topology import BLAZEPOSE_33, Topology
from blazepose_tf.types import Roi

KINDS = ("tracker", "detector")


@dataclass
class DatasetSpec:
    """A parsed dataset spec (see the module docstring)."""

    text: str
    images: Path
    annotations: Optional[Path] = None
    split: Optional[str] = None

    @property
    def annotated(self) -> bool:
        return self.annotations is not None


@dataclass
class Sample:
    """One model input and where it came from.

    Attributes:
        tensor: (1, H, W, 3) float32, normalized to the model's input range.
        roi: the image region the input shows (image pixels).
        source: image file.
        person: the ground-truth person the crop is aligned on (annotated datasets, tracker crops), else None.
        image_id: dataset image id (annotated datasets).
    """

    tensor: np.ndarray
    roi: Roi
    source: str
    person: Optional[PersonAnnotation] = None
    image_id: object = None


# Why an image of a dataset gave no sample (the keys of SampleCount.skipped).
UNREADABLE = "unreadable"
NO_PERSON_FOUND = "no person found by the official detector"
NOT_ANNOTATED = "no person with both shoulders and both hips annotated"


@dataclass
class SampleCount:
    """How :func:`iter_samples` fared on a dataset: samples asked and used, the dataset's images, and the images that
    gave no sample, by reason (:data:`UNREADABLE`, :data:`NO_PERSON_FOUND`, :data:`NOT_ANNOTATED`), with the first
    message of each reason."""

    asked: int = 0
    used: int = 0
    images: int = 0
    skipped: Counter = field(default_factory=Counter)
    first: dict[str, str] = field(default_factory=dict)

    def skip(self, reason: str, detail: str) -> None:
        """Counts one image skipped for ``reason`` (``detail``: e.g. the file's error, kept for the first one)."""
        self.skipped[reason] += 1
        self.first.setdefault(reason, detail)

    def reasons(self) -> str:
        """The skipped images by reason, e.g. ``2 unreadable (first: image file is empty (0 bytes): a.jpg)``."""
        return "; ".join(f"{n} {reason} (first: {self.first[reason]})" for reason, n in self.skipped.most_common())

    def shortfall(self, doing: str, flag: str, small_is_fine: bool = False) -> Optional[str]:
        """One line saying that fewer samples were used than asked, how many and why; None when all were used.

        Args:
            doing: what the samples are for, e.g. ``calibrating on``.
            flag: the flag that asked for them, e.g. ``--num_calibration``.
            small_is_fine: a dataset with fewer usable images than asked is no shortfall, only skipped images are
                (inputs for parity, where a small dataset does).
        """
        if self.used >= self.asked or (small_is_fine and not self.skipped):
            return None
        why = (f"{sum(self.skipped.values())} of its {self.images} images gave no sample: {self.reasons()}"
               if self.skipped else f"it has only {self.images} usable images")
        return f"{doing} {self.used} of the {self.asked} inputs asked ({flag}): {why}"


def parse_spec(spec: str) -> DatasetSpec:
    """Parses ``PATH[:SPLIT][,images=DIR]``; raises :class:`UserError` on a missing path or a bad option."""
    text = spec.strip()
    if not text:
        raise UserError("empty dataset spec")
    images_override = None
    parts = text.split(",")
    head, options = parts[0], parts[1:]
    for opt in options:
        key, sep, value = opt.partition("=")
        if not sep or key.strip() != "images" or not value:
            raise UserError(f"bad option {opt!r} in dataset spec {spec!r}: expected PATH[:SPLIT][,images=DIR]")
        images_override = Path(value.strip())
    split = None
    path = Path(head)
    if not path.exists() and ":" in head:
        base, _, split = head.rpartition(":")
        path = Path(base)
        split = split or None
    if not path.exists():
        raise UserError(f"dataset not found: {path} (from spec {spec!r})")
    annotations = None
    if path.is_file():
        if path.suffix.lower() != ".json":
            raise UserError(f"dataset spec {spec!r}: {path} is neither a COCO-keypoints JSON nor a folder")
        annotations = path
        default_images = path.parent / "images"
        images = default_images if default_images.is_dir() else path.parent
    elif (path / "annotations.json").is_file():
        annotations = path / "annotations.json"
        images = path / "images" if (path / "images").is_dir() else path
    else:
        images = path
    if images_override is not None:
        images = images_override
    if not images.is_dir():
        raise UserError(f"images folder not found: {images} (from spec {spec!r})")
    if split is not None and annotations is None:
        raise UserError(f"dataset spec {spec!r}: a split needs annotations (a COCO JSON with splits.json beside it)")
    return DatasetSpec(text=text, images=images, annotations=annotations, split=split)


def normalize(image_u8: np.ndarray, value_range: Sequence[float]) -> np.ndarray:
    """uint8 (H, W, 3) → float32 (1, H, W, 3) scaled to ``value_range``."""
    lo, hi = float(value_range[0]), float(value_range[1])
    return (image_u8.astype(np.float32) * ((hi - lo) / 255.0) + lo)[None]


def _spread(n: int, count: int) -> list[int]:
    """``count`` indices spread evenly over ``range(n)`` first, then every other index (for fallbacks)."""
    if n <= 0:
        return []
    first = sorted(set(np.linspace(0, n - 1, num=min(count, n)).round().astype(int).tolist()))
    chosen = set(first)
    return first + [i for i in range(n) if i not in chosen]


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


class _OfficialAligner:
    """Aligns tracker crops on the official detector's first detection (plain image folders)."""

    def __init__(self) -> None:
        self.detector = PersonDetector(TFLiteRunner(official_model_path("pose_detection")))

    def __call__(self, image: np.ndarray) -> Optional[Roi]:
        dets = self.detector(image)
        return roi_from_detection(dets[0]) if dets else None


def iter_samples(spec: DatasetSpec | str, kind: str, input_hw: tuple[int, int], value_range: Sequence[float],
                 count: int, topology: Topology = BLAZEPOSE_33,
                 counts: Optional[SampleCount] = None) -> Iterator[Sample]:
    """Yields up to ``count`` model inputs from a dataset (see the module docstring).

    Args:
        spec: a :class:`DatasetSpec` or its text.
        kind: ``tracker`` (aligned rotated crops) or ``detector`` (letterboxed whole images).
        input_hw: model input (height, width).
        value_range: model input range, e.g. (0, 1) for the tracker, (-1, 1) for the detector.
        count: how many samples at most.
        topology: keypoint topology annotated datasets are mapped onto.
        counts: filled in with the samples asked and used and the images skipped, by reason.
    Raises:
        UserError: bad spec or kind; InputError: the dataset has no usable image (the message says why).
    """
    if isinstance(spec, str):
        spec = parse_spec(spec)
    if kind not in KINDS:
        raise UserError(f"kind must be one of {KINDS}, got {kind!r}")
    counts = counts if counts is not None else SampleCount()
    counts.asked = count
    h, w = int(input_hw[0]), int(input_hw[1])
    if spec.annotated:
        dataset = load_coco_keypoints(spec.annotations, spec.images, split=spec.split, topology=topology)
        items = [(rec, select_scored_person(rec, topology)) for rec in dataset]
        counts.images = len(items)
        for rec, p in items:
            if p is None:
                counts.skip(NOT_ANNOTATED, str(rec.file_path))
        items = [(rec, p) for rec, p in items if p is not None]
        if not items:
            raise InputError(f"dataset {spec.text!r} has no image with a person whose shoulders and hips are "
                             "annotated")
        entries = [(str(rec.file_path), rec.image_id, p) for rec, p in items]
    else:
        files = _image_files(spec.images)
        if not files:
            raise InputError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {spec.images}")
        counts.images = len(files)
        entries = [(str(f), None, None) for f in files]
    aligner = _OfficialAligner() if (kind == "tracker" and not spec.annotated) else None
    for i in _spread(len(entries), count):
        if counts.used >= count:
            return
        source, image_id, person = entries[i]
        try:
            image = load_image(source)
        except InputError as e:
            counts.skip(UNREADABLE, str(e))
            continue
        if kind == "detector":
            roi, _ = roi_codec.letterbox_roi(image.shape[1], image.shape[0], w, h)
            pixels = roi_codec.crop(image, roi, w, h, border="zero")
        else:
            roi = (gt_alignment_roi(person.keypoints, person.available, topology) if person is not None
                   else aligner(image))
            if roi is None:
                counts.skip(NO_PERSON_FOUND, source)
                continue
            pixels = roi_codec.crop(image, roi, w, h, border="replicate")
        counts.used += 1
        yield Sample(tensor=normalize(pixels, value_range), roi=roi, source=source,
                     person=person if kind == "tracker" else None, image_id=image_id)
    if counts.used == 0:
        raise InputError(f"no usable sample in dataset {spec.text!r}: {counts.reasons()}")


def load_samples(spec: DatasetSpec | str, kind: str, input_hw: tuple[int, int], value_range: Sequence[float],
                 count: int, topology: Topology = BLAZEPOSE_33,
                 counts: Optional[SampleCount] = None) -> list[Sample]:
    """:func:`iter_samples` as a list."""
    return list(iter_samples(spec, kind, input_hw, value_range, count, topology=topology, counts=counts))
