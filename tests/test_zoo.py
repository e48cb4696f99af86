"""The model zoo: registry resolution and checks (``blazepose_tf.zoo``), publishing (``blazepose_tf.zoo.publish``),
the ``--models`` flag of the runtime commands, and a tiny ``benchmarks.model_zoo`` run.

Nothing here depends on the repository's own shipped weights: every test works on a temporary weights folder
(``$BLAZEPOSE_TF_ZOO_WEIGHTS`` / ``directory=``), filled with a tiny ``smoke`` tracker where a real model is
needed. Tests that run the official models or read ``../shared/data`` skip (with the reason) without them.
"""
from __future__ import annotations

import json
import shlex
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from blazepose_tf import zoo
from blazepose_tf.zoo import model_flags
from blazepose_tf.errors import EXIT_MODELS, EXIT_NO_INPUT, EXIT_OK, EXIT_USAGE, ModelError, UserError
from blazepose_tf.io.provenance import written_here
from blazepose_tf.zoo.publish import portable_path

REPO = Path(__file__).resolve().parents[1]
SMOKE_FLAGS = REPO / "configs" / "smoke.flags"


def run_module(module: str, *args, env_zoo: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    import os

    env = dict(os.environ)
    if env_zoo is not None:
        env[zoo.WEIGHTS_ENV] = str(env_zoo)
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, errors="replace", timeout=timeout, env=env)


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    assert "Traceback" not in proc.stderr, proc.stderr
    return [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]


def write_fake_zoo(folder: Path, names=zoo.MODEL_NAMES) -> dict[str, bytes]:
    """A weights folder whose files are arbitrary bytes described by a consistent manifest."""
    import hashlib

    folder.mkdir(parents=True, exist_ok=True)
    manifest = zoo.empty_manifest()
    contents = {}
    for name in names:
        files = {}
        for fmt in zoo.FORMATS:
            data = f"{name}.{fmt} ".encode() * 100
            (folder / f"{name}.{fmt}").write_bytes(data)
            contents[f"{name}.{fmt}"] = data
            files[fmt] = {"file": f"{name}.{fmt}", "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        manifest["models"][name] = {"kind": zoo.MODEL_KINDS[name], "files": files, "command": "test",
                                    "publish_command": f"python -m blazepose_tf.zoo.publish --name {name} --model X"}
    (folder / zoo.MANIFEST_NAME).write_text(json.dumps(manifest))
    return contents


@pytest.fixture
def fake_zoo(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "weights"
    write_fake_zoo(folder)
    monkeypatch.setenv(zoo.WEIGHTS_ENV, str(folder))
    return folder


# --- registry ------------------------------------------------------------------------------------------------------


def test_sets_and_names():
    assert zoo.MODEL_NAMES == ("detector", "full", "lite")
    assert set(zoo.MODEL_SETS) == {"ours", "ours_lite", "official", "official_lite"} and zoo.DEFAULT_SET == "ours"
    assert model_flags.MODEL_SETS == tuple(zoo.MODEL_SETS) and model_flags.DEFAULT_MODEL_SET == "ours"
    assert zoo.DEFAULT_WEIGHTS_DIR == REPO / "blazepose_tf" / "zoo" / "weights"


def test_model_set_resolves_verified_files(fake_zoo):
    assert zoo.weights_dir() == fake_zoo
    assert zoo.model_set("ours") == (fake_zoo / "detector.tflite", fake_zoo / "full.tflite")
    assert zoo.model_set("ours_lite") == (fake_zoo / "detector.tflite", fake_zoo / "lite.tflite")
    assert zoo.model_set("ours", fmt="keras") == (fake_zoo / "detector.keras", fake_zoo / "full.keras")
    assert zoo.model_path("lite") == fake_zoo / "lite.tflite"
    assert zoo.model_path("full", fmt="keras", directory=fake_zoo) == fake_zoo / "full.keras"
    assert zoo.published() == list(zoo.MODEL_NAMES)
    assert zoo.set_member("ours_lite", "landmarks") == "zoo:lite"


def test_official_set_is_the_fetched_official_models(official_models, tmp_path, monkeypatch):
    from blazepose_tf.official import official_model_path

    monkeypatch.setenv(zoo.WEIGHTS_ENV, str(tmp_path))  # empty zoo: the official set does not need it
    assert zoo.model_set("official") == (official_model_path("pose_detection"),
                                         official_model_path("pose_landmark_full"))
    assert zoo.model_set("official_lite") == (official_model_path("pose_detection"),
                                              official_model_path("pose_landmark_lite"))


def test_unknown_names_are_user_errors(fake_zoo):
    with pytest.raises(UserError, match="unknown zoo model 'heavy'; known: detector, full, lite"):
        zoo.model_path("heavy")
    with pytest.raises(UserError, match="format must be one of tflite, keras"):
        zoo.model_path("full", fmt="onnx")
    with pytest.raises(UserError, match="--models must be one of ours, ours_lite, official, official_lite, got 'mine'"):
        zoo.model_set("mine")
    for spec in ("zoo:heavy", "official:pose_landmark_heavy"):   # the same mistake either side: exit 2, not 4
        with pytest.raises(UserError, match="unknown (zoo|official) model .*heavy"):
            zoo.resolve(spec)
        with pytest.raises(UserError, match="unknown (zoo|official) model .*heavy"):
            zoo.resolve(spec, "keras")
    with pytest.raises(UserError, match="model spec must be zoo:NAME or official:NAME"):
        zoo.resolve("mediapipe:pose_landmark_full")


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_missing_file_says_which_and_how_to_restore(fake_zoo):
    (fake_zoo / "full.tflite").unlink()
    with pytest.raises(ModelError) as e:
        zoo.model_set("ours")
    msg = _one_line(e)
    assert f"zoo model file {fake_zoo / 'full.tflite'} is missing" in msg
    assert f"git checkout -- {fake_zoo / 'full.tflite'}" in msg
    assert "python -m blazepose_tf.zoo.publish --name full --model X" in msg   # the recorded publish command
    assert zoo.model_set("ours_lite")  # the other set is intact


def test_corrupted_file_is_refused(fake_zoo):
    path = fake_zoo / "lite.keras"
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF  # same size, different content
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError) as e:
        zoo.model_path("lite", fmt="keras")
    msg = _one_line(e)
    assert f"zoo model file {path} does not match MANIFEST.json" in msg and "git checkout --" in msg
    path.write_bytes(b"version https://git-lfs.github.com/spec/v1\n")  # a Git LFS pointer
    with pytest.raises(ModelError, match="Git LFS pointer"):
        zoo.model_path("lite", fmt="keras")
    assert zoo.model_path("lite") == fake_zoo / "lite.tflite"


def test_unpublished_model_and_broken_manifest(tmp_path, monkeypatch):
    monkeypatch.setenv(zoo.WEIGHTS_ENV, str(tmp_path))
    with pytest.raises(ModelError) as e:
        zoo.model_set("ours")
    msg = _one_line(e)
    assert "zoo model 'detector' is not published" in msg and "or use --models official" in msg
    assert "python -m blazepose_tf.zoo.publish --name detector" in msg
    with pytest.raises(ModelError, match="--flagfile configs/lite.flags"):
        zoo.model_path("lite")
    (tmp_path / "MANIFEST.json").write_text("{not json")
    with pytest.raises(ModelError) as e:
        zoo.model_path("lite")
    assert "MANIFEST.json is not readable JSON" in _one_line(e)
    (tmp_path / "MANIFEST.json").write_text(json.dumps({"schema": "other", "models": {}}))
    with pytest.raises(ModelError, match="is not a blazepose_tf.zoo/1 manifest"):
        zoo.model_path("lite")


# --- cli: --models / --detector / --landmarks ----------------------------------------------------------------------


def flags_ns(models="ours", detector=None, landmarks=None) -> SimpleNamespace:
    return SimpleNamespace(models=models, detector=detector, landmarks=landmarks, num_threads=1)


def test_cli_resolves_sets_through_the_zoo(fake_zoo):
    assert model_flags.resolve_models(flags_ns()) == (fake_zoo / "detector.tflite", fake_zoo / "full.tflite")
    assert model_flags.resolve_models(flags_ns("ours_lite")) == (fake_zoo / "detector.tflite", fake_zoo / "lite.tflite")
    assert model_flags.model_labels(flags_ns("ours_lite", landmarks="x.tflite")) == {"detector": "zoo:detector",
                                                                             "landmarks": "x.tflite"}
    with pytest.raises(UserError, match="--models must be one of"):
        model_flags.resolve_models(flags_ns("bogus"))


def test_cli_overrides_skip_the_zoo(tmp_path, monkeypatch):
    monkeypatch.setenv(zoo.WEIGHTS_ENV, str(tmp_path / "empty"))
    assert model_flags.resolve_models(flags_ns(detector="d.tflite", landmarks="l.keras")) == (Path("d.tflite"),
                                                                                      Path("l.keras"))
    with pytest.raises(ModelError, match="zoo model 'detector' is not published"):
        model_flags.resolve_models(flags_ns(landmarks="l.keras"))  # only the role not overridden is looked up
    with pytest.raises(ModelError, match="zoo model 'lite' is not published"):
        model_flags.resolve_models(flags_ns("ours_lite", detector="d.tflite"))


def test_models_flag_rejects_unknown_set_before_loading(tmp_path):
    proc = run_module("blazepose_tf.track", "--input", "sample", "--output", tmp_path / "r.json", "--models", "mine")
    assert proc.returncode == EXIT_USAGE, proc.stderr
    assert error_lines(proc) == ["error: flag --models=mine: value should be one of "
                                 "<ours|ours_lite|official|official_lite>"]
    assert not (tmp_path / "r.json").exists()


def test_default_set_without_published_weights_exits_4_with_one_line(tmp_path):
    proc = run_module("blazepose_tf.track", "--input", "sample", "--output", tmp_path / "r.json", "--noprogress",
                      env_zoo=tmp_path / "empty")
    assert proc.returncode == EXIT_MODELS, proc.stderr
    lines = error_lines(proc)
    assert len(lines) == 1 and "zoo model 'detector' is not published" in lines[0], proc.stderr
    assert "--models official" in lines[0]


# --- publish ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    """A tiny trained-looking run folder: best.keras (smoke tracker inference model) + best.json sidecar."""
    from blazepose_tf.topology import BLAZEPOSE_33
    from blazepose_tf.training.registry import build_models

    run = tmp_path_factory.mktemp("run")
    build_models("smoke", BLAZEPOSE_33).inference.save(run / "best.keras")
    (run / "best.json").write_text(json.dumps({"step": 6, "pck": 1.25, "points": 40}))
    return run


@pytest.fixture(scope="module")
def published_zoo(smoke_run, tmp_path_factory) -> Path:
    from blazepose_tf.zoo.publish import publish

    folder = tmp_path_factory.mktemp("weights")
    publish("lite", smoke_run / "best.keras", flagfile=str(SMOKE_FLAGS), weights_dir=folder, log=lambda *a: None)
    return folder


def test_publish_writes_both_files_and_a_consistent_manifest(published_zoo, smoke_run):
    from blazepose_tf.runtime.runners import TFLiteRunner
    from export.metadata import read_metadata

    doc = json.loads((published_zoo / "MANIFEST.json").read_text())
    assert doc["schema"] == zoo.SCHEMA and list(doc["models"]) == ["lite"]
    e = doc["models"]["lite"]
    assert e["kind"] == "tracker" and e["step"] == 6 and e["dev_metrics"] == {"pck": 1.25, "points": 40}
    assert e["flagfile"] == str(SMOKE_FLAGS) and "--preset=smoke" in e["flags"]
    assert e["command"] == f"python -m blazepose_tf.train --flagfile={SMOKE_FLAGS}"
    assert e["source"] == portable_path(smoke_run / "best.keras") and e["published_at"]
    assert f"--name lite --model {shlex.quote(portable_path(smoke_run / 'best.keras'))}" in e["publish_command"]
    for fmt in zoo.FORMATS:
        info = e["files"][fmt]
        path = published_zoo / info["file"]
        assert info["file"] == f"lite.{fmt}"
        assert info["sha256"] == zoo.file_sha256(path) and info["bytes"] == path.stat().st_size
    _assert_same_model_in_fp16(published_zoo / "lite.keras", smoke_run / "best.keras")
    assert e["files"]["tflite"]["quantization"] == "fp16" and read_metadata(published_zoo / "lite.tflite")[
        "quantization"] == "fp16"
    assert set(TFLiteRunner(published_zoo / "lite.tflite").output_roles) == {"landmarks", "presence"}
    assert zoo.model_path("lite", directory=published_zoo) == published_zoo / "lite.tflite"
    assert sorted(p.name for p in published_zoo.iterdir()) == ["MANIFEST.json", "lite.keras", "lite.tflite"]


def _assert_same_model_in_fp16(published: Path, source: Path) -> None:
    """The published .keras is smaller and holds the source's weights rounded to float16 (float32 variables)."""
    import keras
    import numpy as np

    assert published.stat().st_size < source.stat().st_size
    a = keras.models.load_model(published, compile=False)
    b = keras.models.load_model(source, compile=False)
    assert [w.path for w in a.weights] == [w.path for w in b.weights]
    for wa, wb in zip(a.weights, b.weights):
        assert wa.dtype == "float32"
        np.testing.assert_array_equal(np.asarray(wa), np.asarray(wb).astype(np.float16).astype(np.float32))


def test_publish_keeps_other_entries_and_refuses_the_wrong_kind(published_zoo, smoke_run, tmp_path):
    from blazepose_tf.zoo.publish import publish

    folder = tmp_path / "w"
    folder.mkdir()
    for f in published_zoo.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    before = (folder / "MANIFEST.json").read_text()
    with pytest.raises(ModelError, match="is a tracker model but zoo model 'detector' must be a detector"):
        publish("detector", smoke_run / "best.keras", command="x", weights_dir=folder, log=lambda *a: None)
    assert (folder / "MANIFEST.json").read_text() == before and not (folder / "detector.keras").exists()
    with pytest.raises(UserError, match="give --flagfile and/or --command"):
        publish("full", smoke_run / "best.keras", weights_dir=folder)
    publish("full", smoke_run / "best.keras", command="python train.py --steps=6", weights_dir=folder,
            log=lambda *a: None)
    doc = json.loads((folder / "MANIFEST.json").read_text())
    assert list(doc["models"]) == ["full", "lite"]
    assert doc["models"]["lite"] == json.loads(before)["models"]["lite"]
    assert doc["models"]["full"]["command"] == "python train.py --steps=6" and doc["models"]["full"]["flagfile"] is None
    _assert_same_model_in_fp16(zoo.model_path("full", "keras", directory=folder), smoke_run / "best.keras")
    assert not [p for p in folder.iterdir() if p.name.startswith(".publish") or p.suffix == ".part"]


def test_publish_creates_the_default_weights_folder(smoke_run, tmp_path, monkeypatch):
    from blazepose_tf.zoo.publish import publish

    default = tmp_path / "repo_weights"
    monkeypatch.setattr(zoo, "DEFAULT_WEIGHTS_DIR", default)
    monkeypatch.delenv(zoo.WEIGHTS_ENV, raising=False)
    with pytest.raises(ModelError, match="must be a detector"):  # stops after the folder check, before any export
        publish("detector", smoke_run / "best.keras", command="x", log=lambda *a: None)
    assert default.is_dir() and not list(default.iterdir())
    with pytest.raises(UserError, match="weights folder does not exist"):  # other folders are not created
        publish("lite", smoke_run / "best.keras", command="x", weights_dir=tmp_path / "typo")


def test_publish_cli_flagfile_alias_and_errors(tmp_path):
    from blazepose_tf.zoo.publish import rename_flagfile

    assert rename_flagfile(["p", "--flagfile", "a.flags", "--name=lite", "--flagfile=b.flags"]) == [
        "p", "--train_flagfile=a.flags", "--name=lite", "--train_flagfile=b.flags"]
    proc = run_module("blazepose_tf.zoo.publish", "--name", "lite", "--model", tmp_path / "none.keras",
                      "--flagfile", SMOKE_FLAGS, "--weights_dir", tmp_path)
    assert proc.returncode == EXIT_MODELS and error_lines(proc) == [
        f"error: --model file not found: {tmp_path / 'none.keras'}"], proc.stderr
    proc = run_module("blazepose_tf.zoo.publish", "--name", "heavy", "--model", "x.keras")
    assert proc.returncode == EXIT_USAGE and "--name=heavy" in error_lines(proc)[0]


def test_track_runs_a_published_tracker_through_the_set(published_zoo, official_models, tmp_path):
    from blazepose_tf.official import official_model_path

    out = tmp_path / "r.json"
    proc = run_module("blazepose_tf.track", "--input", "sample", "--output", out, "--models", "ours_lite",
                      "--detector", official_model_path("pose_detection"), "--noprogress", env_zoo=published_zoo)
    assert proc.returncode == EXIT_OK, proc.stderr
    doc = json.loads(out.read_text())
    assert doc["summary"]["processed"] == 1 and doc["summary"]["detector_calls"] == 1


# --- benchmarks.model_zoo --------------------------------------------------------------------------------------------


def test_model_zoo_benchmark_errors(tmp_path):
    proc = run_module("benchmarks.model_zoo", "--annotations", tmp_path / "missing.json", "--output",
                      tmp_path / "Z.md")
    assert proc.returncode == EXIT_NO_INPUT, proc.stderr
    assert error_lines(proc) == [f"error: evaluation data not found: {tmp_path / 'missing.json'} does not exist "
                                 "(the model zoo is measured on LSPET, ../shared/data/lspet; pass --annotations "
                                 "and --images)"]
    proc = run_module("benchmarks.model_zoo", "--quantizations", "fp8", "--output", tmp_path / "Z.md")
    assert proc.returncode == EXIT_USAGE and "--quantizations must list names from" in error_lines(proc)[0]
    assert not (tmp_path / "Z.md").exists()


def test_model_zoo_quantization_section(tmp_path):
    from benchmarks.zoo_table import quantization_section

    def row(variant, test, share, floats=()):
        return {"model": "zoo_full", "variant": variant, "pck": {"test": test, "dev": test + 1}, "size_mb": 3.5,
                "int8_mac_share": share, "latency_ms": 4.25, "float_layers": list(floats), "error": None}
    table = {"command": "python -m benchmarks.quantization --models zoo_full --out_dir /tmp/q --output=/tmp/q.json",
             "rows": [row("fp32", 56.31, 0.0), row("int8-selective", 55.56, 0.8, ["a", "b"]),
                      dict(row("int8", 0.0, 1.0), error="conversion failed")]}
    text = "\n".join(quantization_section(table))
    assert "`python -m benchmarks.quantization --models zoo_full`" in text
    assert "| zoo_full | int8-selective | 55.6 | -0.75 | 56.6 | 3.50 | 80.0 | 4.25 | 2 |" in text
    assert "| int8 |" not in text  # failed rows are left out
    table["rows"][1]["vs_fp32"] = {"test": [-0.75, -1.5, 0.1]}   # the paired interval, when measured
    assert "| int8-selective | 55.6 | -0.75 [-1.50, +0.10] | 56.6 |" in "\n".join(quantization_section(table))
    # A row carried over from an earlier table as printed: its printed difference and float-op count.
    carried = dict(row("int8-selective", 55.6, 0.8), vs_fp32={"test": [-0.66]}, float_ops=27)   # not 55.6 - 56.31
    table["rows"][1] = carried
    assert "| zoo_full | int8-selective | 55.6 | -0.66 | 56.6 | 3.50 | 80.0 | 4.25 | 27 |" in "\n".join(
        quantization_section(table))
    proc = run_module("benchmarks.model_zoo", "--quantization_table", tmp_path / "none.json", "--output",
                      tmp_path / "Z.md")
    assert proc.returncode == EXIT_NO_INPUT and error_lines(proc) == [
        f"error: --quantization_table not found: {tmp_path / 'none.json'}"]


def test_model_zoo_benchmark_unpublished_model_exits_4(shared_data, tmp_path):
    proc = run_module("benchmarks.model_zoo", "--models", "lite", "--limit", "1", "--output", tmp_path / "Z.md",
                      env_zoo=tmp_path / "empty")
    assert proc.returncode == EXIT_MODELS, proc.stderr
    assert len(error_lines(proc)) == 1 and "zoo model 'lite' is not published" in error_lines(proc)[0]


def test_model_zoo_benchmark_smoke(shared_data, official_models, tmp_path):
    """Official models, shipped files only (no export), two images, two timed runs: the whole table path.
    (Params/FLOPs come from the converted Keras models, converted on first use and cached.)"""
    out, js = tmp_path / "Z.md", tmp_path / "z.json"
    guard = [] if (shared_data / "yoga_pose_photos").is_dir() else ["--noyoga_guard"]  # the guard needs the photos
    proc = run_module("benchmarks.model_zoo", "--models", "official_detector,official_full,detector", "--quantizations",
                      "fp16", "--limit", "2", "--runs", "2", "--warmup", "0", "--rounds", "1", "--output", out,
                      "--json", js, "--noprogress", "--cache_dir", tmp_path / "cache", *guard)
    assert proc.returncode == EXIT_OK, proc.stderr
    text = out.read_text()
    body, mark = text.rsplit("<!-- blazepose_tf sha256:", 1)     # the report as printed, then the mark line
    assert text.startswith("# Model zoo\n") and body in proc.stdout and mark.endswith(" -->\n")
    assert written_here(out)
    assert "2 scored images (first 2, `--limit`)" in text and "logical CPUs" in text and "## Detectors" in text
    rows = {r["model"]: r for r in json.loads(js.read_text())["rows"]}
    full, det = rows["official_full"], rows["official_detector"]
    assert full["ratio"] == pytest.approx(1.0) and det["ratio"] > 0            # the reference is official Full
    assert full["params"] == 3169489 and full["flops"] > 0 and full["size_bytes"] > 6e6
    assert full["pipeline"] == {"detector": det["path"], "landmarks": full["path"]} == det["pipeline"]
    assert 0 <= full["pck"] <= 100 and full["detection_rate"] == det["detection_rate"]
    assert full["pck_official_detector"] == full["pck"] and det["pck_official_detector"] is None
    assert full["crop_pck"] is not None and det["crop_pck"] is None and full["per_group"]["face"] is None
    line = next(ln for ln in text.splitlines() if ln.startswith("| official Full |"))
    assert "| fp16 | MediaPipe file |" in line and "| 1.00× |" in line
    # The zoo's detector is in the run with both official models: its paired comparison is measured and shown.
    [comparison] = json.loads(js.read_text())["info"]["comparisons"]
    assert comparison["what"].startswith("our detector vs MediaPipe's detector") and comparison["people"] == 2
    assert comparison["official"] == pytest.approx(full["pck"]) == pytest.approx(det["pck"])
    assert comparison["ours"] == pytest.approx(rows["detector"]["pck"])
    assert comparison["difference"] == pytest.approx(comparison["ours"] - comparison["official"])
    assert "## Ours against the official models (paired)" in text and "same 2 people of split `test`" in text


def test_the_manifest_records_paths_under_home_with_a_tilde(tmp_path, monkeypatch):
    """A published model's source path names no user's home folder (it would not exist on anyone else's machine)."""
    home = tmp_path / "home" / "user"
    monkeypatch.setenv("HOME", str(home))
    assert portable_path(home / ".cache" / "runs" / "best.keras") == "~/.cache/runs/best.keras"
    assert portable_path("~/runs/best.keras") == "~/runs/best.keras"
    assert portable_path(tmp_path / "home" / "user2" / "best.keras") == str(tmp_path / "home" / "user2" / "best.keras")
    assert portable_path("runs/best.keras") == "runs/best.keras"   # relative, outside home: as given
    manifest = (Path(zoo.__file__).parent / "weights" / "MANIFEST.json").read_text()
    assert not re.findall(r"(?<![\w~.])/(?:root|home/[^/\s\"']+|Users/[^/\s\"']+)/", manifest)
