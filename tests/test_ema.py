"""``--ema_momentum``: the weight average follows training with TensorFlow's warm-up decay, is swapped in only while
it is evaluated or exported, and leaves the trajectory of the trained weights unchanged."""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from blazepose_tf.models.loading import load_keras_model  # noqa: E402
from blazepose_tf.training.ema import WeightAverage  # noqa: E402
from test_train import _cmd, _env, data_dir  # noqa: E402,F401  synthetic tracker TFRecords, the smoke command


def _model():
    inp = keras.Input((3,))
    x = keras.layers.Dense(4, name="dense")(inp)
    x = keras.layers.BatchNormalization(name="bn")(x)
    return keras.Model(inp, keras.layers.Dropout(0.5, seed=1)(x))


def _values(model) -> list[np.ndarray]:
    return [np.asarray(w) for w in model.weights if "float" in str(w.dtype)]


def _close(got: list, expected: list) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, atol=1e-6)


def test_average_follows_the_weights_with_warm_up_decay_and_is_swapped_in_only_inside_the_block():
    model = _model()
    average = WeightAverage(model, momentum=0.5)
    assert len(average.shadow) == 6   # kernel, bias, BatchNorm's four; not the dropout's seed state
    start = _values(model)
    for w in model.weights:
        if "float" in str(w.dtype):
            w.assign(np.asarray(w) + 1.0)
    average.update(100)                     # decay min(0.5, 101/110) = 0.5
    _close([np.asarray(s) for s in average.shadow], [v + 0.5 for v in start])
    average.update(0)                       # decay min(0.5, 1/10) = 0.1: mostly the weights
    expected = [0.1 * (v + 0.5) + 0.9 * (v + 1.0) for v in start]
    _close([np.asarray(s) for s in average.shadow], expected)
    with average.swapped():
        _close(_values(model), expected)
    _close(_values(model), [v + 1.0 for v in start])
    average.reset()
    _close([np.asarray(s) for s in average.shadow], [v + 1.0 for v in start])
    with pytest.raises(ValueError, match="momentum"):
        WeightAverage(model, 1.0)


def _train(data_dir, model_dir, *extra):
    return subprocess.run(_cmd(data_dir, model_dir, "--eval_every=3", "--eval_batches=0", *extra),
                          capture_output=True, text=True, env=_env(), timeout=600)


@pytest.mark.heavy
def test_training_with_an_average_evaluates_both_and_exports_the_average(data_dir, tmp_path):
    plain, averaged = tmp_path / "plain", tmp_path / "averaged"
    for run, extra in ((plain, ()), (averaged, ("--ema_momentum=0.9",))):
        proc = _train(data_dir, run, *extra)
        assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {run: [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()
                  if "dev_coord_l1_px" in line] for run in (plain, averaged)}
    assert [r["step"] for r in rows[averaged]] == [0, 3, 6]
    # last.keras' sidecar carries the final step's dev metrics (what zoo.publish records for a last.keras).
    last = json.loads((plain / "last.json").read_text())
    assert last["step"] == 6 and last["coord_l1_px"] == pytest.approx(rows[plain][-1]["dev_coord_l1_px"])
    # Running a finished run again trains nothing and leaves its last.keras and sidecar as they were.
    before = {p.name: p.read_bytes() for p in (plain / "last.keras", plain / "last.json")}
    proc = _train(data_dir, plain)
    assert proc.returncode == 0 and "already trained" in proc.stderr, proc.stderr[-2000:]
    assert {p.name: p.read_bytes() for p in (plain / "last.keras", plain / "last.json")} == before
    # The trained weights follow the same path with and without the average beside them...
    for a, b in zip(rows[plain], rows[averaged]):
        assert b["dev_raw_coord_l1_px"] == pytest.approx(a["dev_coord_l1_px"], abs=1e-3)
    # ...and what is evaluated and exported is the average: the start's weights at step 0, others after.
    assert rows[averaged][0]["dev_coord_l1_px"] == pytest.approx(rows[plain][0]["dev_coord_l1_px"], abs=1e-3)
    assert rows[averaged][-1]["dev_coord_l1_px"] != pytest.approx(rows[plain][-1]["dev_coord_l1_px"], abs=1e-3)
    exported = {w.path: np.asarray(w) for w in load_keras_model(averaged / "last.keras", "test").weights}
    trained = {w.path: np.asarray(w) for w in load_keras_model(plain / "last.keras", "test").weights}
    assert any(not np.allclose(exported[k], trained[k]) for k in trained)
    # An average cannot be added to (or dropped from) a run that is resumed.
    proc = _train(data_dir, plain, "--steps=8", "--ema_momentum=0.9")
    assert proc.returncode == 2 and "ema_momentum" in proc.stderr and "Traceback" not in proc.stderr
