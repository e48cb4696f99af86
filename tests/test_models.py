"""Model builders: shapes, parameter budgets, stop-gradient, shared weights, custom topologies, TFLite
conversion with builtin ops only, and .keras round trips."""
from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from blazepose_tf import losses as L  # noqa: E402
from blazepose_tf.codecs.anchors import generate_anchors  # noqa: E402
from blazepose_tf.models import (BUILT_DETECTOR_PRESETS, BUILT_TRACKER_PRESETS, DETECTOR_PRESETS,  # noqa: E402
                                 TRACKER_PRESETS, TrackerConfig, build_detector, build_tracker)
from blazepose_tf.models.summary import all_stats, count_macs, format_table  # noqa: E402
from blazepose_tf.models.tracker import (OUTPUT_NAMES_INFERENCE, OUTPUT_NAMES_TRAINING,  # noqa: E402
                                         OUTPUT_NAMES_WITH_HEATMAP, training_only_weights)
from blazepose_tf.runtime.runners import KerasRunner  # noqa: E402
from blazepose_tf.topology import BLAZEPOSE_33, COCO_17  # noqa: E402

# Keras' own np.array(copy=False) on tensors (weight assignment, saving) under NumPy 2.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")

PAPER_PARAMS = {"full": 3.5e6, "lite": 1.3e6}
TINY = TrackerConfig(name="tiny", stem_filters=8, encoder_filters=(8, 16, 16, 24), encoder_blocks=(1, 1, 1, 1),
                     decoder_filters=8, regression_filters=(16, 16, 24, 24, 24), regression_blocks=(1, 1, 1, 1, 1))


@pytest.fixture(scope="module")
def trackers():
    return {name: build_tracker(name) for name in BUILT_TRACKER_PRESETS}


@pytest.fixture(scope="module")
def detector():
    return build_detector("detector")


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).uniform(0, 1, (2, 256, 256, 3)).astype(np.float32)


def _randomize(model: keras.Model, seed: int = 0) -> None:
    """Random (but stable) weights, including BatchNorm statistics, so outputs are not trivially equal."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        v = rng.normal(0, 0.05, w.shape).astype(np.float32)
        if "variance" in w.path:
            v = np.abs(v) + 1.0
        w.assign(v)


# -------------------------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("name", list(BUILT_TRACKER_PRESETS))
def test_tracker_shapes_and_names(trackers, image, name):
    m = trackers[name]
    p = BLAZEPOSE_33.num_keypoints + 2
    assert m.num_points == p == len(m.point_names)
    assert m.point_names[-2:] == ("roi_center", "roi_scale")
    train = m.training(image, training=False)
    assert [tuple(t.shape) for t in train] == [(2, p * 5), (2, 1), (2, 64, 64, p), (2, 64, 64, 2 * p)]
    assert tuple(m.training.output_names) == OUTPUT_NAMES_TRAINING == ("landmarks", "presence", "heatmap",
                                                                       "offsets")
    assert tuple(m.inference.output_names) == OUTPUT_NAMES_INFERENCE == ("landmarks", "presence")
    assert tuple(m.inference_with_heatmap.output_names) == OUTPUT_NAMES_WITH_HEATMAP
    assert tuple(m.inference.inputs[0].shape) == (None, 256, 256, 3)
    lm, pres = (np.asarray(t) for t in train[:2])
    assert ((pres > 0) & (pres < 1)).all()  # a probability
    # Freshly built, the landmarks start near the crop centre, in crop pixels.
    xy = lm.reshape(2, p, 5)[..., :2]
    assert np.abs(xy - 128.0).max() < 32.0  # measured at most 7 px over 10 random draws


def test_tracker_layer_names(trackers):
    names = {layer.name for layer in trackers["full"].training.layers}
    for expected in ("stem", "enc1_block2_dw", "enc4_block1_pw", "dec64_up", "hm_head_dw", "heatmap", "offsets",
                     "reg_stage3_block1_dw", "reg_stage1_skip_stopgrad", "landmarks", "presence"):
        assert expected in names, expected


def test_detector_shapes_and_anchor_layout(detector):
    x = np.random.default_rng(1).uniform(-1, 1, (2, 224, 224, 3)).astype(np.float32)
    reg, scores = detector(x, training=False)
    n = len(generate_anchors())
    assert n == 2254
    assert tuple(reg.shape) == (2, n, 12) and tuple(scores.shape) == (2, n, 1)
    assert list(detector.output_names) == ["regressors", "scores"]
    s = np.asarray(scores)[0, :, 0]
    assert np.allclose(s, s[0], atol=0.5)  # prior probability everywhere at initialization
    assert abs(1 / (1 + np.exp(-s.mean())) - DETECTOR_PRESETS["detector"].prior_probability) < 0.01


def test_detector_heads_follow_anchor_order():
    """A cell's anchors are consecutive rows: a bias on the 28×28 head's second anchor lights every other row
    of the first 28·28·2 rows and nothing else."""
    model = build_detector("detector_lite")
    cls = model.get_layer("head28_cls")
    k, b = cls.get_weights()
    b2 = np.zeros_like(b)
    b2[1] = 5.0
    cls.set_weights([np.zeros_like(k), b2])
    scores = np.asarray(model(np.zeros((1, 224, 224, 3), np.float32), training=False)[1])[0, :, 0]
    assert (scores[1:1568:2] == 5.0).all() and (scores[0:1568:2] == 0.0).all()
    assert (scores[1568:] < 0).all()  # the other heads keep their prior


def test_one_presets_table_per_family():
    """Each family's table names our architectures, the smoke-test one and MediaPipe's (converted, not built)."""
    assert {"full", "lite", "smoke", "official_full"} <= set(TRACKER_PRESETS)
    assert {"detector", "detector_lite", "detector_smoke", "official_detector"} <= set(DETECTOR_PRESETS)
    assert TRACKER_PRESETS["official_full"].official == "pose_landmark_full"
    assert DETECTOR_PRESETS["official_detector"].official == "pose_detection"
    assert set(BUILT_TRACKER_PRESETS) == {n for n, c in TRACKER_PRESETS.items() if not c.official}
    assert set(BUILT_DETECTOR_PRESETS) == {n for n, c in DETECTOR_PRESETS.items() if not c.official}
    with pytest.raises(ValueError, match="converted pose_landmark_full, not built"):
        build_tracker("official_full")
    with pytest.raises(ValueError, match="converted pose_detection, not built"):
        build_detector("official_detector")
    with pytest.raises(KeyError, match="unknown tracker preset 'nope'"):
        build_tracker("nope")


# ------------------------------------------------------------------------------------------------- budgets
@pytest.mark.parametrize("name", list(PAPER_PARAMS))
def test_parameter_budgets(trackers, name):
    m = trackers[name]
    target = PAPER_PARAMS[name]
    for count in (m.training.count_params(), m.inference.count_params()):
        assert abs(count - target) <= 0.15 * target, (name, count)
    extra = training_only_weights(m)
    assert extra == m.training.count_params() - m.inference.count_params() > 0


def test_summary_table(trackers, detector):
    rows = {r.name: r for r in all_stats(models={**{f"tracker/{k}": v for k, v in trackers.items()},
                                                 "detector/detector": detector})}
    assert set(rows) == ({f"tracker/{p}" for p in BUILT_TRACKER_PRESETS}
                         | {f"detector/{p}" for p in BUILT_DETECTOR_PRESETS})
    full = rows["tracker/full"]
    assert full.params_inference == trackers["full"].inference.count_params()
    assert full.training_only > 0 and full.macs > rows["tracker/lite"].macs > 0
    assert full.params_folded < full.params_inference
    text = format_table(list(rows.values()))
    assert "tracker/lite" in text and "GFLOPs" in text


def test_macs_match_a_hand_count():
    inp = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same")(inp)  # 16·16·8·27
    x = keras.layers.DepthwiseConv2D(5, padding="same")(x)  # 16·16·8·25
    x = keras.layers.Conv2D(4, 1)(x)  # 16·16·4·8
    out = keras.layers.Dense(10)(keras.layers.Flatten()(x))  # 1024·10
    model = keras.Model(inp, out)
    assert count_macs(model) == 16 * 16 * 8 * 27 + 16 * 16 * 8 * 25 + 16 * 16 * 4 * 8 + 1024 * 10


# -------------------------------------------------------------------------------- stop-gradient and sharing
def _branch(layer_name: str) -> str:
    for prefix in ("stem", "enc", "dec", "hm_head", "heatmap", "offsets"):
        if layer_name.startswith(prefix):
            return "heatmap"
    return "regression"


def test_stop_gradient_isolates_the_heatmap_branch(trackers, image):
    model = trackers["lite"].training
    p = trackers["lite"].num_points
    coords = np.random.default_rng(2).uniform(0, 1, (2, p, 3)).astype(np.float32)
    targets = {"coords": coords, "coord_mask": np.ones((2, p, 3)), "visibility": np.ones((2, p)),
               "visibility_mask": np.ones((2, p)), "point_presence": np.ones((2, p)),
               "point_presence_mask": np.ones((2, p)), "presence": np.ones((2, 1))}
    variables = model.trainable_variables
    owner = {}
    for layer in model.layers:
        for w in layer.trainable_weights:
            owner[id(w)] = _branch(layer.name)
    with tf.GradientTape(persistent=True) as tape:
        outs = model(image, training=True)
        reg_loss, _ = L.tracker_loss(targets, outs[:2])
        hm_loss = tf.reduce_mean(tf.square(outs[2])) + tf.reduce_mean(tf.square(outs[3]))
    reg_grads = tape.gradient(reg_loss, variables)
    hm_grads = tape.gradient(hm_loss, variables)
    n_hm = n_reg = 0
    for v, g_reg, g_hm in zip(variables, reg_grads, hm_grads):
        if owner[id(v)] == "heatmap":
            n_hm += 1
            assert g_reg is None or float(tf.reduce_max(tf.abs(g_reg))) == 0.0, v.path
        else:
            n_reg += 1
            assert g_hm is None or float(tf.reduce_max(tf.abs(g_hm))) == 0.0, v.path
    assert n_hm > 20 and n_reg > 20
    # ... and the regression loss does reach the regression encoder, the heatmap loss the encoder-decoder.
    assert any(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for v, g in zip(variables, reg_grads)
               if owner[id(v)] == "regression")
    stem = model.get_layer("stem").kernel
    assert float(tf.reduce_max(tf.abs(hm_grads[[id(v) for v in variables].index(id(stem))]))) > 0


def test_training_and_inference_share_weights(image):
    m = build_tracker(TINY)
    _randomize(m.training, seed=3)
    train = [np.asarray(t) for t in m.training(image, training=False)]
    inf = [np.asarray(t) for t in m.inference(image, training=False)]
    hm = [np.asarray(t) for t in m.inference_with_heatmap(image, training=False)]
    np.testing.assert_allclose(inf[0], train[0], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(inf[1], train[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(hm[2], train[2], rtol=1e-5, atol=1e-5)
    assert m.inference.get_layer("reg_stage2_block1_dw") is m.training.get_layer("reg_stage2_block1_dw")
    train_ids = {id(w) for w in m.training.weights}
    assert {id(w) for w in m.inference.weights} <= train_ids
    # Updating the training model's weights changes the inference model.
    k = m.training.get_layer("landmarks_conv").kernel
    k.assign(k * 0.0)
    after = np.asarray(m.inference(image, training=False)[0])
    assert not np.allclose(after, inf[0])


def test_custom_topology():
    m = build_tracker(TINY, topology=COCO_17)
    p = COCO_17.num_keypoints + 2
    out = m.training(np.zeros((1, 256, 256, 3), np.float32), training=False)
    assert [tuple(t.shape) for t in out] == [(1, p * 5), (1, 1), (1, 64, 64, p), (1, 64, 64, 2 * p)]
    assert m.point_names == COCO_17.keypoints + ("roi_center", "roi_scale")


def test_presets_and_configs_are_validated():
    with pytest.raises(KeyError, match="full"):
        build_tracker("medium")
    with pytest.raises(KeyError, match="detector"):
        build_detector("huge")
    with pytest.raises(ValueError):
        TrackerConfig(name="bad", input_size=200)
    with pytest.raises(ValueError):
        TrackerConfig(name="bad", encoder_filters=(8, 16))


# ------------------------------------------------------------------------------ TFLite and .keras round trips
def _convert(model: keras.Model) -> bytes:
    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def _check_tflite(model: keras.Model, x: np.ndarray) -> None:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=_convert(model))
    it.allocate_tensors()
    ops = {op["op_name"] for op in it._get_ops_details()}
    assert not any("flex" in name.lower() for name in ops), ops
    assert "BATCH_NORM" not in " ".join(ops)  # BatchNorm folded
    inp = it.get_input_details()[0]
    it.set_tensor(inp["index"], x[:1])
    it.invoke()
    got = sorted((it.get_tensor(d["index"]) for d in it.get_output_details()), key=lambda a: a.size)
    ref = sorted((np.asarray(t) for t in model(x[:1], training=False)), key=lambda a: a.size)
    for g, r in zip(got, ref):
        assert g.shape == r.shape
        np.testing.assert_allclose(g, r, rtol=1e-3, atol=1e-2 * max(1.0, float(np.abs(r).max()) / 100))


@pytest.mark.parametrize("name", list(BUILT_TRACKER_PRESETS))
def test_tracker_converts_to_builtin_tflite(trackers, image, name):
    _check_tflite(trackers[name].inference, image)


def test_detector_converts_to_builtin_tflite(detector):
    x = np.random.default_rng(4).uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32)
    _check_tflite(detector, x)


def test_keras_round_trip(tmp_path, image):
    m = build_tracker(TINY)
    _randomize(m.training, seed=5)
    path = tmp_path / "tracker.keras"
    m.training.save(path)  # holds every custom layer (the inference model is a subgraph of it)
    loaded = keras.models.load_model(path, compile=False)
    for a, b in zip(m.training(image, training=False), loaded(image, training=False)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)
    det = build_detector("detector_lite")
    path = tmp_path / "det.keras"
    det.save(path)
    runner = KerasRunner(path)  # the runtime's loader maps outputs by name
    assert runner.output_roles == ["regressors", "scores"]
    inf_runner = KerasRunner(m.inference)
    assert inf_runner.output_roles == ["landmarks", "presence"]
    out = inf_runner(image[:1])
    assert out["landmarks"].shape == (1, 35 * 5)


def test_tiny_tracker_learns_synthetic_dots():
    """Targets, losses and model together: on images of bright dots, a tiny tracker's heatmap and
    coordinate losses fall within 30 Adam steps (both branches learn, each from its own loss)."""
    from blazepose_tf.codecs.heatmap import encode_heatmaps
    from blazepose_tf.codecs.targets import tracker_targets
    from blazepose_tf.topology import Topology

    keras.utils.set_random_seed(0)
    topo = Topology("dots", ("a",))
    m = build_tracker(TINY, topology=topo)
    rng = np.random.default_rng(7)
    n = 8
    kp = rng.uniform(40, 216, (n, 3, 2)).astype(np.float32)
    yy, xx = np.mgrid[0:256, 0:256]
    img = np.zeros((n, 256, 256, 3), np.float32)
    for i in range(n):
        for j in range(3):
            img[i, ..., j] = np.exp(-((xx - kp[i, j, 0]) ** 2 + (yy - kp[i, j, 1]) ** 2) / (2 * 8.0 ** 2))
    targets = dict(tracker_targets(kp, np.ones((n, 3))))
    hm, off, om = encode_heatmaps(kp, np.ones((n, 3)))
    targets.update(heatmap=hm, offsets=off, offset_mask=om)
    opt = keras.optimizers.Adam(3e-3)
    variables = m.training.trainable_variables

    @tf.function
    def step(x, t):
        with tf.GradientTape() as tape:
            loss, terms = L.tracker_loss(t, m.training(x, training=True))
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return terms

    history = []
    for s in range(30):
        idx = rng.choice(n, 4, replace=False)
        terms = step(tf.constant(img[idx]), {k: tf.gather(v, idx) for k, v in targets.items()})
        history.append({k: float(v) for k, v in terms.items()})
    first = {k: np.mean([h[k] for h in history[:5]]) for k in history[0]}
    last = {k: np.mean([h[k] for h in history[-5:]]) for k in history[0]}
    assert last["heatmap"] < 0.7 * first["heatmap"], (first, last)
    assert last["offsets"] < first["offsets"], (first, last)
    assert last["coordinates"] < 0.8 * first["coordinates"], (first, last)


def test_every_module_that_registers_layers_is_imported_before_loading():
    """``register_custom_layers`` (called by ``load_keras_model``) imports each module of the package that registers
    Keras serializables, and the package's public names import without Keras until used."""
    import subprocess
    import sys
    from pathlib import Path

    import blazepose_tf.models as models_package
    folder = Path(models_package.__file__).parent
    registering = {f"blazepose_tf.models.{p.stem}" for p in folder.glob("*.py")
                   if "register_keras_serializable" in p.read_text()}
    assert registering and registering == set(models_package._REGISTERING)
    probe = subprocess.run([sys.executable, "-c", "import sys, blazepose_tf.models as m; "
                            "print('keras' in sys.modules, 'tensorflow' in sys.modules); m.build_tracker; "
                            f"print(all(n in sys.modules for n in {sorted(registering)!r}))"],
                           capture_output=True, text=True, timeout=300, cwd=folder.parents[1])
    assert probe.stdout.split() == ["False", "False", "True"], probe.stderr[-2000:]
