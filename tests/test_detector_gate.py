"""The gated detector (blazepose_tf.models.detector_gate): the base's scores on images where it fires, the tuned
head's elsewhere, one shared backbone; and its command (blazepose_tf.training.gate_detector)."""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from blazepose_tf import contract  # noqa: E402
from blazepose_tf.errors import ModelError  # noqa: E402
from blazepose_tf.models import build_detector, build_tracker  # noqa: E402
from blazepose_tf.models.detector_gate import ScoreGate, gate_detector, score_branch  # noqa: E402
from hostile_utils import assert_clean_exit, run_module  # noqa: E402


def _pair(base_bias: float, tuned_bias: float):
    """A smoke detector and a copy whose score head differs; every score-head 1×1 bias set as given."""
    base = build_detector("detector_smoke", name="base")
    tuned = build_detector("detector_smoke", name="tuned")
    tuned.set_weights(base.get_weights())
    for model, bias in ((base, base_bias), (tuned, tuned_bias)):
        for name in score_branch(model):
            layer = model.get_layer(name)
            if name.endswith("_cls"):
                kernel, b = layer.get_weights()
                layer.set_weights([kernel * 0.1, np.full_like(b, bias)])
    return base, tuned


def _images(n: int = 2) -> np.ndarray:
    return np.random.default_rng(0).uniform(-1, 1, (n, 224, 224, 3)).astype("float32")


def test_score_gate_picks_per_image():
    # image 0 fires (logit 0.3: p 0.574), image 1 not (p 0.475), image 2 exactly at the threshold (p 0.5) fires
    base = np.array([[[0.3], [-2.0]], [[-0.1], [-4.0]], [[0.0], [-3.0]]], "float32")
    tuned = np.array([[[-5.0], [1.0]], [[2.0], [-1.0]], [[3.0], [3.0]]], "float32")
    out = np.asarray(ScoreGate()([base, tuned]))
    np.testing.assert_array_equal(out[0], base[0])
    np.testing.assert_array_equal(out[1], tuned[1])
    np.testing.assert_array_equal(out[2], base[2])
    # a stricter threshold: logit 0.3 (p 0.574) no longer fires at p 0.6
    np.testing.assert_array_equal(np.asarray(ScoreGate(0.6)([base, tuned]))[0], tuned[0])
    with pytest.raises(ValueError, match="threshold"):
        ScoreGate(1.0)


def test_score_gate_offsets_only_the_tuned_scores():
    base = np.array([[[0.3], [-2.0]], [[-0.1], [-4.0]]], "float32")  # image 0 fires, image 1 does not
    tuned = np.array([[[-5.0], [1.0]], [[-2.5], [-1.0]]], "float32")
    out = np.asarray(ScoreGate(tuned_offset=3.0)([base, tuned]))
    np.testing.assert_array_equal(out[0], base[0])
    np.testing.assert_array_equal(out[1], tuned[1] + 3.0)
    assert ScoreGate.from_config(ScoreGate(0.6, 2.0).get_config()).tuned_offset == 2.0
    with pytest.raises(ValueError, match="finite"):
        ScoreGate(tuned_offset=float("nan"))


@pytest.mark.parametrize("base_bias, fires", [(6.0, True), (-30.0, False)])
def test_gated_model_scores_come_from_base_where_it_fires_else_from_tuned(base_bias, fires):
    base, tuned = _pair(base_bias, tuned_bias=-1.0)
    gated = gate_detector(tuned, base)
    assert gated.output_names == list(contract.DETECTOR_ROLES)
    x = _images()
    regs, scores = (np.asarray(t) for t in gated(x))
    b_regs, b_scores = (np.asarray(t) for t in base(x))
    _, t_scores = (np.asarray(t) for t in tuned(x))
    assert (b_scores.max(axis=(1, 2)) >= 0).all() == fires
    np.testing.assert_allclose(regs, b_regs, atol=1e-5)
    np.testing.assert_allclose(scores, b_scores if fires else t_scores, atol=1e-5)
    # one backbone: the gated model adds only the second score head's weights
    extra = sum(int(np.prod(w.shape)) for n in score_branch(base) for w in base.get_layer(n).weights)
    assert gated.count_params() == tuned.count_params() + extra


def test_gated_model_saves_loads_and_exports(tmp_path):
    from blazepose_tf.models.loading import load_keras_model
    from blazepose_tf.models.official_cache import save_model

    base, tuned = _pair(6.0, -1.0)
    path = save_model(gate_detector(tuned, base), tmp_path / "gated.keras")
    loaded = load_keras_model(path)
    x = _images(1)
    np.testing.assert_allclose(np.asarray(loaded(x)[1]), np.asarray(base(x)[1]), atol=1e-5)
    # the tuned head's offset survives saving (the base never fires here)
    quiet, other = _pair(-30.0, -1.0)
    offset = load_keras_model(save_model(gate_detector(other, quiet, tuned_offset=2.5), tmp_path / "offset.keras"))
    np.testing.assert_allclose(np.asarray(offset(x)[1]), np.asarray(other(x)[1]) + 2.5, atol=1e-5)
    from blazepose_tf.runtime.pipeline import PersonDetector
    from blazepose_tf.runtime.runners import load_runner
    from export.to_tflite import export_model

    export_model(loaded, tmp_path / "gated.tflite", "fp16", log=lambda *a: None)
    runner = load_runner(tmp_path / "gated.tflite")
    PersonDetector(runner)  # meets the detector contract
    np.testing.assert_allclose(runner(x)["scores"], np.asarray(base(x)[1]), atol=0.05)


@pytest.mark.parametrize("which", [0, -1])  # a kernel, a bias
def test_gate_refuses_models_that_differ_outside_the_score_head(which):
    base, tuned = _pair(0.0, 1.0)
    stem = next(layer for layer in tuned.layers if layer.weights and layer.name not in score_branch(tuned))
    weights = stem.get_weights()
    weights[which] = weights[which] + 1e-3
    stem.set_weights(weights)
    with pytest.raises(ModelError, match="outside the score head"):
        gate_detector(tuned, base)


def test_gate_refuses_what_it_cannot_gate():
    base, tuned = _pair(0.0, 1.0)
    with pytest.raises(ModelError, match="not a detector"):
        gate_detector(build_tracker("smoke").inference, base)
    with pytest.raises(ModelError, match="nothing to gate"):
        gate_detector(base, base)
    with pytest.raises(ModelError, match="already gated"):
        gate_detector(gate_detector(tuned, base), base)


def _toy_detector(shared_head: bool) -> keras.Model:
    """Backbone → regressors, and a score head that reuses one conv (or computes outside a layer)."""
    x = keras.Input((8, 8, 3), name="image")
    f = keras.layers.Conv2D(4, 1, name="backbone")(x)
    regs = keras.layers.Reshape((64, 12), name="regressors")(keras.layers.Conv2D(12, 1, name="reg")(f))
    if shared_head:
        cls = keras.layers.Conv2D(1, 1, name="cls")
        g = keras.layers.Conv2D(4, 1, name="score_features")(f)
        parts = [keras.layers.Reshape((64, 1), name=f"flat{i}")(cls(t)) for i, t in enumerate((f, g))]
        scores = keras.layers.Concatenate(axis=1, name="scores")(parts)
    else:
        c = keras.ops.multiply(keras.layers.Conv2D(1, 1, name="cls")(f), 2.0)
        scores = keras.layers.Reshape((64, 1), name="scores")(c)
    return keras.Model(x, [regs, scores])


@pytest.mark.parametrize("shared_head, message", [(True, "called 2 times"), (False, "outside a Keras layer")])
def test_score_heads_that_cannot_be_cloned_are_refused(shared_head, message):
    with pytest.raises(ModelError, match=message):
        score_branch(_toy_detector(shared_head))


def _run(*args: str) -> subprocess.CompletedProcess:
    return run_module("blazepose_tf.training.gate_detector", *args, timeout=300)


def test_gate_detector_command_writes_once_and_reports_bad_models(tmp_path):
    from blazepose_tf.models.loading import load_keras_model
    from blazepose_tf.models.official_cache import save_model

    base, tuned = _pair(1.0, 2.0)
    x = _images(1)
    top = float(np.asarray(base(x)[1]).max())
    assert 0.0 < top < 4.0  # base fires at 0.5 (logit 0), not at 0.99 (logit 4.6)
    save_model(base, tmp_path / "base.keras")
    save_model(tuned, tmp_path / "tuned.keras")
    (tmp_path / "tuned.json").write_text('{"step": 7, "detection_rate": 90.5}')
    out = tmp_path / "gated.keras"
    models = (f"--model={tmp_path / 'tuned.keras'}", f"--base={tmp_path / 'base.keras'}")
    assert_clean_exit(_run(*models, f"--output={out}"), 0)
    assert json.loads((tmp_path / "gated.json").read_text()) == {"step": 7, "tuned_detection_rate": 90.5}
    np.testing.assert_allclose(np.asarray(load_keras_model(out)(x)[1]), np.asarray(base(x)[1]), atol=1e-5)
    strict = tmp_path / "strict.keras"
    assert_clean_exit(_run(*models, f"--output={strict}", "--threshold=0.99"), 0)
    np.testing.assert_allclose(np.asarray(load_keras_model(strict)(x)[1]), np.asarray(tuned(x)[1]), atol=1e-5)
    (tmp_path / "taken.json").write_text("{}")  # a sidecar alone also blocks the name
    assert_clean_exit(_run(*models, f"--output={tmp_path / 'taken.keras'}"), 2, "exists")
    assert (tmp_path / "taken.json").read_text() == "{}"
    for bad in ("--threshold=nan", f"--output={tmp_path / 'tuned.json' / 'x.keras'}"):
        assert_clean_exit(_run(*models, f"--output={tmp_path / 'g3.keras'}", bad), 2)
    before = out.read_bytes()
    assert_clean_exit(_run(*models, f"--output={out}"), 2, "exists")
    assert out.read_bytes() == before
    (tmp_path / "junk.keras").write_text("not a model")
    r = _run(f"--model={tmp_path / 'junk.keras'}", f"--base={tmp_path / 'base.keras'}",
             f"--output={tmp_path / 'g2.keras'}")
    assert_clean_exit(r, 4, "junk.keras")
    assert r.stderr.strip().splitlines()[-1].startswith("error:")
    assert not (tmp_path / "g2.keras").exists()
