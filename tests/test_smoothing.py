"""Tests for the One Euro filter and the landmark smoother with MediaPipe's pose defaults (docs/design.md §7)."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from blazepose_tf.smoothing import (AUX_LANDMARKS, LANDMARKS, VISIBILITY_ALPHA, WORLD_LANDMARKS, LandmarkSmoother,
                                    OneEuroFilter, OneEuroParams, object_scale)

FPS = 30.0
SCALE = 200.0  # object size in pixels of the synthetic person


def _person(rng) -> np.ndarray:
    pts = rng.uniform(0, SCALE, size=(33, 3))
    pts[0, :2] = 0.0
    pts[1, :2] = SCALE  # bounding box exactly SCALE x SCALE
    return pts + [300.0, 100.0, 0.0]


def test_mediapipe_defaults():
    assert (LANDMARKS.min_cutoff, LANDMARKS.beta, LANDMARKS.derivate_cutoff) == (0.05, 80.0, 1.0)
    assert (AUX_LANDMARKS.min_cutoff, AUX_LANDMARKS.beta) == (0.01, 10.0)
    assert (WORLD_LANDMARKS.min_cutoff, WORLD_LANDMARKS.beta) == (0.1, 40.0)
    assert VISIBILITY_ALPHA == 0.1


def test_object_scale():
    pts = np.array([[10.0, 20.0, 5.0], [50.0, 20.0, -9.0], [30.0, 80.0, 0.0]])
    assert object_scale(pts) == pytest.approx((40 + 60) / 2)


def test_constant_signal_is_returned_unchanged():
    rng = np.random.default_rng(0)
    value = _person(rng)
    f = OneEuroFilter(LANDMARKS)
    for i in range(30):
        out = f(value, i / FPS, 1 / SCALE)
        np.testing.assert_allclose(out, value, rtol=0, atol=1e-9)


def test_first_value_passes_through():
    f = OneEuroFilter(LANDMARKS)
    np.testing.assert_array_equal(f(np.array([3.0, -7.0]), 0.0), [3.0, -7.0])


def test_noise_jitter_is_reduced():
    # A still person with 1 px Gaussian noise per frame: frame-to-frame jitter drops to about a third with
    # MediaPipe's defaults (measured ≈0.33 for 1 px on a 200 px person); assert < 0.5 with margin.
    rng = np.random.default_rng(1)
    base = _person(rng)
    smoother = LandmarkSmoother()
    raw, smoothed = [], []
    for i in range(90):
        x = base + rng.normal(0.0, 1.0, base.shape)
        out, _ = smoother(x, i / FPS)
        raw.append(x)
        smoothed.append(out)
    raw_jitter = np.diff(np.array(raw)[10:], axis=0).std()
    smooth_jitter = np.diff(np.array(smoothed)[10:], axis=0).std()
    assert smooth_jitter < 0.5 * raw_jitter
    # And it does not drift away from the true position.
    assert np.abs(np.array(smoothed)[10:] - base).mean() < 1.0


def test_step_change_is_followed_quickly():
    # beta makes the cutoff adaptive: a 50 px jump (a quarter of the object) is caught within a few frames,
    # while a plain low-pass at min_cutoff (beta = 0) has barely moved.
    def run(params: OneEuroParams) -> list[float]:
        f = OneEuroFilter(params)
        errs = []
        for i in range(30):
            v = np.array([100.0 if i < 15 else 150.0])
            out = f(v, i / FPS, 1 / SCALE)
            if i >= 15:
                errs.append(abs(float(out[0]) - 150.0) / 50.0)
        return errs

    adaptive = run(LANDMARKS)
    assert adaptive[3] < 0.05
    assert max(adaptive[3:]) < 0.05
    still = run(OneEuroParams(min_cutoff=LANDMARKS.min_cutoff, beta=0.0))
    assert still[3] > 0.5
    # Plain low-pass: alpha = 1 / (1 + tau / te) with tau = 1 / (2π·fc).
    alpha = 1 / (1 + (1 / (2 * math.pi * 0.05)) * FPS)
    assert still[0] == pytest.approx(1 - alpha, rel=1e-6)


def test_frequency_follows_timestamps():
    # The same step sampled at 10 fps instead of 30 fps moves further per sample (larger alpha).
    def first_step(fps: float) -> float:
        f = OneEuroFilter(OneEuroParams(min_cutoff=1.0, beta=0.0))
        f(np.array([0.0]), 0.0)
        f(np.array([0.0]), 1 / fps)
        return float(f(np.array([1.0]), 2 / fps)[0])

    a30 = 1 / (1 + FPS / (2 * math.pi))
    a10 = 1 / (1 + 10.0 / (2 * math.pi))
    assert first_step(30.0) == pytest.approx(a30, rel=1e-6)
    assert first_step(10.0) == pytest.approx(a10, rel=1e-6)


def test_non_increasing_timestamps_do_not_crash():
    f = OneEuroFilter(LANDMARKS)
    a = f(np.array([1.0, 2.0]), 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division by zero
        b = f(np.array([5.0, 6.0]), 1.0)   # same timestamp
        c = f(np.array([7.0, 8.0]), 0.5)   # going back in time
    for out in (b, c):
        assert out.shape == (2,) and np.isfinite(out).all()
    np.testing.assert_array_equal(a, [1.0, 2.0])
    # The filter keeps working afterwards.
    d = f(np.array([1.0, 2.0]), 1.1)
    assert np.isfinite(d).all()
    # Same for the landmark smoother.
    s = LandmarkSmoother()
    s(np.ones((33, 3)), 0.0, np.ones(33))
    out, vis = s(np.ones((33, 3)) * 2, 0.0, np.zeros(33))
    assert np.isfinite(out).all() and np.isfinite(vis).all()


def test_visibility_low_pass():
    s = LandmarkSmoother()
    pts = _person(np.random.default_rng(2))
    v0 = np.linspace(0, 1, 33)
    v1 = 1 - v0
    _, a = s(pts, 0.0, v0)
    np.testing.assert_allclose(a, v0, atol=1e-6)
    _, b = s(pts, 1 / FPS, v1)
    np.testing.assert_allclose(b, 0.1 * v1 + 0.9 * v0, atol=1e-6)
    _, c = s(pts, 2 / FPS, v1)
    np.testing.assert_allclose(c, 0.1 * v1 + 0.9 * b, atol=1e-6)
    out, none = s(pts, 3 / FPS)
    assert none is None and out.dtype == np.float32


def test_reset_forgets_state():
    s = LandmarkSmoother()
    p = _person(np.random.default_rng(3))
    s(p, 0.0, np.ones(33))
    s.reset()
    q = p + 80.0
    out, vis = s(q, 0.01, np.zeros(33))
    np.testing.assert_allclose(out, q, atol=1e-3)
    np.testing.assert_allclose(vis, 0.0)


def test_smoothing_is_scale_invariant():
    # Velocity is divided by the object size: the same relative motion smooths identically at 2x size.
    rng = np.random.default_rng(4)
    base = _person(rng)
    noise = rng.normal(0, 1.0, size=(20,) + base.shape)
    outs = []
    for k in (1.0, 2.0):
        s = LandmarkSmoother()
        outs.append(np.array([s(k * (base + noise[i]), i / FPS)[0] for i in range(20)]))
    np.testing.assert_allclose(outs[1], 2.0 * outs[0], rtol=1e-4, atol=1e-3)
