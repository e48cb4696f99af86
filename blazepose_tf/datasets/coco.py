"""Loader for COCO-keypoints annotation files (COCO itself, LSPET converted to COCO format, users' own sets).

The source keypoints are mapped onto a :class:`~blazepose_tf.topology.Topology` (BlazePose-33 by default) by
*name*: a topology point whose name the source does not have is never ``available``. Every person is kept
(crowd annotations and people without keypoints included); which person is scored is the evaluator's choice
(see :func:`blazepose_tf.metrics.select_scored_person`).
"""
from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, Iterator, Mapping, Optional, Union

import numpy as np

from blazepose_tf.errors import InputError, UserError
from blazepose_tf.topology import BLAZEPOSE_33, Topology

PathLike = Union[str, Path]
BBox = tuple[float, float, float, float]

# What the loader counts in KeypointDataset.problems: key -> (entry, what happened to it, why).
PROBLEMS: dict[str, tuple[str, str, str]] = {
    "bad_annotation_entry": ("annotation", "dropped", "not a JSON object"),
    "other_category": ("annotation", "dropped", "its category_id is not the keypoint category's id"),
    "unknown_image_id": ("annotation", "dropped", "its image_id matches no entry of 'images'"),
    "keypoints_not_numbers": ("annotation", "dropped", "'keypoints' is missing or not a list of numbers"),
    "keypoints_wrong_length": ("annotation", "dropped", "'keypoints' does not hold 3 values (x, y, v) per "
                                                        "keypoint name of the category"),
    "keypoints_not_finite": ("annotation", "dropped", "NaN or infinite keypoint value (the x or y of a labelled "
                                                      "point, or a v)"),
    "bad_image_entry": ("image", "dropped", "not an object with an integer or string 'id' and a string "
                                           "'file_name'"),
    "duplicate_image_id": ("image", "dropped", "its 'id' is already used by an earlier image"),
    "missing_image_size": ("image", "kept", "no numeric width/height"),
    "missing_image_file": ("image", "kept", "file not found in the images folder"),
    "split_id_without_image": ("split id", "ignored", "no entry of 'images' has that id"),
}


@dataclass
class PersonAnnotation:
    """One annotated person, keypoints in the dataset's topology order.

    Attributes:
        keypoints: (N, 2) float64 pixel coordinates (0 where not available).
        available: (N,) bool, True where the point is annotated (v > 0) and its name exists in the source.
        bbox: (x, y, w, h) pixels as given by the file, or None when the file has none.
        area: the file's ``area``, else the bbox area, else None.
        iscrowd: the file's ``iscrowd`` flag.
        annotation_id: the file's annotation ``id`` (None if absent).
    """

    keypoints: np.ndarray
    available: np.ndarray
    bbox: Optional[BBox]
    area: Optional[float]
    iscrowd: bool
    annotation_id: Any = None

    @property
    def num_available(self) -> int:
        """Number of annotated keypoints."""
        return int(np.count_nonzero(self.available))

    def box(self) -> Optional[BBox]:
        """The file's bbox, or the tight box around the available keypoints if the file has none."""
        if self.bbox is not None:
            return self.bbox
        return bbox_from_keypoints(self.keypoints, self.available)


@dataclass
class ImageRecord:
    """One image and its annotated people."""

    image_id: Any
    file_path: Path
    width: int
    height: int
    people: list[PersonAnnotation] = field(default_factory=list)


@dataclass
class KeypointDataset:
    """A loaded COCO-keypoints dataset, iterable over its :class:`ImageRecord` s.

    Attributes:
        records: image records in file order (after split filtering).
        topology: the topology the keypoints were mapped onto.
        source_keypoints: keypoint names as listed in the file's category.
        mapping: (N_topology,) index into ``source_keypoints`` for each topology point, -1 if absent.
        problems: counts of entries that were skipped or suspicious, keyed as in :data:`PROBLEMS`.
        split: the split that was selected, if any.
    """

    records: list[ImageRecord]
    topology: Topology
    source_keypoints: tuple[str, ...]
    mapping: np.ndarray
    problems: Counter = field(default_factory=Counter)
    split: Optional[str] = None

    @property
    def coverage(self) -> np.ndarray:
        """(N_topology,) bool: topology points the dataset has a keypoint of the same name for."""
        return self.mapping >= 0

    @property
    def covered_names(self) -> list[str]:
        """Names of the topology points the dataset covers, in topology order."""
        return [n for n, c in zip(self.topology.keypoints, self.coverage) if c]

    @property
    def num_people(self) -> int:
        """Number of annotated people kept."""
        return sum(len(r.people) for r in self.records)

    @property
    def dropped_annotations(self) -> int:
        """Number of annotations the loader dropped (malformed, unknown image, other category)."""
        return sum(n for key, n in self.problems.items() if PROBLEMS.get(key, ("",))[0] == "annotation")

    def problem_messages(self) -> list[str]:
        """One line per counted problem, e.g. ``"2 annotations dropped: 'keypoints' does not hold ..."``."""
        lines = []
        for key, n in sorted(self.problems.items()):
            entry, fate, why = PROBLEMS.get(key, ("entry", "skipped", key))
            if key == "keypoints_wrong_length":
                why += f" (expected {3 * len(self.source_keypoints)} values)"
            lines.append(f"{n} {entry}{'' if n == 1 else 's'} {fate}: {why}")
        return lines

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[ImageRecord]:
        return iter(self.records)

    def __getitem__(self, i: int) -> ImageRecord:
        return self.records[i]


def bbox_from_keypoints(keypoints: np.ndarray, available: np.ndarray) -> Optional[BBox]:
    """Tight (x, y, w, h) box around the available keypoints, or None if there are none."""
    pts = np.asarray(keypoints, dtype=np.float64)[np.asarray(available, dtype=bool), :2]
    if len(pts) == 0:
        return None
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    return float(x0), float(y0), float(x1 - x0), float(y1 - y0)


def read_json(path: Path, what: str) -> Any:
    """The parsed JSON file at ``path``; missing or malformed is a one-line UserError naming ``what``."""
    if not path.exists():
        raise UserError(f"{what} not found: {path}")
    if not path.is_file():
        raise UserError(f"{what} {path} is not a regular file" + (" (a folder)" if path.is_dir() else ""))
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise UserError(f"{what} {path} is not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {what} {path}: {e}") from None


#: The evaluation protocol (docs/design.md §8): a splits file with a ``dev`` list but no ``test`` list has its dev
#: ids divided in two, ``dev`` (for choosing checkpoints and settings) and ``test`` (reported, never tuned on);
#: ``dev_all`` keeps the undivided list. An explicit ``test`` list in the file wins and nothing is divided.
DERIVED_TEST_SALT = "blazepose_tf.test:"
DEV_ALL = "dev_all"


def is_test_id(image_id: Any) -> bool:
    """Whether a dev image id belongs to the derived ``test`` split: the low bit of sha256(salt + id), so about
    half of any dev list, fixed for ever and independent of list order."""
    return hashlib.sha256(f"{DERIVED_TEST_SALT}{image_id}".encode()).digest()[-1] & 1 == 1


#: Unlabelled photos (an annotations file whose ``annotations`` list is empty or absent, e.g. the yoga photos) with
#: no splits file: one image in four, by sha256(salt + file name), is the ``guard`` split that
#: ``benchmarks.ood_guard`` measures forgetting on; the rest is ``train``, for pseudo-labelled distillation. A
#: model trained on ``train`` is never judged on its own training photos.
GUARD_SALT = "blazepose_tf.guard:"
GUARD_SPLIT = "guard"
UNLABELLED_SPLITS = ("train", GUARD_SPLIT)


def is_guard_image(file_name: str) -> bool:
    """Whether an unlabelled photo belongs to the ``guard`` split (by its file name, not its folder): the low two
    bits of sha256(salt + name) are zero, so about a quarter of any set, fixed for ever."""
    name = PurePath(file_name).name
    return hashlib.sha256(f"{GUARD_SALT}{name}".encode()).digest()[-1] & 3 == 0


#: What :func:`unlabelled_photos` can select: the training photos, the guard quarter, or every photo.
PHOTO_SUBSETS = ("train", GUARD_SPLIT, "all")


def unlabelled_photos(data: Union[str, Path], extensions: tuple[str, ...], subset: str = "all",
                      how: str = "") -> list[Path]:
    """The photos of a folder: those its ``annotations.json`` names (COCO layout, files in ``images/``) in file
    order, or the files with one of ``extensions`` (lower case, with the dot) sorted by path; then the ``subset``
    of :data:`PHOTO_SUBSETS` (:func:`is_guard_image` decides by file name).

    Raises:
        InputError: the folder does not exist or holds no photo of the subset (one line naming it, then ``how``).
        UserError: an unknown ``subset``.
    """
    if subset not in PHOTO_SUBSETS:
        raise UserError(f"subset must be one of {', '.join(PHOTO_SUBSETS)}, got {subset!r}")
    root = Path(data).expanduser()
    if not root.is_dir():
        raise InputError(f"photos not found: {root} is not a folder" + (f" ({how})" if how else ""))
    coco = root / "annotations.json"
    if coco.is_file():
        doc = read_json(coco, "annotations file")
        entries = doc.get("images") if isinstance(doc, dict) else None
        folder = root / "images" if (root / "images").is_dir() else root
        files = [folder / e["file_name"] for e in entries or [] if isinstance(e, dict)
                 and isinstance(e.get("file_name"), str)]
    else:
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in extensions and p.is_file())
    if subset != "all":
        files = [f for f in files if is_guard_image(f.name) == (subset == GUARD_SPLIT)]
    if not files:
        raise InputError(f"no photos in {root}" + (f" ({subset} subset)" if subset != "all" else ""))
    return files


def unlabelled_splits(images: list) -> dict[str, list]:
    """``{"train": ids, "guard": ids}`` of a COCO ``images`` list (entries without an id or file name skipped)."""
    table: dict[str, list] = {name: [] for name in UNLABELLED_SPLITS}
    for im in images:
        if isinstance(im, dict) and isinstance(im.get("file_name"), str) and isinstance(im.get("id"), (int, str)):
            table[GUARD_SPLIT if is_guard_image(im["file_name"]) else "train"].append(im["id"])
    return table


def is_unlabelled(data: Any) -> bool:
    """Whether a parsed COCO file names images but no annotated people."""
    return isinstance(data, dict) and not data.get("annotations")


def resolve_splits(data: Mapping[str, Any]) -> dict[str, list]:
    """The splits of a parsed splits file, with the protocol's derived ``dev``/``test``/``dev_all`` (see
    :data:`DERIVED_TEST_SALT`) when it has ``dev`` and no ``test``."""
    table = {k: v for k, v in data.items() if isinstance(v, list)}
    if "dev" in table and "test" not in table:
        dev_all = table["dev"]
        table["dev"] = [i for i in dev_all if not is_test_id(i)]
        table["test"] = [i for i in dev_all if is_test_id(i)]
        table[DEV_ALL] = dev_all
    return table


def read_splits(splits_json: Path) -> dict[str, list]:
    """The resolved splits (:func:`resolve_splits`) of a splits file; a one-line UserError if it is malformed."""
    data = read_json(splits_json, "splits file")
    if isinstance(data, dict) and {"images", "annotations"} <= set(data):
        raise UserError(f"splits file {splits_json} is a COCO annotations file, not a splits file "
                        "({split_name: [image ids]})")
    table = resolve_splits(data) if isinstance(data, dict) else {}
    if not table:
        raise UserError(f"splits file {splits_json} must hold a JSON object of {{split_name: [image ids]}}")
    return table


def split_ids(splits_json: Path, split: str, flag: str = "") -> list:
    """The image ids of ``split``; a one-line UserError naming the known splits (and ``flag``, if given) if absent,
    or if the split holds anything but ids (numbers or strings)."""
    table = read_splits(splits_json)
    if split not in table:
        raise UserError(f"{f'--{flag}: ' if flag else ''}unknown split {split!r} in {splits_json}; "
                        f"known splits: {', '.join(sorted(table))}")
    bad = next((i for i in table[split] if isinstance(i, bool) or not isinstance(i, (int, str))), None)
    if bad is not None:
        raise UserError(f"splits file {splits_json}: split {split!r} must be a list of image ids (numbers or "
                        f"strings), got {json.dumps(bad)[:60]}")
    return table[split]


def _to_float(value: Any) -> Optional[float]:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _parse_bbox(value: Any) -> Optional[BBox]:
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        return None
    vals = [_to_float(v) for v in value]
    if any(v is None for v in vals) or vals[2] < 0 or vals[3] < 0:
        return None
    return vals[0], vals[1], vals[2], vals[3]


def _keypoint_values(raw: Any, num_source: int) -> tuple[Optional[np.ndarray], Optional[str]]:
    """(``num_source`` x 3 float array, None) for a valid COCO ``keypoints`` list, else (None, problem key)."""
    if not isinstance(raw, list):
        return None, "keypoints_not_numbers"
    try:
        values = np.asarray(raw)
    except ValueError:  # ragged nesting
        return None, "keypoints_not_numbers"
    if values.dtype.kind not in "iuf":  # strings, null, booleans, objects
        return None, "keypoints_not_numbers"
    if values.size != 3 * num_source:
        return None, "keypoints_wrong_length"
    kps = values.astype(np.float64).reshape(num_source, 3)
    labelled = kps[:, 2] > 0
    if not np.isfinite(kps[:, 2]).all() or not np.isfinite(kps[labelled, :2]).all():
        return None, "keypoints_not_finite"
    return kps, None


def load_coco_keypoints(annotations_json: PathLike, images_dir: PathLike, split: Optional[str] = None,
                        splits_json: Optional[PathLike] = None, topology: Topology = BLAZEPOSE_33,
                        require_annotations: bool = False) -> KeypointDataset:
    """Loads a COCO-keypoints JSON and maps its keypoints onto ``topology`` by name.

    Args:
        annotations_json: COCO-format file with ``images``, ``annotations`` and ``categories`` (the first
            category that lists ``keypoints`` is used; annotations of other categories are skipped).
        images_dir: folder the images' ``file_name`` are relative to.
        split: keep only the image ids listed under this name in ``splits_json``.
        splits_json: JSON object ``{split_name: [image ids], ...}``; defaults to ``splits.json`` next to
            ``annotations_json`` when ``split`` is given.
        topology: target keypoint topology.
        require_annotations: the file must have a non-empty ``annotations`` list (to score against it);
            otherwise a missing one means images without people.

    Returns:
        A :class:`KeypointDataset`. Skipped/suspicious entries are counted in ``problems`` (see
        :data:`PROBLEMS`): an annotation is dropped when its ``keypoints`` are not a list of numbers, do not
        hold 3 values per keypoint name, or hold NaN/inf (a v, or the x/y of a labelled point).

    Raises:
        UserError: missing or invalid JSON, no keypoint category, missing images folder, unknown split, no
            ``annotations`` list (with ``require_annotations``).
        InputError: an empty ``images`` list, or (with ``require_annotations``) an empty ``annotations`` list.
    """
    annotations_json = Path(annotations_json)
    images_dir = Path(images_dir)
    data = read_json(annotations_json, "annotations file")
    if not isinstance(data, dict):
        raise UserError(f"annotations file {annotations_json} is not a COCO JSON object")
    if not images_dir.is_dir():
        raise UserError(f"images folder {images_dir} is not a folder" if images_dir.exists()
                        else f"images folder not found: {images_dir}")

    categories = data.get("categories")
    category = None
    if isinstance(categories, list):
        category = next((c for c in categories if isinstance(c, dict) and isinstance(c.get("keypoints"), list)
                         and c["keypoints"]), None)
    if category is None and not is_unlabelled(data):
        raise UserError(f"annotations file {annotations_json} has no category with 'keypoints' names")
    source_names = tuple(str(n) for n in category["keypoints"]) if category else ()   # unlabelled photos: none
    num_source = len(source_names)
    mapping = topology.mapping_from(source_names)
    covered = mapping >= 0
    src_idx = mapping[covered]

    images = data.get("images")
    if not isinstance(images, list):
        raise UserError(f"annotations file {annotations_json} has no 'images' list")
    if not images:
        raise InputError(f"annotations file {annotations_json} has an empty 'images' list: no image to load")
    if require_annotations and "annotations" not in data:
        raise UserError(f"annotations file {annotations_json} has no 'annotations' list: it names images but "
                        "no annotated people")

    problems: Counter = Counter()
    wanted: Optional[set] = None
    if split is not None:
        beside = annotations_json.with_name("splits.json")
        if splits_json is None and beside.is_file():
            splits_json = beside
        if splits_json is not None:
            wanted = set(split_ids(Path(splits_json), split))
        elif is_unlabelled(data) and split in UNLABELLED_SPLITS:
            wanted = set(unlabelled_splits(images)[split])   # unlabelled photos: the derived train / guard splits
        else:
            raise UserError(f"split {split!r} requested but no splits file given "
                            f"(and no splits.json next to {annotations_json})")

    images_root = images_dir.resolve()
    by_id: dict[Any, ImageRecord] = {}
    records: list[ImageRecord] = []
    for im in images:
        if (not isinstance(im, dict) or not isinstance(im.get("id"), (int, str))
                or not isinstance(im.get("file_name"), str)):
            problems["bad_image_entry"] += 1
            continue
        if im["id"] in by_id:
            problems["duplicate_image_id"] += 1
            continue
        if wanted is not None and im["id"] not in wanted:
            by_id[im["id"]] = None  # known image, outside the split
            continue
        width, height = _to_float(im.get("width")), _to_float(im.get("height"))
        if width is None or height is None:
            problems["missing_image_size"] += 1
        path = images_root / im["file_name"]
        if not path.is_file():
            problems["missing_image_file"] += 1
        record = ImageRecord(image_id=im["id"], file_path=path, width=int(width or 0), height=int(height or 0))
        by_id[im["id"]] = record
        records.append(record)
    if wanted is not None:
        problems["split_id_without_image"] += len(wanted - by_id.keys())

    annotations = data.get("annotations", [])
    if not isinstance(annotations, list):
        raise UserError(f"annotations file {annotations_json}: 'annotations' is not a list")
    if require_annotations and not annotations:
        raise InputError(f"annotations file {annotations_json} has an empty 'annotations' list: no annotated "
                         "people")
    for ann in annotations:
        if not isinstance(ann, dict):
            problems["bad_annotation_entry"] += 1
            continue
        if "category_id" in ann and "id" in category and ann["category_id"] != category["id"]:
            problems["other_category"] += 1
            continue
        image_id = ann.get("image_id")
        if not isinstance(image_id, (int, str)) or image_id not in by_id:
            problems["unknown_image_id"] += 1
            continue
        record = by_id[image_id]
        if record is None:  # outside the selected split
            continue
        kps, problem = _keypoint_values(ann.get("keypoints"), num_source)
        if problem:
            problems[problem] += 1
            continue
        keypoints = np.zeros((topology.num_keypoints, 2), dtype=np.float64)
        available = np.zeros(topology.num_keypoints, dtype=bool)
        keypoints[covered] = kps[src_idx, :2]
        available[covered] = kps[src_idx, 2] > 0
        keypoints[~available] = 0.0
        bbox = _parse_bbox(ann.get("bbox"))
        area = _to_float(ann.get("area"))
        if area is None and bbox is not None:
            area = bbox[2] * bbox[3]
        record.people.append(PersonAnnotation(
            keypoints=keypoints, available=available, bbox=bbox, area=area,
            iscrowd=bool(ann.get("iscrowd", 0)), annotation_id=ann.get("id")))

    return KeypointDataset(records=records, topology=topology, source_keypoints=source_names,
                           mapping=mapping, problems=+problems, split=split)
