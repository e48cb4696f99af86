"""Closed-form landmark-head refit (``blazepose_tf.training.head_residual``, ``refit_search``, ``refit_crops``,
command ``python -m blazepose_tf.training.refit_head``) on tiny synthetic models: no ../shared data, no official
models."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest

from blazepose_tf.errors import EXIT_USAGE, InputError, ModelError
from blazepose_tf.models.loading import load_keras_model
from blazepose_tf.models.official_cache import save_model
from blazepose_tf.training.head_residual import (SILENT_HEATMAP_LOGIT, RidgeSolver, add_residual,
                                                 coordinate_columns, feature_model, head_matrix, heatmap_layer,
                                                 landmark_head, silence_heatmap_channels)
from blazepose_tf.training.refit_crops import cached, holds_nothing, jittered_roi, roi_error, rois_to_array
from blazepose_tf.training.refit_run import RefitRun
from blazepose_tf.training.refit_search import POINT_GROUPS, TrainingSet, choose_options, combined_counts, \
    fit_residuals, percent
from blazepose_tf.types import Roi

REPO = Path(__file__).resolve().parents[1]
POINTS = 4  # landmark points of the tiny tracker (5 values each)


def tiny_tracker(dense_head: bool = False, seed: int = 0) -> keras.Model:
    """A 16×16 tracker shaped like the official Full's end: a 2×2 map → a 2×2 "valid" Conv2D head (or Flatten +
    Dense) → ``landmarks``; a 1×1 ``heatmap`` head on an earlier map; ``presence``."""
    keras.utils.set_random_seed(seed)
    image = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(6, 3, strides=2, padding="same", activation="relu6", name="c1")(image)   # 8×8
    hm = keras.layers.Conv2D(POINTS, 1, name="heatmap")(x)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu6", name="c2")(x)       # 4×4
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu6", name="c3")(x)       # 2×2
    if dense_head:
        lm = keras.layers.Dense(POINTS * 5, name="head")(keras.layers.Flatten(name="flat")(x))
    else:
        lm = keras.layers.Conv2D(POINTS * 5, 2, padding="valid", name="head")(x)
    landmarks = keras.layers.Reshape((POINTS * 5,), name="landmarks")(lm)
    presence = keras.layers.Reshape((1,), name="presence")(
        keras.layers.Conv2D(1, 2, activation="sigmoid", name="presence_conv")(x))
    return keras.Model(image, [landmarks, presence, hm], name="tiny")


def _inputs(n: int = 96, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (n, 16, 16, 3)).astype(np.float32)


@pytest.mark.parametrize("dense", [False, True])
def test_head_and_features_found(dense: bool):
    model = tiny_tracker(dense)
    assert landmark_head(model).name == "head"
    assert heatmap_layer(model).name == "heatmap"
    out = feature_model(model)(_inputs(4))
    assert out["features"].shape == (4, 2 * 2 * 8)
    assert set(out) == {"features", "landmarks", "presence", "heatmap"}
    # the head is one matrix product on the flattened features
    w, b = head_matrix(landmark_head(model))
    np.testing.assert_allclose(np.asarray(out["features"]) @ w + b, np.asarray(out["landmarks"]), atol=1e-4)


def test_nonlinear_head_is_refused():
    image = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, strides=4, padding="same")(image)
    lm = keras.layers.Conv2D(10, 2, activation="relu", name="head")(x)
    model = keras.Model(image, keras.layers.Reshape((10,), name="landmarks")(lm))
    with pytest.raises(ModelError, match="cannot be refit"):
        landmark_head(model)


@pytest.mark.parametrize("dense", [False, True])
def test_ridge_residual_recovers_a_planted_offset(dense: bool, tmp_path: Path):
    """Targets = the model's own landmarks + a planted linear map of its features on points 1 and 2: the fitted
    residual recovers the map, the refit model predicts the targets, every other row is bit-identical."""
    model = tiny_tracker(dense)
    fm = feature_model(model)
    x = _inputs()
    out = {k: np.asarray(v, np.float64) for k, v in fm(x).items()}
    feats = out["features"]
    cols = coordinate_columns([1, 2])
    np.testing.assert_array_equal(cols, [5, 6, 10, 11])
    rng = np.random.default_rng(3)
    planted_w = rng.normal(0, 2.0, (feats.shape[1], len(cols)))
    planted_b = np.array([3.0, -2.0, 1.5, 4.0])
    targets = out["landmarks"][:, cols] + feats @ planted_w + planted_b

    residual = RidgeSolver(feats).fit(targets - out["landmarks"][:, cols], 1e-9, cols)
    np.testing.assert_allclose(residual.predict(feats), feats @ planted_w + planted_b, atol=1e-4)
    np.testing.assert_allclose(residual.bias + residual.weights.T @ feats.mean(0),
                               planted_b + planted_w.T @ feats.mean(0), atol=1e-4)

    head = landmark_head(model)
    before = [w.copy() for w in head.get_weights()]
    heatmap_before = [w.copy() for w in heatmap_layer(model).get_weights()]
    add_residual(model, residual)
    silence_heatmap_channels(model, [1, 2])

    path = save_model(model, tmp_path / "refit.keras")
    loaded = load_keras_model(path)
    got = {k: np.asarray(v) for k, v in feature_model(loaded)(x).items()}
    np.testing.assert_allclose(got["landmarks"][:, cols], targets, atol=1e-3)
    other = np.setdiff1d(np.arange(POINTS * 5), cols)
    np.testing.assert_array_equal(got["landmarks"][:, other], np.asarray(model(x)[0])[:, other])
    # the stored rows outside the refit columns are untouched, bit for bit
    kernel, bias = (np.asarray(w) for w in landmark_head(loaded).get_weights())
    np.testing.assert_array_equal(kernel.reshape(-1, POINTS * 5)[:, other],
                                  before[0].reshape(-1, POINTS * 5)[:, other])
    np.testing.assert_array_equal(bias[other], before[1][other])
    # silenced heatmap channels are the constant; the others are identical
    np.testing.assert_allclose(got["heatmap"][..., [1, 2]], SILENT_HEATMAP_LOGIT)
    np.testing.assert_array_equal(np.asarray(heatmap_layer(loaded).get_weights()[0])[..., [0, 3]],
                                  heatmap_before[0][..., [0, 3]])
    np.testing.assert_array_equal(got["presence"], np.asarray(model(x)[1]))


def test_ridge_penalty_shrinks_towards_the_mean_offset():
    rng = np.random.default_rng(0)
    feats = rng.uniform(0, 6, (200, 10))
    target = (feats @ rng.normal(size=(10, 2))) + np.array([5.0, -1.0])
    huge = RidgeSolver(feats).fit(target, 1e9, [0, 1])
    np.testing.assert_allclose(huge.weights, 0.0, atol=1e-6)
    np.testing.assert_allclose(huge.predict(feats), np.broadcast_to(target.mean(0), target.shape), atol=1e-4)
    with pytest.raises(ValueError):
        RidgeSolver(feats).fit(target, 0.0, [0, 1])


def test_fit_residuals_learns_only_from_inliers():
    """Per point, crops where the base head is more than ``inlier_torso`` torsos off are left out of the fit."""
    from blazepose_tf.topology import BLAZEPOSE_33 as T

    rng = np.random.default_rng(0)
    n, k = 300, T.num_keypoints
    target = np.zeros((n, k, 2))
    for name, xy in {"left_shoulder": (140, 80), "right_shoulder": (116, 80), "left_hip": (136, 128),
                     "right_hip": (120, 128)}.items():
        target[:, T.index(name)] = xy  # torso = 48 px
    base_xy = target.copy()
    lh = T.index("left_hip")
    target[:, lh] += [3.0, -2.0]            # a constant convention offset of the left hip ...
    target[:40, lh] += [200.0, 0.0]         # ... and 40 gross failures a linear head cannot repair
    landmarks = np.zeros((n, 39, 5))
    landmarks[:, :k, :2] = base_xy
    annotated = np.zeros((n, k), bool)
    annotated[:, [T.index(g) for pair in POINT_GROUPS.values() for g in pair]] = True
    train = TrainingSet(rng.uniform(0, 6, (n, 5)), landmarks.reshape(n, -1), target, annotated)
    res = fit_residuals(train, [lh], [1e3], inlier_torso=0.3)[1e3]
    np.testing.assert_allclose(res.bias, [3.0, -2.0], atol=1e-6)
    res_all = fit_residuals(train, [lh], [1e3], inlier_torso=math.inf)[1e3]
    assert res_all.bias[0] > 20  # the failures drag an all-crop fit away


def test_options_are_chosen_per_group():
    names = [n for pair in POINT_GROUPS.values() for n in pair]
    official = {n: (50, 100) for n in names}
    keep = {**official, "left_hip": (55, 100), "right_hip": (52, 100), "left_knee": (40, 100)}
    off = {**official, "left_hip": (60, 100), "right_hip": (49, 100), "left_shoulder": (50, 100)}
    counts = {"official": official, "keep": keep, "off": off}
    options = choose_options(counts, list(POINT_GROUPS))
    assert options["hips"] == "off" and options["knees"] == "official" and options["shoulders"] == "official"
    combined = combined_counts(counts, options)
    assert combined["left_hip"] == (60, 100) and combined["left_knee"] == (50, 100)
    assert percent(combined) == pytest.approx(100 * (50 * 10 + 109) / 1200)


def test_roi_jitter_round_trip():
    ref = Roi(100.0, 80.0, 60.0, 60.0, 0.4)
    moved = Roi(106.0, 75.0, 66.0, 66.0, -0.2)
    back = jittered_roi(ref, roi_error(moved, ref))
    for a, b in zip((back.x_center, back.y_center, back.width, back.rotation),
                    (moved.x_center, moved.y_center, moved.width, moved.rotation)):
        assert a == pytest.approx(b)


def test_command_checks_flags_before_loading_anything(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "blazepose_tf.training.refit_head", "--annotations", "a.json"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == EXIT_USAGE
    assert "Traceback" not in proc.stderr and "error: --annotations, --images and --output_dir" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "blazepose_tf.training.refit_head", "--annotations", "a.json",
                           "--images", ".", "--output_dir", "o", "--dev_split", "test"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == EXIT_USAGE and "chosen on dev" in proc.stderr
    done = tmp_path / "run"   # a refit already made there: refused before any work, the file untouched
    done.mkdir()
    (done / "best.json").write_text("{}")
    proc = subprocess.run([sys.executable, "-m", "blazepose_tf.training.refit_head", "--annotations", "a.json",
                           "--images", ".", "--output_dir", str(done)], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == EXIT_USAGE and "Traceback" not in proc.stderr
    assert f"error: --output_dir {done} already holds a refit (best.json)" in proc.stderr
    assert (done / "best.json").read_text() == "{}"


def test_weights_restored_puts_every_weight_back_even_after_an_error():
    from blazepose_tf.training.head_residual import weights_restored
    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.BatchNormalization(name="bn")(keras.layers.Dense(3, name="d")(inp)))
    before = [w.copy() for w in model.get_weights()]
    with weights_restored(model) as same:
        assert same is model
        model.set_weights([w + 1 for w in before])
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(RuntimeError):
        with weights_restored(model):
            model.get_layer("bn").moving_mean.assign(np.full(3, 7.0, np.float32))   # non-trainable state too
            raise RuntimeError("a failed save")
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)


# --- the refits' cache (refit_crops.cached, shared with refit_teacher) and refit_head's cache key ------------------
def test_an_unreadable_cache_file_is_computed_again_and_replaced(tmp_path, capsys):
    path = tmp_path / "cache" / "rois-0123.npz"
    path.parent.mkdir()
    path.write_bytes(b"PK\x03\x04 a truncated zip")          # an interrupted copy, a full disk
    calls = []

    def compute():
        calls.append(1)
        return {"rois": np.arange(10, dtype=np.float64).reshape(2, 5)}

    got = cached(path, compute)
    np.testing.assert_array_equal(got["rois"], compute()["rois"])
    warnings = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: cache file {path} cannot be read")
    with np.load(path) as z:                                # rewritten, readable
        np.testing.assert_array_equal(z["rois"], got["rois"])
    calls.clear()
    np.testing.assert_array_equal(cached(path, compute)["rois"], got["rois"])
    assert not calls and not capsys.readouterr().err        # a hit now
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]   # no temporary file left


def test_a_result_that_holds_nothing_is_not_cached(tmp_path):
    """No image read / nobody found (every ROI NaN, or no row at all): returned, never stored, so a mistake does not
    answer the corrected run."""
    nothing = {"rois": rois_to_array([None, None, None])}
    assert holds_nothing(nothing) and holds_nothing({"features": np.zeros((0, 8), np.float32)})
    assert not holds_nothing({"rois": rois_to_array([None, Roi(1.0, 2.0, 3.0, 3.0, 0.0)])})
    path = tmp_path / "rois-0123.npz"
    assert np.isnan(cached(path, lambda: nothing)["rois"]).all() and not path.exists()
    found = {"rois": rois_to_array([None, Roi(1.0, 2.0, 3.0, 3.0, 0.0)])}
    cached(path, lambda: found)
    assert path.is_file()


def _refit_data(root: Path) -> tuple[Path, Path]:
    """annotations.json (+ splits.json: image 1 in train and in choose) of one 64×64 image with a scored person (both
    shoulders and hips), and the images folder holding it."""
    images = root / "images"
    images.mkdir(parents=True)
    cv2.imwrite(str(images / "a.png"), np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8))
    names = ["left_shoulder", "right_shoulder", "left_hip", "right_hip"]
    ann = root / "annotations.json"
    ann.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 64}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1,
                         "keypoints": [40, 20, 2, 24, 20, 2, 38, 44, 2, 26, 44, 2]}],
        "categories": [{"id": 1, "name": "person", "keypoints": names}]}))
    (root / "splits.json").write_text(json.dumps({"train": [1], "choose": [1]}))
    return ann, images


def test_refit_cache_key_holds_the_images_and_a_wrong_folder_is_refused(tmp_path, capsys):
    """The key names the images folder and each image's size and time: another copy of the photos, or a changed
    photo, is a new entry; a folder without the split's images is one error before the detector runs."""
    ann, images = _refit_data(tmp_path / "data")
    base = save_model(tiny_tracker(), tmp_path / "base.keras")
    detector = tmp_path / "det.tflite"
    detector.write_bytes(b"only hashed: the detector loads when it runs")

    def run(images_dir: Path) -> RefitRun:
        return RefitRun(ann, images_dir, None, str(base), str(detector), tmp_path / "cache", progress=False)

    key = run(images).cache_path("rois", "choose", "d")
    assert run(images).cache_path("rois", "choose", "d") == key       # stable
    assert run(images).cache_path("rois", "train", "d") != key        # the split
    copy = tmp_path / "copy"
    shutil.copytree(images, copy)
    assert run(copy).cache_path("rois", "choose", "d") != key         # another folder with the same names
    cv2.imwrite(str(images / "a.png"), np.zeros((48, 48, 3), np.uint8))
    assert run(images).cache_path("rois", "choose", "d") != key       # a changed photo

    typo = tmp_path / "imgs"
    typo.mkdir()
    with pytest.raises(InputError, match=rf"none of the 1 scored images of split 'choose' is in --images {typo} "
                                         rf"\(first: {typo}/a.png not found\)"):
        run(typo).people("choose")
    assert not (tmp_path / "cache").exists()                          # nothing cached by the mistake

    two = tmp_path / "two"                                            # one of two images missing: a warning
    doc = json.loads(ann.read_text())
    doc["images"].append({"id": 2, "file_name": "b.png", "width": 64, "height": 64})
    doc["annotations"].append({**doc["annotations"][0], "id": 2, "image_id": 2})
    two.mkdir()
    (two / "annotations.json").write_text(json.dumps(doc))
    (two / "splits.json").write_text(json.dumps({"train": [1, 2]}))
    capsys.readouterr()
    RefitRun(two / "annotations.json", images, None, str(base), str(detector), tmp_path / "cache",
             progress=False).people("train")
    assert capsys.readouterr().err.strip() == (f"warning: 1 of the 2 scored images of split 'train' not found in "
                                               f"--images {images} (first: {images}/b.png)")


@pytest.mark.parametrize("module, args", [
    ("blazepose_tf.training.refit_head", ("--annotations", "a.json", "--images", ".")),
    ("blazepose_tf.training.refit_teacher", ("--base", "b.keras", "--detector", "d.tflite", "--photos", ".")),
])
def test_refits_refuse_a_cache_dir_that_is_a_file_before_any_work(tmp_path, module, args):
    """A --cache_dir that is a file (or under one) is one error line, exit 2, before a model or image is read (the
    files the flags name do not even exist)."""
    user_file = tmp_path / "person.jpg"
    user_file.write_bytes(b"a user's photo")
    for cache, message in ((user_file, f"error: --cache_dir {user_file} is a file, not a folder"),
                           (user_file / "sub", f"error: cannot write --cache_dir {user_file}/sub: "
                                               f"{user_file} is a file, not a folder")):
        proc = subprocess.run([sys.executable, "-m", module, *args, "--output_dir", str(tmp_path / "run"),
                               "--cache_dir", str(cache)], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert proc.returncode == EXIT_USAGE and "Traceback" not in proc.stderr
        assert proc.stderr.strip().splitlines() == [message]
    assert user_file.read_bytes() == b"a user's photo" and not (tmp_path / "run").exists()


def test_command_with_a_wrong_images_folder_says_so_before_the_detector_runs(tmp_path):
    """The audit's typo'd --images: one error line naming the folder (exit 3), before the detector (here a file
    that is not a model) is loaded, and nothing is cached, so the corrected run starts clean."""
    ann, images = _refit_data(tmp_path / "data")
    base = save_model(tiny_tracker(), tmp_path / "base.keras")
    detector = tmp_path / "det.tflite"
    detector.write_bytes(b"not a model: never loaded")
    typo = tmp_path / "imgs"
    typo.mkdir()
    proc = subprocess.run([sys.executable, "-m", "blazepose_tf.training.refit_head", "--annotations", str(ann),
                           "--images", str(typo), "--base", str(base), "--detector", str(detector),
                           "--dev_split", "choose", "--train_crops", "gt", "--output_dir", str(tmp_path / "run"),
                           "--cache_dir", str(tmp_path / "cache"), "--noprogress"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: none of the 1 scored images of split 'choose' is in --images {typo} (first: "
                      f"{typo}/a.png not found): is it the folder the annotations' file_name entries are relative "
                      "to?"]
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run").exists()
