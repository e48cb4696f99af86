"""Tests for PCK, prediction matching and COCO keypoint AP on synthetic data."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from blazepose_tf.datasets.coco import KeypointDataset, PersonAnnotation, load_coco_keypoints
from blazepose_tf.metrics import (coco_keypoint_ap, count_share, format_pck_table, match_prediction,
                                  paired_pck_delta, pck, select_scored_person)
from blazepose_tf.topology import BLAZEPOSE_33, COCO_17
from blazepose_tf.types import Pose, Roi

TORSO = 50.0  # mid-shoulder to mid-hip distance of the base person

# A COCO-17 person: shoulders 20 px apart at y=50, hips at y=100 -> torso size 50 px.
BASE_COCO17 = {
    "nose": (50, 20), "left_eye": (54, 16), "right_eye": (46, 16), "left_ear": (58, 18), "right_ear": (42, 18),
    "left_shoulder": (60, 50), "right_shoulder": (40, 50), "left_elbow": (70, 75), "right_elbow": (30, 75),
    "left_wrist": (75, 100), "right_wrist": (25, 100), "left_hip": (58, 100), "right_hip": (42, 100),
    "left_knee": (60, 140), "right_knee": (40, 140), "left_ankle": (60, 180), "right_ankle": (40, 180),
}


def person_points(offset: tuple[float, float] = (0, 0), scale: float = 1.0) -> dict[str, tuple[float, float]]:
    return {k: (x * scale + offset[0], y * scale + offset[1]) for k, (x, y) in BASE_COCO17.items()}


def coco_ann(ann_id: int, image_id: int, points: dict, missing: tuple[str, ...] = ()) -> dict:
    kps = []
    for name in COCO_17.keypoints:
        kps += [0, 0, 0] if name in missing else [points[name][0], points[name][1], 2]
    xs = [p[0] for p in points.values()]
    ys = [p[1] for p in points.values()]
    bbox = [min(xs) - 5, min(ys) - 5, max(xs) - min(xs) + 10, max(ys) - min(ys) + 10]
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "keypoints": kps, "bbox": bbox,
            "area": bbox[2] * bbox[3], "iscrowd": 0, "num_keypoints": 17 - len(missing)}


@pytest.fixture()
def dataset(tmp_path: Path) -> KeypointDataset:
    """Image 1: one person; image 2: a big person plus a small one; image 3: person without hips."""
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    anns = [
        coco_ann(1, 1, person_points()),
        coco_ann(2, 2, person_points((10, 10), scale=2.0), missing=("left_ear",)),
        coco_ann(3, 2, person_points((300, 0))),
        coco_ann(4, 3, person_points(), missing=("left_hip", "right_hip")),
    ]
    data = {"images": [{"id": i, "file_name": f"{i}.jpg", "width": 640, "height": 480} for i in (1, 2, 3)],
            "annotations": anns,
            "categories": [{"id": 1, "name": "person", "keypoints": list(COCO_17.keypoints)}]}
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return load_coco_keypoints(path, images_dir)


def scored(dataset: KeypointDataset) -> list[PersonAnnotation]:
    people = [select_scored_person(r) for r in dataset]
    return [p for p in people if p is not None]


def full_prediction(person: PersonAnnotation, shift: tuple[float, float] = (0, 0)) -> np.ndarray:
    """33-point prediction equal to the GT where annotated (+shift), garbage elsewhere."""
    pred = np.full((33, 2), -1000.0)
    pred[person.available] = person.keypoints[person.available] + np.asarray(shift)
    return pred


def test_select_scored_person(dataset: KeypointDataset) -> None:
    assert select_scored_person(dataset[0]) is dataset[0].people[0]
    assert select_scored_person(dataset[1]) is dataset[1].people[0]  # the larger one
    assert select_scored_person(dataset[2]) is None  # hips not annotated
    assert len(scored(dataset)) == 2


def test_perfect_predictions(dataset: KeypointDataset) -> None:
    people = scored(dataset)
    result = pck(people, [full_prediction(p) for p in people])
    assert result.pck == 100.0 and result.detection_rate == 100.0
    assert result.num_people == 2 and result.num_points == 17 + 16
    # Unannotated points (left_ear of person 2, non-COCO points) are not scored even though predicted badly.
    assert result.keypoint_counts["left_ear"] == (1, 1)
    assert "left_pinky" not in result.per_keypoint
    assert set(result.per_group) == {"face", "arms", "legs"}
    assert all(v == 100.0 for v in result.per_group.values())
    text = format_pck_table(result)
    assert "PCK@0.2" in text and "100.0" in text and "left_shoulder" in text


def test_shift_thresholds(dataset: KeypointDataset) -> None:
    person = scored(dataset)[0]  # image 1, torso 50 px
    assert math.isclose(np.linalg.norm((person.keypoints[11] + person.keypoints[12]) / 2
                                       - (person.keypoints[23] + person.keypoints[24]) / 2), TORSO)
    far = full_prediction(person)
    wrist = BLAZEPOSE_33.index("left_wrist")
    knee = BLAZEPOSE_33.index("right_knee")
    far[wrist] += (0.3 * TORSO, 0)
    far[knee] += (0, -0.3 * TORSO)
    result = pck([person], [far])
    assert result.per_keypoint["left_wrist"] == 0.0 and result.per_keypoint["right_knee"] == 0.0
    assert result.num_correct == 15 and result.num_points == 17
    near = full_prediction(person, shift=(0.1 * TORSO * 0.6, 0.1 * TORSO * 0.8))  # |shift| = 0.1 torso
    assert pck([person], [near]).pck == 100.0
    all_far = full_prediction(person, shift=(0.3 * TORSO, 0))
    assert pck([person], [all_far]).pck == 0.0


def test_diagonal_variant(dataset: KeypointDataset) -> None:
    person = scored(dataset)[0]
    # Diagonal torso: |left_shoulder(60,50) - right_hip(42,100)| = sqrt(18^2 + 50^2) ~ 53.1 > 50.
    diag = math.hypot(18, 50)
    shift = 0.2 * (TORSO + diag) / 2  # between the two thresholds
    pred = full_prediction(person, shift=(shift, 0))
    assert pck([person], [pred]).pck == 0.0
    assert pck([person], [pred], diagonal=True).pck == 100.0


def test_missed_detection(dataset: KeypointDataset) -> None:
    people = scored(dataset)
    result = pck(people, [full_prediction(people[0]), None])
    assert result.detection_rate == 50.0 and result.num_detected == 1
    assert result.num_correct == 17 and result.num_points == 33
    assert math.isclose(result.pck, 100 * 17 / 33)
    assert result.keypoint_counts["nose"] == (1, 2)


def test_tuple_and_pose_inputs(dataset: KeypointDataset) -> None:
    person = scored(dataset)[0]
    kp = np.concatenate([full_prediction(person), np.zeros((33, 1))], axis=1)
    pose = Pose(keypoints=kp, visibility=np.zeros(33), presence=np.ones(33), score=0.9,
                roi=Roi(0, 0, 1, 1), aux_keypoints=np.zeros((2, 2)))
    result = pck([(person.keypoints, person.available)], [pose])
    assert result.pck == 100.0  # visibility 0 everywhere does not matter


def test_pck_requires_torso() -> None:
    with pytest.raises(ValueError, match="torso"):
        pck([(np.zeros((33, 2)), np.zeros(33, bool))], [np.zeros((33, 2))])


def test_match_prediction(dataset: KeypointDataset) -> None:
    person = scored(dataset)[1]
    other = full_prediction(person, shift=(200, 0))
    close = full_prediction(person, shift=(3, 0))
    assert match_prediction(person, [other, close]) is close
    assert match_prediction(person, []) is None
    nan_pose = np.full((33, 2), np.nan)
    assert match_prediction(person, [nan_pose, other]) is other


def _predictions(dataset: KeypointDataset, shift: float = 0.0) -> dict:
    return {r.image_id: [(full_prediction(p, (shift, 0)), 0.9) for p in r.people] for r in dataset}


def test_coco_ap_perfect(dataset: KeypointDataset) -> None:
    ap = coco_keypoint_ap(dataset, _predictions(dataset))
    assert ap["AP"] == pytest.approx(1.0, abs=1e-6)
    assert ap["AP50"] == pytest.approx(1.0) and ap["AP75"] == pytest.approx(1.0)
    assert ap["AR"] == pytest.approx(1.0)
    assert ap["num_gt"] == 4 and ap["num_detections"] == 4
    worse = coco_keypoint_ap(dataset.records, _predictions(dataset, shift=8.0))
    assert worse["AP"] < 0.9


def test_coco_ap_aligned_list_and_missing(dataset: KeypointDataset) -> None:
    preds = _predictions(dataset)
    aligned = [preds[r.image_id] for r in dataset]
    aligned[1] = aligned[1][:1]  # the small person of image 2 is missed
    ap = coco_keypoint_ap(dataset, aligned)
    assert 0.5 < ap["AR"] < 1.0


def test_coco_ap_no_predictions(dataset: KeypointDataset) -> None:
    ap = coco_keypoint_ap(dataset, {})
    assert ap["AP"] == 0.0 and ap["AR"] == 0.0 and ap["num_detections"] == 0
    empty = coco_keypoint_ap([], {})
    assert math.isnan(empty["AP"])


def test_coco_ap_lspet_like_source(tmp_path: Path) -> None:
    """Points the source does not have (LSPET: no face) are v=0 in the GT and do not hurt OKS."""
    names = ["right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "right_wrist",
             "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist", "neck", "head_top"]
    pts = person_points()
    pts.update({"neck": (50, 45), "head_top": (50, 5)})
    kps = sum(([pts[n][0], pts[n][1], 2] for n in names), [])
    (tmp_path / "images").mkdir()
    data = {"images": [{"id": 7, "file_name": "a.jpg", "width": 200, "height": 200}],
            "annotations": [{"id": 7, "image_id": 7, "category_id": 1, "keypoints": kps, "iscrowd": 0}],
            "categories": [{"id": 1, "name": "person", "keypoints": names}]}
    (tmp_path / "a.json").write_text(json.dumps(data))
    ds = load_coco_keypoints(tmp_path / "a.json", tmp_path / "images")
    person = ds[0].people[0]
    assert person.bbox is None  # derived from keypoints for AP
    ap = coco_keypoint_ap(ds, {7: [(full_prediction(person), 1.0)]})
    assert ap["AP"] == pytest.approx(1.0)
    result = pck([select_scored_person(ds[0])], [full_prediction(person)])
    assert result.num_points == 12 and "face" not in result.per_group


def test_paired_pck_delta() -> None:
    a = [[3, 4], [0, 4], [2, 2]]
    b = [[4, 4], [1, 4], [2, 2]]
    delta, (lo, hi) = paired_pck_delta(a, b, resamples=500)
    assert delta == pytest.approx(100 * 2 / 10)
    assert 0 <= lo <= delta <= hi
    assert paired_pck_delta(b, a, resamples=500)[0] == pytest.approx(-delta)
    assert paired_pck_delta(a, a, resamples=50) == (0.0, [0.0, 0.0])
    for other in (b[:2], [[4, 4], [1, 4], [2, 3]], [], [[4, 4, 1, 4, 2, 2]]):   # fewer, others, nobody, bad shape
        with pytest.raises(ValueError, match="same non-empty people"):
            paired_pck_delta(a, other)
    for bad in ([[5, 4], [0, 4], [2, 2]], [[0, 0], [0, 4], [2, 2]], [[-1, 4], [0, 4], [2, 2]]):
        with pytest.raises(ValueError, match="0 <= correct <= annotated"):
            paired_pck_delta(bad, bad)
    with pytest.raises(ValueError, match="resamples"):
        paired_pck_delta(a, b, resamples=0)


def test_evaluate_counts_points_per_person(dataset: KeypointDataset) -> None:
    # Per scored person, in record order: the first image's person found exactly, the second image's scored
    # person missed (the pipeline returns nobody); the third image has no scored person (no hips).
    from PIL import Image

    from blazepose_tf.evaluation import evaluate, scored_records

    for rec in dataset:
        Image.new("RGB", (rec.width, rec.height)).save(rec.file_path)
    people = scored(dataset)
    answers = iter([[np.concatenate([full_prediction(people[0]), np.zeros((33, 1))], axis=1)], [], []])

    def predict(image):
        return [Pose(keypoints=kp, visibility=np.zeros(33), presence=np.ones(33), score=0.9, roi=Roi(0, 0, 1, 1),
                     aux_keypoints=np.zeros((2, 2))) for kp in next(answers)]

    result = evaluate(predict, list(dataset), progress=False)
    assert result.pck.per_person == [(17, 17), (0, 16)]
    assert sum(c for c, _ in result.pck.per_person) == result.pck.num_correct
    assert sum(n for _, n in result.pck.per_person) == result.pck.num_points
    assert len(scored_records(dataset)) == len(result.pck.per_person)


def test_count_share_pools_counts_over_the_names_it_has():
    counts = {"nose": (3, 4), "left_hip": (1, 6), "right_hip": (0, 0)}
    assert count_share(counts) == pytest.approx(4 / 10)
    assert count_share(counts, ["nose", "left_ankle"]) == pytest.approx(3 / 4)  # a name without counts is skipped
    assert count_share(counts, ["right_hip"]) is None and count_share(counts, []) is None
