"""Simulated int8 (blazepose_tf.models.fake_quant): which tensors are quantized, calibrated ranges, per-channel
kernel rounding, the weight-sharing view and its gradients, and agreement with the TFLite converter's int8 model."""
from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from blazepose_tf.models.fake_quant import (INPUT_POINT, SimulatedInt8, head_points,  # noqa: E402
                                            quantization_points, quantize_kernel)
from blazepose_tf.models.official_layers import ZeroPad  # noqa: E402


def _block_model(seed: int = 0) -> keras.Model:
    """Input → pad → conv → relu → depthwise → relu layer → 1×1 project → add (residual) → relu → a 2×2
    dense-like head: the official Lite's pattern in miniature, with one channel 30× larger than the others."""
    keras.utils.set_random_seed(seed)
    x = keras.Input((16, 16, 3), name="image")
    p = ZeroPad([[1, 1], [1, 1], [0, 0]], name="pad")(x)
    c = keras.layers.Conv2D(8, 3, name="expand")(p)
    c = keras.layers.Activation("relu", name="expand_relu")(c)
    d = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(c)
    a = keras.layers.Activation("relu", name="dw_relu")(d)
    j = keras.layers.Conv2D(8, 1, name="project")(a)
    s = keras.layers.Add(name="add")([j, c])
    r = keras.layers.Activation("relu", name="add_relu")(s)
    pooled = keras.layers.MaxPooling2D(8, name="pool")(r)
    out = keras.layers.Conv2D(4, 2, name="head")(pooled)
    landmarks = keras.layers.Reshape((4,), name="landmarks")(out)
    model = keras.Model(x, landmarks, name="block")
    k, b = model.get_layer("project").get_weights()
    model.get_layer("project").set_weights([k * np.array([1, 1, 1, 1, 1, 1, 1, 30.0], np.float32), b])
    return model


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (n, 16, 16, 3)).astype(np.float32)


def test_quantization_points_follow_the_tflite_int8_graph():
    model = _block_model()
    # Convolutions and the add feeding only a ReLU are fused with it (TFLite stores the ReLU's output); padding,
    # pooling and reshapes keep their input's scale; the head's conv stores its own output.
    assert quantization_points(model) == ["expand_relu", "dw_relu", "project", "add_relu", "head"]
    assert head_points(model, quantization_points(model)) == {"head"}
    # By default the low-resolution tail (here the 1×1 head and the 2×2 pooling) stays float, as int8-selective
    # keeps it: neither its kernel nor its output is rounded.
    sim = SimulatedInt8(model)
    assert {"head", "pool", "landmarks"} <= sim.float_layers and "add_relu" not in sim.float_layers
    assert sim.points == ["expand_relu", "dw_relu", "project", "add_relu"]
    sim.calibrate([_images(4, 1)])
    x = _images(2, 2)
    tail = keras.Model(model.inputs, model.get_layer("pool").output)
    head_in = sim.view(keras.Model(model.inputs, model.get_layer("pool").output, name="to_pool"))(x)
    head = model.get_layer("head")
    np.testing.assert_allclose(np.asarray(sim.view(model)(x)["landmarks"]),
                               np.asarray(head(list(head_in.values())[0])).reshape(2, 4), rtol=1e-5, atol=1e-6)
    assert not np.allclose(np.asarray(head_in[next(iter(head_in))]), np.asarray(tail(x)))


def test_kernels_round_per_output_channel_onto_255_levels():
    rng = np.random.default_rng(0)
    kernel = (rng.normal(0, 1, (3, 3, 4, 5)) * np.array([1e-4, 1e-2, 1, 10, 100])).astype(np.float32)
    q = quantize_kernel(tf.constant(kernel), depthwise=False).numpy()
    for c in range(5):
        step = np.abs(kernel[..., c]).max() / 127
        levels = q[..., c] / step
        assert np.abs(levels - np.round(levels)).max() < 1e-3, c      # on the channel's own grid
        assert np.abs(q[..., c] - kernel[..., c]).max() <= 0.5 * step * 1.001
        assert np.abs(q[..., c]).max() == pytest.approx(np.abs(kernel[..., c]).max(), rel=1e-5)
    dw = (rng.normal(0, 1, (3, 3, 3, 1)) * np.array([1e-3, 1, 50]).reshape(1, 1, 3, 1)).astype(np.float32)
    qd = quantize_kernel(tf.constant(dw), depthwise=True).numpy()
    for c in range(3):
        step = np.abs(dw[:, :, c]).max() / 127
        levels = qd[:, :, c] / step
        assert np.abs(levels - np.round(levels)).max() < 1e-3, c             # on the channel's own grid
        assert np.abs(qd[:, :, c] - dw[:, :, c]).max() <= 0.5 * step * 1.001 and step > 0
    assert not np.array_equal(qd, dw)


@pytest.mark.parametrize("kind, kwargs", [
    ("conv", dict(filters=6, kernel_size=3, strides=2, padding="same", use_bias=False, activation="relu")),
    ("conv", dict(filters=5, kernel_size=3, dilation_rate=2, padding="valid")),
    ("depthwise", dict(kernel_size=3, strides=2, padding="same", activation="relu6")),
    ("depthwise", dict(kernel_size=2, padding="valid", use_bias=False)),
])
def test_rounded_kernel_layer_computes_what_the_layer_computes_with_that_kernel(kind, kwargs):
    """The wrapper's own convolution (strides, padding, dilation, bias, inline activation) is the layer's: with a
    kernel already on its int8 grid, both give the same output; off the grid, the wrapper's output moves."""
    from blazepose_tf.models.fake_quant import QuantizedWeights

    keras.utils.set_random_seed(1)
    make = keras.layers.Conv2D if kind == "conv" else keras.layers.DepthwiseConv2D
    layer = make(**kwargs)
    x = _images(2, 7)
    float_out = np.asarray(layer(x))
    wrapper = QuantizedWeights(layer)
    assert not np.allclose(np.asarray(wrapper(x)), float_out)               # the kernel is rounded
    weights = layer.get_weights()
    weights[0] = quantize_kernel(tf.constant(weights[0]), depthwise=kind == "depthwise").numpy()
    layer.set_weights(weights)
    np.testing.assert_allclose(np.asarray(wrapper(x)), np.asarray(layer(x)), rtol=1e-5, atol=1e-6)


def test_calibration_clips_activations_at_the_percentile_and_keeps_heads_at_min_max():
    model = _block_model()
    sim = SimulatedInt8(model, float_tail=False)
    calib = _images(16, 1)
    ranges = sim.calibrate([calib[:8], calib[8:]], percentile=99.0)
    probe = keras.Model(model.inputs, [model.get_layer(n).output for n in ("project", "head")])
    project, head = (np.asarray(v) for v in probe(calib))
    lo, hi = ranges["project"]
    assert lo == pytest.approx(np.percentile(project, 1.0), rel=0.05, abs=1e-3)
    assert hi == pytest.approx(np.percentile(project, 99.0), rel=0.05) and hi < project.max()
    assert ranges["head"] == pytest.approx((float(head.min()), float(head.max())))      # an output: min/max
    assert ranges[INPUT_POINT][0] >= 0 and ranges[INPUT_POINT][1] <= 1
    assert ranges["expand_relu"][0] == 0.0
    full = SimulatedInt8(model, float_tail=False).calibrate([calib], percentile=100.0)
    assert full["project"] == pytest.approx((float(project.min()), float(project.max())), rel=1e-5)


def test_view_shares_weights_rounds_outputs_and_passes_gradients():
    model = _block_model()
    sim = SimulatedInt8(model, float_tail=False)
    sim.calibrate([_images(8, 1)])
    view = sim.view(model)
    x = _images(4, 3)
    out = np.asarray(view(x)["landmarks"])
    lo, hi = (float(v.numpy()) for v in sim.layers["head"].weights)
    steps = (out - out.min()) / ((max(hi, 0) - min(lo, 0)) / 255)
    assert np.abs(steps - np.round(steps)).max() < 0.02               # on the head tensor's int8 grid
    ref = np.asarray(model(x))
    assert 0 < np.abs(out - ref).max() < 0.2 * (np.abs(ref).max() + 1)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(view(x)["landmarks"]))
    variables = model.trainable_variables
    grads = tape.gradient(loss, variables)
    assert len(variables) == 8 and all(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)
    w, b = model.get_layer("head").get_weights()
    model.get_layer("head").set_weights([w * 0.5, b])
    assert not np.allclose(np.asarray(view(x)["landmarks"]), out)   # the view reads the model's weights


def test_simulation_reproduces_the_converters_int8_tensors():
    """Up to the first requantized residual, the view computes the converter's int8 tensors exactly (input
    quantization, per-channel kernels, fused ReLUs, depthwise); the whole model is closer to int8 than float."""
    from export.conversion import convert
    from blazepose_tf.tflite_file import load_interpreter

    model = _block_model()
    calib = _images(32, 1)
    sim = SimulatedInt8(model, float_tail=False)
    sim.calibrate([calib], percentile=100.0)                            # the converter's own min/max ranges
    view = sim.view(model)
    probes = keras.Model(view.inputs, [view.get_layer("fq_expand_relu").output, view.get_layer("fq_dw_relu").output,
                                       view.outputs[0]])
    it = load_interpreter(convert(model, "int8", [calib[i:i + 1] for i in range(len(calib))]),
                          experimental_preserve_all_tensors=True)
    it.allocate_tensors()
    stored = {d["name"]: d for d in it.get_tensor_details()}
    early = [next(d for n, d in stored.items() if n.startswith(f"block_1/{name}_1/Relu")) for name in
             ("expand_relu", "dw_relu")]
    x = _images(8, 4)
    sim_err = float_err = 0.0
    for i in range(len(x)):
        it.set_tensor(it.get_input_details()[0]["index"], x[i:i + 1])
        it.invoke()
        *sim_early, sim_out = (np.asarray(v) for v in probes(x[i:i + 1]))
        for d, v in zip(early, sim_early):
            scale, zero = d["quantization"]
            np.testing.assert_allclose((it.get_tensor(d["index"]).astype(np.float32) - zero) * scale, v,
                                       atol=1e-3 * scale)
        int8 = it.get_tensor(it.get_output_details()[0]["index"])
        sim_err += np.abs(sim_out - int8).mean()
        float_err += np.abs(np.asarray(model(x[i:i + 1])) - int8).mean()
    assert 0 < sim_err < float_err, (sim_err, float_err)


def test_layers_the_export_folds_or_does_not_fuse_are_refused():
    x = keras.Input((8, 8, 3), name="image")
    c = keras.layers.Conv2D(4, 3, name="conv")(x)
    b = keras.layers.BatchNormalization(name="bn")(c)          # folded into the conv by the converter
    r = keras.layers.LeakyReLU(negative_slope=0.1, name="leaky")(b)
    model = keras.Model(x, keras.layers.Flatten(name="landmarks")(r))
    with pytest.raises(ValueError, match=r"bn \(BatchNormalization\), leaky \(LeakyReLU\)"):
        SimulatedInt8(model)
    assert SimulatedInt8(_block_model()).points                # the official pattern is accepted
