"""End-to-end tests of the detector → tracker pipeline on MediaPipe's official models.

The models are fetched (or found in the cache) through ``data.fetch_official``; offline without a cache the
tests skip. Real-photo tests use LSPET images from the shared data folder and skip when it is absent.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from blazepose_tf.errors import InputError, ModelError
from blazepose_tf.runtime.pipeline import PoseTracker
from blazepose_tf.runtime.runners import TFLiteRunner
from blazepose_tf.topology import BLAZEPOSE_33, torso_size

# Upright, single, fully visible people (chosen by looking at the images and their annotations).
UPRIGHT_RUNNER = "im00124.jpg"    # a runner on a track, 137x205
UPRIGHT_STANDING = "im00704.jpg"  # a man standing, facing the camera, 134x176

LS, RS = BLAZEPOSE_33.index("left_shoulder"), BLAZEPOSE_33.index("right_shoulder")
LH, RH = BLAZEPOSE_33.index("left_hip"), BLAZEPOSE_33.index("right_hip")


@pytest.fixture(scope="module")
def official_runners():
    from blazepose_tf.official import official_model_path

    try:
        paths = (official_model_path("pose_detection"), official_model_path("pose_landmark_full"))
    except ModelError as e:
        pytest.skip(f"official MediaPipe models unavailable (offline and not cached?): {e}")
    return TFLiteRunner(paths[0]), TFLiteRunner(paths[1])


def _tracker(runners, **kwargs) -> PoseTracker:
    return PoseTracker(runners[0], runners[1], **kwargs)


def _load_lspet(shared_data: Path, name: str) -> np.ndarray:
    path = shared_data / "lspet" / "images" / name
    if not path.is_file():
        pytest.skip(f"LSPET image {path} not found in the shared data folder")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, path
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _lspet_ground_truth(shared_data: Path, name: str) -> dict[str, np.ndarray]:
    ann = json.loads((shared_data / "lspet" / "annotations.json").read_text())
    names = ann["categories"][0]["keypoints"]
    image_id = next(im["id"] for im in ann["images"] if im["file_name"] == name)
    kps = np.array(next(a for a in ann["annotations"] if a["image_id"] == image_id)["keypoints"]).reshape(-1, 3)
    return {n: kps[i, :2] for i, n in enumerate(names) if kps[i, 2] > 0}


def _mid(points: np.ndarray, a: int, b: int) -> np.ndarray:
    return (points[a, :2] + points[b, :2]) / 2


# --- (a) a real photo in IMAGE mode -----------------------------------------------------------------------------


def test_image_mode_real_photo(official_runners, shared_data):
    image = _load_lspet(shared_data, UPRIGHT_RUNNER)
    h, w = image.shape[:2]
    poses = _tracker(official_runners).process(image)
    assert len(poses) == 1
    pose = poses[0]
    assert pose.keypoints.shape == (33, 3)
    assert np.isfinite(pose.keypoints).all()
    margin = 0.25
    assert (pose.keypoints[:, 0] > -margin * w).all() and (pose.keypoints[:, 0] < (1 + margin) * w).all()
    assert (pose.keypoints[:, 1] > -margin * h).all() and (pose.keypoints[:, 1] < (1 + margin) * h).all()
    assert pose.score > 0.5
    assert pose.visibility.shape == (33,) and ((pose.visibility >= 0) & (pose.visibility <= 1)).all()
    assert pose.presence.shape == (33,) and ((pose.presence >= 0) & (pose.presence <= 1)).all()
    # Upright person: shoulders above hips, hips above ankles, nose above shoulders (image y grows downwards).
    k = pose.keypoints
    assert _mid(k, LS, RS)[1] < _mid(k, LH, RH)[1]
    assert _mid(k, LH, RH)[1] < _mid(k, 27, 28)[1]
    assert k[0, 1] < _mid(k, LS, RS)[1]
    # The crop is upright too (the ROI rotation is small).
    assert abs(pose.roi.rotation) < math.radians(25)
    assert pose.detection is not None and pose.detection.score >= 0.5
    # Against the LSPET ground truth: every annotated body point within 0.3 torso (measured: <= 0.14).
    gt = _lspet_ground_truth(shared_data, UPRIGHT_RUNNER)
    gt33 = np.zeros((33, 2))
    for name in ("left_shoulder", "right_shoulder", "left_hip", "right_hip"):
        gt33[BLAZEPOSE_33.index(name)] = gt[name]
    torso = torso_size(gt33)
    matched = [n for n in gt if n in BLAZEPOSE_33.keypoints]
    assert len(matched) == 12
    errors = [np.linalg.norm(k[BLAZEPOSE_33.index(n), :2] - gt[n]) for n in matched]
    assert max(errors) < 0.3 * torso, dict(zip(matched, np.round(errors, 1)))


# --- (b) nothing to find ----------------------------------------------------------------------------------------


def test_blank_and_tiny_images_return_nothing(official_runners):
    tracker = _tracker(official_runners)
    assert tracker.process(np.full((240, 320, 3), 128, np.uint8)) == []
    assert tracker.process(np.zeros((1, 1, 3), np.uint8)) == []
    assert tracker.process(np.full((1, 1), 255, np.uint8)) == []
    video = _tracker(official_runners, mode="video")
    for _ in range(3):
        assert video.process(np.full((120, 160, 3), 128, np.uint8)) == []
    assert video.detector_calls == 3  # nothing tracked: the detector runs on every frame


def test_invalid_inputs_raise(official_runners):
    tracker = _tracker(official_runners)
    for bad in (np.zeros((0, 10, 3), np.uint8), np.zeros((10, 10, 2), np.uint8), np.zeros((2, 10, 10, 3))):
        with pytest.raises(InputError):
            tracker.process(bad)
    with pytest.raises(ValueError):
        _tracker(official_runners, mode="video", num_poses=2)
    with pytest.raises(ValueError):
        _tracker(official_runners, mode="stream")


# --- (c) grayscale and RGBA inputs ------------------------------------------------------------------------------


@pytest.fixture()
def person_or_synthetic(request) -> tuple[np.ndarray, bool]:
    """A real LSPET person photo if the shared data is there, else a synthetic image (no person expected)."""
    try:
        shared = request.getfixturevalue("shared_data")
    except pytest.skip.Exception:
        rng = np.random.default_rng(0)
        img = np.full((200, 160, 3), 60, np.uint8)
        for _ in range(12):
            x, y = rng.integers(0, 160), rng.integers(0, 200)
            cv2.circle(img, (int(x), int(y)), int(rng.integers(5, 30)), rng.integers(0, 255, 3).tolist(), -1)
        return img, False
    return _load_lspet(shared, UPRIGHT_RUNNER), True


def _same_poses(a, b) -> None:
    assert len(a) == len(b)
    for pa, pb in zip(a, b):
        np.testing.assert_allclose(pa.keypoints, pb.keypoints, atol=1e-4)
        assert pa.score == pytest.approx(pb.score, abs=1e-5)


def test_grayscale_and_rgba_inputs(official_runners, person_or_synthetic):
    rgb, has_person = person_or_synthetic
    tracker = _tracker(official_runners)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    gray_poses = tracker.process(gray)
    _same_poses(gray_poses, tracker.process(np.repeat(gray[..., None], 3, axis=2)))
    _same_poses(tracker.process(gray[..., None]), gray_poses)
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 77, np.uint8)], axis=2)
    rgb_poses = tracker.process(rgb)
    _same_poses(tracker.process(rgba), rgb_poses)
    # Float [0, 1] and 16-bit images are rescaled to the same 8-bit content.
    _same_poses(tracker.process(rgb.astype(np.float32) / 255.0), rgb_poses)
    _same_poses(tracker.process(rgb.astype(np.uint16) * 257), rgb_poses)
    if has_person:
        assert len(gray_poses) == 1 and len(rgb_poses) == 1
        # Colour barely matters for the pose: the hips agree within a few pixels.
        d = np.linalg.norm(_mid(gray_poses[0].keypoints, LH, RH) - _mid(rgb_poses[0].keypoints, LH, RH))
        assert d < 0.1 * torso_size(rgb_poses[0].keypoints)


# --- (d) VIDEO mode tracks without re-detecting -----------------------------------------------------------------

CANVAS_H, CANVAS_W = 360, 480


def _moving_clip(photo: np.ndarray, frames: int, step=(4.0, 2.0), degrees_per_frame: float = 2.0):
    """Frames of ``photo`` pasted on a gray canvas, shifted by ``step`` px and rotated (counter-clockwise on
    screen, about the photo centre) by ``degrees_per_frame`` per frame; with each frame's 2x3 photo→canvas map."""
    ph, pw = photo.shape[:2]
    out = []
    for i in range(frames):
        m = cv2.getRotationMatrix2D((pw / 2, ph / 2), degrees_per_frame * i, 1.0)
        m[:, 2] += [CANVAS_W / 2 - pw / 2 + step[0] * i, CANVAS_H / 2 - ph / 2 + step[1] * i]
        canvas = np.full((CANVAS_H, CANVAS_W, 3), 90, np.uint8)
        cv2.warpAffine(photo, m, (CANVAS_W, CANVAS_H), dst=canvas, flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_TRANSPARENT)
        out.append((canvas, m))
    return out


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def test_video_mode_tracks_moving_person(official_runners, shared_data):
    photo = _load_lspet(shared_data, UPRIGHT_STANDING)
    clip = _moving_clip(photo, 12)
    tracker = PoseTracker.from_official(mode="video")
    results = [tracker.process(frame, timestamp=i / 30.0) for i, (frame, _) in enumerate(clip)]
    assert all(len(r) == 1 for r in results)
    assert tracker.detector_calls == 1  # the ROI was carried by the tracker's auxiliary points
    assert results[0][0].detection is not None and all(r[0].detection is None for r in results[1:])
    # Ground truth motion: map frame 0's torso points through (frame i map) ∘ (frame 0 map)⁻¹.
    first = results[0][0].keypoints
    torso = torso_size(first)
    m0 = np.vstack([clip[0][1], [0, 0, 1]])
    torso_idx = [LS, RS, LH, RH]
    photo_pts = _apply(np.linalg.inv(m0)[:2], first[torso_idx, :2])
    for i, ((_, m), res) in enumerate(zip(clip, results)):
        expected = _apply(m, photo_pts)
        got = res[0].keypoints[torso_idx, :2]
        hips_err = np.linalg.norm(got[2:].mean(0) - expected[2:].mean(0))
        assert hips_err < 0.2 * torso, (i, got[2:].mean(0), expected[2:].mean(0))
        assert np.linalg.norm(got - expected, axis=1).max() < 0.35 * torso, i
    # The hips really moved (44 px right, 22 px down), and the crop turned with the person
    # (counter-clockwise on screen = negative rotation in the clockwise-positive ROI convention).
    moved = _mid(results[-1][0].keypoints, LH, RH) - _mid(first, LH, RH)
    assert moved[0] > 30 and moved[1] > 10
    turn = results[-1][0].roi.rotation - results[0][0].roi.rotation
    assert turn == pytest.approx(-math.radians(2.0 * 11), abs=math.radians(8))


def test_video_mode_redetects_after_losing_the_person(official_runners, shared_data):
    photo = _load_lspet(shared_data, UPRIGHT_STANDING)
    frame = _moving_clip(photo, 1)[0][0]
    blank = np.full_like(frame, 90)
    tracker = _tracker(official_runners, mode="video")
    assert len(tracker.process(frame)) == 1
    assert tracker.process(blank) == []  # tracker presence drops, the detector finds nothing
    calls = tracker.detector_calls
    assert calls == 2
    assert len(tracker.process(frame)) == 1
    assert tracker.detector_calls == calls + 1


# --- (e) smoothing reduces jitter -------------------------------------------------------------------------------


def _noisy_still_clip(photo: np.ndarray, frames: int = 20, sigma: float = 8.0) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [np.clip(photo.astype(np.float32) + rng.normal(0, sigma, photo.shape), 0, 255).astype(np.uint8)
            for _ in range(frames)]


def test_smoothing_reduces_jitter(official_runners, shared_data):
    clip = _noisy_still_clip(_load_lspet(shared_data, UPRIGHT_RUNNER))
    jitter = {}
    for smooth in (True, False):
        tracker = _tracker(official_runners, mode="video", smooth=smooth)
        kps = []
        for i, frame in enumerate(clip):
            poses = tracker.process(frame, timestamp=i / 30.0)
            assert len(poses) == 1
            kps.append(poses[0].keypoints[:, :2])
        assert tracker.detector_calls == 1
        kps = np.array(kps)
        jitter[smooth] = float(np.linalg.norm(np.diff(kps, axis=0), axis=-1).mean())
    assert jitter[False] > 0  # the noise does move the raw landmarks
    assert jitter[True] < 0.75 * jitter[False], jitter


# --- (f) several people in IMAGE mode ---------------------------------------------------------------------------


def test_two_people_side_by_side(official_runners, shared_data):
    left = _load_lspet(shared_data, UPRIGHT_RUNNER)
    right = _load_lspet(shared_data, UPRIGHT_STANDING)
    h = left.shape[0]
    right = cv2.resize(right, (round(right.shape[1] * h / right.shape[0]), h), interpolation=cv2.INTER_LINEAR)
    image = np.hstack([left, right])
    split = left.shape[1]
    poses = _tracker(official_runners, num_poses=2).process(image)
    assert len(poses) == 2
    hips_x = sorted(float(_mid(p.keypoints, LH, RH)[0]) for p in poses)
    assert hips_x[0] < split < hips_x[1]
    for p in poses:
        assert p.score > 0.5 and np.isfinite(p.keypoints).all()
    # num_poses=1 keeps only the best detection.
    assert len(_tracker(official_runners, num_poses=1).process(image)) == 1


# --- (f) IMAGE mode's further passes on the tracker's own ROI -----------------------------------------------------


class _PresenceAfter:
    """A landmark runner that reports ``presence`` from its ``after``-th call on (the other outputs unchanged)."""

    def __init__(self, runner, after: int, presence: float):
        self.runner, self.after, self.presence, self.calls = runner, after, presence, 0
        self.label, self.input_shape = runner.label, runner.input_shape
        self.output_roles, self.output_shapes = runner.output_roles, runner.output_shapes

    def __call__(self, batch):
        self.calls += 1
        out = dict(self.runner(batch))
        if self.calls >= self.after:
            out["presence"] = np.full_like(np.asarray(out["presence"]), self.presence)
        return out


def test_roi_passes_recrop_on_the_trackers_own_roi(official_runners, shared_data):
    from blazepose_tf.runtime.pipeline import roi_from_aux, roi_from_detection

    image = _load_lspet(shared_data, UPRIGHT_STANDING)
    one = _tracker(official_runners, roi_passes=1)
    first = one.process(image)[0]
    assert one.landmarker.calls == 1
    assert first.roi == roi_from_detection(first.detection)  # MediaPipe's graph: the detection's ROI only
    two = _tracker(official_runners, roi_passes=2)
    second = two.process(image)[0]
    assert two.landmarker.calls == 2
    assert second.roi == roi_from_aux(first.aux_keypoints)  # the first pass's own ROI points, cropped again
    assert second.roi != first.roi
    again = one.landmarker(image, second.roi)  # the same step on that ROI gives the same pose
    np.testing.assert_allclose(second.keypoints, again.keypoints, atol=1e-4)
    assert second.detection is not None and second.detection.score == first.detection.score
    three = _tracker(official_runners, roi_passes=3)
    third = three.process(image)[0]
    assert three.landmarker.calls == 3
    assert third.roi == roi_from_aux(second.aux_keypoints)
    video = _tracker(official_runners, mode="video", roi_passes=3)
    video.process(image)
    assert video.landmarker.calls == 1  # VIDEO mode carries the ROI to the next frame instead


def test_roi_passes_keep_the_last_present_pose(official_runners, shared_data):
    image = _load_lspet(shared_data, UPRIGHT_STANDING)
    first = _tracker(official_runners, roi_passes=1).process(image)[0]
    lost = _PresenceAfter(official_runners[1], after=2, presence=0.1)  # the second pass loses the person
    poses = _tracker((official_runners[0], lost), roi_passes=3).process(image)
    assert lost.calls == 2  # no third pass after a lost one
    assert len(poses) == 1 and poses[0].roi == first.roi
    np.testing.assert_allclose(poses[0].keypoints, first.keypoints, atol=1e-4)
    with pytest.raises(ValueError, match="roi_passes"):
        _tracker(official_runners, roi_passes=0)
