"""int8 output bias correction (export.bias_correction): which outputs of a calibrated model can be corrected, the
shift arithmetic and where it lands, and an int8 export whose systematic output error it removes."""
from __future__ import annotations

import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from blazepose_tf.models.blocks import ChannelAffine  # noqa: E402
from export import bias_correction as bc  # noqa: E402
from export.int8_graph import CalibratedGraph  # noqa: E402
from export.report import tflite_outputs  # noqa: E402
from export.representative import load_samples  # noqa: E402
from export.to_tflite import Int8Settings, export_model  # noqa: E402
from export_fixtures import synthetic_coco, tiny_tracker  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")


def _heads() -> keras.Model:
    """Our tracker's head pattern: a 2×2 valid conv → per-channel affine → reshape; a sigmoid presence; a
    heatmap conv (spatial, not correctable)."""
    x = keras.Input((8, 8, 3), name="image")
    f = keras.layers.Conv2D(4, 4, strides=4, activation="relu", name="trunk")(x)
    lm = keras.layers.Conv2D(6, 2, padding="valid", name="landmarks_conv")(f)
    lm = ChannelAffine([10.0, 20.0, 1.0] * 2, [5.0, 5.0, 0.0] * 2, name="landmarks_scale")(lm)
    lm = keras.layers.Reshape((6,), name="landmarks")(lm)
    pr = keras.layers.Conv2D(1, 2, padding="valid", name="presence_conv")(f)
    pr = keras.layers.Activation("sigmoid", name="presence_sigmoid")(pr)
    pr = keras.layers.Reshape((1,), name="presence")(pr)
    hm = keras.layers.Conv2D(2, 1, name="heatmap")(f)
    return keras.Model(x, {"landmarks": lm, "presence": pr, "heatmap": hm}, name="heads")


def _calibrated(model, size: int) -> bytes:
    """``model`` converted with its activations' calibrated ranges (outputs named by their dict keys)."""
    from export.conversion import calibrate

    rng = np.random.default_rng(0)
    return calibrate(model, [rng.uniform(0, 1, (1, size, size, 3)).astype(np.float32) for _ in range(4)])


def test_find_correctable_walks_shape_ops_constant_maps_and_sigmoids():
    graph = CalibratedGraph(_calibrated(_heads(), 8))
    found = bc.find_correctable(graph)
    assert set(found) == {"landmarks", "presence"}          # the 2x2 heatmap conv is spatial: left alone
    assert found["landmarks"].link == "identity" and found["presence"].link == "sigmoid"
    assert graph.nodes[found["landmarks"].op].kind == "CONV_2D"   # the affine map is folded into the conv
    assert graph.constant(found["landmarks"].bias).size == 6
    tiny = CalibratedGraph(_calibrated(tiny_tracker(), 64))
    fused = bc.find_correctable(tiny)                         # Dense heads, the sigmoid inside the layer
    assert fused["presence"].link == "sigmoid" and fused["landmarks"].layer == "landmarks"
    assert tiny.nodes[fused["landmarks"].op].kind == "FULLY_CONNECTED"


def test_shifts_are_in_the_ops_units_and_move_the_biases():
    calibrated = _calibrated(_heads(), 8)
    found = bc.find_correctable(CalibratedGraph(calibrated))
    n = 5
    ref = {"landmarks": np.tile([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], (n, 1)),
           "presence": np.full((n, 1), 0.5)}
    got = {"landmarks": ref["landmarks"] - np.array([10.0, 20.0, 1.0, 0.0, 0.0, -2.0]),
           "presence": np.full((n, 1), 1 / (1 + np.exp(1.5)))}   # logit -1.5 instead of 0
    scaled = dict(found, landmarks=bc.CorrectableOutput(**{**vars(found["landmarks"]),
                                                           "scale": np.array([10.0, 20.0, 1.0] * 2)}))
    shifts = bc.bias_shifts(scaled, ref, got)
    np.testing.assert_allclose(shifts["landmarks"], [1.0, 1.0, 1.0, 0.0, 0.0, -2.0])   # divided by the scale
    np.testing.assert_allclose(shifts["presence"], [1.5], rtol=1e-6)                  # in logit units
    moved = bc.apply_shifts(calibrated, found, shifts)
    before, after = CalibratedGraph(calibrated), CalibratedGraph(moved)
    for name, c in found.items():
        np.testing.assert_allclose(after.constant(c.bias), before.constant(c.bias) + shifts[name], rtol=1e-6)
    # The float model's output moves by the shift: +1 on the first landmark channel.
    x = np.random.default_rng(1).uniform(0, 1, (2, 8, 8, 3)).astype(np.float32)
    delta = tflite_outputs(moved, x)["landmarks"] - tflite_outputs(calibrated, x)["landmarks"]
    np.testing.assert_allclose(delta[:, 0], 1.0, rtol=1e-4)


def _outlier_tracker() -> keras.Model:
    """A tracker whose hidden tensor has one channel 1000× larger than the others: int8's per-tensor scale
    then rounds the small channels to zero, and the dense heads that read them shift systematically."""
    x = keras.Input((64, 64, 3), name="image")
    h = keras.layers.Conv2D(8, 1, activation="relu", name="trunk")(x)
    g = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    lm = keras.layers.Dense(35 * 5, name="landmarks")(g)
    pr = keras.layers.Dense(1, activation="sigmoid", name="presence")(g)
    model = keras.Model(x, {"landmarks": lm, "presence": pr}, name="outlier_tracker")
    rng = np.random.default_rng(0)
    trunk = np.full((1, 1, 3, 8), 0.03, np.float32)
    trunk[..., 0] = 100.0
    model.get_layer("trunk").set_weights([trunk, np.zeros(8, np.float32)])
    head = rng.normal(0, 100, (8, 175)).astype(np.float32)
    head[0] = 0.01
    model.get_layer("landmarks").set_weights([head, np.full(175, 128.0, np.float32)])
    model.get_layer("presence").set_weights([np.r_[[0.0], np.full(7, 30.0)].astype(np.float32)[:, None],
                                             np.zeros(1, np.float32)])
    return model


@pytest.mark.parametrize("which", ["outputs", "layers"])
def test_int8_export_with_bias_correction_removes_the_systematic_error(which, tmp_path):
    from blazepose_tf.runtime.runners import TFLiteRunner

    dataset = synthetic_coco(tmp_path / "coco")
    model = _outlier_tracker()
    samples = load_samples(str(dataset), "tracker", (64, 64), (0.0, 1.0), 16)
    batch = np.concatenate([s.tensor for s in samples])
    ref = np.asarray(model(batch, training=False)["landmarks"])
    errors = {}
    for corrected in (False, True):
        out = tmp_path / f"int8_{corrected}.tflite"
        settings = Int8Settings(bias_correction=corrected and which == "outputs",
                                layer_bias_correction=corrected and which == "layers")
        result = export_model(model, out, "int8", representative=str(dataset), num_calibration=16, int8=settings,
                              log=lambda *_: None)
        got = TFLiteRunner(out)(batch)["landmarks"]
        errors[corrected] = (np.abs((got - ref).mean(axis=0)).mean(), np.abs(got - ref).mean())
        report = json.loads(result.report_path.read_text())
        assert (report["bias_correction"] is not None) == (corrected and which == "outputs")
        assert (report["int8"]["layer_bias_correction"] is not None) == (corrected and which == "layers")
    np.testing.assert_allclose(np.asarray(model(batch, training=False)["landmarks"]), ref)   # Keras untouched
    systematic_before, total_before = errors[False]
    systematic_after, total_after = errors[True]
    assert systematic_before > 0.5 * total_before                 # the uncorrected error is mostly a constant
    assert systematic_after < 0.25 * systematic_before and total_after < 0.5 * total_before, errors
    if which == "outputs":
        assert set(report["bias_correction"]) == {"landmarks", "presence"}
    else:
        layers = report["int8"]["layer_bias_correction"]
        assert layers["layers"] == 2 and layers["kept"]     # the trunk conv and the landmarks FC; it helps here
        assert layers["check_error_with"] < layers["check_error_without"]
