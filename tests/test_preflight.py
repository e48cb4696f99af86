"""The training run's checks that need no TensorFlow (``blazepose_tf.training.preflight``): each mistake is one line,
and ``python -m blazepose_tf.train`` reports it before TensorFlow is imported."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from blazepose_tf.errors import ModelError, UserError
from blazepose_tf.training.config import TrainConfig
from blazepose_tf.training.preflight import check_run

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def shards(tmp_path: Path) -> str:
    (tmp_path / "train-00000.tfrecord").write_bytes(b"not read by the preflight")
    return str(tmp_path / "train-*.tfrecord")


def _config(tmp_path: Path, shards: str, **settings) -> TrainConfig:
    return TrainConfig(**{"train_data": shards, "model_dir": str(tmp_path / "run"), **settings})


@pytest.mark.parametrize("settings, error, message", [
    ({"train_data": "/nonexistent/*.tfrecord"}, UserError, "no TFRecord shards match /nonexistent/*.tfrecord"),
    ({"train_data": " , "}, UserError, "--train_data names no glob of TFRecord shards"),
    ({"dev_data": ","}, UserError, "--dev_data names no glob of TFRecord shards"),
    ({"model": "detector", "distill_from": "official"}, UserError,
     "--distill_from is only supported for --model=tracker"),
    ({"model": "detector", "simulate_int8": True}, UserError, "--simulate_int8 is only supported for --model=tracker"),
    ({"best_metric": "int8sim_pck"}, UserError, "--best_metric=int8sim_pck needs --simulate_int8"),
    ({"simulate_int8": True}, UserError, "--simulate_int8 fine-tunes trained weights (its int8 ranges are "
                                         "calibrated on the initial ones): give --init_from"),
    ({"strategy": "multi_worker"}, UserError, "--strategy=multi_worker needs the TF_CONFIG environment variable"),
    ({"model": "detector", "best_metric": "int8sim_pck"}, UserError,
     "--best_metric=int8sim_pck is only supported for --model=tracker"),
    ({"model": "Tracker"}, UserError, "--model must be one of tracker, detector, got 'Tracker'"),
    ({"init_from": "{tmp}/missing.keras"}, ModelError, "--init_from not found: {tmp}/missing.keras"),
    ({"distill_from": "scratch"}, ModelError, "--distill_from not found: scratch"),
    ({"distill_from": "{tmp}"}, ModelError, "--distill_from {tmp} is a folder, not a file"),
    ({"distill_from": "{tmp}/teacher.keras"}, ModelError, "--distill_from {tmp}/teacher.keras is corrupt or "
                                                          "truncated: not a Keras archive"),
])
def test_each_mistake_is_one_line(tmp_path, shards, monkeypatch, settings, error, message):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    (tmp_path / "teacher.keras").write_bytes(b"half a download")
    settings = {k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in settings.items()}
    with pytest.raises(error) as e:
        check_run(_config(tmp_path, shards, **settings))
    assert str(e.value) == message.format(tmp=tmp_path)


def test_model_dir_that_is_a_file_and_bad_tf_config(tmp_path, shards, monkeypatch):
    (tmp_path / "run").write_text("a user's file")
    with pytest.raises(UserError, match="is a file, not a folder"):
        check_run(_config(tmp_path, shards))
    monkeypatch.setenv("TF_CONFIG", "{cluster")
    with pytest.raises(UserError, match="^TF_CONFIG is not valid JSON$"):
        check_run(_config(tmp_path, shards, model_dir=str(tmp_path / "elsewhere"), strategy="multi_worker"))


def test_a_sound_run_passes_and_names_of_weights_are_not_files(tmp_path, shards, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["127.0.0.1:1"]}}))
    (tmp_path / "checkpoint_folder").mkdir()   # a folder: its checkpoint is looked for when it is read
    check_run(_config(tmp_path, shards, dev_data=shards, init_from="official", distill_from="official"))
    check_run(_config(tmp_path, shards, init_from=str(tmp_path / "checkpoint_folder"), simulate_int8=True,
                      best_metric="int8sim_pck", strategy="multi_worker"))


def test_a_resumed_run_does_not_need_its_init_from_file_again(tmp_path, shards):
    """--init_from is read on a fresh start only: a run whose initial weights file is gone still resumes."""
    cfg = _config(tmp_path, shards, init_from=str(tmp_path / "gone.keras"))
    with pytest.raises(ModelError, match="--init_from not found"):
        check_run(cfg)
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "checkpoint").write_text('model_checkpoint_path: "ckpt-2"\n')
    check_run(cfg)


def test_command_refuses_before_importing_tensorflow(tmp_path, shards):
    script = ("import runpy, sys\n"
              "sys.argv = ['blazepose_tf.train'] + sys.argv[1:]\n"
              "try:\n"
              "    runpy.run_module('blazepose_tf.train', run_name='__main__')\n"
              "except SystemExit as e:\n"
              "    print(e.code, 'tensorflow' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", script, f"--train_data={shards}", f"--model_dir={tmp_path / 'run'}",
                           f"--init_from={tmp_path / 'missing.keras'}"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.stdout.split() == ["4", "False"], proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == f"error: --init_from not found: {tmp_path / 'missing.keras'}"
    assert not (tmp_path / "run").exists()


def test_every_model_the_flags_offer_has_a_task():
    from blazepose_tf.training.config import MODELS
    from blazepose_tf.training.tasks import TASKS
    assert tuple(TASKS) == MODELS
