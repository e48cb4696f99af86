"""Depth pruning of the official Full (blazepose_tf.models.pruned) on a tiny stand-in graph, and on the real
converted official Full when it is available."""
from __future__ import annotations

import numpy as np
import pytest

from blazepose_tf.models.pruned import FEATURE_PREFIX, PRUNED_PRESETS, fit_linear_skips, prune_full, with_features


def _tiny_full(linear_branch: bool):
    """image → stem → project (linear) → [residual block] → add → expand (relu6) → head outputs.

    With ``linear_branch`` the residual block is one linear 1×1 conv, so ``add = (I + W)·project`` exactly."""
    import keras
    from keras import layers

    rng = np.random.default_rng(0)
    x = keras.Input((16, 16, 3), name="image")
    stem = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu6", name="stem")(x)
    proj = layers.Conv2D(6, 1, name="project")(stem)
    if linear_branch:
        branch = layers.Conv2D(6, 1, name="branch")(proj)
    else:
        branch = layers.Conv2D(12, 1, activation="relu6", name="branch_expand")(proj)
        branch = layers.DepthwiseConv2D(3, padding="same", name="branch_dw")(branch)
        branch = layers.Conv2D(6, 1, name="branch_project")(branch)
    res = layers.Add(name="res_add")([branch, proj])
    expand = layers.Conv2D(10, 1, activation="relu6", name="expand")(res)
    pooled = layers.GlobalAveragePooling2D(keepdims=True, name="pool")(expand)
    lm = layers.Reshape((195,), name="landmarks")(layers.Conv2D(195, 1, name="convld_3d")(pooled))
    presence = layers.Reshape((1,), name="presence")(layers.Conv2D(1, 1, activation="sigmoid", name="flag")(pooled))
    world = layers.Reshape((117,), name="world")(layers.Conv2D(117, 1, name="convworld")(pooled))
    heat = layers.Conv2D(39, 1, name="heatmap")(stem)
    model = keras.Model(x, [lm, presence, heat, world], name="tiny_full")
    for w in model.weights:
        w.assign(rng.normal(0, 0.3, w.shape).astype("float32"))
    return model


def _images(n: int = 6) -> np.ndarray:
    return np.random.default_rng(1).random((n, 16, 16, 3), dtype=np.float32)


def test_prune_drops_block_and_unused_branches():
    full = _tiny_full(linear_branch=False)
    pruned = prune_full(full, ["res_add"])
    names = {layer.name for layer in pruned.layers}
    assert pruned.output_names == ["landmarks", "presence", "world"]
    assert not names & {"res_add", "branch_expand", "branch_dw", "branch_project", "heatmap"}
    assert pruned.count_params() < full.count_params()
    # with nothing skipped the kept outputs are the full model's, value for value
    same = prune_full(full, [])
    x = _images()
    ref = dict(zip(full.output_names, full(x)))
    for name, out in zip(same.output_names, same(x)):
        np.testing.assert_allclose(np.asarray(out), np.asarray(ref[name]), atol=1e-5)


def test_prune_rejects_layers_that_are_not_residual_adds():
    full = _tiny_full(linear_branch=False)
    with pytest.raises(ValueError, match="not an Add"):
        prune_full(full, ["expand"])
    with pytest.raises(ValueError, match="not an Add"):
        prune_full(full, ["no_such_layer"])


def test_linear_fit_recovers_a_linear_block_exactly():
    import keras

    full = _tiny_full(linear_branch=True)
    shared = prune_full(full, ["res_add"])
    pruned = keras.models.clone_model(shared)
    pruned.set_weights(shared.get_weights())
    x = _images()
    ref = np.asarray(dict(zip(full.output_names, full(x)))["landmarks"])
    before = np.abs(np.asarray(pruned(x)[0]) - ref).max()
    residuals = fit_linear_skips(pruned, full, [("project", "res_add")], x)
    after = np.abs(np.asarray(pruned(x)[0]) - ref).max()
    assert residuals["res_add"] < 1e-8
    assert before > 1e-2 and after < 1e-3 * max(1.0, np.abs(ref).max())


def test_linear_fit_reduces_error_of_a_nonlinear_block_and_refuses_nonlinear_convs():
    import keras

    full = _tiny_full(linear_branch=False)
    shared = prune_full(full, ["res_add"])
    pruned = keras.models.clone_model(shared)
    pruned.set_weights(shared.get_weights())
    x = _images(12)
    probe_full = keras.Model(full.inputs, full.get_layer("expand").output)
    err_before = np.mean((np.asarray(keras.Model(pruned.inputs, pruned.get_layer("expand").output)(x))
                          - np.asarray(probe_full(x))) ** 2)
    fit_linear_skips(pruned, full, [("project", "res_add")], x)
    err_after = np.mean((np.asarray(keras.Model(pruned.inputs, pruned.get_layer("expand").output)(x))
                         - np.asarray(probe_full(x))) ** 2)
    assert err_after < err_before
    with pytest.raises(ValueError, match="not a linear convolution"):
        fit_linear_skips(pruned, full, [("stem", "res_add")], x)


def test_feature_view_shares_weights():
    import keras

    full = _tiny_full(linear_branch=False)
    shared = prune_full(full, ["res_add"])
    pruned = keras.models.clone_model(shared)  # as build_pruned does: layers of its own
    pruned.set_weights(shared.get_weights())
    view = with_features(pruned, ["expand"])
    out = view(_images(2))
    assert set(out) == {"landmarks", "presence", FEATURE_PREFIX + "expand"}
    assert out[FEATURE_PREFIX + "expand"].shape == (2, 8, 8, 10)
    np.testing.assert_allclose(np.asarray(out["landmarks"]), np.asarray(pruned(_images(2))[0]), atol=1e-6)
    with pytest.raises(ValueError, match="no layer"):
        with_features(pruned, ["res_add"])


def test_presets_prune_the_official_full(official_models):
    from blazepose_tf.models.convert_official import load_converted
    from blazepose_tf.models.pruned import FEATURE_LAYERS, build_pruned

    full = load_converted("pose_landmark_full")
    x = np.random.default_rng(2).random((1, 256, 256, 3), dtype=np.float32)
    ref = dict(zip(full.output_names, full(x)))
    none = build_pruned("pruned_none", full)
    np.testing.assert_allclose(np.asarray(none(x)[0]), np.asarray(ref["landmarks"]), atol=1e-3)
    lite = build_pruned("pruned_lite", full)
    assert lite.count_params() < 0.8 * none.count_params()
    assert {layer.name for layer in lite.layers} >= set(FEATURE_LAYERS)
    for cfg in PRUNED_PRESETS.values():
        for conv, add in cfg.linear_fits:
            assert add in cfg.skip_adds and conv in {layer.name for layer in lite.layers}
