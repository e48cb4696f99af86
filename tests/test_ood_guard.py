"""The out-of-domain guard (benchmarks/ood_guard.py) on a tiny folder made from the bundled sample photo."""
from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks import ood_guard
from blazepose_tf.datasets.coco import is_guard_image, read_json
from blazepose_tf.errors import EXIT_NO_INPUT, InputError
from blazepose_tf.io.images import load_image
from blazepose_tf.io.samples import sample_image_path
from blazepose_tf.official import official_model_path
from blazepose_tf.overlay import save_image
from blazepose_tf.runtime.pipeline import PoseTracker
from blazepose_tf.runtime.runners import ModelRunner, TFLiteRunner
from blazepose_tf.topology import BLAZEPOSE_33
from hostile_utils import assert_clean_exit, run_module


def sample_folder(root: Path, annotations: list | None = None, keypoint_names: tuple[str, ...] = ()) -> list[Path]:
    """A COCO-layout folder (``annotations.json`` + ``images/``) of 3 photos made from the sample (as is, mirrored,
    downscaled); returns the image paths in file order."""
    image = load_image(sample_image_path())
    variants = {"sample.png": image, "sample_mirrored.png": np.ascontiguousarray(image[:, ::-1]),
                "sample_small.png": cv2.resize(image, (320, 320), interpolation=cv2.INTER_AREA)}
    (root / "images").mkdir(parents=True)
    entries = []
    for i, (name, pixels) in enumerate(variants.items(), start=1):
        save_image(root / "images" / name, pixels)
        entries.append({"id": i, "file_name": name, "width": pixels.shape[1], "height": pixels.shape[0]})
    category = {"id": 1, "name": "person", **({"keypoints": list(keypoint_names)} if keypoint_names else {})}
    (root / "annotations.json").write_text(json.dumps({"images": entries, "annotations": annotations or [],
                                                       "categories": [category]}))
    return [root / "images" / e["file_name"] for e in entries]


def official_ground_truth(root: Path) -> Path:
    """A COCO-layout folder ``root/gt`` whose ground truth is the official pipeline's own poses on the 3 photos of
    :func:`sample_folder` (LSPET's 12 points); returns its ``annotations.json``."""
    images = sample_folder(root / "ds")
    tracker = PoseTracker.from_official()
    names = list(ood_guard.ANNOTATED)
    annotations = []
    for i, path in enumerate(images, start=1):
        [pose] = tracker.process(load_image(path))
        values = [[*map(float, pose.keypoints[BLAZEPOSE_33.index(n), :2]), 2] for n in names]
        annotations.append({"id": i, "image_id": i, "category_id": 1, "iscrowd": 0,
                            "keypoints": [v for triple in values for v in triple]})
    sample_folder(root / "gt", annotations, tuple(names))
    return root / "gt" / "annotations.json"


class Shifted:
    """A landmark runner whose landmarks are moved by (dx, dy) crop pixels, without its heatmap output (so that
    the heatmap refinement cannot pull them back)."""

    def __init__(self, runner: ModelRunner, dx: float, dy: float):
        keep = [i for i, role in enumerate(runner.output_roles) if role != "heatmap"]
        self.runner = runner
        self.label = f"{runner.label} shifted"
        self.input_shape = runner.input_shape
        self.output_roles = [runner.output_roles[i] for i in keep]
        self.output_shapes = [runner.output_shapes[i] for i in keep]
        self.shift = np.array([dx, dy, 0.0, 0.0, 0.0], np.float32)

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        out = dict(self.runner(batch))
        out.pop("heatmap", None)
        n = out["landmarks"].shape[0]
        out["landmarks"] = (out["landmarks"].reshape(n, -1, 5) + self.shift).reshape(n, -1)
        return out


def official_pipeline() -> ood_guard.Pipeline:
    return ood_guard.Pipeline("official", official_model_path("pose_detection"),
                              official_model_path("pose_landmark_full"))


def test_point_lists_come_from_the_topology() -> None:
    assert len(ood_guard.ANNOTATED) == 12 and len(ood_guard.UNANNOTATED) == 21
    assert set(ood_guard.ANNOTATED) | set(ood_guard.UNANNOTATED) == set(BLAZEPOSE_33.keypoints)
    assert {g: len(v) for g, v in ood_guard.UNANNOTATED_GROUPS.items()} == {"face": 11, "hands": 6, "feet": 4}
    assert "left_heel" in ood_guard.UNANNOTATED and "left_hip" in ood_guard.ANNOTATED


def test_lspet_names_are_the_files(shared_data: Path) -> None:
    doc = read_json(shared_data / "lspet" / "annotations.json", "annotations file")
    assert tuple(doc["categories"][0]["keypoints"]) == ood_guard.LSPET_KEYPOINTS


def test_missing_folder_is_one_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        ood_guard.image_files(tmp_path / "absent")


def test_the_guard_uses_only_the_photos_training_leaves_out(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    names = [f"yoga_{i:03d}.jpg" for i in range(40)]
    for n in names:
        (tmp_path / "photos" / n).write_bytes(b"")
    guard = ood_guard.image_files(tmp_path / "photos")
    assert [p.name for p in guard] == [n for n in names if is_guard_image(n)] and 0 < len(guard) < 20
    assert len(ood_guard.image_files(tmp_path / "photos", subset="all")) == 40
    assert len(ood_guard.image_files(tmp_path / "photos", limit=2)) == 2


def test_reference_agrees_with_itself_and_is_cached(official_models, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    images = sample_folder(tmp_path / "photos")
    assert ood_guard.image_files(tmp_path / "photos", subset="all") == images
    ref = official_pipeline()
    [result] = ood_guard.measure([ref], images, reference=ref, cache_dir=tmp_path / "cache")
    assert result.found == 1.0 and result.num_compared == 3
    assert result.agreement == 1.0 and result.agreement_annotated == 1.0
    assert len(list((tmp_path / "cache").glob("*.json"))) == 1

    def no_models(*args, **kwargs):
        raise AssertionError("the cache should have answered")

    monkeypatch.setattr(ood_guard.Pipeline, "tracker", no_models)
    again = ood_guard.cached_predictions(ref, images, tmp_path / "cache")
    assert all(np.allclose(a, b, atol=0.01) for a, b in zip(again, ood_guard.run_images(
        PoseTracker.from_official().process, images)))


def test_a_perturbed_model_agrees_less(official_models, tmp_path: Path) -> None:
    images = sample_folder(tmp_path / "photos")
    reference = ood_guard.cached_predictions(official_pipeline(), images, tmp_path / "cache")
    shifted = PoseTracker(TFLiteRunner(official_model_path("pose_detection")),
                          Shifted(TFLiteRunner(official_model_path("pose_landmark_full")), 12.0, 0.0))
    result = ood_guard.compare("shifted", reference, ood_guard.run_images(shifted.process, images))
    assert result.found == 1.0
    assert result.agreement is not None and result.agreement < 0.5
    assert result.agreement_annotated is not None and result.agreement_annotated < 0.5


def bad_photos(folder: Path) -> list[Path]:
    """An empty .jpg and a truncated .png (a cut-off copy) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "truncated.png").write_bytes(sample_image_path().read_bytes()[:200])
    return [folder / "empty.jpg", folder / "truncated.png"]


def test_unreadable_photos_are_left_out_of_the_shares_and_named():
    """One photo with a pose and two unreadable ones: poses found 100% of the one readable photo (not 33%), both
    unreadable photos counted and named, in the result and the Markdown."""
    pose = np.full((BLAZEPOSE_33.num_keypoints, 2), 50.0)
    outcomes = [pose, "image file is empty (0 bytes): b.jpg", "cannot decode image c.png: truncated"]
    result = ood_guard.compare("p", outcomes, outcomes)
    assert (result.num_images, result.num_readable, result.num_found, result.found) == (3, 1, 1, 1.0)
    assert result.errors == 2 and result.unreadable == outcomes[1:] and result.num_compared == 1
    assert ood_guard.unreadable_images([result]) == outcomes[1:]
    none = ood_guard.compare("p", [outcomes[1]], [outcomes[1]])
    assert none.num_readable == 0 and math.isnan(none.found)
    text = ood_guard.markdown([result], {"num_images": 3, "unreadable": outcomes[1:], "subset": "all",
                                         "data": "d", "threshold": 0.1})
    assert text.startswith("Out-of-domain guard on 1 readable photos (2 of the 3 could not be read and are left "
                           "out of every share; first: image file is empty (0 bytes): b.jpg)")
    assert "| p | 100.0 | 1 |" in text


def test_why_a_photo_is_unreadable_is_not_cached_and_loads_no_model(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A cached photo plus unreadable ones: the models never load (nothing readable is new), and the unreadable
    photos are not written to the cache (each run names its own files)."""
    (tmp_path / "d.tflite").write_bytes(b"detector")
    (tmp_path / "l.tflite").write_bytes(b"landmarks")
    pipeline = ood_guard.Pipeline("fake", tmp_path / "d.tflite", tmp_path / "l.tflite")
    good = sample_folder(tmp_path / "photos")[0]
    bad = bad_photos(tmp_path / "photos" / "images")

    class Tracker:
        def process(self, image: np.ndarray) -> list:
            return []   # no pose

    monkeypatch.setattr(ood_guard.Pipeline, "tracker", lambda self, num_threads=1: Tracker())
    first = ood_guard.cached_predictions(pipeline, [good, *bad], tmp_path / "cache")
    assert first[0] is None and all(isinstance(o, str) for o in first[1:])
    assert "empty" in first[1] and str(bad[1]) in first[2]
    [cache_file] = (tmp_path / "cache").glob("*.json")
    assert len(json.loads(cache_file.read_text())["predictions"]) == 1     # only the readable photo

    def no_models(*args, **kwargs):
        raise AssertionError("no readable photo is new: the models should not load")

    monkeypatch.setattr(ood_guard.Pipeline, "tracker", no_models)
    again = ood_guard.cached_predictions(pipeline, [good, *bad], tmp_path / "cache")
    assert again[0] is None and again[1:] == first[1:]


def test_command_reports_unreadable_photos_and_refuses_when_none_is_readable(official_models, tmp_path: Path):
    """The audit's two runs: with one readable photo of three, a warning, 100% found, the two named in the JSON
    and the Markdown; with none readable, one error line (exit 3) and the earlier reports kept as they were."""
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "person.png").write_bytes(sample_image_path().read_bytes())
    bad_photos(photos)
    js, md = tmp_path / "og.json", tmp_path / "og.md"
    args = ("--subset", "all", "--models", "official", "--cache_dir", tmp_path / "cache", "--json", js,
            "--markdown", md, "--noprogress")
    proc = run_module("benchmarks.ood_guard", "--data", photos, *args, timeout=300)
    assert_clean_exit(proc, 0)
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: 2 of the 3 photos could not be read and are left out of every share; first: "
                        f"image file is empty (0 bytes): {photos / 'empty.jpg'}"]
    doc = json.loads(js.read_text())
    assert doc["info"]["num_images"] == 3 and doc["info"]["num_readable"] == 1
    assert len(doc["info"]["unreadable"]) == 2 and str(photos / "truncated.png") in doc["info"]["unreadable"][1]
    [result] = doc["results"]
    assert (result["found"], result["num_readable"], result["errors"]) == (1.0, 1, 2)
    assert "Out-of-domain guard on 1 readable photos (2 of the 3 could not be read" in md.read_text()

    before = (js.read_bytes(), md.read_bytes())
    only_bad = tmp_path / "badimgs"
    bad_photos(only_bad)
    proc = run_module("benchmarks.ood_guard", "--data", only_bad, *args, timeout=300)
    assert_clean_exit(proc, EXIT_NO_INPUT, f"error: none of the 2 photos of --data {only_bad} could be read; first: "
                      f"image file is empty (0 bytes): {only_bad / 'empty.jpg'}")
    assert (js.read_bytes(), md.read_bytes()) == before
    assert not [line for line in proc.stdout.splitlines() if line.startswith("|")]   # no table either
