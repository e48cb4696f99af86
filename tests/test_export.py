"""Export to TFLite: every quantization mode round-trips on a small model (loads in ai-edge-litert, builtin ops
only, within stated error bounds of Keras), metadata and report, Flex-op failure, CLI."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from blazepose_tf.codecs.targets import gt_alignment_roi
from export import metadata as md
from export.representative import load_samples, parse_spec
from export.tflite_model import inspect_model, schema
from export.to_tflite import ConversionError, export_model, format_report, prepare_model
from blazepose_tf.errors import UserError
from export_fixtures import flex_model, synthetic_coco, tiny_detector, tiny_tracker

REPO = Path(__file__).resolve().parents[1]

# Max error relative to the largest reference magnitude, per output, on real aligned crops (stated bounds).
ERROR_BOUNDS = {"none": 1e-5, "fp16": 1e-2, "dynamic": 2e-2, "int8": 5e-2}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return synthetic_coco(tmp_path_factory.mktemp("coco"))


@pytest.fixture(scope="module")
def tracker():
    return tiny_tracker()


@pytest.mark.parametrize("mode", ["none", "fp16", "dynamic", "int8"])
def test_round_trip_every_quantization(mode, tracker, dataset, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    from blazepose_tf.runtime.runners import TFLiteRunner

    out = tmp_path / f"tracker_{mode}.tflite"
    result = export_model(tracker, out, mode, representative=str(dataset), num_calibration=8, log=lambda *_: None)
    # Loads in ai-edge-litert, one signature with role-named outputs, no Flex/custom ops.
    it = Interpreter(model_path=str(out))
    it.allocate_tensors()
    # The heatmap is kept by default, in every mode: the runtime refines the landmarks with it.
    assert it.get_signature_list() == {"serving_default": {"inputs": ["image"],
                                                           "outputs": ["heatmap", "landmarks", "presence"]}}
    info = inspect_model(out)
    assert info.custom_ops == [] and info.flex_ops == []
    assert {t.name for t in info.outputs} == {"landmarks", "presence", "heatmap"}  # tensors named after the roles
    assert info.inputs[0].dtype == "FLOAT32" and all(t.dtype == "FLOAT32" for t in info.outputs)
    assert info.guess_quantization() == mode
    runner = TFLiteRunner(out)
    assert sorted(runner.output_roles) == ["heatmap", "landmarks", "presence"]
    # Within bounds of the Keras model on the same real crops.
    samples = load_samples(str(dataset), "tracker", (64, 64), (0.0, 1.0), 8)
    batch = np.concatenate([s.tensor for s in samples])
    ref = tracker(batch, training=False)
    got = runner(batch)
    for name in ("landmarks", "presence", "heatmap"):
        ref_v = np.asarray(ref[name])
        rel = np.abs(got[name] - ref_v).max() / np.abs(ref_v).max()
        assert rel <= ERROR_BOUNDS[mode], (name, rel)
    # Report and metadata.
    report = json.loads(result.report_path.read_text())
    assert result.report_path == tmp_path / f"tracker_{mode}.report.json"
    assert report["quantization"] == mode and report["size_bytes"] == out.stat().st_size
    assert report["dropped_outputs"] == ["offsets"]
    assert report["flex_ops"] == [] and report["op_histogram"]
    for name, err in report["parity"]["outputs"].items():
        assert err["max_rel"] <= ERROR_BOUNDS[mode] and err["mean_abs"] <= err["max_abs"]
    assert report["pck"]["keras"]["num_people"] == 8 and "delta_points" in report["pck"]
    meta = md.read_metadata(out)
    assert meta["kind"] == "tracker" and meta["quantization"] == mode and meta["name"] == "tiny_tracker"
    assert meta["input"]["range"] == [0.0, 1.0] and meta["input"]["std"] == [255.0] * 3
    assert meta["topology"]["name"] == "blazepose33" and len(meta["topology"]["keypoints"]) == 33
    if mode == "int8":
        assert report["calibration"]["num_inputs"] == 8
        assert "QUANTIZE" in info.op_histogram
        int8 = report["int8"]
        assert int8["macs"]["int8_share"] == 1.0 and int8["float_layers"]["layers"] == []
        assert int8["activation_ranges"]["method"] == "percentile" and int8["layer_errors"]["layers"]
        added = [row["added"] for row in int8["layer_errors"]["layers"]]
        assert added == sorted(added, reverse=True) and all(row["int8"] for row in int8["layer_errors"]["layers"])
        assert "worst layers" in format_report(report)
    else:
        assert report["int8"] is None


def test_nokeep_heatmap_metadata_and_aligned_buffers(tracker, tmp_path):
    out = tmp_path / "hm.tflite"
    result = export_model(tracker, out, "none", keep_heatmap=False, log=lambda *_: None)
    assert {t.name for t in inspect_model(out).outputs} == {"landmarks", "presence"}
    assert sorted(result.report["dropped_outputs"]) == ["heatmap", "offsets"]
    assert "random" in result.report["parity"]["dataset"] and result.report["pck"] is None
    # Adding a buffer keeps the JSON blob; weight buffers stay 16-byte aligned after the rewrite.
    data = md.set_metadata_buffers(out, {"extra": b"hello"})
    assert md.get_metadata_buffers(data)["extra"] == b"hello"
    assert md.read_metadata(data)["kind"] == "tracker"
    m = schema().Model.GetRootAs(data, 0)
    for i in range(m.BuffersLength()):
        b = m.Buffers(i)
        if b.DataLength() >= 16:
            assert b._tab.Vector(b._tab.Offset(4)) % 16 == 0  # absolute position of the data bytes


def test_detector_export(dataset, tmp_path):
    out = tmp_path / "det.tflite"
    result = export_model(tiny_detector(), out, "none", representative=str(dataset), log=lambda *_: None)
    assert result.report["kind"] == "detector"
    assert {t.name for t in inspect_model(out).outputs} == {"regressors", "scores"}
    meta = md.read_metadata(out)
    assert meta["input"]["range"] == [-1.0, 1.0] and meta["input"]["mean"] == [127.5] * 3
    assert max(e["max_rel"] for e in result.report["parity"]["outputs"].values()) <= 1e-5


def test_flex_ops_give_a_clear_error(tmp_path):
    with pytest.raises(ConversionError, match=r"no TFLite builtin kernel: MatrixInverse .*Flex"):
        export_model(flex_model(), tmp_path / "flex.tflite", "none", log=lambda *_: None)
    assert not (tmp_path / "flex.tflite").exists()


def test_prepare_model_output_roles_and_errors():
    import keras

    from blazepose_tf.errors import ModelError

    prepared = prepare_model(tiny_tracker(points=35))
    assert prepared.kind == "tracker" and sorted(prepared.kept) == ["landmarks", "presence"]
    assert prepared.model.inputs[0].shape == (1, 64, 64, 3)
    inp = keras.Input((32, 32, 3))
    bad = keras.Model(inp, keras.layers.Conv2D(4, 3)(inp))
    with pytest.raises(ModelError, match="tracker or a detector"):
        prepare_model(bad)


def test_representative_spec_and_alignment(dataset, tmp_path):
    spec = parse_spec(f"{dataset.parent}:dev_all")
    assert spec.annotations == dataset and spec.split == "dev_all"
    samples = load_samples(spec, "tracker", (64, 64), (0.0, 1.0), 3)
    assert len(samples) == 3 and samples[0].tensor.shape == (1, 64, 64, 3)
    assert 0.0 <= samples[0].tensor.min() and samples[0].tensor.max() <= 1.0
    person = samples[0].person
    roi = gt_alignment_roi(person.keypoints, person.available)
    assert abs(roi.rotation) < 0.3  # upright person: torso points up
    assert roi == samples[0].roi    # the crop is the ground-truth alignment
    det = load_samples(str(dataset), "detector", (32, 32), (-1.0, 1.0), 2)
    assert det[0].tensor.min() >= -1.0 and det[0].tensor.shape == (1, 32, 32, 3)
    from blazepose_tf.errors import UserError
    with pytest.raises(UserError, match="dataset not found"):
        parse_spec(str(tmp_path / "missing") + ":train")
    with pytest.raises(UserError, match="bad option"):
        parse_spec(f"{dataset},foo=1")


def test_plain_image_folder_uses_the_official_detector(dataset):
    from blazepose_tf.errors import ModelError
    from blazepose_tf.official import official_model_path

    try:
        official_model_path("pose_detection", fetch_if_missing=False)
    except ModelError as e:
        pytest.skip(f"official models unavailable: {e}")
    spec = parse_spec(str(dataset.parent / "images"))
    assert not spec.annotated
    samples = load_samples(spec, "tracker", (64, 64), (0.0, 1.0), 3)
    assert len(samples) == 3 and all(s.person is None for s in samples)
    assert all(s.roi.width > 50 for s in samples)  # the astronaut is found and cropped


def test_lspet_crops(shared_data):
    samples = load_samples(f"{shared_data / 'lspet'}:train", "tracker", (256, 256), (0.0, 1.0), 4)
    assert len(samples) == 4 and all(s.person is not None for s in samples)


def _cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "export.to_tflite", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_cli_export_and_errors(tracker, dataset, tmp_path):
    keras_path = tmp_path / "tracker.keras"
    tracker.save(keras_path)
    out = tmp_path / "cli.tflite"
    proc = _cli("--model", str(keras_path), "--output", str(out), "--quantize", "fp16",
                "--representative", str(dataset), "--num_eval", "4", "--name", "cli_tracker")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "parity vs Keras on 4 inputs" in proc.stdout and "report ->" in proc.stdout
    assert md.read_metadata(out)["name"] == "cli_tracker"
    assert md.read_metadata(out)["source"] == "tracker.keras"
    # User errors: one line, documented exit codes.
    proc = _cli("--model", str(tmp_path / "nope.keras"), "--output", str(out))
    assert proc.returncode == 4 and proc.stderr.strip().startswith("error: model file not found")
    proc = _cli("--model", str(keras_path), "--output", str(out), "--quantize", "int8")
    assert proc.returncode == 2 and "needs --representative" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = _cli("--model", str(keras_path), "--output", str(out), "--quantize", "int8", "--representative",
                str(dataset), "--float_layers", "auto")
    assert proc.returncode == 2 and "need --eval" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    proc = _cli("--model", str(keras_path), "--output", str(out), "--quantize", "fp16", "--float_layers", "3")
    assert proc.returncode == 2 and proc.stderr.strip() == "error: --float_layers and --activation_ranges are " \
        "int8 settings: they need --quantize int8"
    proc = _cli("--model", str(keras_path), "--output", str(out), "--topology", "bogus")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "error: flag --topology=bogus: value should be one of <blazepose33|coco17>" in proc.stderr
    bad = tmp_path / "bad.tflite"
    proc = _cli("--model", str(keras_path), "--output", str(bad), "--quantize", "int8", "--representative",
                str(dataset), "--num_calibration", "4", "--float_layers", "landmarks,nope")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and not bad.exists()
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --float_layers: no quantizable layer named 'nope'")
    proc = _cli("--help")
    assert "--[no]keep_heatmap" in proc.stdout and "points of pipeline PCK" in proc.stdout


def test_prepare_model_enforces_the_io_contract():
    import keras

    from blazepose_tf.errors import ModelError
    from blazepose_tf.topology import COCO_17

    assert prepare_model(tiny_tracker(points=19), topology=COCO_17).kind == "tracker"  # 17 keypoints + 2 ROI
    with pytest.raises(ModelError, match=r"^t19: landmarks output \(1,95\) .* at least 35 points"):
        prepare_model(tiny_tracker(points=19), label="t19")
    inp = keras.Input((64, 64, 3))
    ten = keras.Model(inp, keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(inp)), name="ten")
    with pytest.raises(ModelError, match=r"^ten: landmarks output \(1,10\)"):
        prepare_model(ten)
    with pytest.raises(ModelError, match=r"^d\.keras is a detector \(outputs regressors \(1,\d+,12\), scores "
                                         r"\(1,\d+,1\)\), not a landmark model"):
        prepare_model(tiny_detector(), kind="tracker", label="d.keras")
    vec = keras.Input((10,))
    with pytest.raises(ModelError, match=r"^v\.keras is not a pose model: it takes input \(\?,10\)"):
        prepare_model(keras.Model(vec, keras.layers.Dense(4)(vec)), label="v.keras")


def test_check_output_path(tmp_path):
    from blazepose_tf.errors import UserError
    from export.to_tflite import check_output_path

    check_output_path(tmp_path / "m.tflite")
    check_output_path(tmp_path / "new" / "deeper" / "m.tflite")  # created when the export writes
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir.tflite").mkdir()
    (tmp_path / "r.report.json").mkdir()
    for output, message in [(tmp_path / "file" / "m.tflite", "is a file, not a folder"),
                            (tmp_path / "file" / "a" / "b" / "m.tflite", f"{tmp_path / 'file'} is a file"),
                            (tmp_path / "dir.tflite", "it is a folder; give a .tflite file name"),
                            (tmp_path / "r.tflite", "r.report.json: it is a folder"),
                            (tmp_path / "m.onnx", "must end in .tflite"),
                            (tmp_path / "b.task.tflite", r"b.task.report.json\); choose a name not ending in")]:
        with pytest.raises(UserError, match=message):
            check_output_path(output)
    assert not (tmp_path / "new").exists()


def test_failed_export_keeps_the_earlier_model_and_report(tracker, tmp_path, monkeypatch):
    from blazepose_tf.errors import ModelError
    from export import to_tflite

    out = tmp_path / "m.tflite"
    export_model(tracker, out, "fp16", log=lambda *_: None)          # an earlier export, which a rerun may replace
    earlier = out.read_bytes(), to_tflite.report_path_for(out).read_bytes()

    def broken(path, batch):
        raise ModelError("parity run failed")

    monkeypatch.setattr(to_tflite, "tflite_outputs", broken)  # fails after the new model's bytes are written
    with pytest.raises(ModelError, match="parity run failed"):
        export_model(tracker, out, "none", log=lambda *_: None)
    assert (out.read_bytes(), to_tflite.report_path_for(out).read_bytes()) == earlier
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.report.json", "m.tflite"]  # no temporary left
    monkeypatch.undo()
    result = export_model(tracker, out, "none", log=lambda *_: None)
    assert md.read_metadata(out)["kind"] == "tracker" and result.report["runtime_contract"] == "ok"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.report.json", "m.tflite"]


def test_export_stopped_between_its_renames_leaves_a_replaceable_model(tracker, tmp_path, monkeypatch):
    """The report is renamed first and also records the sha256 of the earlier export it replaces: an export that
    stops before renaming its model leaves the earlier model, still vouched for, which a rerun replaces unasked."""
    from export import to_tflite
    from export.output_files import report_path_for, vouched

    out = tmp_path / "m.tflite"
    export_model(tracker, out, "fp16", log=lambda *_: None)
    earlier = out.read_bytes()
    real_replace, renamed = os.replace, []

    def stop_at_the_second_rename(src, dst):   # whichever of model and report comes second
        renamed.append(Path(dst).name)
        if len(renamed) == 2:
            raise OSError(errno.EIO, "stopped")
        real_replace(src, dst)

    monkeypatch.setattr(to_tflite.os, "replace", stop_at_the_second_rename)
    with pytest.raises(UserError, match=f"cannot write --output {out} or its report: stopped"):
        export_model(tracker, out, "none", log=lambda *_: None)
    monkeypatch.undo()
    assert renamed == ["m.report.json", "m.tflite"] and out.read_bytes() == earlier
    report = json.loads(report_path_for(out).read_text())
    assert report["quantization"] == "none" and report["replaces_sha256"] == hashlib.sha256(earlier).hexdigest()
    assert vouched(out, report_path_for(out))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.report.json", "m.tflite"]  # no temporary left
    export_model(tracker, out, "none", log=lambda *_: None)          # no --overwrite needed
    assert md.read_metadata(out)["quantization"] == "none" and vouched(out, report_path_for(out))
    # once the export has finished, its report vouches for its own file only: the earlier one put back by the user
    # is the user's again
    assert json.loads(report_path_for(out).read_text())["replaces_sha256"] is None
    out.write_bytes(earlier)
    with pytest.raises(UserError, match="is not an unchanged blazepose_tf export"):
        export_model(tracker, out, "none", log=lambda *_: None)
    assert out.read_bytes() == earlier


def test_a_file_made_at_the_output_during_the_export_is_kept(tracker, tmp_path, monkeypatch):
    from export import to_tflite

    out = tmp_path / "m.tflite"
    real_outputs = to_tflite.tflite_outputs

    def user_writes_then_outputs(path, batch):        # runs after the start check, before the files are renamed
        out.write_bytes(b"the user's model")
        return real_outputs(path, batch)

    monkeypatch.setattr(to_tflite, "tflite_outputs", user_writes_then_outputs)
    with pytest.raises(UserError, match="exists and is not an unchanged blazepose_tf export"):
        export_model(tracker, out, "none", log=lambda *_: None)
    assert out.read_bytes() == b"the user's model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tflite"]   # no report, no temporary


def test_vouched_ignores_malformed_reports(tmp_path):
    from blazepose_tf.io.provenance import marked_json
    from export.output_files import vouched

    model, report = tmp_path / "m.tflite", tmp_path / "m.report.json"
    model.write_bytes(b"a model")
    digest = hashlib.sha256(b"a model").hexdigest()
    for doc in ({"sha256": [digest]}, {"sha256": {"a": 1}, "replaces_sha256": None}, {"replaces_sha256": 3}):
        report.write_bytes(marked_json(doc))
        assert not vouched(model, report)
    report.write_bytes(marked_json({"sha256": ["x"], "replaces_sha256": digest}))
    assert vouched(model, report)


def test_export_replaces_only_what_an_export_wrote(tracker, tmp_path):
    """A rerun replaces its own model and report (the report, marked, records the model's sha256); a model file the
    report does not vouch for (the user's, or an export changed since), or a report of the user's, is refused before
    any work unless overwrite."""
    from blazepose_tf.errors import UserError
    from blazepose_tf.io.provenance import written_here
    from export.output_files import report_path_for, vouched

    out = tmp_path / "m.tflite"
    report = report_path_for(out)
    for _ in range(2):
        result = export_model(tracker, out, "none", log=lambda *_: None)
        assert vouched(out, report) and written_here(report)
        assert json.loads(report.read_text())["sha256"] == result.report["sha256"]
    out.write_bytes(out.read_bytes() + b"\0")                           # the model changed since its export
    changed = out.read_bytes(), report.read_bytes()
    with pytest.raises(UserError, match=f"--output {out} exists and is not an unchanged blazepose_tf export"):
        export_model(tracker, out, "none", log=lambda *_: None)
    assert (out.read_bytes(), report.read_bytes()) == changed
    mine = tmp_path / "mine.tflite"                                      # no report beside it
    mine.write_bytes(b"a model of the user's")
    with pytest.raises(UserError, match="no unchanged mine.report.json beside it"):
        export_model(tracker, mine, "none", log=lambda *_: None)
    (tmp_path / "n.report.json").write_text('{"notes": "the user\'s"}')   # only the report's path is taken
    with pytest.raises(UserError, match="n.report.json exists and is not an unchanged blazepose_tf output"):
        export_model(tracker, tmp_path / "n.tflite", "none", log=lambda *_: None)
    assert mine.read_bytes() == b"a model of the user's" and not (tmp_path / "n.tflite").exists()
    export_model(tracker, out, "none", overwrite=True, log=lambda *_: None)
    assert vouched(out, report)


def test_non_utf8_output_is_refused_before_the_model_is_loaded(tmp_path):
    """An --output whose name is not valid UTF-8 (a latin-1 byte: a lone surrogate in Python) would be recorded in
    the report's JSON text: refused with one line, exit 2, before loading (the model given does not even exist)."""
    output = tmp_path / os.fsdecode(b"mod\xe8le.tflite")
    proc = _cli("--model", str(tmp_path / "never_loaded.keras"), "--output", output, "--quantize", "fp16")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == (f"error: --output {str(output)!r}: the name is not valid UTF-8, which the report "
                                   "written beside it (JSON text) needs; rename it")
    assert list(tmp_path.iterdir()) == []


def _damage(images: Path, names: list[str]) -> None:
    """Makes the named images unreadable: the first empty, the others cut short."""
    for k, name in enumerate(names):
        path = images / name
        path.write_bytes(b"" if k == 0 else path.read_bytes()[:200])


def test_sample_count_says_what_was_used_and_why(tmp_path):
    """SampleCount: the samples used of those asked, and the images skipped by reason (the first's message)."""
    from export.representative import UNREADABLE, SampleCount

    ann = synthetic_coco(tmp_path / "ds", num_images=6)
    counts = SampleCount()
    assert len(load_samples(str(ann), "tracker", (64, 64), (0.0, 1.0), 4, counts=counts)) == 4
    assert (counts.asked, counts.used, counts.images, sum(counts.skipped.values())) == (4, 4, 6, 0)
    assert counts.shortfall("calibrating on", "--num_calibration") is None
    counts = SampleCount()
    load_samples(str(ann), "tracker", (64, 64), (0.0, 1.0), 20, counts=counts)
    assert counts.shortfall("calibrating on", "--num_calibration") == ("calibrating on 6 of the 20 inputs asked "
                                                                       "(--num_calibration): it has only 6 usable "
                                                                       "images")
    assert counts.shortfall("comparing on", "--num_eval", small_is_fine=True) is None   # parity: small is fine
    _damage(ann.parent / "images", ["im001.jpg", "im004.jpg"])
    counts = SampleCount()
    samples = load_samples(str(ann), "detector", (32, 32), (-1.0, 1.0), 6, counts=counts)
    assert len(samples) == 4 and counts.skipped == {UNREADABLE: 2}
    assert counts.shortfall("calibrating on", "--num_calibration") == (
        f"calibrating on 4 of the 6 inputs asked (--num_calibration): 2 of its 6 images gave no sample: 2 unreadable "
        f"(first: image file is empty (0 bytes): {ann.parent / 'images' / 'im001.jpg'})")
    assert counts.shortfall("comparing on", "--num_eval", small_is_fine=True).startswith(
        "comparing on 4 of the 6 inputs asked (--num_eval): 2 of its 6 images gave no sample")
    assert all("im001" not in s.source and "im004" not in s.source for s in samples)


def test_int8_export_warns_when_it_calibrates_on_fewer_inputs_than_asked(tracker, tmp_path):
    """int8 calibration on a dataset with unreadable images: a warning: line with the inputs used of those asked
    and why (the report records the number); no readable image at all: exit 3 with one line, nothing written."""
    from blazepose_tf.errors import EXIT_NO_INPUT, InputError
    from export.int8_export import Int8Settings

    ann = synthetic_coco(tmp_path / "ds", num_images=5)
    images = ann.parent / "images"
    _damage(images, ["im000.jpg", "im002.jpg", "im003.jpg"])
    lines: list[str] = []
    out = tmp_path / "q.tflite"
    result = export_model(tracker, out, "int8", representative=str(ann), num_calibration=10, log=lines.append,
                          int8=Int8Settings(bias_correction=False, layer_bias_correction=False))
    warnings = [line for line in lines if line.startswith("warning:")]
    assert warnings == [f"warning: --representative {str(ann)!r}: calibrating on 2 of the 10 inputs asked "
                        "(--num_calibration): 3 of its 5 images gave no sample: 3 unreadable (first: image file is "
                        f"empty (0 bytes): {images / 'im000.jpg'})"]
    assert result.report["calibration"]["num_inputs"] == 2 and out.is_file()

    _damage(images, ["im001.jpg", "im004.jpg"])
    none = tmp_path / "none.tflite"
    with pytest.raises(InputError) as err:
        export_model(tracker, none, "int8", representative=str(ann), num_calibration=10, log=lambda *_: None)
    assert err.value.exit_code == EXIT_NO_INPUT == 3
    assert str(err.value) == (f"no usable sample in dataset {str(ann)!r}: 5 unreadable (first: image file is empty "
                              f"(0 bytes): {images / 'im000.jpg'})")
    assert not none.exists() and not (tmp_path / "none.report.json").exists()
