"""Host benchmark (export.bench): interleaved latency at 1 and 2 threads, ratios to the official tracker measured
in the same run, table and JSON output, CLI errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from blazepose_tf.contract import DETECTOR, INPUT_RANGES, LANDMARKS
from blazepose_tf.errors import ModelError
from export.bench import add_ratios, format_table, input_range, measure

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from export_fixtures import tiny_tracker

    from export.to_tflite import export_model

    out = tmp_path_factory.mktemp("bench") / "tiny.tflite"
    export_model(tiny_tracker(), out, "none", log=lambda *_: None)
    return out


def _official(name: str) -> Path:
    from blazepose_tf.official import official_model_path

    try:
        return official_model_path(name, fetch_if_missing=False)
    except ModelError as e:
        pytest.skip(f"official models unavailable: {e}")


def test_measure_threads_and_ratios(tiny_model):
    ref = _official("pose_landmark_full")
    results = measure([("tiny", str(tiny_model)), ("official:pose_landmark_full", str(ref))], threads=[1, 2],
                      runs=6, warmup=1, rounds=2)
    assert [(r.model, r.threads) for r in results] == [("tiny", 1), ("official:pose_landmark_full", 1),
                                                        ("tiny", 2), ("official:pose_landmark_full", 2)]
    for r in results:
        assert r.runs == 6 and 0 < r.min_ms <= r.median_ms <= r.p90_ms and r.init_ms > 0
    assert results[0].quantization == "none" and results[1].quantization == "fp16"
    assert add_ratios(results, "official:pose_landmark_full")
    assert results[1].ratio == pytest.approx(1.0) and results[0].ratio < 1.0  # the tiny model is much faster
    table = format_table(results, "official:pose_landmark_full")
    assert "vs official:pose_landmark_full" in table and "1.00x" in table


def test_cli(tiny_model, tmp_path):
    _official("pose_landmark_full")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "export.bench", str(tiny_model), "--threads", "1", "--runs", "4",
                           "--warmup", "1", "--rounds", "2", "--official", "pose_landmark_full",
                           "--output", str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "tiny.tflite" in proc.stdout and "official:pose_landmark_full" in proc.stdout
    doc = json.loads(out.read_text())
    assert {r["model"] for r in doc["results"]} == {"tiny.tflite", "official:pose_landmark_full"}
    assert all(r["ratio"] is not None for r in doc["results"])
    proc = subprocess.run([sys.executable, "-m", "export.bench", str(tmp_path / "nope.tflite")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 4 and proc.stderr.strip() == f"error: model file not found: {tmp_path / 'nope.tflite'}"


def test_official_input_ranges_and_unloadable_model(tmp_path):
    assert input_range("anywhere/pose_detection.tflite") == INPUT_RANGES[DETECTOR] == (-1.0, 1.0)
    assert input_range("anywhere/pose_landmark_full.tflite") == INPUT_RANGES[LANDMARKS] == (0.0, 1.0)
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelError) as err:
        measure([("bad", str(bad))], threads=[1], runs=1, warmup=0, rounds=1)
    assert str(err.value).startswith(f"{bad} is not a loadable TFLite model: ") and "\n" not in str(err.value)
