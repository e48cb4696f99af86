"""Tests for landmark tensor decoding and MediaPipe's heatmap refinement."""
from __future__ import annotations

import numpy as np
import pytest

from blazepose_tf.codecs.landmarks import decode_landmarks, encode_landmarks, refine_with_heatmap

K = 39
HM = 64


def _logistic(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def test_decode_definition():
    raw = np.zeros((K, 5), np.float32)
    raw[0] = (128.0, 64.0, -32.0, 0.0, 2.0)
    raw[1] = (256.0, 0.0, 12.8, -3.0, 40.0)
    lm = decode_landmarks(raw.reshape(1, -1), input_size=256)  # a batch dimension of one is accepted
    assert lm.xyz.shape == (K, 3) and lm.visibility.shape == (K,) and lm.presence.shape == (K,)
    np.testing.assert_allclose(lm.xyz[0], [0.5, 0.25, -0.125], atol=1e-7)
    np.testing.assert_allclose(lm.xyz[1], [1.0, 0.0, 0.05], atol=1e-7)
    np.testing.assert_allclose(lm.visibility[:2], _logistic([0.0, -3.0]), rtol=1e-5)
    np.testing.assert_allclose(lm.presence[:2], _logistic([2.0, 40.0]), rtol=1e-5)


def test_encode_decode_round_trip():
    rng = np.random.default_rng(0)
    xyz = rng.uniform(-0.2, 1.2, size=(K, 3)).astype(np.float32)
    vis = rng.normal(0, 4, size=K).astype(np.float32)
    pres = rng.normal(0, 4, size=K).astype(np.float32)
    raw = encode_landmarks(xyz, vis, pres, input_size=256)
    assert raw.shape == (K * 5,)
    np.testing.assert_allclose(raw.reshape(K, 5)[:, :3], xyz * 256, rtol=1e-6)
    lm = decode_landmarks(raw, input_size=256)
    np.testing.assert_allclose(lm.xyz, xyz, atol=1e-6)
    np.testing.assert_allclose(lm.visibility, _logistic(vis), atol=1e-6)
    np.testing.assert_allclose(lm.presence, _logistic(pres), atol=1e-6)
    assert ((lm.visibility >= 0) & (lm.visibility <= 1)).all()


def _peak_heatmap(peaks: dict[int, tuple[int, int]], sigma: float = 0.6, height: float = 20.0) -> np.ndarray:
    """(64, 64, K) logits at -10 with a Gaussian bump of +``height`` at (row, col) for the given channels."""
    hm = np.full((HM, HM, K), -10.0, np.float32)
    rr, cc = np.mgrid[0:HM, 0:HM]
    for ch, (r, c) in peaks.items():
        hm[..., ch] += height * np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / (2 * sigma ** 2))
    return hm


@pytest.mark.parametrize("r, c, dr, dc", [(20, 30, 0, 0), (40, 10, 2, -3), (5, 50, -1, 2), (0, 63, 1, -1)])
def test_refinement_moves_to_peak(r, c, dr, dc):
    ch = 7
    hm = _peak_heatmap({ch: (r, c)})
    xy = np.full((K, 3), 0.5, np.float32)
    # Start a few cells away (inside the 7x7 window): cell (r + dr, c + dc), at the cell's centre.
    xy[ch, :2] = ((c + dc + 0.5) / HM, (r + dr + 0.5) / HM)
    xy[ch, 2] = 0.123
    out = refine_with_heatmap(xy, hm[None], kernel_size=7)  # a batch dimension of one is accepted
    # MediaPipe's weighted mean: sum(col · conf) / sum(conf) / width (cell index, no half-cell offset).
    assert out[ch, 0] == pytest.approx(c / HM, abs=0.05 / HM)
    assert out[ch, 1] == pytest.approx(r / HM, abs=0.05 / HM)
    assert out[ch, 2] == pytest.approx(0.123)  # z passes through
    # Other channels are all low-confidence: unchanged.
    others = np.arange(K) != ch
    np.testing.assert_array_equal(out[others], xy[others])


def test_refinement_is_the_window_weighted_mean():
    # A window with two known confidences: the result is their sigmoid-weighted mean cell index / 64.
    hm = np.full((HM, HM, K), -30.0, np.float32)
    hm[10, 12, 0] = 3.0
    hm[13, 14, 0] = 0.0
    xy = np.full((K, 2), 0.5, np.float32)
    xy[0] = (12.2 / HM, 11.9 / HM)  # truncates to cell (row 11, col 12); window rows 8..14, cols 9..15
    out = refine_with_heatmap(xy, hm, kernel_size=7)
    w1, w2 = _logistic(3.0), _logistic(0.0)
    assert out[0, 0] == pytest.approx((12 * w1 + 14 * w2) / (w1 + w2) / HM, rel=1e-4)
    assert out[0, 1] == pytest.approx((10 * w1 + 13 * w2) / (w1 + w2) / HM, rel=1e-4)


def test_peak_outside_window_is_ignored():
    hm = _peak_heatmap({3: (40, 40)})
    xy = np.full((K, 2), 0.5, np.float32)
    xy[3] = (20.5 / HM, 20.5 / HM)  # 20 cells away: the 7x7 window sees only low logits
    out = refine_with_heatmap(xy, hm)
    np.testing.assert_array_equal(out, xy)


def test_low_confidence_heatmap_leaves_landmarks_unchanged():
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 1, size=(K, 3)).astype(np.float32)
    out = refine_with_heatmap(xy, np.full((HM, HM, K), -10.0, np.float32))
    np.testing.assert_array_equal(out, xy)
    assert out is not xy


def test_landmarks_outside_crop_unchanged():
    hm = np.full((HM, HM, K), 10.0, np.float32)  # confident everywhere: any refined point would move
    xy = np.full((K, 2), 0.5, np.float32)
    outside = {0: (-0.1, 0.5), 1: (1.1, 0.5), 2: (0.5, -0.2), 3: (0.5, 1.5), 4: (-3.0, -3.0), 5: (1.0, 0.3)}
    for i, p in outside.items():
        xy[i] = p
    out = refine_with_heatmap(xy, hm)
    for i in outside:
        np.testing.assert_array_equal(out[i], xy[i])
    # Control: a point inside the crop moves to its uniform window's centre cell (no half-cell offset).
    xy2 = xy.copy()
    xy2[6] = (0.5, 0.5)  # cell 32: window 29..35 -> mean 32 -> 0.5
    xy2[7] = (10.7 / HM, 40.2 / HM)  # cell (40, 10): window mean = cell index
    out2 = refine_with_heatmap(xy2, hm)
    np.testing.assert_allclose(out2[6], [32 / HM, 32 / HM], atol=1e-6)
    np.testing.assert_allclose(out2[7], [10 / HM, 40 / HM], atol=1e-6)
    # At a corner the window is clipped: cells 0..3 -> mean 1.5.
    xy2[8] = (0.1 / HM, 0.1 / HM)
    np.testing.assert_allclose(refine_with_heatmap(xy2, hm)[8], [1.5 / HM, 1.5 / HM], atol=1e-6)


def test_channel_mismatch_raises():
    with pytest.raises(ValueError, match="channels"):
        refine_with_heatmap(np.zeros((33, 2), np.float32), np.zeros((HM, HM, K), np.float32))
    with pytest.raises(ValueError, match="channels"):
        refine_with_heatmap(np.zeros((K + 1, 2), np.float32), np.zeros((1, HM, HM, K), np.float32))
