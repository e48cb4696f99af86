"""The training-throughput benchmark's machinery on the tiny smoke tracker: end-to-end and bare steps measured in
turns from the real training loop's step hook, the per-stage breakdown and the dev-evaluation cost."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("tensorflow")

from benchmarks import train_throughput  # noqa: E402
from blazepose_tf.errors import EXIT_USAGE  # noqa: E402
from test_train import data_dir  # noqa: E402,F401  synthetic train/dev TFRecords (a module fixture)

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.heavy
def test_interleaved_measures_the_training_loop_and_the_bare_step(data_dir):
    row = train_throughput.interleaved("tracker", "smoke", data_dir, batch=4, steps=3, warmup=2, chunk=2)
    for key in ("end_to_end_img_s", "bare_img_s", "end_to_end_img_per_cpu_s", "bare_img_per_cpu_s"):
        assert math.isfinite(row[key]) and row[key] > 0, key
    assert row["ratio"] == pytest.approx(row["end_to_end_img_s"] / row["bare_img_s"])


def test_stages_and_dev_evaluation_cost(data_dir):
    stages = train_throughput.stages("tracker", "smoke", data_dir, batch=4, batches=2)
    assert set(stages) == {"decode_once", "read", "augment", "target_encoding", "pipeline", "step"}
    assert stages["decode_once"] > 0 and all(min(stages[k]) >= 0 for k in stages if k != "decode_once")
    cost = train_throughput.dev_evaluation("tracker", "smoke", data_dir, batch=4)
    assert cost["examples"] == 4 and cost["seconds"] > 0


def test_unknown_model_is_refused():
    proc = subprocess.run([sys.executable, "-m", "benchmarks.train_throughput", "--models", "lite,tiny"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == EXIT_USAGE and "Traceback" not in proc.stderr
    assert "error: unknown model(s) ['tiny']" in proc.stderr
    helpfull = subprocess.run([sys.executable, "-m", "benchmarks.train_throughput", "--helpfull"],
                              cwd=REPO, capture_output=True, text=True, timeout=300)
    assert helpfull.returncode == 0 and "--stage_batches" in helpfull.stdout
