"""Hostile-user tests of the training commands (``data.prepare``, ``blazepose_tf.train``): every mistake ends in
one ``error:`` line with the documented exit code and no traceback, and leaves the user's inputs and earlier
outputs exactly as they were (an existing prepare output stays byte-identical, a failed training start writes
nothing into ``--model_dir``). Data are built here (a tiny COCO-keypoints set, synthetic TFRecords); nothing
needs ``../shared/data``."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Optional

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from hostile_utils import REPO, assert_clean_exit, checksums, run_module  # noqa: E402
from test_train import _records  # noqa: E402  synthetic tracker TFRecords
from blazepose_tf.training.preflight import latest_checkpoint  # noqa: E402

KEYPOINTS = ["left_shoulder", "right_shoulder", "left_hip", "right_hip", "left_knee", "right_knee"]
OFFSETS = {"left_shoulder": (16, -50), "right_shoulder": (-16, -50), "left_hip": (12, 0), "right_hip": (-12, 0),
           "left_knee": (14, 40), "right_knee": (-14, 40)}


def write_coco(root: Path, n: int = 4) -> dict[str, Path]:
    """A tiny COCO-keypoints set: ``n`` noise images with one upright person each, and a splits file."""
    import cv2

    rng = np.random.default_rng(0)
    images = root / "images"
    images.mkdir(parents=True)
    entries, annotations = [], []
    for i in range(1, n + 1):
        cv2.imwrite(str(images / f"im{i}.jpg"), rng.integers(0, 255, (200, 160, 3), dtype=np.uint8))
        hip = rng.uniform(70, 90, 2) + np.array([0, 40])
        kps = [v for name in KEYPOINTS for v in (*(hip + OFFSETS[name]).round(1).tolist(), 2)]
        entries.append({"id": i, "file_name": f"im{i}.jpg", "width": 160, "height": 200})
        annotations.append({"id": 10 + i, "image_id": i, "category_id": 1, "keypoints": kps, "iscrowd": 0})
    ann = root / "annotations.json"
    ann.write_text(json.dumps({"images": entries, "annotations": annotations,
                               "categories": [{"id": 1, "name": "person", "keypoints": KEYPOINTS}]}))
    splits = root / "splits.json"
    splits.write_text(json.dumps({"train": list(range(1, n)), "dev": [n]}))
    return {"annotations": ann, "images": images, "splits": splits}


@pytest.fixture(scope="module")
def coco(tmp_path_factory) -> dict[str, Path]:
    return write_coco(tmp_path_factory.mktemp("coco"))


def prepare(coco: dict[str, Path], output_dir: Path, *extra: object):
    return run_module("data.prepare", f"--annotations={coco['annotations']}", f"--images={coco['images']}",
                      f"--output_dir={output_dir}", "--teacher=none", "--crop_size=64", "--noprogress", *extra)


def siblings(folder: Path) -> set[str]:
    """Names next to ``folder`` (temporary folders of an atomic write would show up here)."""
    return {p.name for p in folder.parent.iterdir()}


# ---------------------------------------------------------------------------------------------- data.prepare

def test_prepare_refuses_a_non_empty_output_and_overwrite_replaces_it_whole(coco, tmp_path):
    out = tmp_path / "prepared"
    first = prepare(coco, out, "--shard_size=1")
    assert_clean_exit(first, 0)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["splits"]["train"]["shards"] == ["train-00000.tfrecord", "train-00001.tfrecord",
                                                     "train-00002.tfrecord"]
    before = checksums(out)

    again = prepare(coco, out, "--shard_size=1")
    line = assert_clean_exit(again, 2, str(out), "not empty", "pass --overwrite")
    assert line.count("\n") == 0 and checksums(out) == before

    replaced = prepare(coco, out, "--overwrite", "--split_names=train", "--shard_size=10")
    assert_clean_exit(replaced, 0)
    manifest = json.loads((out / "manifest.json").read_text())
    assert list(manifest["splits"]) == ["train"]
    # only the new run's files: the old train shards 1-2 and the dev shard are gone, nothing mixes
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "train-00000.tfrecord"]
    assert sum(1 for _ in tf.data.TFRecordDataset(str(out / "train-00000.tfrecord"))) == 3
    assert siblings(out) == {"prepared"}      # no temporary or set-aside folder left


@pytest.mark.parametrize("case", ["output_is_a_file", "malformed_splits", "foreign_files", "output_is_input"])
def test_prepare_refusals_change_nothing(case, coco, tmp_path):
    out = tmp_path / "out"
    extra: list[str] = []
    if case == "output_is_a_file":
        out.write_text("not a folder")
        words = ("--output_dir", str(out), "is a file")
    elif case == "malformed_splits":
        bad = tmp_path / "splits.json"
        bad.write_text('{"train": [1, 2,')
        extra = [f"--splits={bad}"]
        words = (str(bad), "not valid JSON")
    elif case == "foreign_files":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
        (out / "train-00000.tfrecord").write_bytes(b"old")
        extra = ["--overwrite"]
        words = ("notes.txt", "does not write", "--overwrite")
    else:
        out = coco["images"]
        extra = ["--overwrite"]
        words = ("holds the input",)
    inputs = [coco["annotations"], coco["images"], coco["splits"]]
    before = checksums(*inputs, *([out] if out.exists() else []))
    around = siblings(out)
    proc = prepare(coco, out, *extra)
    assert_clean_exit(proc, 2, *words)
    assert checksums(*inputs, *([out] if out.exists() else [])) == before
    assert siblings(out) == around             # nothing created next to it either


@pytest.mark.parametrize("how", ["error", "keyboard_interrupt", "sigterm"])
def test_interrupted_prepare_write_leaves_old_output_untouched_and_no_temp_folder(how, tmp_path):
    from data.prepare import write_atomically

    out = tmp_path / "out"
    out.mkdir()
    (out / "train-00000.tfrecord").write_bytes(b"old shard")
    (out / "manifest.json").write_text("{}")
    before = checksums(out)

    def write(folder: Path) -> None:
        (folder / "train-00000.tfrecord").write_bytes(b"half a new shard")
        if how == "error":
            raise RuntimeError("disk on fire")
        if how == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
        raise KeyboardInterrupt

    with pytest.raises(RuntimeError if how == "error" else KeyboardInterrupt):
        write_atomically(out, write)
    assert checksums(out) == before and siblings(out) == {"out"}
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is only set while writing

    write_atomically(out, lambda folder: (folder / "manifest.json").write_text('{"new": 1}'))
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"] and siblings(out) == {"out"}


# ------------------------------------------------------------------------------------------------------ train

@pytest.fixture(scope="module")
def train_data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("hostile_train_data")
    _records(d / "train-00000.tfrecord", 12, 0)
    return d


def train(train_data: Path, model_dir: Path, *extra: object, env: Optional[dict] = None):
    return run_module("blazepose_tf.train", f"--flagfile={REPO / 'configs' / 'smoke.flags'}",
                      f"--train_data={train_data / 'train-*.tfrecord'}", f"--model_dir={model_dir}", *extra, env=env)


def corrupt_keras(path: Path) -> Path:
    """A truncated copy of a real ``.keras`` (the zoo's Lite tracker): exists, but does not load."""
    data = (REPO / "blazepose_tf" / "zoo" / "weights" / "lite.keras").read_bytes()
    path.write_bytes(data[:len(data) // 2])
    return path


@pytest.mark.parametrize("case", ["corrupt_init_from", "missing_init_from", "init_from_without_checkpoint",
                                  "corrupt_distill_from", "corrupt_shard", "empty_dev_shard",
                                  "model_dir_is_a_file"])
def test_failed_train_start_writes_nothing(case, train_data, tmp_path):
    model_dir = tmp_path / "run"
    data = train_data
    if case == "corrupt_init_from":
        bad = corrupt_keras(tmp_path / "weights.keras")
        extra, code, words = [f"--init_from={bad}"], 4, ("--init_from", str(bad), "corrupt")
    elif case == "missing_init_from":
        bad = tmp_path / "nowhere" / "best.keras"
        extra, code, words = [f"--init_from={bad}"], 4, (f"--init_from not found: {bad}",)
    elif case == "init_from_without_checkpoint":
        bad = tmp_path / "empty_run"
        bad.mkdir()
        extra, code, words = [f"--init_from={bad}"], 4, ("--init_from", str(bad), "holds no checkpoint")
    elif case == "corrupt_distill_from":
        bad = corrupt_keras(tmp_path / "teacher.keras")
        extra, code, words = [f"--distill_from={bad}"], 4, ("--distill_from", str(bad), "corrupt")
    elif case == "corrupt_shard":
        data = tmp_path / "data"
        data.mkdir()
        bad = data / "train-00000.tfrecord"
        bad.write_bytes((train_data / "train-00000.tfrecord").read_bytes()[:1000])
        extra, code, words = [], 2, (str(bad), "not a readable TFRecord shard (corrupt or truncated)")
    elif case == "empty_dev_shard":  # nothing to evaluate on: would only fail (or hang) later
        (tmp_path / "dev-00000.tfrecord").write_bytes(b"")
        extra, code, words = [f"--dev_data={tmp_path / 'dev-*.tfrecord'}"], 2, ("--dev_data", "hold no records")
    else:
        model_dir.write_text("a file")
        extra, code, words = [], 2, ("--model_dir", str(model_dir), "is a file")
    before = checksums(tmp_path, data)
    proc = train(data, model_dir, *extra)
    assert_clean_exit(proc, code, *words)
    assert checksums(tmp_path, data) == before          # inputs unchanged, and no model_dir created
    assert model_dir.is_file() or not model_dir.exists()


@pytest.mark.parametrize("tf_config, words", [("", "needs the TF_CONFIG environment variable"),
                                               ("{'cluster': ", "TF_CONFIG is not valid JSON")])
def test_multi_worker_without_a_usable_tf_config_writes_nothing(tf_config, words, train_data, tmp_path):
    model_dir = tmp_path / "run"
    proc = train(train_data, model_dir, "--strategy=multi_worker", env={"TF_CONFIG": tf_config} if tf_config else None)
    assert_clean_exit(proc, 2, words)
    assert not model_dir.exists()


def test_model_dir_with_config_but_no_checkpoint_does_not_block_a_corrected_run(train_data, tmp_path):
    """What a failed start used to leave (config.json with other settings, log rows) is replaced, not refused."""
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps({"init_from": "/typo/best.keras", "preset": "lite",
                                                       "model_dir": str(model_dir), "train_data": "x/*.tfrecord"}))
    (model_dir / "history.jsonl").write_text(json.dumps({"step": 1, "coords": 9.0}) + "\n")
    proc = train(train_data, model_dir, "--steps=2", "--checkpoint_every=2")
    assert_clean_exit(proc, 0)
    assert json.loads((model_dir / "config.json").read_text())["init_from"] == "scratch"
    rows = [json.loads(line) for line in (model_dir / "history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and rows[0]["coords"] != 9.0
    assert tf.train.latest_checkpoint(str(model_dir / "checkpoints")).endswith("ckpt-2")
    # The checkpoint the preflight finds without TensorFlow is the one TensorFlow finds.
    assert latest_checkpoint(model_dir / "checkpoints") == tf.train.latest_checkpoint(str(model_dir / "checkpoints"))


def test_trim_jsonl_keeps_rows_up_to_the_restored_step_and_drops_a_torn_line(tmp_path):
    from blazepose_tf.training.loop import trim_jsonl

    log = tmp_path / "history.jsonl"
    log.write_text("".join(json.dumps({"step": s, "loss": s / 10}) + "\n" for s in (1, 2, 3, 4)) + '{"step": 5, "lo')
    assert trim_jsonl(log, lambda step: step <= 3) == 2
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3]
    assert trim_jsonl(log, lambda step: step <= 3) == 0 and not (tmp_path / "history.jsonl.part").exists()


def test_stale_checkpoint_temp_files_are_removed_and_never_read(tmp_path):
    from blazepose_tf.training.loop import remove_stale_checkpoint_files

    ckpts = tmp_path / "checkpoints"
    v = tf.Variable(1.0)
    tf.train.CheckpointManager(tf.train.Checkpoint(v=v), str(ckpts), max_to_keep=3).save(checkpoint_number=4)
    (ckpts / "ckpt-6_temp").mkdir()
    (ckpts / "ckpt-6_temp" / "part-00000-of-00001.index").write_bytes(b"half written")
    (ckpts / "checkpoint.tmp0123abcd").write_text("model_checkpoint_path: \"ckpt-6\"")
    assert tf.train.latest_checkpoint(str(ckpts)).endswith("ckpt-4")
    assert remove_stale_checkpoint_files(ckpts) == ["checkpoint.tmp0123abcd", "ckpt-6_temp"]
    assert sorted(p.name for p in ckpts.iterdir()) == ["checkpoint", "ckpt-4.data-00000-of-00001", "ckpt-4.index"]
