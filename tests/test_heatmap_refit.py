"""Closed-form heatmap refit (``blazepose_tf.training.heatmap_refit``): synthetic feature maps whose teacher logits
are a known convolution of them."""
from __future__ import annotations

import numpy as np

from blazepose_tf.training.heatmap_refit import accumulate, centres_in_cells, convolve, patch_rows, solve


def _naive_conv(fmaps: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    n, h, w, _ = fmaps.shape
    k = kernel.shape[0]
    pad = k // 2
    padded = np.pad(fmaps, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    out = np.zeros((n, h, w, kernel.shape[-1]))
    for y in range(h):
        for x in range(w):
            out[:, y, x] = np.einsum("nijc,ijcp->np", padded[:, y:y + k, x:x + k], kernel) + bias
    return out


def _problem(seed: int = 0):
    rng = np.random.default_rng(seed)
    fmaps = rng.normal(size=(40, 12, 12, 3))
    true_kernel, true_bias = rng.normal(size=(3, 3, 3, 2)), rng.normal(size=2)
    teacher = _naive_conv(fmaps, true_kernel, true_bias)
    centres = rng.integers(2, 10, size=(40, 2, 2)).astype(float)
    return fmaps, teacher, centres, true_kernel, true_bias


def test_convolution_is_the_same_padded_one():
    fmaps, teacher, _, kernel, bias = _problem()
    np.testing.assert_allclose(convolve(fmaps, kernel, bias), teacher, rtol=1e-5, atol=1e-5)
    rows, cols = np.array([0, 5, 11]), np.array([11, 3, 0])
    x = patch_rows(fmaps[0], rows, cols, 3)
    np.testing.assert_allclose(x @ kernel.reshape(-1, 2) + bias, teacher[0, rows, cols], atol=1e-9)


def test_a_small_penalty_recovers_the_teachers_kernel_and_a_large_one_keeps_the_current():
    fmaps, teacher, centres, true_kernel, true_bias = _problem()
    eq = accumulate(fmaps, teacher, centres, k=3, radius=2, floor=-np.inf)
    assert eq.crops == 40 and eq.xtx.shape == (2, 28, 28)
    start_kernel, start_bias = np.zeros_like(true_kernel), np.zeros(2)
    kernel, bias = solve(eq, start_kernel, start_bias, lam=1e-9)
    np.testing.assert_allclose(kernel, true_kernel, atol=1e-6)
    np.testing.assert_allclose(bias, true_bias, atol=1e-6)
    kernel, bias = solve(eq, start_kernel, start_bias, lam=1e9)
    assert np.abs(kernel).max() < 1e-4 and np.abs(bias).max() < 1e-4


def test_only_cells_near_the_centre_count_and_the_floor_clips_targets():
    fmaps, teacher, centres, *_ = _problem()
    near = accumulate(fmaps, teacher, centres, k=3, radius=0, floor=-np.inf)
    assert np.isclose(near.xtx[0, -1, -1], 40)            # one cell per crop: the bias column counts them
    centres[:5, 0] = np.nan                                # no teacher point: the crop is skipped for that point
    assert np.isclose(accumulate(fmaps, teacher, centres, 3, 0, -np.inf).xtx[0, -1, -1], 35)
    high = accumulate(fmaps, teacher, centres, 3, 1, floor=1e6)   # every target floored to 1e6
    assert np.isclose(high.xty[0, -1], 1e6 * high.xtx[0, -1, -1])


def test_centres_are_truncated_to_heatmap_cells():
    cells = centres_in_cells(np.array([[[0.0, 255.9], [128.0, 3.99]]]), input_size=256, heatmap_size=64)
    np.testing.assert_array_equal(cells, [[[0, 63], [32, 0]]])
