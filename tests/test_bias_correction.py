"""int8 output bias correction (export.bias_correction): which outputs can be corrected, the shift arithmetic,
undoing it, and an int8 export whose systematic output error it removes."""
from __future__ import annotations

import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from blazepose_tf.models.blocks import ChannelAffine  # noqa: E402
from export import bias_correction as bc  # noqa: E402
from export.representative import load_samples  # noqa: E402
from export.to_tflite import export_model  # noqa: E402
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
    return keras.Model(x, [lm, pr, hm], name="heads")


def test_find_correctable_walks_shape_layers_affine_maps_and_sigmoids():
    found = bc.find_correctable(_heads())
    assert set(found) == {"landmarks", "presence"}          # the 2x2 heatmap conv is spatial: left alone
    assert found["landmarks"].layer.name == "landmarks_conv" and found["landmarks"].link == "identity"
    np.testing.assert_array_equal(found["landmarks"].scale, [10, 20, 1, 10, 20, 1])
    assert found["presence"].layer.name == "presence_conv" and found["presence"].link == "sigmoid"
    fused = bc.find_correctable(tiny_tracker())              # Dense heads, sigmoid inside the layer
    assert fused["presence"].link == "sigmoid" and fused["landmarks"].layer.name == "landmarks"


def test_shifts_are_in_the_layers_units_and_snapshot_restores_them():
    model = _heads()
    found = bc.find_correctable(model)
    n = 5
    ref = {"landmarks": np.tile([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], (n, 1)),
           "presence": np.full((n, 1), 0.5)}
    got = {"landmarks": ref["landmarks"] - np.array([10.0, 20.0, 1.0, 0.0, 0.0, -2.0]),
           "presence": np.full((n, 1), 1 / (1 + np.exp(1.5)))}   # logit -1.5 instead of 0
    shifts = bc.bias_shifts(found, ref, got)
    np.testing.assert_allclose(shifts["landmarks"], [1.0, 1.0, 1.0, 0.0, 0.0, -2.0])   # divided by the scale
    np.testing.assert_allclose(shifts["presence"], [1.5], rtol=1e-6)                  # in logit units
    before = {name: c.layer.get_weights()[1].copy() for name, c in found.items()}
    saved = bc.snapshot(found)
    bc.apply_shifts(found, shifts)
    np.testing.assert_allclose(found["landmarks"].layer.get_weights()[1], before["landmarks"] + shifts["landmarks"],
                               rtol=1e-6)
    x = np.random.default_rng(0).uniform(0, 1, (2, 8, 8, 3)).astype(np.float32)
    moved = np.asarray(model(x)[0])
    bc.restore(saved)
    for name, c in found.items():
        np.testing.assert_array_equal(c.layer.get_weights()[1], before[name])
    # An output moves by scale × shift: 10 × 1 on the first landmark channel.
    np.testing.assert_allclose(moved[:, 0] - np.asarray(model(x)[0])[:, 0], 10.0, rtol=1e-5)


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


def test_int8_export_with_bias_correction_removes_the_systematic_error(tmp_path):
    from blazepose_tf.runtime.runners import TFLiteRunner

    dataset = synthetic_coco(tmp_path / "coco")
    model = _outlier_tracker()
    samples = load_samples(str(dataset), "tracker", (64, 64), (0.0, 1.0), 16)
    batch = np.concatenate([s.tensor for s in samples])
    ref = np.asarray(model(batch, training=False)["landmarks"])
    errors = {}
    for corrected in (False, True):
        out = tmp_path / f"int8_{corrected}.tflite"
        result = export_model(model, out, "int8", representative=str(dataset), num_calibration=16,
                              bias_correction=corrected, log=lambda *_: None)
        got = TFLiteRunner(out)(batch)["landmarks"]
        errors[corrected] = (np.abs((got - ref).mean(axis=0)).mean(), np.abs(got - ref).mean())
        report = json.loads(result.report_path.read_text())
        assert (report["bias_correction"] is not None) == corrected
    np.testing.assert_allclose(np.asarray(model(batch, training=False)["landmarks"]), ref)   # weights restored
    systematic_before, total_before = errors[False]
    systematic_after, total_after = errors[True]
    assert systematic_before > 0.5 * total_before                 # the uncorrected error is mostly a constant
    assert systematic_after < 0.25 * systematic_before and total_after < 0.5 * total_before, errors
    assert set(report["bias_correction"]) == {"landmarks", "presence"}
