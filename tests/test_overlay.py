"""Tests for blazepose_tf.overlay."""
from __future__ import annotations

import math

import numpy as np
import pytest

from blazepose_tf.errors import UserError
from blazepose_tf.io.images import load_image
from blazepose_tf.overlay import LEFT_COLOR, RIGHT_COLOR, draw_poses, line_thickness, save_image
from blazepose_tf.topology import BLAZEPOSE_33, Topology
from blazepose_tf.types import Pose, Roi

# left point, right point and a centre point joined by one edge (left - right)
MINI = Topology(name="mini", keypoints=("left_a", "right_a", "nose"), edges=((0, 1),))


def _pose(points, visibility=None, roi=None) -> Pose:
    pts = np.asarray(points, dtype=np.float64)
    n = len(pts)
    kp = np.concatenate([pts, np.zeros((n, 1))], axis=1)
    vis = np.ones(n) if visibility is None else np.asarray(visibility, dtype=np.float64)
    return Pose(keypoints=kp, visibility=vis, presence=np.ones(n), score=0.9,
                roi=roi if roi is not None else Roi(100.0, 100.0, 20.0, 20.0),
                aux_keypoints=np.zeros((2, 2)))


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.any(a != b, axis=2)


def test_edge_pixels_change_and_input_untouched():
    image = np.zeros((200, 200, 3), np.uint8)
    before = image.copy()
    pose = _pose([(30, 50), (170, 50), (100, 150)])
    out = draw_poses(image, [pose], topology=MINI, draw_roi=False)
    np.testing.assert_array_equal(image, before)          # input untouched
    assert out.shape == image.shape and out.dtype == np.uint8
    assert not np.shares_memory(out, image)
    changed = _changed(out, image)
    for x in (60, 80, 100, 120, 140):                      # along the edge, away from the dots
        assert changed[50, x], x
    assert not changed[120, 60]                            # far from any drawing
    assert not changed[100, 30]
    assert changed[150, 100]                               # centre keypoint dot, not on any edge


def test_roi_corners_are_drawn():
    image = np.full((240, 320, 3), 40, np.uint8)
    roi = Roi(x_center=160.0, y_center=120.0, width=120.0, height=80.0, rotation=0.4)
    pose = _pose([(160, 120), (165, 120), (160, 125)], roi=roi)
    out = draw_poses(image, [pose], topology=MINI, draw_roi=True)
    no_roi = draw_poses(image, [pose], topology=MINI, draw_roi=False)
    for cx, cy in roi.corners():
        x, y = int(round(cx)), int(round(cy))
        assert _changed(out, image)[y - 2:y + 3, x - 2:x + 3].any(), (x, y)
        assert not _changed(no_roi, image)[y - 2:y + 3, x - 2:x + 3].any(), (x, y)
    # the middle of a long side is drawn too
    c = roi.corners()
    mx, my = (c[1] + c[2]) / 2
    assert _changed(out, image)[int(round(my)) - 2:int(round(my)) + 3, int(round(mx)) - 2:int(round(mx)) + 3].any()


def test_empty_pose_list_returns_copy():
    image = np.random.default_rng(0).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    out = draw_poses(image, [])
    np.testing.assert_array_equal(out, image)
    assert not np.shares_memory(out, image)


def test_left_right_colors_and_hollow_low_visibility():
    image = np.zeros((200, 200, 3), np.uint8)
    pose = _pose([(40, 40), (160, 40), (100, 160)], visibility=[0.9, 0.9, 0.1])
    out = draw_poses(image, [pose], topology=MINI, draw_roi=False)
    np.testing.assert_array_equal(out[40, 40], LEFT_COLOR)
    np.testing.assert_array_equal(out[40, 160], RIGHT_COLOR)
    # the invisible centre point is a hollow circle: its centre stays untouched, its ring is drawn
    assert not _changed(out, image)[160, 100]
    assert _changed(out, image)[152:169, 92:109].any()
    high = draw_poses(image, [_pose([(40, 40), (160, 40), (100, 160)])], topology=MINI, draw_roi=False)
    assert _changed(high, image)[160, 100]


def test_line_thickness_scales_with_image_size():
    assert line_thickness(1, 1) == 1
    assert line_thickness(480, 640) == 2
    assert line_thickness(1080, 1920) > line_thickness(480, 640)

    def width_of_line(size: int) -> int:
        image = np.zeros((size, size, 3), np.uint8)
        pose = _pose([(size * 0.1, size * 0.5), (size * 0.9, size * 0.5), (size * 0.5, size * 0.9)])
        out = draw_poses(image, [pose], topology=MINI, draw_roi=False)
        return int(_changed(out, image)[:, size // 3].sum())

    assert width_of_line(1600) > width_of_line(200)


def test_full_blazepose_skeleton_and_bad_points():
    image = np.zeros((300, 300, 3), np.uint8)
    rng = np.random.default_rng(3)
    pts = rng.uniform(50, 250, (33, 2))
    pts[5] = (math.nan, math.nan)                          # undrawable points are skipped
    pts[6] = (1e12, -1e12)
    pose = _pose(pts, visibility=rng.uniform(0, 1, 33))
    out = draw_poses(image, [pose, pose], topology=BLAZEPOSE_33)
    assert _changed(out, image).sum() > 500
    # every drawable edge's midpoint is drawn on
    for a, b in BLAZEPOSE_33.edges:
        if {a, b} & {5, 6}:
            continue
        mx, my = np.rint((pts[a] + pts[b]) / 2).astype(int)
        assert _changed(out, image)[my - 1:my + 2, mx - 1:mx + 2].any(), (a, b)


def test_tiny_image():
    image = np.zeros((1, 1, 3), np.uint8)
    out = draw_poses(image, [_pose([(0, 0), (0.5, 0.5), (0.2, 0.2)])], topology=MINI)
    assert out.shape == (1, 1, 3)


def test_rejects_non_rgb_input():
    with pytest.raises(ValueError):
        draw_poses(np.zeros((4, 4, 4), np.uint8), [])
    with pytest.raises(ValueError):
        draw_poses(np.zeros((4, 4, 3), np.float32), [])


def test_save_image_png_roundtrip(tmp_path):
    rgb = np.random.default_rng(4).integers(0, 256, (17, 19, 3), dtype=np.uint8)
    save_image(tmp_path / "out.png", rgb)
    np.testing.assert_array_equal(load_image(tmp_path / "out.png"), rgb)


def test_save_image_jpeg_keeps_rgb_order(tmp_path):
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 0] = 250
    for name in ("out.jpg", "out.JPEG"):
        save_image(tmp_path / name, rgb)
        back = load_image(tmp_path / name)
        assert back.shape == rgb.shape
        assert back[..., 0].min() > 230 and back[..., 2].max() < 25


def test_save_image_errors(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(UserError, match="out.gif"):
        save_image(tmp_path / "out.gif", rgb)
    with pytest.raises(UserError, match="does not exist"):
        save_image(tmp_path / "missing" / "out.png", rgb)
    (tmp_path / "taken.png").mkdir()
    with pytest.raises(UserError, match="taken.png"):
        save_image(tmp_path / "taken.png", rgb)
