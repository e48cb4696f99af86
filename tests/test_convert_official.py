"""Official-weight conversion: graph reading, the Keras rebuild, parity with the .tflite on real inputs,
.keras round trip, fine-tunability and re-export to TFLite builtins; the command and its import path."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from blazepose_tf import tflite_file
from blazepose_tf.datasets.coco import load_coco_keypoints
from blazepose_tf.errors import ModelError
from blazepose_tf.evaluation import scored_records
from blazepose_tf.io.images import load_image
from blazepose_tf.io.samples import sample_image_path
from blazepose_tf.models import convert_official, official_cache, official_parity, official_translation
from blazepose_tf.models.official_cache import converted_model_path, save_model
from blazepose_tf.models.official_layers import BatchReshape, DepthToSpace, ResizeBilinear, ZeroPad
from blazepose_tf.models.official_parity import (detector_parity, detector_parity_ok, landmark_parity,
                                                 landmark_parity_ok, sample_inputs)
from blazepose_tf.models.official_translation import convert, pose_landmark_lite, to_tflite, translate
from blazepose_tf.official import official_model_path
from blazepose_tf.runtime.pipeline import PoseTracker
from blazepose_tf.runtime.runners import KerasRunner, TFLiteRunner, assign_roles
from blazepose_tf.tflite_file import TFLiteGraph, load_interpreter

REPO = Path(__file__).resolve().parents[1]
NUM_REAL_IMAGES = 6
# The official Lite's ops (docs/design.md §3.1); its re-export fuses the RELUs and drops the weight DEQUANTIZEs.
LITE_OPS = {"DEQUANTIZE": 236, "CONV_2D": 62, "RELU": 57, "DEPTHWISE_CONV_2D": 56, "ADD": 53, "MAX_POOL_2D": 9,
            "PAD": 7, "RESIZE_BILINEAR": 4, "RESHAPE": 3, "LOGISTIC": 1}
LITE_REEXPORT_OPS = {"CONV_2D": 62, "DEPTHWISE_CONV_2D": 56, "ADD": 53, "MAX_POOL_2D": 9, "PAD": 7,
                     "RESIZE_BILINEAR": 4, "RESHAPE": 3, "LOGISTIC": 1}


def _official_or_skip(*names: str) -> dict[str, Path]:
    """Paths of official models (fetched if needed; the Lite is packaged); skips the test when one is unavailable."""
    try:
        return {n: official_model_path(n) for n in names}
    except ModelError as e:
        pytest.skip(f"official models unavailable: {e}")


@pytest.fixture(scope="module")
def official_paths() -> dict[str, Path]:
    return _official_or_skip("pose_detection", "pose_landmark_full")


@pytest.fixture(scope="module")
def lite_path() -> Path:
    """The packaged official Lite (no cache, no network)."""
    return _official_or_skip("pose_landmark_lite")["pose_landmark_lite"]


@pytest.fixture(scope="module")
def lite(lite_path) -> keras.Model:
    return pose_landmark_lite()


@pytest.fixture(scope="module")
def converted(official_paths) -> dict:
    return {name: convert(name) for name in official_paths}


@pytest.fixture(scope="module")
def real_inputs(request, official_paths) -> dict[str, np.ndarray]:
    """Detector inputs and tracker crops (official detector → ROI → crop) from a few LSPET dev images, or from
    the offline sample photo when the shared data folder is absent."""
    images = []
    try:
        shared = request.getfixturevalue("shared_data")
    except pytest.skip.Exception:
        shared = None
    if shared is not None and (shared / "lspet" / "annotations.json").is_file():
        root = shared / "lspet"
        ds = load_coco_keypoints(root / "annotations.json", root / "images", split="dev",
                                 splits_json=root / "splits.json")
        images = [load_image(r.file_path) for r in scored_records(ds, NUM_REAL_IMAGES)]
    if not images:
        images = [load_image(sample_image_path())]
    batches = [sample_inputs(np.asarray(im)) for im in images]
    return {k: np.concatenate([b[k] for b in batches], axis=0) for k in batches[0]}


def test_official_graph_structure(official_paths):
    lm = TFLiteGraph(official_paths["pose_landmark_full"]).op_counts()
    assert lm == {"DEQUANTIZE": 192, "CONV_2D": 58, "DEPTHWISE_CONV_2D": 38, "ADD": 28, "PAD": 5,
                  "RESIZE_BILINEAR": 5, "RESHAPE": 3, "MAX_POOL_2D": 2, "LOGISTIC": 1}
    det = TFLiteGraph(official_paths["pose_detection"])
    assert det.op_counts()["DENSIFY"] == 38 and det.op_counts()["DEPTH_TO_SPACE"] == 3
    resize = [op for op in det.ops if op.kind == "RESIZE_BILINEAR"]
    assert all(op.options["half_pixel_centers"] and not op.options["align_corners"] for op in resize)


def test_weights_match_interpreter(official_paths):
    """fp16 dequantization and sparse (DENSIFY) decoding from the flatbuffer equal what TFLite computes."""
    for path in official_paths.values():
        graph = TFLiteGraph(path)
        it = load_interpreter(path, use_xnnpack=False, experimental_preserve_all_tensors=True)
        d = it.get_input_details()[0]
        it.set_tensor(d["index"], np.zeros(d["shape"], np.float32))
        it.invoke()
        outs = [op.outputs[0] for op in graph.ops if op.kind == "DEQUANTIZE"]
        assert outs
        for t in outs:
            np.testing.assert_array_equal(graph.constant(t), it.get_tensor(t))


def test_output_names_shapes_and_layers(converted):
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


def test_lite_graph_and_keras_model(lite_path, lite):
    assert TFLiteGraph(lite_path).op_counts() == LITE_OPS
    assert lite.output_names == ["landmarks", "presence", "segmentation", "heatmap", "world"]
    assert [tuple(o.shape) for o in lite.outputs] == [(None, 195), (None, 1), (None, 128, 128, 1),
                                                      (None, 64, 64, 39), (None, 117)]
    assert lite.count_params() == 1_440_065 and not lite.non_trainable_weights
    assert not [layer for layer in lite.layers if isinstance(layer, keras.layers.Lambda)]


def test_lite_parity_on_real_crops(lite_path, lite, real_inputs):
    """The converted Lite against the packaged .tflite on real tracker crops (official detector → ROI → crop), as
    the runtime runs both (TFLite with XNNPACK; Keras in one tf.function)."""
    x = real_inputs["pose_landmark_lite"]
    tflite = TFLiteRunner(lite_path)
    assert tflite.output_roles == ["landmarks", "presence", "segmentation", "heatmap", "world"]
    stats = landmark_parity(tflite(x), KerasRunner(lite)(x))
    assert landmark_parity_ok(stats), stats
    assert stats["xy_px_max"] < 0.05 and stats["heatmap_max"] < 0.01 and stats["world_m_max"] < 1e-3
    assert stats["segmentation_prob_max"] < 1e-3


def test_lite_trains_in_tf_function_and_reexports_to_builtins(lite, real_inputs):
    """A gradient step inside tf.function (a BlazeBlock's PAD feeding a VALID 1x1 conv's residual add crashed
    TensorFlow's oneDNN pass: the translation keeps 1x1 convolutions SAME) and a re-export with the official op list
    (PAD, not PADV2, so XNNPACK keeps the whole graph)."""
    x = tf.constant(real_inputs["pose_landmark_lite"][:1])

    @tf.function
    def grads():
        with tf.GradientTape() as tape:
            loss = tf.add_n([tf.reduce_mean(tf.square(o)) for o in lite(x, training=True)])
        return tape.gradient(loss, lite.trainable_weights)

    assert all(g is not None and np.isfinite(g.numpy()).all() for g in grads())
    blob = to_tflite(lite)
    assert TFLiteGraph(blob).op_counts() == LITE_REEXPORT_OPS
    it = load_interpreter(blob)
    it.set_tensor(it.get_input_details()[0]["index"], x.numpy())
    it.invoke()
    outs = it.get_output_details()
    roles = assign_roles([tuple(d["shape"]) for d in outs], [d["name"] for d in outs], (256, 256))
    assert landmark_parity_ok(landmark_parity(KerasRunner(lite)(x.numpy()),
                                              {r: it.get_tensor(d["index"]) for r, d in zip(roles, outs)}))


def test_pipeline_runs_on_converted_models(converted, official_paths):
    image = load_image(sample_image_path())
    ours = PoseTracker(KerasRunner(converted["pose_detection"]), KerasRunner(converted["pose_landmark_full"]),
                       mode="image", roi_passes=1).process(image)  # one pass: the models' parity, not ROI feedback
    ref = PoseTracker.from_official(mode="image", roi_passes=1).process(image)
    assert len(ours) == len(ref) == 1
    # image pixels: the ROI is ~2x the crop here, and the heatmap refinement can shift a point by a bit more
    np.testing.assert_allclose(ours[0].keypoints[:, :2], ref[0].keypoints[:, :2], atol=0.5)
    np.testing.assert_allclose(ours[0].visibility, ref[0].visibility, atol=1e-3)
    assert abs(ours[0].score - ref[0].score) < 1e-3


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Keras' own np.array(copy=False) on save
def test_keras_roundtrip_and_cached_path(converted, tmp_path, real_inputs):
    # official_cache (imported above) registers the custom layers of official_layers for loading
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
    assert _files(tmp_path / "cache") == ["pose_detection.keras",
                                                                        "pose_detection.keras.json"]
    (tmp_path / "cache" / "pose_detection.keras.json").write_text("{}")  # stale stamp → converted again
    converted_model_path("pose_detection", tmp_path / "cache")
    assert "converter_version" in (tmp_path / "cache" / "pose_detection.keras.json").read_text()


def test_converted_model_is_trainable(converted, real_inputs):
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
    model = converted["pose_landmark_full"]
    blob = to_tflite(model)
    counts = TFLiteGraph(blob).op_counts()
    assert counts == {"CONV_2D": 58, "DEPTHWISE_CONV_2D": 38, "ADD": 28, "PAD": 5, "RESIZE_BILINEAR": 5,
                      "RESHAPE": 3, "MAX_POOL_2D": 2, "LOGISTIC": 1}, counts
    it = load_interpreter(blob)
    x = real_inputs["pose_landmark_full"][:1]
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    outs = it.get_output_details()
    roles = assign_roles([tuple(d["shape"]) for d in outs], [d["name"] for d in outs], (256, 256))
    exported = {r: it.get_tensor(d["index"]) for r, d in zip(roles, outs)}
    assert landmark_parity_ok(landmark_parity(KerasRunner(model)(x), exported))


def test_bad_inputs_are_model_errors(tmp_path):
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


def test_public_names_keep_their_import_path():
    """zoo, training, models.pruned, benchmarks and tests import these from convert_official: the same objects as
    in the modules that now hold them."""
    homes = {
        official_translation: ("OFFICIAL_NAMES", "convert", "count_params", "pose_detection", "pose_landmark_full",
                               "pose_landmark_lite", "to_tflite", "translate"),
        official_cache: ("CONVERTER_VERSION", "converted_model_path", "load_converted", "save_converted",
                         "save_model"),
        official_parity: ("LANDMARK_PX_TOL", "PROBABILITY_TOL", "REGRESSOR_PX_TOL", "detector_parity",
                          "detector_parity_ok", "landmark_parity", "landmark_parity_ok", "sample_inputs"),
        tflite_file: ("TFLiteGraph",),
    }
    for module, names in homes.items():
        for name in names:
            assert getattr(convert_official, name) is getattr(module, name), name
    assert convert_official.OFFICIAL_NAMES == ("pose_detection", "pose_landmark_full", "pose_landmark_lite")


def test_models_layer_does_not_import_the_runtime():
    code = ("import sys, blazepose_tf.models.convert_official; "
            "print(sorted(m for m in sys.modules if m.startswith('blazepose_tf.runtime')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_translate_needs_one_role_per_output(official_paths):
    graph = TFLiteGraph(official_paths["pose_detection"])
    with pytest.raises(ModelError, match="2 outputs, 1 roles given"):
        translate(graph, "detector", ["regressors"])


def _files(folder: Path) -> list[str]:
    """The folder's files but the save lock (``.<name>.keras.lock``, kept for the next save)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".keras.lock"))


def _tiny_stand_in(name: str) -> keras.Model:
    """A small Keras model standing in for a conversion (the stamp logic does not depend on what was converted)."""
    inp = keras.Input((4,), name="x")
    return keras.Model(inp, keras.layers.Dense(2, name="y")(inp), name=name)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Keras' own np.array(copy=False) on save
def test_stamp_records_the_written_file_and_an_edited_file_is_refused(tmp_path, monkeypatch):
    """The stamp records the .keras's sha256: the cache reuses an unchanged file, converts a stale one again, and
    refuses one the user has changed since (never replaced, never loaded as MediaPipe's model, even with force);
    a stamp from before the sha256 was recorded still vouches for its file."""
    from blazepose_tf.official import sha256

    conversions = []
    monkeypatch.setattr(official_cache, "convert", lambda name: conversions.append(name) or _tiny_stand_in(name))
    path = converted_model_path("pose_detection", tmp_path)
    stamp = official_cache.read_stamp(path)
    assert stamp == {"converter_version": official_cache.CONVERTER_VERSION,
                     "source_sha256": official_cache.OFFICIAL_SHA256["pose_detection"], "keras_sha256": sha256(path)}
    assert not official_cache.changed_since_converted(path)
    assert converted_model_path("pose_detection", tmp_path) == path and conversions == ["pose_detection"]
    assert _files(tmp_path) == ["pose_detection.keras", "pose_detection.keras.json"]

    save_model(_tiny_stand_in("users_own"), path)  # the user edits the converted model in place
    users = path.read_bytes()
    assert official_cache.changed_since_converted(path)
    for force in (False, True):
        with pytest.raises(ModelError, match=r"pose_detection\.keras has been changed since the converter wrote it "
                                             r"\(pose_detection\.keras\.json records another sha256\).*--overwrite"):
            converted_model_path("pose_detection", tmp_path, force=force)
    with pytest.raises(ModelError, match="has been changed since"):
        official_cache.load_converted("pose_detection", tmp_path)
    assert path.read_bytes() == users and conversions == ["pose_detection"]

    # A stamp written before the sha256 was recorded: the file is taken as the converter's, as it was.
    official_cache.stamp_path(path).write_text(json.dumps({k: v for k, v in stamp.items() if k != "keras_sha256"}))
    assert not official_cache.changed_since_converted(path)
    assert converted_model_path("pose_detection", tmp_path) == path and path.read_bytes() == users
    # A stale stamp: converted again, and the new stamp records the new file.
    official_cache.stamp_path(path).write_text("{}")
    converted_model_path("pose_detection", tmp_path)
    assert conversions == ["pose_detection"] * 2 and path.read_bytes() != users
    assert official_cache.read_stamp(path)["keras_sha256"] == sha256(path)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_conversion_stopped_before_its_rename_leaves_the_earlier_file_vouched_for(tmp_path, monkeypatch):
    """While a new conversion replaces an earlier one, the stamp vouches for both: stopped just before the rename,
    the earlier file is still the converter's (not taken for the user's edit); no temporary file is left."""
    path = official_cache.save_converted(_tiny_stand_in("first"), "pose_detection", tmp_path)
    first = path.read_bytes()
    real_replace = os.replace

    def interrupted(src, dst):
        if str(dst).endswith(".keras"):
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(official_cache.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        official_cache.save_converted(_tiny_stand_in("second"), "pose_detection", tmp_path)
    monkeypatch.undo()
    assert path.read_bytes() == first and not official_cache.changed_since_converted(path)
    assert _files(tmp_path) == ["pose_detection.keras", "pose_detection.keras.json"]
    official_cache.save_converted(_tiny_stand_in("second"), "pose_detection", tmp_path)
    assert path.read_bytes() != first and not official_cache.changed_since_converted(path)
    assert "replaces_sha256" not in official_cache.read_stamp(path)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_two_saves_at_once_leave_a_stamp_that_names_the_file(tmp_path, monkeypatch):
    """Two processes converting into one cache at once: each save's stamp is written while it holds the save lock,
    so the stamp always names the file in place (unlocked, one save's stamp landed after the other's file)."""
    import threading

    from blazepose_tf.official import sha256

    path = official_cache.save_converted(_tiny_stand_in("first"), "pose_detection", tmp_path)
    real_replace = os.replace

    def slow_replace(src, dst):   # widen the window between a save's rename and its stamp
        real_replace(src, dst)
        if str(dst).endswith(".keras"):
            time.sleep(0.3)

    monkeypatch.setattr(official_cache.os, "replace", slow_replace)
    saves = [threading.Thread(target=official_cache.save_converted, args=(_tiny_stand_in(n), "pose_detection",
                                                                            tmp_path)) for n in ("a", "b")]
    for t in saves:
        t.start()
    for t in saves:
        t.join()
    monkeypatch.undo()
    stamp = official_cache.read_stamp(path)
    assert stamp["keras_sha256"] == sha256(path) and "replaces_sha256" not in stamp
    assert not official_cache.changed_since_converted(path)


def test_cli_refuses_a_converted_model_changed_since_without_tensorflow(tmp_path):
    """convert_official without --overwrite: a .keras whose stamp records another sha256 is the user's (exit 2, one
    line, the file untouched), refused before TensorFlow starts."""
    out = tmp_path / "conv"
    out.mkdir()
    edited = out / "pose_landmark_lite.keras"
    edited.write_bytes(b"the user's fine-tuned model")
    (out / "pose_landmark_lite.keras.json").write_text(json.dumps(
        {"converter_version": 2, "source_sha256": "0" * 64, "keras_sha256": "1" * 64}))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    code = ("import sys, runpy\nsys.argv = sys.argv[1:]\ntry:\n"
            "    runpy.run_module('blazepose_tf.models.convert_official', run_name='__main__')\n"
            "finally:\n    print('tensorflow' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code, "convert_official", "--models", "pose_landmark_lite",
                           "--output_dir", str(out)], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == (f"error: {edited} has been changed since this converter wrote it "
                                   "(pose_landmark_lite.keras.json records another sha256); pass --overwrite to "
                                   "replace it, or choose another --output_dir")
    assert edited.read_bytes() == b"the user's fine-tuned model"
    assert proc.stdout.strip().splitlines()[-1] == "False"  # TensorFlow was not imported
