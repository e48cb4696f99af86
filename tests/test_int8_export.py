"""int8 export (export.int8_export and its parts): calibrate-then-quantize equals the converter, float layers the
quantizer keeps, the int8 share of MACs, activation ranges, per-layer error, the auto float-layer search and the
pipeline scorer. Tiny models only."""
from __future__ import annotations

import numpy as np
import pytest

from blazepose_tf.int8_ranges import MIN_POSITIONS
from export import int8_export, ranges
from export.conversion import calibrate, convert, prepare_model, quantize_calibrated
from export.int8_graph import CalibratedGraph, layer_label, mac_split, op_macs
from export.layer_errors import task_error, tensor_errors
from export.report import tflite_outputs
from export_fixtures import synthetic_coco, tiny_tracker

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")


@pytest.fixture(scope="module")
def setup():
    """(prepared tiny tracker with its heatmap, calibration inputs, calibrated model, batch). Its kernels seeded:
    what the float-layer search finds depends on them."""
    import keras

    keras.utils.set_random_seed(0)
    prepared = prepare_model(tiny_tracker(), keep_heatmap=True)
    rng = np.random.default_rng(0)
    inputs = [rng.uniform(0, 1, (1, 64, 64, 3)).astype(np.float32) for _ in range(8)]
    return prepared, inputs, calibrate(prepared.model, inputs), np.concatenate(inputs)


def test_calibrate_then_quantize_is_the_converters_int8(setup):
    prepared, inputs, calibrated, batch = setup
    graph = CalibratedGraph(calibrated)
    assert set(graph.outputs) == {"landmarks", "presence", "heatmap"}
    assert graph.range(graph.outputs["landmarks"]) is not None          # calibrated min/max recorded
    tf_converter = convert(prepared.model, "int8", inputs)               # the converter's own int8 path
    mine = quantize_calibrated(calibrated)
    for role, value in tflite_outputs(tf_converter, batch).items():
        np.testing.assert_array_equal(tflite_outputs(mine, batch)[role], value)
    split = mac_split(mine)
    assert split.int8 == split.total == graph.total_macs > 0 and split.int8_share == 1.0


def test_float_layers_by_name_stay_float_and_cost_their_macs(setup):
    prepared, _, calibrated, batch = setup
    graph = CalibratedGraph(calibrated, layer_names=int8_export.keras_layer_names(prepared.model))
    last = next(n for n in graph.nodes if n.kind == "CONV_2D" and n.shape == (1, 16, 16, 64))  # 3x3, 64 -> 64
    assert last.layer in int8_export.keras_layer_names(prepared.model)       # the Keras layer's own name
    conv = graph.resolve([last.layer])
    assert conv == [last] and last.macs == op_macs("CONV_2D", (1, 16, 16, 64), (64, 3, 3, 64))
    assert graph.resolve([f"#{last.index}", last.name]) == [last]
    with pytest.raises(Exception, match="no quantizable layer named 'nope'"):
        graph.resolve(["nope"])
    mixed = quantize_calibrated(calibrated, [conv[0].name])
    split = mac_split(mixed)
    assert split.total == graph.total_macs and split.total - split.int8 == conv[0].macs
    assert np.isfinite(tflite_outputs(mixed, batch)["landmarks"]).all()
    assert layer_label("m_inference_1/m_1/conv2d_5_1/Relu6;x", {"conv2d_5"}) == "conv2d_5"
    assert layer_label("m_inference_1/m_1/conv2d_5_1/Relu6;x") == "conv2d_5_1"


def test_percentile_and_mse_ranges():
    counts = np.zeros(ranges.BINS, np.int64)
    counts[: ranges.BINS // 4] = 1000           # the bulk in [0, 2.5)
    counts[-1] = 1                              # one outlier at 10
    h = ranges.Histogram(0.0, 10.0, counts)
    lo, hi = ranges.percentile_range(h, 99.99)
    assert lo == 0.0 and 2.4 < hi < 2.6       # the outlier is clipped; a side at 0 stays
    lo, hi = ranges.mse_range(h)
    assert lo == 0.0 and 2.5 <= hi < 10.0     # narrower, but the bulk stays inside
    assert ranges.choose_ranges({3: h}, "minmax") == {3: (0.0, 10.0)}
    signed = ranges.Histogram(-4.0, 4.0, np.ones(ranges.BINS, np.int64))
    lo, hi = ranges.percentile_range(signed, 99.0)
    assert -4.0 < lo < -3.8 and 3.8 < hi < 4.0


def test_narrower_ranges_reach_the_int8_model_but_not_its_outputs(setup):
    _, inputs, calibrated, _ = setup
    variants = ranges.range_variants(calibrated, ["minmax", "percentile"], inputs, 90.0, log=lambda *a: None)
    narrowed, summary = variants["percentile"]
    assert variants["minmax"] == (calibrated, None) and summary["tensors_narrowed"] > 0
    before, after = CalibratedGraph(calibrated), CalibratedGraph(narrowed)
    for t in ranges.head_tensors(before) | {int(i) for i in before.subgraph.inputs}:
        assert after.range(t) == before.range(t)                          # outputs and the input keep min/max
    changed = [t for t in ranges.adjustable_tensors(before) if after.range(t) != before.range(t)]
    for t in before.activation_tensors():                                 # per-image feature vectors keep min/max
        if int(np.prod(before.shape(t)[1:-1])) <= MIN_POSITIONS:
            assert after.range(t) == before.range(t) and t not in changed
    dense = next(n for n in before.nodes if n.layer == "landmarks")       # the features the dense head reads
    assert dense.inputs[0] in ranges.head_tensors(before)
    assert changed and all(after.range(t)[1] - after.range(t)[0] < before.range(t)[1] - before.range(t)[0]
                           for t in changed)


def test_tensor_errors_are_sorted_and_read_int8_outputs(setup):
    _, inputs, calibrated, _ = setup
    graph = CalibratedGraph(calibrated)
    rows = tensor_errors(graph, calibrated, quantize_calibrated(calibrated), inputs[:4])
    assert rows and [r["added"] for r in rows] == sorted((r["added"] for r in rows), reverse=True)
    out = next(r for r in rows if r["layer"] == "landmarks")
    assert out["int8"] and out["rmse_steps"] > 0 and 0 < out["rel_rmse"] < 0.2  # the int8 op, not DEQUANTIZE
    floated = tensor_errors(graph, calibrated, quantize_calibrated(calibrated, [out["tensor"]]), inputs[:4])
    assert not next(r for r in floated if r["layer"] == "landmarks")["int8"]


def test_task_error_is_keypoint_pixels_after_the_mean_shift():
    ref = {"landmarks": np.zeros((2, 35 * 5), np.float32)}
    got = {"landmarks": ref["landmarks"].copy()}
    got["landmarks"][:, 0::5] += 3.0                                     # every x 3 px off
    assert task_error(ref, got, input_size=64) == pytest.approx(3.0)
    assert task_error(ref, got, correctable=["landmarks"], input_size=64) == pytest.approx(0.0, abs=1e-6)


class _FakeScorer:
    """PCK = 50 + 5 × (ops run in float), 60 for the float model: the target (59) needs 2 float ops."""

    def __call__(self, flat: bytes) -> float:
        from blazepose_tf.tflite_file import TFLiteGraph

        g = TFLiteGraph(flat)
        if "QUANTIZE" not in g.op_counts():
            return 60.0
        return 50.0 + 5.0 * sum(1 for op in g.ops if op.kind not in ("QUANTIZE", "DEQUANTIZE")
                                and g.tensors[op.inputs[0]].dtype == "FLOAT32")

    def describe(self) -> str:
        return "fake"


def test_auto_float_layers_search_stops_at_the_target(setup, monkeypatch):
    prepared, inputs, calibrated, _ = setup
    settings = int8_export.Int8Settings(float_layers="auto", float_mac_budget=1.0, max_pck_drop=1.0)
    result = int8_export.build_int8(prepared, inputs, settings, _FakeScorer(), log=lambda *a: None)
    sel = result.report["float_layers"]
    assert sel["mode"] == "auto" and sel["float_pck"] == 60.0 and sel["target_pck"] == 59.0
    assert sel["met"] and sel["steps"][str(sel["chosen"])] >= 59.0
    assert all(v < 59.0 for k, v in sel["steps"].items() if int(k) < sel["chosen"])
    assert len(sel["layers"]) >= sel["chosen"] > 0                 # a round adds one op or more
    assert sel["rounds"] == len(sel["greedy"]["rounds"]) and sel["greedy"]["stopped"] in ("budget", "no gain")
    macs = result.report["macs"]
    assert macs["total"] - macs["int8"] == sum(n["macs"] for n in sel["layers"]) and result.report["layer_errors"]
    with pytest.raises(Exception, match="need a tracker and an annotated --eval"):
        int8_export.build_int8(prepared, inputs, settings, None, log=lambda *a: None)
    asked = []                                      # (MAC budget, max rounds) each search was given
    real = int8_export.greedy_float_sets
    monkeypatch.setattr(int8_export, "greedy_float_sets",
                        lambda *a, **k: asked.append((a[3], k["max_rounds"])) or real(*a, **k))
    # A zero budget allows no float MACs: only ops without MACs may stay float (whether one helps depends on the
    # weights; the search itself is tested in tests/test_float_search.py).
    none = int8_export.build_int8(prepared, inputs, int8_export.Int8Settings(float_layers="3", float_mac_budget=0.0),
                                  log=lambda *a: None)
    assert asked == [(0.0, 3)] and none.report["macs"]["int8_share"] == 1.0
    assert all(n["macs"] == 0 for n in none.report["float_layers"]["layers"])
    assert all(r["float_mac_share"] == 0 for r in none.report["float_layers"]["greedy"]["rounds"])
    # N: the float set after N greedy rounds, the search told to stop there; 0: no search at all.
    two = int8_export.build_int8(prepared, inputs, int8_export.Int8Settings(float_layers="2", float_mac_budget=1.0),
                                 log=lambda *a: None).report["float_layers"]
    assert asked[1:] == [(float(CalibratedGraph(calibrated).total_macs), 2)] and two["mode"] == "count"
    assert two["rounds"] == len(two["greedy"]["rounds"]) == 2 and two["layers"]
    zero = int8_export.build_int8(prepared, inputs, int8_export.Int8Settings(float_layers="0"),
                                  log=lambda *a: None).report["float_layers"]
    assert zero == {"mode": "count", "rounds": 0, "layers": []} and len(asked) == 2


def test_float_layers_count_on_a_detector():
    from export_fixtures import tiny_detector

    prepared = prepare_model(tiny_detector())
    rng = np.random.default_rng(1)
    inputs = [rng.uniform(-1, 1, (1, 64, 64, 3)).astype(np.float32) for _ in range(4)]
    sel = int8_export.build_int8(prepared, inputs, int8_export.Int8Settings(float_layers="1", float_mac_budget=1.0),
                                 log=lambda *a: None).report["float_layers"]
    assert sel["greedy"]["error"] == "mean relative error" and sel["greedy"]["all_int8"] > 0
    assert sel["rounds"] == 1 and sel["layers"] and sel["greedy"]["rounds"][0]["error"] < sel["greedy"]["all_int8"]


def test_pipeline_scorer_runs_the_detector_once_per_image(tmp_path):
    from blazepose_tf.errors import ModelError
    from blazepose_tf.official import official_model_path
    from export.pipeline_score import PipelineScorer

    try:
        official_model_path("pose_detection", fetch_if_missing=False)
    except ModelError as e:
        pytest.skip(f"official models unavailable: {e}")
    dataset = synthetic_coco(tmp_path / "coco")
    scorer = PipelineScorer(str(dataset))
    flat = convert(prepare_model(tiny_tracker(input_size=256)).model, "none")
    first = scorer.evaluate(flat)
    calls = len(scorer.detector._memo)
    assert 0.0 <= first.pck.pck <= 100.0 and first.pck.num_people == len(scorer.records) > 0
    assert scorer(flat) == first.pck.pck and len(scorer.detector._memo) == calls    # detector outputs reused


def test_own_bias_unshares_what_the_converter_shares():
    import keras

    x = keras.Input((8, 8, 3), name="image")
    a = keras.layers.Conv2D(4, 1, name="a")(x)           # zero biases: one shared constant (or none) in TFLite
    b = keras.layers.Conv2D(4, 1, name="b")(x)
    model = keras.Model(x, {"landmarks": keras.layers.Add()([a, b])})
    rng = np.random.default_rng(0)
    graph = CalibratedGraph(calibrate(model, [rng.uniform(0, 1, (1, 8, 8, 3)).astype(np.float32)]))
    convs = [n for n in graph.nodes if n.kind == "CONV_2D"]
    first = graph.own_bias(convs[0], 4)
    graph.set_constant(first, np.ones(4, np.float32))
    edited = CalibratedGraph(graph.to_bytes())
    biases = [edited.constant(edited.nodes[n.index].inputs[2]) if edited.nodes[n.index].inputs[2] >= 0 else None
              for n in convs]
    np.testing.assert_array_equal(biases[0], np.ones(4))
    assert biases[1] is None or not biases[1].any()       # the other op's bias is untouched


def test_float_groups_keep_a_tensor_float_with_its_producer_and_consumers(setup):
    from export.int8_graph import float_groups

    _, _, calibrated, _ = setup
    graph = CalibratedGraph(calibrated)
    groups = float_groups(graph)
    assert len(groups) == sum(1 for n in graph.nodes if n.candidate)
    for g in groups:
        producer = g.nodes[0]
        readers = {n.index for n in graph.nodes if producer.output in n.inputs}
        assert readers <= {n.index for n in g.nodes} and g.layer == producer.layer
