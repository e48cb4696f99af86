"""Tests for model runners: output role assignment, Keras and TFLite runners on a tiny model, error paths."""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from blazepose_tf.errors import ModelError
from blazepose_tf.runtime.runners import KerasRunner, TFLiteRunner, assign_roles, load_runner

LANDMARK_SHAPES = {
    "landmarks": (1, 195),
    "presence": (1, 1),
    "segmentation": (1, 256, 256, 1),
    "heatmap": (1, 64, 64, 39),
    "world": (1, 117),
}
DETECTOR_SHAPES = {"regressors": (1, 2254, 12), "scores": (1, 2254, 1)}


@pytest.mark.parametrize("input_hw", [(256, 256), None])
def test_assign_roles_official_landmark_shapes_any_order(input_hw):
    roles = list(LANDMARK_SHAPES)
    for perm in itertools.permutations(range(5)):
        shapes = [LANDMARK_SHAPES[roles[i]] for i in perm]
        names = ["Identity"] + [f"Identity_{k}" for k in range(1, 5)]  # official names: no role information
        got = assign_roles(shapes, names, input_hw)
        assert got == [roles[i] for i in perm], perm


def test_assign_roles_without_names():
    shapes = [LANDMARK_SHAPES[r] for r in ("world", "heatmap", "landmarks", "segmentation", "presence")]
    assert assign_roles(shapes) == ["world", "heatmap", "landmarks", "segmentation", "presence"]


def test_assign_roles_detector_shapes():
    for order in (("regressors", "scores"), ("scores", "regressors")):
        shapes = [DETECTOR_SHAPES[r] for r in order]
        assert assign_roles(shapes, ["Identity", "Identity_1"], (224, 224)) == list(order)
        assert assign_roles(shapes) == list(order)


def test_assign_roles_names_win_over_shapes():
    # Names that carry a role are used as is (exact, or after a '/' or ':' prefix), whatever the shape.
    shapes = [(1, 10), (1, 20)]
    assert assign_roles(shapes, ["model/world", "Landmarks"]) == ["world", "landmarks"]
    assert assign_roles(shapes, ["out:presence", "heatmap"]) == ["presence", "heatmap"]
    # A partially named set: named outputs keep their names, the others are resolved by shape.
    shapes = [LANDMARK_SHAPES["landmarks"], LANDMARK_SHAPES["presence"]]
    assert assign_roles(shapes, ["x", "presence"]) == ["landmarks", "presence"]


def test_assign_roles_custom_topology_shapes():
    # A 17-point tracker (+2 aux): 19·5 landmarks, 19·3 world, heatmap at quarter resolution, no segmentation.
    shapes = [(1, 19 * 3), (1, 64, 64, 19), (1, 1), (1, 19 * 5)]
    assert assign_roles(shapes, None, (256, 256)) == ["world", "heatmap", "presence", "landmarks"]
    # A single flat vector is the landmarks.
    assert assign_roles([(1, 1), (1, 95)]) == ["presence", "landmarks"]


# ---------------------------------------------------------------------------------------------------------------
# A tiny detector-like Keras model, run through KerasRunner and, converted, through TFLiteRunner.


@pytest.fixture(scope="module")
def tiny_model():
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu")(inp)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)  # 8x8
    r = keras.layers.Reshape((64, 12), name="regressors")(keras.layers.Conv2D(12, 1)(x))
    s = keras.layers.Reshape((64, 1), name="scores")(keras.layers.Conv2D(1, 1)(x))
    return keras.Model(inp, [r, s])


@pytest.fixture(scope="module")
def tiny_tflite(tiny_model, tmp_path_factory) -> Path:
    import tensorflow as tf

    data = tf.lite.TFLiteConverter.from_keras_model(tiny_model).convert()
    path = tmp_path_factory.mktemp("tiny") / "tiny.tflite"
    path.write_bytes(data)
    return path


def _batch(n: int = 2) -> np.ndarray:
    return np.random.default_rng(0).uniform(-1, 1, size=(n, 32, 32, 3)).astype(np.float32)


def test_keras_runner(tiny_model):
    runner = KerasRunner(tiny_model)
    assert runner.input_shape == (32, 32, 3)
    assert sorted(runner.output_roles) == ["regressors", "scores"]
    x = _batch()
    out = runner(x)
    assert out["regressors"].shape == (2, 64, 12) and out["scores"].shape == (2, 64, 1)
    ref = tiny_model(x, training=False)
    np.testing.assert_allclose(out["regressors"], np.asarray(ref[0]), atol=1e-6)
    np.testing.assert_allclose(out["scores"], np.asarray(ref[1]), atol=1e-6)
    # A single (H, W, C) image is batched.
    single = runner(x[0])
    np.testing.assert_allclose(single["scores"], out["scores"][:1], atol=1e-6)


def test_tflite_runner_matches_keras(tiny_model, tiny_tflite):
    keras_out = KerasRunner(tiny_model)(_batch(3))
    runner = TFLiteRunner(tiny_tflite)
    assert runner.input_shape == (32, 32, 3)
    assert sorted(runner.output_roles) == ["regressors", "scores"]
    tfl_out = runner(_batch(3))
    assert set(tfl_out) == set(keras_out)
    for role in keras_out:
        assert tfl_out[role].shape == keras_out[role].shape
        np.testing.assert_allclose(tfl_out[role], keras_out[role], atol=1e-4)
    # Through load_runner too, with two threads.
    via_load = load_runner(tiny_tflite, num_threads=2)(_batch(3))
    np.testing.assert_allclose(via_load["scores"], keras_out["scores"], atol=1e-4)


def test_keras_file_round_trip(tiny_model, tmp_path):
    path = tmp_path / "tiny.keras"
    tiny_model.save(path)
    runner = load_runner(path)
    assert isinstance(runner, KerasRunner)
    np.testing.assert_allclose(runner(_batch())["regressors"], KerasRunner(tiny_model)(_batch())["regressors"],
                               atol=1e-6)


def test_missing_files_raise_model_error(tmp_path):
    for path in (tmp_path / "nope.tflite", tmp_path / "nope.keras"):
        with pytest.raises(ModelError, match=str(path).replace(".", r"\.")):
            load_runner(path)
    with pytest.raises(ModelError, match="nope"):
        TFLiteRunner(tmp_path / "nope.tflite")


def test_garbage_files_raise_model_error(tmp_path):
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ModelError) as info:
        TFLiteRunner(garbage)
    assert str(garbage) in str(info.value)
    empty = tmp_path / "empty.tflite"
    empty.write_bytes(b"")
    with pytest.raises(ModelError) as info:
        TFLiteRunner(empty)
    assert str(empty) in str(info.value)
    bad_keras = tmp_path / "garbage.keras"
    bad_keras.write_bytes(b"not a zip file at all")
    with pytest.raises(ModelError) as info:
        load_runner(bad_keras)
    assert str(bad_keras) in str(info.value)


def test_bad_runner_arguments(tmp_path, tiny_tflite):
    with pytest.raises(ModelError, match="unsupported"):
        load_runner(tmp_path / "model.onnx")
    with pytest.raises(ModelError, match="num_threads"):
        TFLiteRunner(tiny_tflite, num_threads=0)


def test_tflite_wrong_input_shape_raises(tiny_tflite):
    runner = TFLiteRunner(tiny_tflite)
    with pytest.raises(ValueError, match="expects input"):
        runner(np.zeros((1, 16, 16, 3), np.float32))
    with pytest.raises(ValueError):
        runner(np.zeros((32, 32, 1), np.float32))


def test_keras_wrong_input_shape_raises_value_error(tiny_model):
    runner = KerasRunner(tiny_model)
    runner(_batch(1))  # a first, valid call traces the function
    with pytest.raises(ValueError):
        runner(np.zeros((1, 16, 16, 3), np.float32))


def test_keras_wrong_input_shape_fully_convolutional():
    keras = pytest.importorskip("keras")
    inp = keras.Input((32, 32, 3))
    model = keras.Model(inp, keras.layers.Conv2D(2, 3, padding="same", name="heatmap")(inp))
    runner = KerasRunner(model)
    runner(_batch(1))
    with pytest.raises(ValueError):
        runner(np.zeros((1, 16, 16, 3), np.float32))


# ---------------------------------------------------------------------------------------------------------------
# Loading errors and the I/O contract (blazepose_tf.contract) of the shipped models.


def test_keras_runner_maps_dict_outputs_by_name():
    from export_fixtures import tiny_tracker

    model = tiny_tracker(points=35)  # outputs {"landmarks", "presence", "heatmap", "offsets"}
    runner = KerasRunner(model)
    assert sorted(runner.output_roles) == ["heatmap", "landmarks", "offsets", "presence"]
    assert runner.label == "tiny_tracker"
    x = np.random.default_rng(0).uniform(0, 1, (1, 64, 64, 3)).astype(np.float32)
    out, ref = runner(x), model(x, training=False)
    for role in ("landmarks", "presence", "heatmap", "offsets"):
        np.testing.assert_allclose(out[role], np.asarray(ref[role]), atol=1e-6)


def test_non_image_corrupt_and_folder_models_raise_model_error(tmp_path):
    keras = pytest.importorskip("keras")
    inp = keras.Input((None, None, 3))
    with pytest.raises(ModelError, match=r"is not a pose model: it takes input \(\?,\?,\?,3\)"):
        KerasRunner(keras.Model(inp, keras.layers.Conv2D(2, 3)(inp), name="any_size"))
    path = tmp_path / "cut.keras"
    keras.Model(inp, keras.layers.Conv2D(2, 3)(inp)).save(path)
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(ModelError) as info:
        load_runner(path)
    assert str(path) in str(info.value) and "corrupt" in str(info.value) and "not found" not in str(info.value)
    (tmp_path / "dir.tflite").mkdir()
    with pytest.raises(ModelError, match=r"dir\.tflite is a folder, not a file"):
        load_runner(tmp_path / "dir.tflite")


def test_shipped_models_meet_the_contract_in_every_combination():
    from blazepose_tf import contract
    from blazepose_tf.runtime.pipeline import PoseTracker
    from blazepose_tf.runtime.runners import check_runner
    from blazepose_tf.zoo import MODEL_KINDS, weights_dir

    runners = {contract.DETECTOR: [], contract.LANDMARKS: []}
    for name, kind in MODEL_KINDS.items():
        for ext in ("tflite", "keras"):
            path = weights_dir() / f"{name}.{ext}"
            runner = load_runner(path)
            assert runner.label == str(path)
            check_runner(runner, contract.KIND_ROLES[kind])
            runners[contract.KIND_ROLES[kind]].append(runner)
    for det, lmk in itertools.product(runners[contract.DETECTOR], runners[contract.LANDMARKS]):
        PoseTracker(det, lmk)
        with pytest.raises(ModelError, match="swapped"):
            PoseTracker(lmk, det)
