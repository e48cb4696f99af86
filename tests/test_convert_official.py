"""Official-weight conversion: graph reading, the Keras rebuild, parity with the .tflite on real inputs,
.keras round trip, fine-tunability and re-export to TFLite builtins."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from blazepose_tf.errors import ModelError

REPO = Path(__file__).resolve().parents[1]
NUM_REAL_IMAGES = 6


@pytest.fixture(scope="module")
def official_paths() -> dict[str, Path]:
    from blazepose_tf.official import official_model_path

    try:
        return {n: official_model_path(n) for n in ("pose_detection", "pose_landmark_full")}
    except ModelError as e:
        pytest.skip(f"official models cannot be fetched: {e}")


@pytest.fixture(scope="module")
def converted(official_paths) -> dict:
    from blazepose_tf.models.convert_official import convert

    return {name: convert(name) for name in official_paths}


@pytest.fixture(scope="module")
def real_inputs(request, official_paths) -> dict[str, np.ndarray]:
    """Detector inputs and tracker crops (official detector → ROI → crop) from a few LSPET dev images, or from
    the offline sample photo when the shared data folder is absent."""
    from blazepose_tf.io.images import load_image
    from blazepose_tf.models.convert_official import sample_inputs

    images = []
    try:
        shared = request.getfixturevalue("shared_data")
    except pytest.skip.Exception:
        shared = None
    if shared is not None and (shared / "lspet" / "annotations.json").is_file():
        from blazepose_tf.datasets.coco import load_coco_keypoints
        from blazepose_tf.evaluation import scored_records

        root = shared / "lspet"
        ds = load_coco_keypoints(root / "annotations.json", root / "images", split="dev",
                                 splits_json=root / "splits.json")
        images = [load_image(r.file_path) for r in scored_records(ds, NUM_REAL_IMAGES)]
    if not images:
        from blazepose_tf.io.samples import sample_image_path

        images = [load_image(sample_image_path())]
    batches = [sample_inputs(np.asarray(im)) for im in images]
    return {k: np.concatenate([b[k] for b in batches], axis=0) for k in batches[0]}


def test_official_graph_structure(official_paths):
    from blazepose_tf.models.convert_official import TFLiteGraph

    lm = TFLiteGraph(official_paths["pose_landmark_full"]).op_counts()
    assert lm == {"DEQUANTIZE": 192, "CONV_2D": 58, "DEPTHWISE_CONV_2D": 38, "ADD": 28, "PAD": 5,
                  "RESIZE_BILINEAR": 5, "RESHAPE": 3, "MAX_POOL_2D": 2, "LOGISTIC": 1}
    det = TFLiteGraph(official_paths["pose_detection"])
    assert det.op_counts()["DENSIFY"] == 38 and det.op_counts()["DEPTH_TO_SPACE"] == 3
    resize = [op for op in det.ops if op.kind == "RESIZE_BILINEAR"]
    assert all(op.options["half_pixel_centers"] and not op.options["align_corners"] for op in resize)


def test_weights_match_interpreter(official_paths):
    """fp16 dequantization and sparse (DENSIFY) decoding from the flatbuffer equal what TFLite computes."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from blazepose_tf.models.convert_official import TFLiteGraph

    for path in official_paths.values():
        graph = TFLiteGraph(path)
        it = Interpreter(str(path), experimental_preserve_all_tensors=True,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        it.allocate_tensors()
        d = it.get_input_details()[0]
        it.set_tensor(d["index"], np.zeros(d["shape"], np.float32))
        it.invoke()
        outs = [op.outputs[0] for op in graph.ops if op.kind == "DEQUANTIZE"]
        assert outs
        for t in outs:
            np.testing.assert_array_equal(graph.constant(t), it.get_tensor(t))


def test_output_names_shapes_and_layers(converted):
    import keras

    det, lmk = converted["pose_detection"], converted["pose_landmark_full"]
    assert det.output_names == ["regressors", "scores"]
    assert [tuple(o.shape) for o in det.outputs] == [(None, 2254, 12), (None, 2254, 1)]
    assert tuple(det.inputs[0].shape) == (None, 224, 224, 3)
    assert lmk.output_names == ["landmarks", "presence", "segmentation", "heatmap", "world"]
    assert [tuple(o.shape) for o in lmk.outputs] == [(None, 195), (None, 1), (None, 256, 256, 1),
                                                     (None, 64, 64, 39), (None, 117)]
    for model, params in ((det, 2_965_314), (lmk, 3_169_489)):
        assert model.count_params() == params
        assert not model.non_trainable_weights
        for layer in model.layers:
            assert not isinstance(layer, keras.layers.Lambda)
            assert type(layer).__module__.startswith(("keras.", "blazepose_tf.")), type(layer)
    names = {layer.name for layer in lmk.layers}
    assert {"conv2d_12", "depthwise_conv2d_3", "add_5", "zero_padding2d_1"} <= names


def test_parity_on_real_crops(converted, official_paths, real_inputs):
    from blazepose_tf.models.convert_official import (detector_parity, detector_parity_ok, landmark_parity,
                                                      landmark_parity_ok)
    from blazepose_tf.runtime.runners import KerasRunner, TFLiteRunner

    x = real_inputs["pose_landmark_full"]
    stats = landmark_parity(TFLiteRunner(official_paths["pose_landmark_full"])(x),
                            KerasRunner(converted["pose_landmark_full"])(x))
    assert landmark_parity_ok(stats), stats
    assert stats["xy_px_max"] < 0.05 and stats["heatmap_max"] < 0.01 and stats["world_m_max"] < 1e-3
    x = real_inputs["pose_detection"]
    ref = TFLiteRunner(official_paths["pose_detection"])(x)
    got = KerasRunner(converted["pose_detection"])(x)
    stats = detector_parity(ref, got)
    assert detector_parity_ok(stats), stats
    assert stats["detections"] >= 1


def test_pipeline_runs_on_converted_models(converted, official_paths):
    from blazepose_tf.io.images import load_image
    from blazepose_tf.io.samples import sample_image_path
    from blazepose_tf.runtime.pipeline import PoseTracker
    from blazepose_tf.runtime.runners import KerasRunner

    image = load_image(sample_image_path())
    ours = PoseTracker(KerasRunner(converted["pose_detection"]), KerasRunner(converted["pose_landmark_full"]),
                       mode="image").process(image)
    ref = PoseTracker.from_official(mode="image").process(image)
    assert len(ours) == len(ref) == 1
    # image pixels: the ROI is ~2x the crop here, and the heatmap refinement can shift a point by a bit more
    np.testing.assert_allclose(ours[0].keypoints[:, :2], ref[0].keypoints[:, :2], atol=0.5)
    np.testing.assert_allclose(ours[0].visibility, ref[0].visibility, atol=1e-3)
    assert abs(ours[0].score - ref[0].score) < 1e-3


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Keras' own np.array(copy=False) on save
def test_keras_roundtrip_and_cached_path(converted, tmp_path, real_inputs):
    from blazepose_tf.models.convert_official import converted_model_path, save_model
    from blazepose_tf.runtime.runners import KerasRunner

    import blazepose_tf.models.official_layers  # noqa: F401 - registers the custom layers for loading

    model = converted["pose_landmark_full"]
    path = save_model(model, tmp_path / "lmk.keras")
    x = real_inputs["pose_landmark_full"][:1]
    a, b = KerasRunner(model)(x), KerasRunner(path)(x)
    for role in a:
        np.testing.assert_array_equal(a[role], b[role])

    first = converted_model_path("pose_detection", tmp_path / "cache")
    mtime = first.stat().st_mtime_ns
    assert converted_model_path("pose_detection", tmp_path / "cache") == first
    assert first.stat().st_mtime_ns == mtime  # idempotent: not converted again
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["pose_detection.keras",
                                                                        "pose_detection.keras.json"]
    (tmp_path / "cache" / "pose_detection.keras.json").write_text("{}")  # stale stamp → converted again
    converted_model_path("pose_detection", tmp_path / "cache")
    assert "converter_version" in (tmp_path / "cache" / "pose_detection.keras.json").read_text()


def test_converted_model_is_trainable(converted, real_inputs):
    import keras
    import tensorflow as tf

    src = converted["pose_landmark_full"]
    model = keras.models.clone_model(src)
    model.set_weights(src.get_weights())
    x = tf.constant(real_inputs["pose_landmark_full"][:1])
    before = [w.numpy().copy() for w in model.trainable_weights]
    with tf.GradientTape() as tape:
        out = dict(zip(model.output_names, model(x, training=True)))
        # every head contributes, so every weight gets a gradient
        loss = tf.add_n([tf.reduce_mean(tf.square(out[k] - (tf.stop_gradient(out[k]) + 1.0))) for k in out])
    grads = tape.gradient(loss, model.trainable_weights)
    assert all(g is not None and np.isfinite(g.numpy()).all() for g in grads)
    keras.optimizers.SGD(1e-3).apply_gradients(zip(grads, model.trainable_weights))
    changed = sum(not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights))
    assert changed > 0.9 * len(before)
    np.testing.assert_array_equal(src.get_weights()[0], before[0])  # the shared source model is untouched


def test_reexport_to_tflite_builtins(converted, real_inputs):
    from ai_edge_litert.interpreter import Interpreter

    from blazepose_tf.models.convert_official import TFLiteGraph, landmark_parity, landmark_parity_ok, to_tflite
    from blazepose_tf.runtime.runners import KerasRunner, assign_roles

    model = converted["pose_landmark_full"]
    blob = to_tflite(model)
    counts = TFLiteGraph(blob).op_counts()
    assert counts == {"CONV_2D": 58, "DEPTHWISE_CONV_2D": 38, "ADD": 28, "PAD": 5, "RESIZE_BILINEAR": 5,
                      "RESHAPE": 3, "MAX_POOL_2D": 2, "LOGISTIC": 1}, counts
    it = Interpreter(model_content=blob)
    it.allocate_tensors()
    x = real_inputs["pose_landmark_full"][:1]
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    outs = it.get_output_details()
    roles = assign_roles([tuple(d["shape"]) for d in outs], [d["name"] for d in outs], (256, 256))
    exported = {r: it.get_tensor(d["index"]) for r, d in zip(roles, outs)}
    assert landmark_parity_ok(landmark_parity(KerasRunner(model)(x), exported))


def test_bad_inputs_are_model_errors(tmp_path):
    from blazepose_tf.models.convert_official import TFLiteGraph, convert, converted_model_path

    with pytest.raises(ModelError, match="unknown official model"):
        convert("pose_landmark_heavy")
    with pytest.raises(ModelError, match="unknown official model"):
        converted_model_path("nope", tmp_path)
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer")
    with pytest.raises(ModelError):
        TFLiteGraph(bad)
    with pytest.raises(ModelError, match="cannot read"):
        TFLiteGraph(tmp_path / "missing.tflite")


def test_cli_rejects_unknown_model_name():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "blazepose_tf.models.convert_official", "--models", "heavy"],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --models must list names from")
    assert "Traceback" not in proc.stderr


def test_official_layers_roundtrip_and_semantics():
    import keras
    import tensorflow as tf

    from blazepose_tf.models.official_layers import BatchReshape, DepthToSpace, ResizeBilinear, ZeroPad

    x = np.random.default_rng(0).normal(size=(2, 4, 6, 8)).astype(np.float32)
    pad = ZeroPad([[1, 2], [0, 1], [0, 4]])  # includes BlazeBlock-style channel padding
    y = np.asarray(pad(x))
    assert y.shape == (2, 7, 7, 12) and np.array_equal(y[:, 1:5, 0:6, :8], x) and not y[..., 8:].any()
    for ac, hp in ((False, True), (True, False), (False, False)):
        layer = ResizeBilinear((8, 12), align_corners=ac, half_pixel_centers=hp)
        ref = tf.compat.v1.image.resize_bilinear(x, (8, 12), align_corners=ac, half_pixel_centers=hp)
        np.testing.assert_allclose(np.asarray(layer(x)), ref.numpy(), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(DepthToSpace(2)(x)), tf.nn.depth_to_space(x, 2).numpy())
    assert np.asarray(BatchReshape((24, 8))(x)).shape == (2, 24, 8)
    for layer in (pad, ResizeBilinear((8, 12)), DepthToSpace(2), BatchReshape((24, 8))):
        clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
        assert type(clone) is type(layer) and clone.get_config() == layer.get_config()
    with pytest.raises(ValueError):
        ResizeBilinear((2, 2), align_corners=True, half_pixel_centers=True)
