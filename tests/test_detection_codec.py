"""Tests for detector tensor decoding, score handling, IoU and weighted NMS (docs/design.md §4)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from blazepose_tf.codecs.anchors import AnchorOptions, generate_anchors
from blazepose_tf.codecs.detection import (RawDetections, decode_boxes, decode_detections, encode_boxes, iou,
                                           sigmoid, weighted_nms)


def _random_targets(rng, n: int, k: int = 4):
    c = rng.uniform(0.1, 0.9, size=(n, 2))
    wh = rng.uniform(0.02, 0.5, size=(n, 2))
    boxes = np.concatenate([c - wh / 2, c + wh / 2], axis=1).astype(np.float32)
    kps = (c[:, None, :] + rng.uniform(-0.3, 0.3, size=(n, k, 2))).astype(np.float32)
    return boxes, kps


@pytest.mark.parametrize("fixed", [True, False])
def test_encode_decode_round_trip(fixed):
    rng = np.random.default_rng(0)
    anchors = generate_anchors(AnchorOptions(fixed_anchor_size=fixed))
    boxes, kps = _random_targets(rng, len(anchors))
    raw = encode_boxes(boxes, kps, anchors)
    assert raw.shape == (len(anchors), 12)
    out_boxes, out_kps = decode_boxes(raw, anchors)
    assert np.abs(out_boxes - boxes).max() < 1e-4
    assert np.abs(out_kps - kps).max() < 1e-4


def test_decode_definition_on_one_anchor():
    # Fixed-size anchor at (0.25, 0.75): regressors are offsets in input pixels (224) from the anchor centre.
    anchors = np.array([[0.25, 0.75, 1.0, 1.0]], np.float32)
    raw = np.array([[22.4, -11.2, 44.8, 89.6, 0, 0, 224, 0, -22.4, 22.4, 0, -224]], np.float32)
    boxes, kps = decode_boxes(raw, anchors)
    cx, cy, w, h = 0.25 + 0.1, 0.75 - 0.05, 0.2, 0.4
    np.testing.assert_allclose(boxes[0], [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], atol=1e-6)
    np.testing.assert_allclose(kps[0], [[0.25, 0.75], [1.25, 0.75], [0.15, 0.85], [0.25, -0.25]], atol=1e-6)


def test_score_clipping_no_overflow_warning():
    anchors = generate_anchors()[:4]
    raw_boxes = np.zeros((4, 12), np.float32)
    logits = np.array([1e4, -1e4, 0.0, 3.0], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dets = decode_detections(raw_boxes, logits, anchors, min_score=0.0)
        big = sigmoid(np.array([1e4, -1e4, 1e30], np.float32))
    assert len(dets) == 4
    assert dets.scores[0] == pytest.approx(1.0)
    assert dets.scores[1] == pytest.approx(0.0, abs=1e-30)
    assert dets.scores[2] == pytest.approx(0.5)
    assert dets.scores[3] == pytest.approx(1 / (1 + np.exp(-3.0)), rel=1e-5)
    assert np.all(np.isfinite(big)) and big[0] == pytest.approx(1.0) and big[1] == pytest.approx(0.0)


def test_score_clip_bounds_scores():
    # Clipping to ±c means no score exceeds sigmoid(c) (visible for a small clip value).
    anchors = generate_anchors()[:3]
    dets = decode_detections(np.zeros((3, 12), np.float32), np.array([50.0, 2.0, -50.0]), anchors,
                             min_score=0.0, score_clip=1.0)
    s1 = 1 / (1 + np.exp(-1.0))
    np.testing.assert_allclose(dets.scores, [s1, s1, 1 - s1], rtol=1e-5)


def test_min_score_threshold():
    rng = np.random.default_rng(1)
    anchors = generate_anchors()
    boxes, kps = _random_targets(rng, len(anchors))
    raw = encode_boxes(boxes, kps, anchors)
    logits = rng.normal(0.0, 3.0, size=(len(anchors), 1)).astype(np.float32)
    logits[np.abs(logits) < 1e-3] = 1.0  # keep clear of the 0.5 boundary
    expected = np.nonzero(1.0 / (1.0 + np.exp(-logits[:, 0].astype(np.float64))) >= 0.5)[0]
    dets = decode_detections(raw[None], logits[None], anchors, min_score=0.5)  # batch dim accepted
    assert 0 < len(dets) < len(anchors)
    assert len(dets) == len(expected)
    assert (dets.scores >= 0.5).all()
    # The kept candidates are the right ones, decoded in the right place.
    np.testing.assert_allclose(dets.boxes, boxes[expected], atol=1e-4)
    np.testing.assert_allclose(dets.keypoints, kps[expected], atol=1e-4)
    # A higher threshold keeps a subset.
    hi = decode_detections(raw, logits, anchors, min_score=0.9)
    assert len(hi) < len(dets) and (hi.scores >= 0.9).all()


def test_iou_known_boxes():
    box = np.array([0.0, 0.0, 2.0, 2.0])
    others = np.array([
        [1.0, 1.0, 3.0, 3.0],   # inter 1, union 7
        [0.0, 0.0, 1.0, 1.0],   # contained: inter 1, union 4
        [0.0, 0.0, 2.0, 2.0],   # identical
        [5.0, 5.0, 6.0, 6.0],   # disjoint
        [2.0, 0.0, 4.0, 2.0],   # touching edge: inter 0
        [1.0, -1.0, 3.0, 1.0],  # inter 1, union 7
    ])
    np.testing.assert_allclose(iou(box, others), [1 / 7, 1 / 4, 1.0, 0.0, 0.0, 1 / 7], atol=1e-12)
    # Symmetric.
    for o in others:
        assert iou(o, box[None])[0] == pytest.approx(iou(box, o[None])[0])


def _dets(boxes, scores, kps=None) -> RawDetections:
    boxes = np.asarray(boxes, np.float32)
    if kps is None:
        c = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
        kps = np.repeat(c[:, None, :], 4, axis=1) + np.arange(4, dtype=np.float32)[None, :, None] * 0.01
    return RawDetections(boxes, np.asarray(kps, np.float32), np.asarray(scores, np.float32))


def test_weighted_nms_blends_overlapping():
    a = [0.10, 0.10, 0.50, 0.50]
    b = [0.14, 0.12, 0.54, 0.52]
    dets = _dets([b, a], [0.6, 0.9])  # lower score first: NMS must sort
    assert iou(np.array(a), np.array([b]))[0] > 0.3
    out = weighted_nms(dets, iou_threshold=0.3)
    assert len(out) == 1
    assert out.scores[0] == pytest.approx(0.9)
    expected_box = (0.9 * np.array(a) + 0.6 * np.array(b)) / 1.5
    np.testing.assert_allclose(out.boxes[0], expected_box, atol=1e-6)
    expected_kps = (0.9 * dets.keypoints[1] + 0.6 * dets.keypoints[0]) / 1.5
    np.testing.assert_allclose(out.keypoints[0], expected_kps, atol=1e-6)


def test_weighted_nms_keeps_separate_boxes():
    a = [0.10, 0.10, 0.30, 0.30]
    b = [0.60, 0.60, 0.90, 0.90]
    c = [0.20, 0.10, 0.40, 0.30]  # IoU with a = 0.1/0.3 = 1/3 > 0.3 -> merged into a
    d = [0.25, 0.10, 0.45, 0.30]  # IoU with a = 0.05/0.35 ≈ 0.14 -> separate
    dets = _dets([a, b, c, d], [0.9, 0.8, 0.7, 0.6])
    out = weighted_nms(dets, iou_threshold=0.3)
    np.testing.assert_allclose(out.scores, [0.9, 0.8, 0.6], atol=1e-7)
    np.testing.assert_allclose(out.boxes[0], (0.9 * np.array(a) + 0.7 * np.array(c)) / 1.6, atol=1e-6)
    np.testing.assert_allclose(out.boxes[1], b, atol=1e-7)
    np.testing.assert_allclose(out.boxes[2], d, atol=1e-7)
    # max_detections truncates in score order.
    top = weighted_nms(dets, iou_threshold=0.3, max_detections=1)
    assert len(top) == 1 and top.scores[0] == pytest.approx(0.9)


def test_weighted_nms_empty():
    empty = _dets(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 4, 2)))
    out = weighted_nms(empty)
    assert len(out) == 0
    assert out.boxes.shape == (0, 4) and out.keypoints.shape == (0, 4, 2)
    # Nothing above threshold: decode gives nothing, NMS gives nothing.
    anchors = generate_anchors()
    none = decode_detections(np.zeros((len(anchors), 12)), np.full(len(anchors), -5.0), anchors)
    assert len(none) == 0
    assert len(weighted_nms(none)) == 0


def test_weighted_nms_degenerate_box_does_not_crash():
    normal = [0.1, 0.1, 0.4, 0.4]
    flat = [0.5, 0.5, 0.5, 0.5]  # zero area
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert iou(np.array(flat), np.array([flat, normal])).tolist() == [0.0, 0.0]
        out = weighted_nms(_dets([normal, flat], [0.9, 0.8]))
        out2 = weighted_nms(_dets([flat, normal], [0.9, 0.8]))
    assert np.isfinite(out.boxes).all() and np.isfinite(out.keypoints).all()
    assert len(out) == 2  # the normal box, then the degenerate one as is
    np.testing.assert_allclose(out.boxes[0], normal, atol=1e-7)
    np.testing.assert_allclose(out.boxes[1], flat, atol=1e-7)
    assert np.isfinite(out2.boxes).all() and len(out2) >= 1
    np.testing.assert_allclose(out2.boxes[0], flat, atol=1e-7)
    assert out2.scores[0] == pytest.approx(0.9)


def test_decode_boxes_accepts_flat_regressors():
    anchors = generate_anchors()[:5]
    boxes, kps = _random_targets(np.random.default_rng(5), 5)
    raw = encode_boxes(boxes, kps, anchors)
    out_boxes, out_kps = decode_boxes(raw.reshape(-1), anchors)
    np.testing.assert_allclose(out_boxes, boxes, atol=1e-4)
    np.testing.assert_allclose(out_kps, kps, atol=1e-4)


def test_decode_detections_accepts_flat_regressors():
    anchors = generate_anchors()[:5]
    boxes, kps = _random_targets(np.random.default_rng(6), 5)
    raw = encode_boxes(boxes, kps, anchors)
    dets = decode_detections(raw.reshape(-1), np.full(5, 4.0), anchors)
    np.testing.assert_allclose(dets.boxes, boxes, atol=1e-4)
