"""Rotated-ROI overlap (codecs/roi.py): corners, shoelace area, convex clipping and the exact IoU, checked against
closed forms and OpenCV's rotated-rectangle intersection."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from blazepose_tf.codecs.roi import convex_intersection, polygon_area, project_to_image, roi_corners, roi_iou
from blazepose_tf.types import Roi


def test_corners_are_where_the_crop_corners_come_from():
    roi = Roi(40.0, -7.0, 30.0, 18.0, 0.7)
    unit = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    np.testing.assert_allclose(roi_corners(roi), project_to_image(unit, roi), atol=1e-4)
    assert polygon_area(roi_corners(roi)) == pytest.approx(30.0 * 18.0)
    assert polygon_area(roi_corners(roi)[::-1]) == pytest.approx(-30.0 * 18.0)
    assert polygon_area(np.zeros((2, 2))) == 0.0


def test_iou_closed_forms():
    a = Roi(0.0, 0.0, 2.0, 2.0, 0.0)
    assert roi_iou(a, a) == pytest.approx(1.0)
    assert roi_iou(a, Roi(1.0, 0.0, 2.0, 2.0, 0.0)) == pytest.approx(2.0 / 6.0)          # half overlaps
    assert roi_iou(a, Roi(0.0, 0.0, 1.0, 1.0, 1.234)) == pytest.approx(0.25)             # inside, any angle
    assert roi_iou(a, Roi(5.0, 0.0, 2.0, 2.0, 0.3)) == 0.0                               # apart
    assert roi_iou(a, Roi(2.0, 0.0, 2.0, 2.0, 0.0)) == pytest.approx(0.0, abs=1e-12)     # touching edges
    assert roi_iou(a, Roi(0.0, 0.0, 2.0, 2.0, math.pi / 2)) == pytest.approx(1.0)        # a quarter turn of a square
    # the same square turned 45°: a regular octagon of area 2(√2 − 1)·s², IoU = 1/√2
    assert roi_iou(a, Roi(0.0, 0.0, 2.0, 2.0, math.pi / 4)) == pytest.approx(1 / math.sqrt(2))
    assert roi_iou(a, Roi(0.0, 0.0, 0.0, 2.0, 0.0)) == 0.0
    assert roi_iou(a, Roi(float("nan"), 0.0, 2.0, 2.0, 0.0)) == 0.0


def test_iou_matches_opencv_on_random_rectangles():
    rng = np.random.default_rng(0)
    for _ in range(200):
        a, b = (Roi(*rng.uniform(-20, 20, 2), *rng.uniform(5, 40, 2), rng.uniform(-math.pi, math.pi))
                for _ in range(2))
        got = roi_iou(a, b)
        assert got == pytest.approx(roi_iou(b, a), abs=1e-12)
        rects = [((r.x_center, r.y_center), (r.width, r.height), math.degrees(r.rotation)) for r in (a, b)]
        kind, pts = cv2.rotatedRectangleIntersection(*rects)
        inter = 0.0 if pts is None else cv2.contourArea(cv2.convexHull(pts))
        expect = inter / (a.width * a.height + b.width * b.height - inter)
        assert got == pytest.approx(expect, abs=1e-4)


def test_convex_intersection_of_triangles():
    tri = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    square = np.array([[0.0, 0.0], [0.0, 2.0], [2.0, 2.0], [2.0, 0.0]])   # the other winding
    assert abs(polygon_area(convex_intersection(tri, square))) == pytest.approx(4.0)
    assert abs(polygon_area(convex_intersection(square, tri))) == pytest.approx(4.0)
    assert len(convex_intersection(tri, tri + 10)) == 0
