"""Tests for ROI geometry: alignment ROI, crop warps, projections and letterboxing (docs/design.md §5)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from blazepose_tf.codecs.roi import (alignment_roi, crop, crop_matrix, image_to_crop, letterbox_roi,
                                     normalize_radians, pad_roi_to_aspect, project_to_image, remove_letterbox)
from blazepose_tf.types import Roi


def _expected_rotation(center, scale_point) -> float:
    """docs/design.md §5: rotation = 90° − atan2(−(y1 − y0), x1 − x0), wrapped to [−π, π]."""
    dx, dy = scale_point[0] - center[0], scale_point[1] - center[1]
    r = math.pi / 2 - math.atan2(-dy, dx)
    return math.atan2(math.sin(r), math.cos(r))


def test_alignment_roi_upright():
    roi = alignment_roi(np.array([100.0, 200.0]), np.array([100.0, 120.0]))
    assert roi.rotation == pytest.approx(0.0, abs=1e-12)
    assert roi.width == pytest.approx(2 * 80 * 1.25)
    assert roi.height == pytest.approx(2 * 80 * 1.25)
    assert (roi.x_center, roi.y_center) == (100.0, 200.0)
    assert alignment_roi(np.array([0.0, 0.0]), np.array([0.0, -10.0]), scale=1.0).width == pytest.approx(20.0)


@pytest.mark.parametrize("dx, dy", [(80, 0), (-80, 0), (0, 80), (30, -40), (-25, 60), (1, -100)])
def test_alignment_roi_rotation_sign(dx, dy):
    c = np.array([50.0, 60.0])
    roi = alignment_roi(c, c + [dx, dy])
    expected = _expected_rotation(c, c + [dx, dy])
    # Compare angles modulo 2π (−π and π are the same rotation).
    assert math.cos(roi.rotation - expected) == pytest.approx(1.0, abs=1e-12)
    assert -math.pi <= roi.rotation <= math.pi
    if (dx, dy) == (80, 0):  # kp1 to the right: 90° − atan2(0, 80) = +90°
        assert roi.rotation == pytest.approx(math.pi / 2)
    if (dx, dy) == (-80, 0):  # kp1 to the left: 90° − 180° = −90°
        assert roi.rotation == pytest.approx(-math.pi / 2)


@pytest.mark.parametrize("seed", range(5))
def test_alignment_roi_puts_scale_point_straight_up_in_crop(seed):
    # Whatever the direction, in the crop the scale point is straight above the centre at distance r / side.
    rng = np.random.default_rng(seed)
    c = rng.uniform(0, 500, 2)
    p = c + rng.uniform(-200, 200, 2)
    roi = alignment_roi(c, p, scale=1.25)
    uv = image_to_crop(np.stack([c, p]), roi)
    np.testing.assert_allclose(uv[0], [0.5, 0.5], atol=1e-5)
    np.testing.assert_allclose(uv[1], [0.5, 0.5 - 1 / (2 * 1.25)], atol=1e-5)


def test_normalize_radians():
    for a in np.linspace(-20, 20, 81):
        n = normalize_radians(float(a))
        assert -math.pi <= n < math.pi
        assert math.cos(n - a) == pytest.approx(1.0) and math.sin(n - a) == pytest.approx(0.0, abs=1e-9)


def _random_roi(rng, square: bool, rotated: bool) -> Roi:
    w = float(rng.uniform(10, 300))
    h = w if square else float(rng.uniform(10, 300))
    return Roi(float(rng.uniform(-50, 400)), float(rng.uniform(-50, 400)), w, h,
               float(rng.uniform(-math.pi, math.pi)) if rotated else 0.0)


def _check_inverse(roi: Roi, rng) -> None:
    pts = rng.uniform(-100, 500, size=(50, 2))
    back = project_to_image(image_to_crop(pts, roi), roi)
    np.testing.assert_allclose(back, pts, atol=1e-3)
    uv = rng.uniform(-0.5, 1.5, size=(50, 2))
    np.testing.assert_allclose(image_to_crop(project_to_image(uv, roi), roi), uv, atol=1e-5)


@pytest.mark.parametrize("square, rotated", [(True, True), (False, False)],
                         ids=["square-rotated", "nonsquare-upright"])
def test_project_and_image_to_crop_are_inverse(square, rotated):
    rng = np.random.default_rng(0)
    for _ in range(20):
        _check_inverse(_random_roi(rng, square, rotated), rng)



def test_project_and_image_to_crop_are_inverse_nonsquare_rotated():
    rng = np.random.default_rng(1)
    for _ in range(20):
        _check_inverse(_random_roi(rng, square=False, rotated=True), rng)


def test_project_to_image_corners_and_z_square():
    roi = Roi(100.0, 50.0, 40.0, 40.0, math.radians(30))
    uv = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float64)
    np.testing.assert_allclose(project_to_image(uv, roi), roi.corners(), atol=1e-4)
    pts = project_to_image(np.array([[0.5, 0.5, 0.25]]), roi)
    np.testing.assert_allclose(pts[0], [100.0, 50.0, 0.25 * 40.0], atol=1e-5)


def test_project_to_image_corners_nonsquare_rotated():
    roi = Roi(100.0, 50.0, 40.0, 20.0, math.radians(30))
    uv = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float64)
    np.testing.assert_allclose(project_to_image(uv, roi), roi.corners(), atol=1e-4)


def test_crop_matrix_maps_roi_corners_to_crop_corners():
    roi = Roi(120.0, 80.0, 60.0, 90.0, math.radians(-40))
    m = crop_matrix(roi, 64, 96)
    corners = roi.corners()
    mapped = corners @ m[:, :2].T + m[:, 2]
    np.testing.assert_allclose(mapped, [[0, 0], [64, 0], [64, 96], [0, 96]], atol=1e-6)


@pytest.mark.parametrize("degrees", [0.0, 30.0, -120.0])
def test_crop_places_dot_where_image_to_crop_says(degrees):
    h, w = 240, 320
    image = np.zeros((h, w, 3), np.uint8)
    dot = np.array([205.0, 97.0])
    image[96:99, 204:207] = 255  # 3x3 bright square centred on the dot pixel
    roi = Roi(180.0, 120.0, 150.0, 150.0, math.radians(degrees))
    size = 128
    out = crop(image, roi, size, size)
    assert out.shape == (size, size, 3) and out.dtype == np.uint8
    weights = out[..., 0].astype(np.float64)
    assert weights.max() > 100
    ys, xs = np.mgrid[0:size, 0:size]
    found = np.array([(weights * xs).sum(), (weights * ys).sum()]) / weights.sum()
    expected = image_to_crop(dot[None], roi)[0] * size
    assert np.abs(found - expected).max() <= 1.0, (found, expected)


def test_crop_content_matches_rotation():
    # A horizontal bar in a crop rotated by 90° becomes a vertical bar.
    image = np.zeros((200, 200), np.uint8)
    image[98:103, 40:160] = 200
    out = crop(image, Roi(100.0, 100.0, 160.0, 160.0, math.pi / 2), 160, 160)
    # Rotation +90°: the crop's x axis runs down the image, so image row 100 ± 2 becomes crop column 80 ± 2
    # and image columns 40..160 become crop rows 80 - (x - 100), i.e. 140..20.
    assert out[:, :76].max() == 0 and out[:, 85:].max() == 0
    assert out[25:135, 79:82].min() == 200
    assert out[:15].max() == 0 and out[146:].max() == 0


def test_letterbox_wide_and_tall():
    roi, pad = letterbox_roi(200, 100)
    np.testing.assert_allclose(pad, [0.0, 0.25, 0.0, 0.25])
    assert (roi.x_center, roi.y_center, roi.width, roi.height, roi.rotation) == (100, 50, 200, 200, 0)
    roi, pad = letterbox_roi(100, 200)
    np.testing.assert_allclose(pad, [0.25, 0.0, 0.25, 0.0])
    assert (roi.x_center, roi.y_center, roi.width, roi.height) == (50, 100, 200, 200)
    roi, pad = letterbox_roi(64, 64)
    np.testing.assert_allclose(pad, [0, 0, 0, 0])
    # Non-square output: a square image into a 2:1 (w:h) tensor is padded left/right by 1/4.
    roi, pad = letterbox_roi(100, 100, 200, 100)
    np.testing.assert_allclose(pad, [0.25, 0.0, 0.25, 0.0])
    assert (roi.width, roi.height) == (200, 100)


def test_pad_roi_keeps_rotation_and_center():
    roi, pad = pad_roi_to_aspect(Roi(10.0, 20.0, 30.0, 60.0, 0.7), 256, 256)
    assert (roi.x_center, roi.y_center, roi.width, roi.height, roi.rotation) == (10.0, 20.0, 60.0, 60.0, 0.7)
    np.testing.assert_allclose(pad, [0.25, 0, 0.25, 0])


def test_remove_letterbox_inverse():
    rng = np.random.default_rng(3)
    content = rng.uniform(0, 1, size=(20, 2))
    for pad in ([0.0, 0.25, 0.0, 0.25], [0.25, 0.0, 0.25, 0.0], [0.1, 0.05, 0.2, 0.15]):
        l, t, r, b = pad
        padded = np.stack([l + content[:, 0] * (1 - l - r), t + content[:, 1] * (1 - t - b)], axis=1)
        np.testing.assert_allclose(remove_letterbox(padded, np.array(pad)), content, atol=1e-6)


@pytest.mark.parametrize("w, h", [(200, 100), (100, 200), (317, 211)])
def test_letterbox_crop_coordinates_map_back_to_image(w, h):
    # A pixel's normalized position in the letterboxed tensor, un-padded, is its position in the image.
    roi, pad = letterbox_roi(w, h)
    rng = np.random.default_rng(w)
    pts = rng.uniform(0, 1, size=(30, 2)) * [w, h]
    uv = image_to_crop(pts, roi)
    np.testing.assert_allclose(remove_letterbox(uv, pad), pts / [w, h], atol=1e-5)


def _edge_image() -> np.ndarray:
    h, w = 64, 96
    img = np.full((h, w), 200, np.uint8)
    img[:, 0] = (np.arange(h) * 3 + 10).astype(np.uint8)  # left edge column varies per row
    return img


def test_crop_border_zero_and_replicate():
    img = _edge_image()
    h = img.shape[0]
    # A square ROI centred on the left edge, crop at scale 1: crop pixel (u, v) <- image pixel (u - h/2, v).
    roi = Roi(0.0, h / 2, float(h), float(h), 0.0)
    zero = crop(img, roi, h, h, border="zero")
    rep = crop(img, roi, h, h, border="replicate")
    outside = slice(0, h // 2 - 1)
    inside = slice(h // 2 + 1, h)
    assert (zero[:, outside] == 0).all()
    assert (zero[:, inside] == 200).all()
    expected = np.repeat(img[:, :1], h // 2 - 1, axis=1)
    np.testing.assert_array_equal(rep[:, outside], expected)
    assert (rep[:, inside] == 200).all()
    with pytest.raises(KeyError):
        crop(img, roi, h, h, border="reflect")


def test_crop_rejects_invalid_roi():
    img = np.zeros((10, 10, 3), np.uint8)
    for roi in (Roi(5, 5, 0, 10), Roi(5, 5, 10, -1), Roi(float("nan"), 5, 10, 10), Roi(5, 5, 10, 10, float("inf"))):
        with pytest.raises(ValueError):
            crop(img, roi, 8, 8)
