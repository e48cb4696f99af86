"""``--step_scale=channel`` and ``--first_layer_lr``: each weight's optimizer step is multiplied by the RMS its
kernel output channel (or, for biases, its tensor) had at the start, times a layer-wise ratio; the multipliers are
checkpointed, so a resumed run takes the same steps."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from blazepose_tf.models.loading import load_keras_model  # noqa: E402
from blazepose_tf.training.step_scales import StepScales, channel_scale, scaled_optimizer  # noqa: E402
from test_train import _cmd, _env, data_dir  # noqa: E402,F401  synthetic tracker TFRecords, the smoke command


def _model() -> keras.Model:
    inp = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(3, 3, name="conv")(inp)
    x = keras.layers.DepthwiseConv2D(3, name="depthwise")(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inp, keras.layers.Dense(2, name="dense")(x))


def _rms(a: np.ndarray, axes) -> np.ndarray:
    return np.sqrt(np.mean(np.square(a), axis=axes, keepdims=True))


def test_channel_scale_is_the_rms_per_output_channel_and_floors_dead_channels():
    model = _model()
    conv, depthwise, dense = (model.get_layer(n) for n in ("conv", "depthwise", "dense"))
    kernel = np.asarray(conv.kernel)
    np.testing.assert_allclose(channel_scale(kernel, conv, True), _rms(kernel, (0, 1, 2)), rtol=1e-6)
    dw = np.asarray(depthwise.kernel)
    assert channel_scale(dw, depthwise, True).shape == (1, 1, 3, 1)
    np.testing.assert_allclose(channel_scale(dw, depthwise, True), _rms(dw, (0, 1)), rtol=1e-6)
    dk = np.asarray(dense.kernel)
    np.testing.assert_allclose(channel_scale(dk, dense, True), _rms(dk, (0,)), rtol=1e-6)
    bias = np.array([3.0, -4.0])
    np.testing.assert_allclose(channel_scale(bias, dense, False), [np.sqrt(12.5)], rtol=1e-6)
    # An all-zero channel still moves: its multiplier is a small share of the median channel's, not 0.
    dead = kernel.copy()
    dead[..., 0] = 0.0
    got = channel_scale(dead, conv, True)
    assert 0 < got[..., 0] < 0.01 * np.median(got)
    # Mostly dead: the floor follows the live channels, which keep their own scale.
    mostly = np.zeros_like(kernel)
    mostly[..., 2] = 0.01
    got = channel_scale(mostly, conv, True).ravel()
    assert got[2] == pytest.approx(0.01) and 0 < got[0] == got[1] < 1e-4
    # An all-zero tensor (the official Lite's depthwise biases) has no scale: the rate as is.
    np.testing.assert_array_equal(channel_scale(np.zeros(3), depthwise, False), [1.0])


def test_scaled_steps_are_the_rate_times_the_channel_scale_times_the_layer_ratio():
    model = _model()
    variables = model.trainable_variables
    scales = StepScales(model, variables, "channel", first_layer_lr=0.25)
    scales.reset()
    before = [np.asarray(v) for v in variables]
    optimizer = scaled_optimizer(keras.optimizers.SGD, scales, learning_rate=0.1)
    grads = [tf.ones_like(v) for v in variables]
    optimizer.apply_gradients(zip(grads, variables))
    ratios = {"conv": 0.25, "depthwise": 0.5, "dense": 1.0}   # geometric from the first layer to the last
    for v, b in zip(variables, before):
        layer = v.path.split("/")[0]
        is_kernel = v.name == "kernel"
        expected = 0.1 * ratios[layer] * channel_scale(b, model.get_layer(layer), is_kernel)
        np.testing.assert_allclose(b - np.asarray(v), np.broadcast_to(expected, b.shape), rtol=1e-5)
    # Without channel scales only the layer-wise ratio is left.
    plain = StepScales(model, variables, "none", first_layer_lr=0.25)
    plain.reset()
    assert [float(np.asarray(s).max()) for s in plain.scales] == pytest.approx([0.25, 0.25, 0.5, 0.5, 1.0, 1.0])
    with pytest.raises(ValueError, match="first layer"):
        StepScales(model, variables, "channel", first_layer_lr=0.0)


def test_adamw_steps_are_scaled_too():
    model = _model()
    variables = model.trainable_variables
    scales = StepScales(model, variables, "channel")
    scales.reset()
    before = [np.asarray(v) for v in variables]
    optimizer = scaled_optimizer(keras.optimizers.AdamW, scales, learning_rate=1e-2, weight_decay=0.0)
    optimizer.apply_gradients(zip([tf.ones_like(v) * 7.0 for v in variables], variables))
    for v, b, s in zip(variables, before, scales.scales):   # Adam's first step is the rate, whatever the gradient
        np.testing.assert_allclose(b - np.asarray(v), np.broadcast_to(1e-2 * np.asarray(s), b.shape), rtol=1e-3)


def _train(data_dir, model_dir, *extra):
    return subprocess.run(_cmd(data_dir, model_dir, *extra), capture_output=True, text=True, env=_env(),
                          timeout=600)


def _weights(run) -> dict:
    return {w.path: np.asarray(w) for w in load_keras_model(run / "last.keras", "test").weights}


@pytest.mark.heavy
def test_scaled_training_resumes_exactly_and_refuses_a_changed_setting(data_dir, tmp_path):
    flags = ("--step_scale=channel", "--first_layer_lr=0.5", "--checkpoint_every=3")
    whole, split, plain = tmp_path / "whole", tmp_path / "split", tmp_path / "plain"
    for run, extra in ((whole, ("--steps=6",)), (split, ("--steps=3",)), (split, ("--steps=6",))):
        proc = _train(data_dir, run, *flags, *extra)
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert "resumed from" in proc.stderr
    # The multipliers come back from the checkpoint (not from the trained weights): the same steps as one run.
    a, b = _weights(whole), _weights(split)
    for k in a:
        np.testing.assert_allclose(b[k], a[k], atol=1e-6, err_msg=k)
    proc = _train(data_dir, plain, "--steps=6", "--checkpoint_every=3")
    assert proc.returncode == 0, proc.stderr[-2000:]
    c = _weights(plain)
    assert any(not np.allclose(a[k], c[k], atol=1e-6) for k in a)
    proc = _train(data_dir, split, "--steps=8", "--step_scale=none", "--first_layer_lr=0.5")
    assert proc.returncode == 2 and "step_scale" in proc.stderr and "Traceback" not in proc.stderr
