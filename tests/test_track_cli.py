"""End-to-end tests of ``python -m blazepose_tf.track`` through the command line (subprocesses).

Covers the documented JSON schema and exit codes (0 ok, 2 bad flags, 3 nothing processable, 4 models missing,
5 some inputs skipped) on good and bad inputs: missing paths, text files named .jpg, zero-byte files,
grayscale / RGBA / 16-bit / 1x1 images, images without a person, empty and truncated videos. Every failure
must be a one-line ``error:``/``skipped:`` message, never a traceback.

Each subprocess loads the TFLite models (~1-2 s), so bad inputs are batched into directory runs. Runs that
reach the models skip when the official models are unavailable (offline and not cached); flag errors are
rejected before any model is loaded and always run.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from blazepose_tf.errors import EXIT_NO_INPUT, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE
from blazepose_tf.io.images import load_image
from blazepose_tf.io.provenance import written_here
from blazepose_tf.io.samples import sample_image_path

REPO = Path(__file__).resolve().parents[1]
TOP_KEYS = {"written_by", "schema", "models", "mode", "keypoint_names", "results", "errors", "summary"}
RESULT_KEYS = {"source", "frame", "timestamp", "width", "height", "overlay", "poses"}
POSE_KEYS = {"score", "keypoints", "roi", "detection_score"}
ROI_KEYS = {"x_center", "y_center", "width", "height", "rotation"}
SUMMARY_KEYS = {"inputs", "processed", "skipped", "frames", "with_pose", "detector_calls"}
# Lines other processes than ours may print to stderr: the TFLite runtime's "INFO: Created TensorFlow Lite
# XNNPACK delegate for CPU." and similar logger lines.
FOREIGN_LOG_PREFIXES = ("INFO: ", "WARNING: ")
OUR_PREFIXES = ("error:", "skipped:", "warning:", "run `python -m blazepose_tf.track --help`")


# --- helpers ------------------------------------------------------------------------------------------------------


def run_track(*args: str) -> subprocess.CompletedProcess:
    # The official models (the checks below describe their output); a --models in args comes later and wins.
    return subprocess.run([sys.executable, "-m", "blazepose_tf.track", "--models=official", *map(str, args),
                           "--noprogress"],
                          cwd=REPO, capture_output=True, text=True, errors="replace", timeout=300)


def check_stderr(proc: subprocess.CompletedProcess, code: int, *expected: tuple[str, str]) -> list[str]:
    """Asserts the exit code, no traceback, and that every stderr line is one of ours (or a runtime log line).

    ``expected``: (prefix, substring) pairs, each of which must match one stderr line.
    Returns our stderr lines.
    """
    report = f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == code, report
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, report
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith(FOREIGN_LOG_PREFIXES)]
    strange = [ln for ln in lines if not ln.startswith(OUR_PREFIXES)]
    assert not strange, f"unexpected stderr lines {strange}\n{report}"
    for prefix, text in expected:
        assert any(ln.startswith(prefix) and text in ln for ln in lines), f"no '{prefix} ...{text}...' line\n{report}"
    if code != EXIT_OK:
        assert any(ln.startswith(("error:", "skipped:")) for ln in lines), report
    return lines


def read_doc(path: Path) -> dict:
    doc = json.loads(path.read_text())
    assert set(doc) == TOP_KEYS
    assert doc["schema"] == "blazepose_tf.track/1" and written_here(path)
    assert set(doc["summary"]) == SUMMARY_KEYS
    assert not path.with_name(path.name + ".part").exists()
    return doc


def check_pose(pose: dict, width: int, height: int) -> None:
    assert set(pose) == POSE_KEYS
    assert 0.5 <= pose["score"] <= 1.0
    kps = np.asarray(pose["keypoints"], dtype=np.float64)
    assert kps.shape == (33, 5) and np.isfinite(kps).all()
    assert ((kps[:, 3:] >= 0) & (kps[:, 3:] <= 1)).all()           # visibility, presence
    nose, shoulders = kps[0], kps[11:13]
    assert 0 <= nose[0] < width and 0 <= nose[1] < height            # the head is in the picture
    assert nose[1] < shoulders[:, 1].min()                           # upright person
    roi = pose["roi"]
    assert set(roi) == ROI_KEYS and all(math.isfinite(v) for v in roi.values())
    assert roi["width"] > 0 and roi["height"] > 0 and abs(roi["rotation"]) < math.pi
    assert pose["detection_score"] is None or 0.5 <= pose["detection_score"] <= 1.0


def sample_bgr(size: int | None = None) -> np.ndarray:
    img = cv2.imread(str(sample_image_path()), cv2.IMREAD_COLOR)
    assert img is not None
    return img if size is None else cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)


def write_clip(path: Path, frames: int = 8, size: tuple[int, int] = (256, 160)) -> None:
    """A short MJPG clip: a 128-px sample photo sliding right across a gray canvas."""
    w, h = size
    person = sample_bgr(128)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (w, h))
    assert writer.isOpened()
    for i in range(frames):
        canvas = np.full((h, w, 3), 90, np.uint8)
        x = 8 + 12 * i
        canvas[16:144, x:x + 128] = person
        writer.write(canvas)
    writer.release()


def count_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), path
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


# --- flags: rejected before any model is loaded --------------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["--input", "sample", "--output", "{d}/r.json", "--bogus_flag"], "Unknown command line flag 'bogus_flag'"),
    (["--input", "sample", "--output", "{d}/r.json", "--num_poses=0"], "--num_poses=0"),
    (["--input", "sample", "--output", "{d}/r.json", "--min_detection_confidence=2"], "--min_detection_confidence"),
    (["--input", "sample", "--output", "{d}/r.txt"], "--output must be a .json file"),
    (["--input", "sample"], "--input and --output are required"),
    (["--input", "sample", "--output", "{d}/r.json", "extra"], "unexpected arguments"),
    (["--input", "sample", "--output", "{d}/r.json", "--overlay", "{d}/o.gif"], "--overlay for an image must end in"),
    (["--input", "{d}/clip.avi", "--output", "{d}/r.json", "--overlay", "{d}/o.png"],
     "--overlay for a video must end in .mp4 or .avi"),
    (["--input", "{d}/clip.avi", "--output", "{d}/r.json", "--num_poses=2"], "VIDEO mode tracks one person"),
    (["--input", "{d}", "--output", "{d}/r.json", "--overlay", "{d}/o.png"], "--overlay must be a folder"),
    (["--input", "sample", "--output", "{d}/a_file/r.json"], "a_file is a file, not a folder"),
    (["--input", "sample", "--output", "{d}/folder.json"], "is a directory"),
    (["--input", "sample", "--output", "{d}/r.json", "--overlay", "{d}/a_file/o.png"],
     "a_file is a file, not a folder"),
])
def test_bad_flags_exit_2(tmp_path, args, message):
    (tmp_path / "clip.avi").write_bytes(b"not read: flags are checked first")
    (tmp_path / "img.png").write_bytes(b"")
    (tmp_path / "a_file").write_text("a regular file where a folder is expected")
    (tmp_path / "folder.json").mkdir()
    proc = run_track(*(a.format(d=tmp_path) for a in args))
    check_stderr(proc, EXIT_USAGE, ("error:", message))
    assert not (tmp_path / "r.json").exists()


def test_missing_input_exit_3(tmp_path):
    proc = run_track("--input", tmp_path / "nowhere.jpg", "--output", tmp_path / "r.json")
    check_stderr(proc, EXIT_NO_INPUT, ("error:", f"input not found: {tmp_path / 'nowhere.jpg'}"))


# --- images ----------------------------------------------------------------------------------------------------------


def test_sample_input_json_schema_and_overlay(tmp_path, official_models):
    out, overlay = tmp_path / "out" / "sample.json", tmp_path / "out" / "sample.png"
    proc = run_track("--input", "sample", "--output", out, "--overlay", overlay)
    check_stderr(proc, EXIT_OK)
    assert "1/1 inputs" in proc.stdout and str(out) in proc.stdout
    doc = read_doc(out)
    assert doc["mode"] == "image"
    assert set(doc["models"]) == {"detector", "landmarks"}
    names = doc["keypoint_names"]
    assert len(names) == 33 and len(set(names)) == 33 and names[0] == "nose" and names[11] == "left_shoulder"
    assert doc["errors"] == []
    assert doc["summary"] == {"inputs": 1, "processed": 1, "skipped": 0, "frames": 1, "with_pose": 1,
                              "detector_calls": 1}
    [result] = doc["results"]
    assert set(result) == RESULT_KEYS
    assert Path(result["source"]) == sample_image_path()
    assert result["frame"] is None and result["timestamp"] is None
    assert result["overlay"] == str(overlay)
    assert (result["width"], result["height"]) == (512, 512)
    [pose] = result["poses"]
    check_pose(pose, 512, 512)
    assert pose["detection_score"] is not None
    drawn, original = load_image(overlay), load_image(sample_image_path())
    assert drawn.shape == original.shape
    changed = np.any(drawn != original, axis=2)
    assert changed.sum() > 1000, changed.sum()  # a skeleton was drawn, not a copy of the input


def test_official_lite_set_tracks_the_sample(tmp_path, official_models):
    """``--models official_lite``: MediaPipe's detector + the Lite landmark model the package carries."""
    out = tmp_path / "sample.json"
    proc = run_track("--models", "official_lite", "--input", "sample", "--output", out)
    check_stderr(proc, EXIT_OK)
    doc = read_doc(out)
    assert doc["models"] == {"detector": "official:pose_detection", "landmarks": "official:pose_landmark_lite"}
    [result] = doc["results"]
    [pose] = result["poses"]
    check_pose(pose, 512, 512)


def test_directory_with_bad_images_reports_and_skips(tmp_path, official_models):
    d = tmp_path / "photos"
    d.mkdir()
    bgr = sample_bgr(256)
    cv2.imwrite(str(d / "a_gray.png"), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(d / "b_rgba.png"), cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA))
    (d / "c_text.jpg").write_text("this is a text file, not a JPEG\n")
    (d / "d_empty.jpg").write_bytes(b"")
    (d / "notes.txt").write_text("ignored: not an image extension")
    out, overlays = tmp_path / "r.json", tmp_path / "overlays"
    proc = run_track("--input", d, "--output", out, "--overlay", overlays)
    check_stderr(proc, EXIT_PARTIAL, ("skipped:", str(d / "c_text.jpg")), ("skipped:", str(d / "d_empty.jpg")))
    doc = read_doc(out)
    assert [Path(r["source"]).name for r in doc["results"]] == ["a_gray.png", "b_rgba.png"]
    for r in doc["results"]:
        assert (r["width"], r["height"]) == (256, 256) and r["frame"] is None
        assert len(r["poses"]) == 1
        check_pose(r["poses"][0], 256, 256)
    errors = {Path(e["source"]).name: e["error"] for e in doc["errors"]}
    assert set(errors) == {"c_text.jpg", "d_empty.jpg"}
    assert "cannot decode image" in errors["c_text.jpg"] and "c_text.jpg" in errors["c_text.jpg"]
    assert "empty (0 bytes)" in errors["d_empty.jpg"] and "d_empty.jpg" in errors["d_empty.jpg"]
    assert all("\n" not in e for e in errors.values())
    assert doc["summary"] == {"inputs": 4, "processed": 2, "skipped": 2, "frames": 2, "with_pose": 2,
                              "detector_calls": 2}
    assert sorted(p.name for p in overlays.iterdir()) == ["a_gray.png.png", "b_rgba.png.png"]
    assert [r["overlay"] for r in doc["results"]] == [str(overlays / "a_gray.png.png"),
                                                      str(overlays / "b_rgba.png.png")]


def test_unusual_formats_and_images_without_person(tmp_path, official_models):
    d = tmp_path / "formats"
    d.mkdir()
    bgr = sample_bgr(256)
    cv2.imwrite(str(d / "a_16bit.png"), bgr.astype(np.uint16) * 257)
    cv2.imwrite(str(d / "b_1x1.png"), np.full((1, 1, 3), 200, np.uint8))
    cv2.imwrite(str(d / "c_blank.jpg"), np.full((120, 160, 3), 128, np.uint8))
    cv2.imwrite(str(d / "d_gray16.png"), np.full((40, 30), 30000, np.uint16))
    out = tmp_path / "r.json"
    proc = run_track("--input", d, "--output", out)
    check_stderr(proc, EXIT_OK)   # finding no person is not an error
    doc = read_doc(out)
    by_name = {Path(r["source"]).name: r for r in doc["results"]}
    assert list(by_name) == ["a_16bit.png", "b_1x1.png", "c_blank.jpg", "d_gray16.png"]
    assert len(by_name["a_16bit.png"]["poses"]) == 1
    check_pose(by_name["a_16bit.png"]["poses"][0], 256, 256)
    assert (by_name["b_1x1.png"]["width"], by_name["b_1x1.png"]["height"]) == (1, 1)
    assert (by_name["d_gray16.png"]["width"], by_name["d_gray16.png"]["height"]) == (30, 40)
    for name in ("b_1x1.png", "c_blank.jpg", "d_gray16.png"):
        assert by_name[name]["poses"] == [], name
    assert doc["errors"] == []
    assert doc["summary"]["processed"] == 4 and doc["summary"]["with_pose"] == 1


def test_single_unreadable_image_exit_3(tmp_path, official_models):
    bad = tmp_path / "photo.jpg"
    bad.write_text("hello")
    out = tmp_path / "r.json"
    proc = run_track("--input", bad, "--output", out)
    check_stderr(proc, EXIT_NO_INPUT, ("skipped:", f"cannot decode image {bad}"),
                 ("error:", "no input could be processed"))
    doc = read_doc(out)   # still written, with the reason
    assert doc["results"] == [] and [e["source"] for e in doc["errors"]] == [str(bad)]
    assert doc["summary"]["processed"] == 0 and doc["summary"]["skipped"] == 1


# --- videos ----------------------------------------------------------------------------------------------------------


def test_video_one_result_per_frame_and_overlay(tmp_path, official_models):
    clip = tmp_path / "clip.avi"
    write_clip(clip, frames=8)
    out, overlay = tmp_path / "r.json", tmp_path / "overlay.mp4"
    proc = run_track("--input", clip, "--output", out, "--overlay", overlay)
    check_stderr(proc, EXIT_OK)
    doc = read_doc(out)
    assert doc["mode"] == "video"
    assert [r["frame"] for r in doc["results"]] == list(range(8))
    assert [r["timestamp"] for r in doc["results"]] == pytest.approx([i / 10.0 for i in range(8)])
    for r in doc["results"]:
        assert set(r) == RESULT_KEYS and r["source"] == str(clip) and r["overlay"] == str(overlay)
        assert (r["width"], r["height"]) == (256, 160)
        assert len(r["poses"]) == 1
        check_pose(r["poses"][0], 256, 160)
    noses = [r["poses"][0]["keypoints"][0][0] for r in doc["results"]]
    assert noses[-1] - noses[0] == pytest.approx(7 * 12, abs=15)  # the person moved 12 px a frame
    assert doc["summary"] == {"inputs": 1, "processed": 1, "skipped": 0, "frames": 8, "with_pose": 8,
                              "detector_calls": 1}  # detected once, then tracked
    assert count_frames(overlay) == 8


def test_empty_video_exit_3(tmp_path, official_models):
    empty = tmp_path / "empty.avi"
    writer = cv2.VideoWriter(str(empty), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (64, 48))
    writer.release()   # a valid container with 0 frames
    assert empty.stat().st_size > 0
    out = tmp_path / "r.json"
    proc = run_track("--input", empty, "--output", out, "--overlay", tmp_path / "o.avi")
    check_stderr(proc, EXIT_NO_INPUT, ("skipped:", f"empty video: no decodable frame in {empty}"),
                 ("error:", "no input could be processed"))
    doc = read_doc(out)
    assert doc["results"] == [] and len(doc["errors"]) == 1


def test_truncated_videos(tmp_path, official_models):
    """A video cut in its header cannot be opened (skipped); one cut mid-stream yields the frames before the
    cut with a one-line warning."""
    clip = tmp_path / "clip.avi"
    write_clip(clip, frames=8)
    data = clip.read_bytes()
    d = tmp_path / "videos"
    d.mkdir()
    (d / "a_cut_header.avi").write_bytes(data[:300])
    (d / "b_cut_middle.avi").write_bytes(data[:len(data) // 2])
    out = tmp_path / "r.json"
    proc = run_track("--input", d, "--output", out)
    check_stderr(proc, EXIT_PARTIAL, ("skipped:", f"cannot open video {d / 'a_cut_header.avi'}"),
                 ("warning:", f"{d / 'b_cut_middle.avi'} is truncated: decoded"))
    doc = read_doc(out)
    assert [e["source"] for e in doc["errors"]] == [str(d / "a_cut_header.avi")]
    frames = [r["frame"] for r in doc["results"]]
    assert 1 <= len(frames) < 8 and frames == list(range(len(frames)))
    assert all(r["source"] == str(d / "b_cut_middle.avi") for r in doc["results"])
