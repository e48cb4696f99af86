"""Tests for SSD anchor generation (MediaPipe SsdAnchorsCalculator semantics, docs/design.md §4)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from blazepose_tf.codecs.anchors import AnchorOptions, anchors_per_cell, generate_anchors, strides_of

# (feature-map side, anchors per cell) of the official detector: strides 8, 16, 32 (x3 layers).
LAYOUT = [(28, 2), (14, 2), (7, 6)]


@pytest.fixture(scope="module")
def anchors() -> np.ndarray:
    return generate_anchors()


def _split(anchors: np.ndarray) -> list[np.ndarray]:
    out, start = [], 0
    for side, per_cell in LAYOUT:
        n = side * side * per_cell
        out.append(anchors[start:start + n])
        start += n
    assert start == len(anchors)
    return out


def test_default_count(anchors):
    assert anchors.shape == (2254, 4)
    assert anchors.dtype == np.float32
    assert 28 * 28 * 2 + 14 * 14 * 2 + 7 * 7 * 6 == 2254


def test_per_layer_grids(anchors):
    for (side, per_cell), layer in zip(LAYOUT, _split(anchors)):
        assert len(layer) == side * side * per_cell
        # Row-major cells (y outer, x inner), all anchors of a cell consecutive, centres at (i + 0.5) / side.
        centers = layer[:, :2].reshape(side, side, per_cell, 2)
        assert np.all(centers == centers[:, :, :1, :])  # anchors of a cell share the centre
        ys, xs = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
        np.testing.assert_allclose(centers[:, :, 0, 0], (xs + 0.5) / side, atol=1e-6)
        np.testing.assert_allclose(centers[:, :, 0, 1], (ys + 0.5) / side, atol=1e-6)


def test_first_and_last_anchor(anchors):
    np.testing.assert_allclose(anchors[0, :2], [0.5 / 28, 0.5 / 28], atol=1e-7)
    np.testing.assert_allclose(anchors[1, :2], [0.5 / 28, 0.5 / 28], atol=1e-7)
    np.testing.assert_allclose(anchors[2, :2], [1.5 / 28, 0.5 / 28], atol=1e-7)
    np.testing.assert_allclose(anchors[-1, :2], [6.5 / 7, 6.5 / 7], atol=1e-7)
    assert (anchors[:, :2] > 0).all() and (anchors[:, :2] < 1).all()


def test_fixed_anchor_size_is_one(anchors):
    assert np.all(anchors[:, 2:] == 1.0)


def _scale(i: int, n: int = 5, lo: float = 0.1484375, hi: float = 0.75) -> float:
    return lo + (hi - lo) * i / (n - 1)


def test_non_fixed_sizes_follow_scale_formula():
    opts = AnchorOptions(fixed_anchor_size=False)
    a = generate_anchors(opts)
    assert a.shape == (2254, 4)
    # Per layer i: the scale s_i (aspect ratio 1) then the interpolated sqrt(s_i * s_{i+1}), with s_5 := 1.
    s = [_scale(i) for i in range(5)] + [1.0]
    per_layer = [[s[i], math.sqrt(s[i] * s[i + 1])] for i in range(5)]
    expected_cells = [per_layer[0], per_layer[1], per_layer[2] + per_layer[3] + per_layer[4]]
    for (side, per_cell), layer, sizes in zip(LAYOUT, _split(a), expected_cells):
        assert len(sizes) == per_cell
        wh = layer[:, 2:].reshape(side * side, per_cell, 2)
        for k, size in enumerate(sizes):
            np.testing.assert_allclose(wh[:, k, 0], size, rtol=1e-6)
            np.testing.assert_allclose(wh[:, k, 1], size, rtol=1e-6)
    # Same centres as with fixed sizes.
    np.testing.assert_array_equal(a[:, :2], generate_anchors()[:, :2])


def test_aspect_ratio_sizes():
    # w = s·sqrt(r), h = s/sqrt(r) for a single layer with two aspect ratios and no interpolated anchor.
    opts = AnchorOptions(input_size=64, num_layers=1, strides=(16,), min_scale=0.2, max_scale=0.6,
                         aspect_ratios=(1.0, 4.0), interpolated_scale_aspect_ratio=0.0, fixed_anchor_size=False)
    a = generate_anchors(opts)
    assert a.shape == (4 * 4 * 2, 4)
    s = (0.2 + 0.6) / 2  # one layer: the mean of min and max scale
    np.testing.assert_allclose(a[0::2, 2:], [[s, s]] * 16, rtol=1e-6)
    np.testing.assert_allclose(a[1::2, 2:], [[2 * s, s / 2]] * 16, rtol=1e-6)


def test_anchors_per_cell_default():
    assert anchors_per_cell() == LAYOUT
    assert list(strides_of()) == [8, 16, 32]
    total = sum(side * side * n for side, n in anchors_per_cell())
    assert total == len(generate_anchors())


def test_anchors_per_cell_consistent_with_generation_for_other_options():
    opts = AnchorOptions(input_size=128, num_layers=4, strides=(8, 16, 16, 32))
    cells = anchors_per_cell(opts)
    assert cells == [(16, 2), (8, 4), (4, 2)]
    assert sum(s * s * n for s, n in cells) == len(generate_anchors(opts))


def test_mismatched_strides_rejected():
    with pytest.raises(ValueError):
        generate_anchors(AnchorOptions(num_layers=3))
