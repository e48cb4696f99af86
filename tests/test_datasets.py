"""Tests for the COCO-keypoints loader (synthetic files + the shared LSPET set when present)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from blazepose_tf.datasets.coco import is_guard_image, is_test_id, load_coco_keypoints, resolve_splits
from blazepose_tf.errors import InputError, UserError
from blazepose_tf.metrics import select_scored_person
from blazepose_tf.topology import BLAZEPOSE_33, COCO_17

LSPET_NAMES = ["right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "right_wrist",
               "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist", "neck", "head_top"]


def _lspet_like_keypoints(offset: float, missing: tuple[str, ...] = ()) -> list[float]:
    out = []
    for i, name in enumerate(LSPET_NAMES):
        if name in missing:
            out += [0, 0, 0]
        else:
            out += [offset + i, 2 * offset + i, 2]
    return out


def write_dataset(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Three images; image 3 has an annotation of an unknown image id as well."""
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    for i in (1, 2, 3):
        (images_dir / f"im{i}.jpg").write_bytes(b"")
    data = {
        "images": [{"id": i, "file_name": f"im{i}.jpg", "width": 100 + i, "height": 200 + i} for i in (1, 2, 3)],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "keypoints": _lspet_like_keypoints(10),
             "bbox": [1, 2, 30, 40], "area": 1200, "iscrowd": 0},
            {"id": 20, "image_id": 2, "category_id": 1,
             "keypoints": _lspet_like_keypoints(20, missing=("left_wrist", "head_top")),
             "bbox": [0, 0, 10, 10], "iscrowd": 0},
            {"id": 30, "image_id": 3, "category_id": 1, "keypoints": _lspet_like_keypoints(30), "iscrowd": 0},
            {"id": 99, "image_id": 12345, "category_id": 1, "keypoints": _lspet_like_keypoints(0)},
        ],
        "categories": [{"id": 1, "name": "person", "keypoints": LSPET_NAMES, "skeleton": []}],
    }
    ann = tmp_path / "annotations.json"
    ann.write_text(json.dumps(data))
    splits = tmp_path / "splits.json"
    splits.write_text(json.dumps({"seed": 0, "train": [1, 3], "dev": [2]}))
    return ann, images_dir, splits


def test_name_mapping_from_lspet_names(tmp_path: Path) -> None:
    ann, images_dir, _ = write_dataset(tmp_path)
    ds = load_coco_keypoints(ann, images_dir)
    assert len(ds) == 3
    assert ds.source_keypoints == tuple(LSPET_NAMES)
    # neck / head_top have no BlazePose counterpart: 12 of 14 names are covered.
    assert int(ds.coverage.sum()) == 12
    assert set(ds.covered_names) == set(LSPET_NAMES) - {"neck", "head_top"}
    rec = ds.records[0]
    assert rec.image_id == 1 and rec.width == 101 and rec.height == 201
    assert rec.file_path == (images_dir / "im1.jpg").resolve() and rec.file_path.is_absolute()
    person = rec.people[0]
    assert person.keypoints.shape == (33, 2) and person.available.shape == (33,)
    for i, name in enumerate(LSPET_NAMES[:12]):
        j = BLAZEPOSE_33.index(name)
        assert person.available[j]
        np.testing.assert_allclose(person.keypoints[j], [10 + i, 20 + i])
    assert person.available.sum() == 12
    assert not person.available[BLAZEPOSE_33.index("nose")]
    assert person.bbox == (1.0, 2.0, 30.0, 40.0) and person.area == 1200 and not person.iscrowd
    assert person.annotation_id == 10


def test_missing_points_bbox_and_problems(tmp_path: Path) -> None:
    ann, images_dir, _ = write_dataset(tmp_path)
    ds = load_coco_keypoints(ann, images_dir)
    p2 = ds.records[1].people[0]
    assert not p2.available[BLAZEPOSE_33.index("left_wrist")]
    assert p2.available.sum() == 11
    assert p2.area == 100.0  # from bbox when the file has no area
    p3 = ds.records[2].people[0]
    assert p3.bbox is None and p3.area is None
    x, y, w, h = p3.box()
    assert (x, y, w, h) == (30.0, 60.0, 11.0, 11.0)
    assert ds.problems["unknown_image_id"] == 1
    assert ds.num_people == 3


def test_other_topology(tmp_path: Path) -> None:
    ann, images_dir, _ = write_dataset(tmp_path)
    ds = load_coco_keypoints(ann, images_dir, topology=COCO_17)
    assert ds.records[0].people[0].keypoints.shape == (17, 2)
    assert int(ds.coverage.sum()) == 12


def test_split_filtering(tmp_path: Path) -> None:
    ann, images_dir, splits = write_dataset(tmp_path)
    train = load_coco_keypoints(ann, images_dir, split="train", splits_json=splits)
    assert [r.image_id for r in train] == [1, 3]
    dev = load_coco_keypoints(ann, images_dir, split="dev_all")  # splits.json next to the annotations
    assert [r.image_id for r in dev] == [2]
    assert dev.split == "dev_all"
    assert "unknown_image_id" in dev.problems  # id 12345 is still unknown
    # The protocol divides dev: id 2 falls in the derived test split (is_test_id), none is left in dev.
    assert [r.image_id for r in load_coco_keypoints(ann, images_dir, split="test")] == [2]
    assert [r.image_id for r in load_coco_keypoints(ann, images_dir, split="dev")] == []
    with pytest.raises(UserError, match="known splits: dev, dev_all, test, train"):
        load_coco_keypoints(ann, images_dir, split="holdout", splits_json=splits)


def test_protocol_divides_dev_into_dev_and_test_unless_the_file_has_test() -> None:
    ids = list(range(1000))
    table = resolve_splits({"train": [5000], "dev": ids})
    assert sorted(table["dev"] + table["test"]) == ids and not set(table["dev"]) & set(table["test"])
    assert 400 < len(table["test"]) < 600                      # about half
    assert table["dev_all"] == ids and table["train"] == [5000]
    assert resolve_splits({"dev": ids[::-1]})["test"] == table["test"][::-1]   # by id, not by position
    explicit = resolve_splits({"dev": [1, 2], "test": [3]})
    assert explicit == {"dev": [1, 2], "test": [3]}           # a file's own test split wins
    assert all(is_test_id(i) for i in table["test"]) and not any(is_test_id(i) for i in table["dev"])


def test_errors(tmp_path: Path) -> None:
    ann, images_dir, _ = write_dataset(tmp_path)
    with pytest.raises(UserError, match="not found"):
        load_coco_keypoints(tmp_path / "nope.json", images_dir)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        load_coco_keypoints(bad, images_dir)
    with pytest.raises(UserError, match="images folder not found"):
        load_coco_keypoints(ann, tmp_path / "no_images")
    nokp = tmp_path / "nokp.json"
    nokp.write_text(json.dumps({"images": [], "annotations": [{"id": 1, "image_id": 1}],   # people, no names
                                "categories": [{"id": 1, "name": "person"}]}))
    with pytest.raises(UserError, match="no category with 'keypoints'"):
        load_coco_keypoints(nokp, images_dir)
    # Every error is a one-liner.
    try:
        load_coco_keypoints(bad, images_dir)
    except UserError as e:
        assert "\n" not in str(e)
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(UserError, match="no splits file"):
        load_coco_keypoints(ann.rename(other / "a.json"), images_dir, split="dev")


def test_real_lspet_dev(shared_data: Path) -> None:
    root = shared_data / "lspet"
    if not (root / "annotations.json").is_file():
        pytest.skip(f"LSPET not found under {root}")
    ds = load_coco_keypoints(root / "annotations.json", root / "images", split="dev_all",
                             splits_json=root / "splits.json")
    assert len(ds) == 1000
    assert int(ds.coverage.sum()) == 12
    assert sum(select_scored_person(r) is not None for r in ds) == 585
    assert "unknown_image_id" not in ds.problems and "missing_image_file" not in ds.problems
    # The protocol's halves: 489 dev images (294 scored) to choose on, 511 test images (291 scored) to report.
    halves = {split: load_coco_keypoints(root / "annotations.json", root / "images", split=split)
              for split in ("dev", "test")}
    assert {k: len(v) for k, v in halves.items()} == {"dev": 489, "test": 511}
    assert {k: sum(select_scored_person(r) is not None for r in v) for k, v in halves.items()} == \
        {"dev": 294, "test": 291}


def _write(tmp_path: Path, doc: dict) -> tuple[Path, Path]:
    images_dir = tmp_path / "images"
    images_dir.mkdir(exist_ok=True)
    ann = tmp_path / "bad.json"
    ann.write_text(json.dumps(doc))
    return ann, images_dir


def test_malformed_keypoints_are_dropped_and_counted_by_reason(tmp_path: Path) -> None:
    good = _lspet_like_keypoints(10)
    nan_labelled = list(good)
    nan_labelled[0] = float("nan")                   # x of a labelled point
    inf_v = list(good)
    inf_v[5] = float("inf")                          # a visibility
    nan_unlabelled = _lspet_like_keypoints(10, missing=("neck",))
    nan_unlabelled[3 * LSPET_NAMES.index("neck")] = float("nan")   # x of an unlabelled point: harmless
    entries = [good, good[:-3], good + [1, 2, 2], [], nan_labelled, inf_v, [str(v) for v in good],
               good[:-1] + [None], [[1, 2], [3]], {"x": 1}, "1 2 2", None, [True] * 42, nan_unlabelled]
    doc = {"images": [{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10}],
           "annotations": [{"id": i, "image_id": 1, "category_id": 1, "keypoints": k} for i, k in enumerate(entries)]
           + ["not an object", {"id": 99, "image_id": 2, "category_id": 1, "keypoints": good},
              {"id": 98, "image_id": 1, "category_id": 7, "keypoints": good}],
           "categories": [{"id": 1, "name": "person", "keypoints": LSPET_NAMES}]}
    ds = load_coco_keypoints(*_write(tmp_path, doc))
    assert [p.annotation_id for p in ds.records[0].people] == [0, 13]
    assert not ds.records[0].people[1].available[BLAZEPOSE_33.index("nose")]
    assert ds.problems == {"keypoints_wrong_length": 3, "keypoints_not_finite": 2, "keypoints_not_numbers": 7,
                           "bad_annotation_entry": 1, "unknown_image_id": 1, "other_category": 1,
                           "missing_image_file": 1}
    assert ds.dropped_annotations == 15
    assert ds.problem_messages() == [
        "1 annotation dropped: not a JSON object",
        "2 annotations dropped: NaN or infinite keypoint value (the x or y of a labelled point, or a v)",
        "7 annotations dropped: 'keypoints' is missing or not a list of numbers",
        "3 annotations dropped: 'keypoints' does not hold 3 values (x, y, v) per keypoint name of the category "
        "(expected 42 values)",
        "1 image kept: file not found in the images folder",
        "1 annotation dropped: its category_id is not the keypoint category's id",
        "1 annotation dropped: its image_id matches no entry of 'images'",
    ]


def test_empty_images_and_missing_or_empty_annotations(tmp_path: Path) -> None:
    category = [{"id": 1, "name": "person", "keypoints": LSPET_NAMES}]
    image = {"id": 1, "file_name": "a.jpg", "width": 10, "height": 10}
    ann, images_dir = _write(tmp_path, {"images": [], "annotations": [], "categories": category})
    with pytest.raises(InputError, match="has an empty 'images' list"):
        load_coco_keypoints(ann, images_dir)
    ann, images_dir = _write(tmp_path, {"images": [image], "categories": category})
    assert load_coco_keypoints(ann, images_dir).num_people == 0      # images without people: fine by default
    with pytest.raises(UserError, match="has no 'annotations' list") as info:
        load_coco_keypoints(ann, images_dir, require_annotations=True)
    assert not isinstance(info.value, InputError)                    # a malformed file: exit code 2
    ann, images_dir = _write(tmp_path, {"images": [image], "annotations": [], "categories": category})
    assert load_coco_keypoints(ann, images_dir).num_people == 0
    with pytest.raises(InputError, match="has an empty 'annotations' list"):
        load_coco_keypoints(ann, images_dir, require_annotations=True)


def test_unlabelled_photos_are_divided_into_train_and_a_guard_quarter(tmp_path: Path) -> None:
    names = [f"photo_{i:04d}.jpg" for i in range(400)]
    guard = [n for n in names if is_guard_image(n)]
    assert 70 < len(guard) < 130                                # about a quarter
    assert all(is_guard_image(f"elsewhere/{n}") for n in guard)  # by file name, not folder
    (tmp_path / "images").mkdir()
    doc = {"images": [{"id": i, "file_name": n, "width": 64, "height": 64} for i, n in enumerate(names)],
           "annotations": [], "categories": [{"id": 1, "name": "person"}]}   # no keypoint names: unlabelled
    ann = tmp_path / "annotations.json"
    ann.write_text(json.dumps(doc))
    train = [r.file_path.name for r in load_coco_keypoints(ann, tmp_path / "images", split="train")]
    held = [r.file_path.name for r in load_coco_keypoints(ann, tmp_path / "images", split="guard")]
    assert held == guard
    assert sorted(train + held) == names and not set(train) & set(held)
    assert len(load_coco_keypoints(ann, tmp_path / "images").records) == 400
    # Labelled data has no derived split: a split without a splits file is still an error.
    doc["annotations"] = [{"id": 1, "image_id": 0, "category_id": 1, "keypoints": []}]
    doc["categories"][0]["keypoints"] = ["nose"]
    ann.write_text(json.dumps(doc))
    with pytest.raises(UserError, match="no splits file"):
        load_coco_keypoints(ann, tmp_path / "images", split="train")


def test_prepare_writes_unlabelled_photos_as_train_and_guard_splits(tmp_path: Path) -> None:
    from data.prepare import read_split_names

    ann = tmp_path / "annotations.json"
    ann.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg", "width": 8, "height": 8}],
                               "annotations": [], "categories": [{"id": 1, "name": "person"}]}))
    assert read_split_names(tmp_path / "splits.json", False, annotations=ann) == ["train", "guard"]
    (tmp_path / "labelled").mkdir()
    labelled, _, _ = write_dataset(tmp_path / "labelled")
    assert read_split_names(tmp_path / "splits.json", False, annotations=labelled) == [None]
