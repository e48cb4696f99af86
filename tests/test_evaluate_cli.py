"""End-to-end tests of ``python -m blazepose_tf.evaluate`` through the command line (subprocesses).

Bad datasets (missing or invalid annotations JSON, an unknown split) must give one ``error:`` line and the
documented exit code before any model is loaded. A tiny COCO-keypoints set built here from the offline
sample photo, annotated with the official pipeline's own prediction on that photo, must score a high PCK and
write the documented summary JSON.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from blazepose_tf import contract
from blazepose_tf.errors import EXIT_NO_INPUT, EXIT_OK, EXIT_USAGE
from blazepose_tf.io.provenance import written_here
from blazepose_tf.io.samples import sample_image_path

REPO = Path(__file__).resolve().parents[1]
COCO_17 = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
           "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
           "right_knee", "left_ankle", "right_ankle"]
# Keypoints of the person in scikit-image's astronaut.png (512x512), hand-copied (rounded to pixels) from the
# official MediaPipe models' prediction (`python -m blazepose_tf.track --input sample`). Knees and ankles are
# outside the photo: not annotated.
SAMPLE_KEYPOINTS = {
    "nose": (223, 128), "left_eye": (249, 112), "right_eye": (205, 104), "left_ear": (268, 123),
    "right_ear": (190, 108), "left_shoulder": (306, 257), "right_shoulder": (112, 240), "left_elbow": (317, 373),
    "right_elbow": (63, 411), "left_wrist": (325, 467), "right_wrist": (133, 479), "left_hip": (241, 504),
    "right_hip": (128, 531),
}
SUMMARY_KEYS = {"written_by", "schema", "annotations", "split", "num_images", "models", "roi_passes", "pck", "pck_diagonal", "coco", "errors",
                "dropped_annotations", "dataset_problems"}
PCK_KEYS = {"pck", "per_keypoint", "per_group", "detection_rate", "num_people", "num_detected", "num_points",
            "num_correct", "keypoint_counts", "threshold", "diagonal"}


def run_evaluate(*args) -> subprocess.CompletedProcess:
    # The official models (what the tiny set is annotated with); a --models in args comes later and wins.
    return subprocess.run([sys.executable, "-m", "blazepose_tf.evaluate", "--models=official", *map(str, args),
                           "--noprogress"],
                          cwd=REPO, capture_output=True, text=True, errors="replace", timeout=300)


def strict_json(path: Path):
    """Parses ``path`` as standard JSON: NaN/Infinity (which Python writes by default) are rejected."""
    def reject(token):
        raise AssertionError(f"{path} holds {token}, which is not JSON")
    return json.loads(path.read_text(), parse_constant=reject)


def check_error(proc: subprocess.CompletedProcess, code: int, message: str) -> None:
    report = f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == code, report
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, report
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], report


def coco_annotation(image_id: int, scale: float) -> dict:
    kps = []
    for name in COCO_17:
        if name in SAMPLE_KEYPOINTS:
            x, y = SAMPLE_KEYPOINTS[name]
            kps += [round(x * scale, 1), round(y * scale, 1), 2]
        else:
            kps += [0, 0, 0]
    return {"id": image_id, "image_id": image_id, "category_id": 1, "iscrowd": 0,
            "num_keypoints": len(SAMPLE_KEYPOINTS), "keypoints": kps}


@pytest.fixture()
def tiny_coco(tmp_path) -> Path:
    """annotations.json + splits.json + images/: the sample photo as PNG, and at 3/4 size as JPEG."""
    images = tmp_path / "images"
    images.mkdir()
    photo = cv2.imread(str(sample_image_path()), cv2.IMREAD_COLOR)
    cv2.imwrite(str(images / "astronaut.png"), photo)
    small = cv2.resize(photo, (384, 384), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(images / "astronaut_small.jpg"), small, [cv2.IMWRITE_JPEG_QUALITY, 90])
    doc = {
        "images": [{"id": 1, "file_name": "astronaut.png", "width": 512, "height": 512},
                   {"id": 2, "file_name": "astronaut_small.jpg", "width": 384, "height": 384}],
        "annotations": [coco_annotation(1, 1.0), coco_annotation(2, 0.75)],
        "categories": [{"id": 1, "name": "person", "keypoints": COCO_17, "skeleton": []}],
    }
    (tmp_path / "annotations.json").write_text(json.dumps(doc))
    (tmp_path / "splits.json").write_text(json.dumps({"dev": [1, 2], "test": []}))
    return tmp_path


# --- bad datasets and flags: rejected before any model is loaded ----------------------------------------------


def test_missing_annotations_file(tiny_coco):
    missing = tiny_coco / "nope.json"
    proc = run_evaluate("--annotations", missing, "--images", tiny_coco / "images")
    check_error(proc, EXIT_USAGE, f"annotations file not found: {missing}")


def test_invalid_json(tiny_coco):
    bad = tiny_coco / "bad.json"
    bad.write_text('{"images": [')
    proc = run_evaluate("--annotations", bad, "--images", tiny_coco / "images")
    check_error(proc, EXIT_USAGE, "is not valid JSON")


def test_unknown_split(tiny_coco):
    proc = run_evaluate("--annotations", tiny_coco / "annotations.json", "--images", tiny_coco / "images",
                        "--split", "validation")
    check_error(proc, EXIT_USAGE, "unknown split 'validation'")
    assert "known splits: dev, test" in proc.stderr


def test_empty_split_nothing_to_score(tiny_coco):
    proc = run_evaluate("--annotations", tiny_coco / "annotations.json", "--images", tiny_coco / "images",
                        "--split", "test")
    check_error(proc, EXIT_NO_INPUT, "no image in the dataset has a person")


def test_output_is_a_directory(tiny_coco):
    proc = run_evaluate("--annotations", tiny_coco / "annotations.json", "--images", tiny_coco / "images",
                        "--output", tiny_coco / "images")
    check_error(proc, EXIT_USAGE, "is a directory")


# --- a tiny valid dataset -------------------------------------------------------------------------------------------


def test_tiny_coco_scores_high_and_writes_summary(tiny_coco, official_models):
    out = tiny_coco / "summary.json"
    proc = run_evaluate("--annotations", tiny_coco / "annotations.json", "--images", tiny_coco / "images",
                        "--split", "dev", "--output", out)
    report = f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == EXIT_OK, report
    assert "Traceback" not in proc.stderr, report
    assert "2 scored images" in proc.stdout and "overall PCK" in proc.stdout and "COCO keypoint AP" in proc.stdout
    doc = strict_json(out)
    assert set(doc) == SUMMARY_KEYS
    assert list(doc)[:2] == ["written_by", "schema"] and doc["schema"] == "blazepose_tf.evaluate/1"
    assert written_here(out)
    assert doc["annotations"] == str(tiny_coco / "annotations.json")
    assert doc["split"] == "dev" and doc["num_images"] == 2 and doc["errors"] == []
    assert doc["dropped_annotations"] == 0 and doc["dataset_problems"] == {}
    assert "warning:" not in proc.stderr and "dropped" not in proc.stdout
    assert set(doc["models"]) == {"detector", "landmarks"}
    assert doc["roi_passes"] == contract.IMAGE_ROI_PASSES
    for variant, diagonal in (("pck", False), ("pck_diagonal", True)):
        pck = doc[variant]
        assert set(pck) == PCK_KEYS and pck["diagonal"] is diagonal and pck["threshold"] == 0.2
        assert pck["num_people"] == 2 and pck["num_detected"] == 2 and pck["detection_rate"] == 100.0
        assert pck["num_points"] == 2 * len(SAMPLE_KEYPOINTS)
        assert pck["pck"] >= 90.0, pck   # the annotations are the pipeline's own prediction
        assert set(pck["per_keypoint"]) == set(SAMPLE_KEYPOINTS)
    assert f"{doc['pck']['pck']:.1f}%" in proc.stdout
    coco = doc["coco"]
    assert {"AP", "AP50", "AP75", "AR"} <= set(coco)
    assert 0.5 <= coco["AP"] <= 1.0 and math.isfinite(coco["AR"])
    assert coco["AP_M"] is None   # undefined (no medium-sized person): null, not NaN
    assert not out.with_name(out.name + ".part").exists()


def test_every_image_unreadable_exit_3(tiny_coco, official_models):
    for image in (tiny_coco / "images").iterdir():
        image.write_text("not an image any more")
    out = tiny_coco / "summary.json"
    proc = run_evaluate("--annotations", tiny_coco / "annotations.json", "--images", tiny_coco / "images",
                        "--output", out)
    check_error(proc, EXIT_NO_INPUT, "none of the 2 scored images could be read")
    doc = strict_json(out)   # still written: every image scored as a miss, with the reasons
    assert doc["pck"]["pck"] == 0.0 and doc["pck"]["detection_rate"] == 0.0
    assert sorted(Path(e["source"]).name for e in doc["errors"]) == ["astronaut.png", "astronaut_small.jpg"]


def test_dropped_annotations_are_reported_not_silently_skipped(tiny_coco, official_models):
    """Broken annotations next to the two good ones: scored on the good ones, each reason warned with its count
    and counted in the summary."""
    path = tiny_coco / "annotations.json"
    doc = json.loads(path.read_text())
    good = coco_annotation(1, 1.0)["keypoints"]
    nan = list(good)
    nan[3 * COCO_17.index("left_shoulder")] = float("nan")
    doc["annotations"] += [dict(coco_annotation(2, 0.75), id=10 + i, keypoints=k)
                           for i, k in enumerate([good[:-3], nan, [str(v) for v in good], good + [0]])]
    path.write_text(json.dumps(doc))
    out = tiny_coco / "summary.json"
    proc = run_evaluate("--annotations", path, "--images", tiny_coco / "images", "--output", out)
    report = f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == EXIT_OK and "Traceback" not in proc.stderr, report
    assert [ln for ln in proc.stderr.splitlines() if ln.startswith("warning:")] == [
        "warning: 1 annotation dropped: NaN or infinite keypoint value (the x or y of a labelled point, or a v)",
        "warning: 1 annotation dropped: 'keypoints' is missing or not a list of numbers",
        "warning: 2 annotations dropped: 'keypoints' does not hold 3 values (x, y, v) per keypoint name of the "
        "category (expected 51 values)",
    ], report
    assert "2 scored images (4 annotations dropped, see the warnings)" in proc.stdout, report
    summary = strict_json(out)
    assert summary["num_images"] == 2 and summary["pck"]["num_people"] == 2
    assert summary["dropped_annotations"] == 4
    assert summary["dataset_problems"] == {"keypoints_not_finite": 1, "keypoints_not_numbers": 1,
                                           "keypoints_wrong_length": 2}


def test_dataset_without_annotations_key(tiny_coco):
    path = tiny_coco / "annotations.json"
    doc = json.loads(path.read_text())
    del doc["annotations"]
    path.write_text(json.dumps(doc))
    proc = run_evaluate("--annotations", path, "--images", tiny_coco / "images")
    check_error(proc, EXIT_USAGE, "has no 'annotations' list")
