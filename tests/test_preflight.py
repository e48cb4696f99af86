"""The training run's checks that need no TensorFlow (``blazepose_tf.training.preflight``): each mistake is one line,
and ``python -m blazepose_tf.train`` reports it before TensorFlow is imported."""
from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from blazepose_tf.errors import ModelError, UserError
from blazepose_tf.training.config import TrainConfig, default_loss_weights
from blazepose_tf.training.preflight import check_run, latest_checkpoint, resolved

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
    _checkpoint(tmp_path / "run")
    check_run(cfg)


def _checkpoint(run: Path, name: str = "ckpt-2", index: bool = True) -> Path:
    """A checkpoint state file naming ``name`` (and its index file): what the loop resumes from."""
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run / "checkpoints" / "checkpoint").write_text(f'model_checkpoint_path: "{name}"\n'
                                                    f'all_model_checkpoint_paths: "{name}"\n')
    if index:
        (run / "checkpoints" / f"{name}.index").write_bytes(b"")
    return run / "checkpoints"


def test_latest_checkpoint_is_the_state_files_newest_with_its_index(tmp_path):
    folder = tmp_path / "run" / "checkpoints"
    assert latest_checkpoint(folder) is None   # no folder
    _checkpoint(tmp_path / "run", "ckpt-4", index=False)
    assert latest_checkpoint(folder) is None   # named, but its files are gone: a fresh start
    _checkpoint(tmp_path / "run", "ckpt-4")
    assert latest_checkpoint(folder) == str(folder / "ckpt-4")
    elsewhere = tmp_path / "elsewhere" / "ckpt-9"
    elsewhere.parent.mkdir()
    Path(f"{elsewhere}.index").write_bytes(b"")
    (folder / "checkpoint").write_text(f'model_checkpoint_path: "{elsewhere}"\n')   # an absolute path
    assert latest_checkpoint(folder) == str(elsewhere)
    (folder / "checkpoint").write_bytes(b"\xff\xfe garbage")
    assert latest_checkpoint(folder) is None


def test_resuming_with_changed_settings_is_refused_before_any_work(tmp_path, shards, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = _config(tmp_path, "~/train-*.tfrecord", ema_momentum=0.9, loss_weights={"coords": 1.0, "gone": 0.0})
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(dataclasses.asdict(resolved(cfg))))
    check_run(cfg)   # no checkpoint yet: a fresh start replaces the settings
    _checkpoint(run)
    # What may change on resume, a glob that expands to the recorded one, a zero loss weight dropped: accepted.
    check_run(dataclasses.replace(cfg, steps=99, eval_every=7, train_data=str(tmp_path / "train-*.tfrecord"),
                                  loss_weights={"coords": 1.0}))
    with pytest.raises(UserError) as e:
        check_run(dataclasses.replace(cfg, ema_momentum=0.0, learning_rate=1.0))
    assert str(e.value) == (f"{run} holds a run with different settings (ema_momentum, learning_rate); use a new "
                            "--model_dir or the same flags")
    (run / "config.json").write_text("[1, 2]")
    with pytest.raises(UserError, match="config.json is not a run's settings; use a new --model_dir$"):
        check_run(cfg)
    (run / "config.json").write_text("{torn")
    with pytest.raises(UserError, match="config.json is unreadable; use a new --model_dir$"):
        check_run(cfg)


def _train_without_tensorflow(*args: str) -> subprocess.CompletedProcess:
    """``python -m blazepose_tf.train ARGS``, printing its exit code and whether TensorFlow was imported."""
    script = ("import runpy, sys\n"
              "sys.argv = ['blazepose_tf.train'] + sys.argv[1:]\n"
              "try:\n"
              "    runpy.run_module('blazepose_tf.train', run_name='__main__')\n"
              "except SystemExit as e:\n"
              "    print(e.code, 'tensorflow' in sys.modules)\n")
    return subprocess.run([sys.executable, "-c", script, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def test_command_refuses_before_importing_tensorflow(tmp_path, shards):
    proc = _train_without_tensorflow(f"--train_data={shards}", f"--model_dir={tmp_path / 'run'}",
                                     f"--init_from={tmp_path / 'missing.keras'}")
    assert proc.stdout.split() == ["4", "False"], proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == f"error: --init_from not found: {tmp_path / 'missing.keras'}"
    assert not (tmp_path / "run").exists()
    # A resumed run whose flags changed a setting the run was made with: refused the same way.
    run = tmp_path / "resumed"
    run.mkdir()
    made = _config(tmp_path, shards, model_dir=str(run), loss_weights=default_loss_weights("tracker"))
    (run / "config.json").write_text(json.dumps(dataclasses.asdict(resolved(made))))
    _checkpoint(run)
    before = sorted(p.name for p in run.rglob("*"))
    proc = _train_without_tensorflow(f"--train_data={shards}", f"--model_dir={run}", "--batch_size=3")
    assert proc.stdout.split() == ["2", "False"], proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (f"error: {run} holds a run with different settings "
                                                    "(batch_size); use a new --model_dir or the same flags")
    assert sorted(p.name for p in run.rglob("*")) == before


def test_every_model_the_flags_offer_has_a_task():
    from blazepose_tf.training.config import MODELS
    from blazepose_tf.training.tasks import TASKS
    assert tuple(TASKS) == MODELS


def test_a_fresh_start_writes_only_into_an_empty_folder_or_an_earlier_run(tmp_path, shards):
    """Nothing a user made is overwritten: a fresh start refuses a folder holding anything but an earlier run of
    this package that never reached a checkpoint (whose files it replaces)."""
    run = tmp_path / "run"
    cfg = _config(tmp_path, shards)
    run.mkdir()
    check_run(cfg)   # empty
    (run / "best.keras").write_bytes(b"a user's model")
    (run / "notes.txt").write_text("mine")
    with pytest.raises(UserError) as e:
        check_run(cfg)
    assert str(e.value) == (f"--model_dir {run} is not empty and holds no training run to resume (notes.txt); "
                            "choose a new or empty folder")
    (run / "notes.txt").unlink()
    with pytest.raises(UserError, match=r"holds no training run to resume \(best.keras\)"):   # no run's config.json
        check_run(cfg)
    (run / "config.json").write_text(json.dumps({"name": "my experiment"}))
    with pytest.raises(UserError, match="holds no training run to resume"):
        check_run(cfg)
    # An earlier run killed before its first checkpoint (an old version's setting among its fields): replaced.
    (run / "config.json").write_text(json.dumps({"model_dir": str(run), "train_data": "old/*.tfrecord",
                                                 "preset": "lite", "removed_setting": 1}))
    for name in ("history.jsonl", "batches.jsonl", "config.json.part", "best.part.keras"):
        (run / name).write_text("")
    (run / "logs").mkdir()
    (run / ".DS_Store").write_bytes(b"")   # what the system leaves in any folder
    (run / "checkpoints" / "ckpt-2_temp").mkdir(parents=True)
    check_run(cfg)
    # A checkpoint state file naming nothing that exists: a fresh start would delete what the folder holds.
    _checkpoint(run, "ckpt-4", index=False)
    with pytest.raises(UserError, match=r"checkpoint names no checkpoint that exists; delete .*checkpoints to start "
                                        r"afresh there, or choose a new folder$"):
        check_run(cfg)
    shutil.rmtree(run / "checkpoints")
    # Another command's outputs (a closed-form refit) and a data folder are not runs.
    (run / "refit.json").write_text("{}")
    with pytest.raises(UserError, match=r"\(refit.json\)"):
        check_run(cfg)
    with pytest.raises(UserError, match=r"holds no training run to resume \(run, train-00000.tfrecord\)"):
        check_run(_config(tmp_path, shards, model_dir=str(tmp_path)))


def test_shards_prepared_for_the_other_model_are_refused(tmp_path, shards):
    (tmp_path / "manifest.json").write_text(json.dumps({"kind": "detector", "splits": {}}))
    with pytest.raises(UserError) as e:
        check_run(_config(tmp_path, shards))
    assert str(e.value) == (f"--train_data: {tmp_path} holds detector data (its manifest.json), not tracker data; "
                            "prepare it with data.prepare --kind tracker")
    check_run(_config(tmp_path, shards, model="detector"))
    (tmp_path / "manifest.json").write_text("not JSON")   # not data.prepare's: the records are checked when read
    check_run(_config(tmp_path, shards))


def test_names_tensorflow_cannot_encode_are_refused(tmp_path, shards):
    bad = str(tmp_path / "run_\udce9")   # a latin-1 byte in a folder name, as Python gives it
    with pytest.raises(UserError, match="the name is not valid UTF-8, which TensorFlow needs; rename it$"):
        check_run(_config(tmp_path, shards, model_dir=bad))
