"""MediaPipe Tasks bundles (export.to_mediapipe): TFLite Metadata, the official output contract and order,
documented placeholders for our own trackers, and (in the isolated mediapipe venv, skipped when it cannot be
made) that PoseLandmarker loads and runs a bundle built from a small model."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from blazepose_tf.contract import DETECTOR_ROLES, LANDMARK_ROLES
from blazepose_tf.errors import ModelError, UserError
from export import metadata as md
from export import to_mediapipe as tm
from export.mediapipe_contract import PLACEHOLDER_LOGIT, landmark_contract_model
from export.mediapipe_env import MediapipeEnvError, ensure_mediapipe_env
from export.mediapipe_validate import run_pose_landmarker, validate_bundle
from export.task_bundle import DETECTOR_FILE, LANDMARKS_FILE, extract_bundle, read_bundle, write_bundle
from export.tflite_model import inspect_model
from export_fixtures import tiny_tracker

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny():
    """35-point tracker, 64x64 input, heatmap at stride 4 (16x16), plus training-only offsets."""
    return tiny_tracker(input_size=64)


@pytest.fixture(scope="module")
def official_detector() -> Path:
    from blazepose_tf.official import official_model_path

    try:
        return official_model_path("pose_detection")
    except ModelError as e:
        pytest.skip(f"official models cannot be fetched: {e}")


@pytest.fixture(scope="module")
def bundle(tiny, official_detector, tmp_path_factory):
    """official detector (.tflite) + tiny tracker (Keras, placeholders), not validated here."""
    out = tmp_path_factory.mktemp("bundle") / "tiny.task"
    return tm.build_bundle(str(official_detector), tiny, out, validate="off", log=lambda *a: None)


def test_metadata_round_trip():
    from export import mediapipe_metadata as mpm

    try:
        mpm.metadata_schema()
    except ModelError as e:
        pytest.skip(f"TFLite metadata schema unavailable: {e}")
    assert mpm.normalization_for_range((-1, 1)) == (127.5, 127.5)
    assert mpm.normalization_for_range((0, 1)) == (0.0, 255.0)
    blob = mpm.build_model_metadata(name="n", description="d", version="3",
                                    image=mpm.ImageInputDoc("image", "img", 127.5, 127.5),
                                    outputs=[mpm.TensorDoc("regressors", "r"), mpm.TensorDoc("scores", "s")])
    assert blob[4:8] == b"M001"
    doc = mpm.parse_model_metadata(blob)
    assert doc["name"] == "n" and doc["version"] == "3" and doc["min_parser_version"] == "1.0.0"
    assert doc["inputs"][0]["mean"] == [127.5] and doc["inputs"][0]["std"] == [127.5]
    assert doc["inputs"][0]["color_space"] == 1  # RGB
    assert [o["name"] for o in doc["outputs"]] == ["regressors", "scores"]


def test_wrapper_contract_and_placeholders(tiny):
    model, infos = landmark_contract_model(tiny)
    assert [o.name for o in infos] == list(LANDMARK_ROLES)
    status = {o.name: o.status for o in infos}
    assert status == {"landmarks": "padded", "presence": "model", "segmentation": "placeholder",
                      "heatmap": "padded", "world": "placeholder"}
    x = np.random.default_rng(0).uniform(0, 1, (1, 64, 64, 3)).astype(np.float32)
    out = {k: np.asarray(v) for k, v in model(x).items()}
    ref = {k: np.asarray(v) for k, v in tiny(x).items()}
    assert out["landmarks"].shape == (1, 195) and out["world"].shape == (1, 117)
    assert out["segmentation"].shape == (1, 64, 64, 1) and out["heatmap"].shape == (1, 16, 16, 39)
    np.testing.assert_allclose(out["landmarks"][:, :175], ref["landmarks"], atol=1e-6)
    pad = out["landmarks"][0, 175:].reshape(4, 5)
    assert np.all(pad[:, :3] == 0) and np.all(pad[:, 3:] == PLACEHOLDER_LOGIT)
    np.testing.assert_allclose(out["heatmap"][..., :35], ref["heatmap"], atol=1e-6)
    assert np.all(out["heatmap"][..., 35:] == PLACEHOLDER_LOGIT)
    assert np.all(out["segmentation"] == PLACEHOLDER_LOGIT) and np.all(out["world"] == 0)

    _, infos = landmark_contract_model(tiny, heatmap="placeholder")
    assert {o.name: o.status for o in infos}["heatmap"] == "placeholder"
    with pytest.raises(ModelError, match="segmentation, world"):
        landmark_contract_model(tiny, placeholders="refuse")
    with pytest.raises(ModelError, match="BlazePose topology"):
        landmark_contract_model(tiny_tracker(input_size=64, points=19))


def test_bundle_layout_metadata_and_order(bundle):
    from export import mediapipe_metadata as mpm

    with zipfile.ZipFile(bundle.path) as z:
        infos = {i.filename: i for i in z.infolist()}
        assert set(infos) == {DETECTOR_FILE, LANDMARKS_FILE}
        assert all(i.compress_type == zipfile.ZIP_STORED for i in infos.values())
        det, lmk = z.read(DETECTOR_FILE), z.read(LANDMARKS_FILE)
    for data, order, mean, std in ((det, DETECTOR_ROLES, 127.5, 127.5), (lmk, LANDMARK_ROLES, 0.0, 255.0)):
        meta = mpm.read_tflite_metadata(data)
        assert meta["inputs"][0]["mean"] == [mean] and meta["inputs"][0]["std"] == [std]
        assert [o["name"] for o in meta["outputs"]] == list(order)
        info = inspect_model(data)
        assert [t.name for t in info.outputs] == list(order)  # the main subgraph's output order
        assert not info.custom_ops
    shapes = [t.shape for t in inspect_model(lmk).outputs]
    assert shapes == [(1, 195), (1, 1), (1, 64, 64, 1), (1, 16, 16, 39), (1, 117)]
    doc = md.read_metadata(lmk)
    assert doc["mediapipe"]["outputs"]["world"]["status"] == "placeholder"
    assert "unsupported" in meta["description"] or "PLACEHOLDER" in str(meta["outputs"])
    card = bundle.model_card_path.read_text()
    assert "Segmentation masks are unsupported" in card and "World landmarks are unsupported" in card
    assert bundle.report["unsupported"] == ["segmentation", "world"]
    par = bundle.report["models"][1]["parity"]
    assert max(v["max_abs"] for v in par.values()) < 1e-3

    # Re-bundling the exported .tflite keeps the contract and the documented placeholders.
    again = tm.export_one("landmarks", lmk, log=lambda *a: None)
    assert again.placeholders == ["segmentation", "world"]


def test_official_tflite_outputs_mapped_by_shape(official_detector):
    from blazepose_tf.official import official_model_path

    lmk = tm.export_one("landmarks", official_model_path("pose_landmark_full"), log=lambda *a: None)
    info = inspect_model(lmk.data)
    assert [t.name for t in info.outputs] == list(LANDMARK_ROLES)
    assert [t.shape for t in info.outputs] == [(1, 195), (1, 1), (1, 256, 256, 1), (1, 64, 64, 39), (1, 117)]
    assert lmk.placeholders == [] and (lmk.mean, lmk.std) == (0.0, 255.0)


def test_tflite_tracker_without_contract_is_refused(tiny):
    from export.to_tflite import convert, prepare_model

    flat = convert(prepare_model(tiny, kind="tracker").model)  # landmarks + presence only
    with pytest.raises(ModelError, match=r"\.keras"):
        tm.export_one("landmarks", flat, log=lambda *a: None)


def test_cli_refuses_placeholders_and_bad_detectors(tiny, official_detector, tmp_path):
    with pytest.raises(UserError, match=r"\.task"):
        tm.build_bundle("d.tflite", "l.tflite", tmp_path / "x.zip")
    with pytest.raises(ModelError, match="regressors"):
        tm.export_one("detector", tiny, log=lambda *a: None)   # a tracker is no detector
    path = tmp_path / "tiny.keras"
    tiny.save(path)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "export.to_mediapipe", "--detector", str(official_detector),
                           "--landmarks", str(path), "--output", str(tmp_path / "x.task"), "--placeholders",
                           "refuse", "--validate", "off"], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=300)
    # One line naming the missing outputs, exit code 4, no bundle.
    assert proc.returncode == 4, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "segmentation, world" in last
    assert not (tmp_path / "x.task").exists()


def _mediapipe_python():
    try:
        return ensure_mediapipe_env(quiet=True)
    except MediapipeEnvError as e:
        pytest.skip(f"isolated mediapipe environment cannot be made: {e}")


def test_pose_landmarker_loads_and_runs_the_bundle(bundle, tmp_path):
    """MediaPipe Tasks loads the bundle (IMAGE and VIDEO modes), its placeholders behave as documented, and
    its landmarks agree with our pipeline on the same .tflite files."""
    import cv2

    from blazepose_tf.io.images import load_image
    from blazepose_tf.io.samples import sample_image_path
    from blazepose_tf.runtime.pipeline import PoseTracker
    from blazepose_tf.runtime.runners import load_runner

    python = _mediapipe_python()
    rgb = load_image(sample_image_path())
    png = tmp_path / "astronaut.png"
    cv2.imwrite(str(png), rgb[..., ::-1])
    opts = {"min_pose_presence_confidence": 0.0, "output_segmentation_masks": True}  # random tiny tracker
    res = run_pose_landmarker(bundle.path, [{"id": "a", "frames": [str(png)]}], mode="image", options=opts,
                                 python=python, timeout=600)
    assert "error" not in res, res.get("error")
    poses = res["results"][0]["frames"][0]["poses"]
    assert len(poses) == 1
    pose = poses[0]
    assert len(pose["landmarks"]) == 33 and len(pose["world"]) == 33
    assert np.allclose(pose["world"], 0.0)              # world placeholder: all zeros
    assert pose["mask"]["max"] < 0.01                   # segmentation placeholder: empty mask

    det, lmk = extract_bundle(bundle.path, tmp_path / "models")
    ours = PoseTracker(load_runner(det), load_runner(lmk), mode="image", min_presence=0.0,
                      roi_passes=1).process(rgb)
    assert len(ours) == 1
    theirs = np.asarray([p[:2] for p in pose["landmarks"]])
    d = np.linalg.norm(np.asarray(ours[0].keypoints)[:33, :2] - theirs, axis=1)
    assert np.median(d) < 0.01 * rgb.shape[0], d

    vid = run_pose_landmarker(bundle.path, [{"id": "v", "frames": [str(png)] * 2}], mode="video",
                                 options={"min_pose_presence_confidence": 0.0}, python=python, timeout=600)
    assert "error" not in vid and [len(f["poses"]) for f in vid["results"][0]["frames"]] == [1, 1]


def test_bundle_without_metadata_is_rejected_by_mediapipe(bundle, tmp_path):
    """The fact the exporter exists for: without NormalizationOptions, PoseLandmarker refuses the bundle."""
    from export import mediapipe_metadata as mpm
    from export.metadata import get_metadata_buffers
    from export.tflite_model import pack, unpack

    python = _mediapipe_python()
    files = read_bundle(bundle.path)
    tree = unpack(files[LANDMARKS_FILE])
    tree.metadata = [m for m in tree.metadata if (m.name.decode() if isinstance(m.name, bytes) else m.name)
                     != mpm.TFLITE_METADATA_NAME]
    stripped = pack(tree)
    assert mpm.TFLITE_METADATA_NAME not in get_metadata_buffers(stripped)
    bad = write_bundle(files[DETECTOR_FILE], stripped, tmp_path / "bad.task")
    res = run_pose_landmarker(bad, [], mode="image", python=python, timeout=600)
    assert "NormalizationOptions" in res.get("error", ""), res
    with pytest.raises(ModelError, match="NormalizationOptions"):
        validate_bundle(bad, log=lambda *a: None)


def test_outputs_out_of_official_order_fail_in_mediapipe(bundle, tmp_path):
    """MediaPipe maps the landmark outputs by position: the converter's own order would break it at run time,
    which validation reports (this is why the exporter rewrites the output order)."""
    from export.tflite_model import pack, unpack

    _mediapipe_python()
    files = read_bundle(bundle.path)
    tree = unpack(files[LANDMARKS_FILE])
    sg = tree.subgraphs[0]
    sg.outputs = np.array([int(sg.outputs[i]) for i in (3, 0, 1, 2, 4)], np.int32)  # heatmap first
    bad = write_bundle(files[DETECTOR_FILE], pack(tree), tmp_path / "order.task")
    with pytest.raises(ModelError, match="failed running"):
        validate_bundle(bad, log=lambda *a: None)


def test_bundle_files_round_trip_and_errors(tmp_path):
    path = write_bundle(b"det", b"lmk", tmp_path / "b.task")
    assert read_bundle(path) == {DETECTOR_FILE: b"det", LANDMARKS_FILE: b"lmk"}
    det, lmk = extract_bundle(path, tmp_path / "out")
    assert det.read_bytes() == b"det" and lmk.read_bytes() == b"lmk"
    with pytest.raises(ModelError, match="not found"):
        read_bundle(tmp_path / "missing.task")
    (tmp_path / "bad.task").write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="not a zip"):
        read_bundle(tmp_path / "bad.task")
    with zipfile.ZipFile(tmp_path / "half.task", "w") as z:
        z.writestr(DETECTOR_FILE, b"det")
    with pytest.raises(ModelError, match=LANDMARKS_FILE):
        read_bundle(tmp_path / "half.task")


def test_mediapipe_contract_comes_from_the_model_contract():
    from blazepose_tf import contract
    from export.mediapipe_contract import DETECTOR_INPUT_HW, DETECTOR_SHAPES, landmark_output_shapes

    assert DETECTOR_INPUT_HW == (224, 224)
    assert DETECTOR_SHAPES == {"regressors": (1, contract.DETECTOR_NUM_ANCHORS, 12),
                               "scores": (1, contract.DETECTOR_NUM_ANCHORS, 1)}
    assert landmark_output_shapes((256, 256)) == {"landmarks": (1, 195), "presence": (1, 1),
                                                  "segmentation": (1, 256, 256, 1), "heatmap": (1, 64, 64, 39),
                                                  "world": (1, 117)}
    assert md.NORMALIZATION == {"tracker": ((0.0, 1.0), 0.0, 255.0), "detector": ((-1.0, 1.0), 127.5, 127.5)}


def test_bundle_replaces_only_what_an_export_wrote(tiny, official_detector, tmp_path, monkeypatch):
    """A rerun replaces its own bundle, card and report; a bundle that fails validation leaves the earlier one in
    place; a .task of the user's (no report vouching for it) is refused before any work unless overwrite."""
    from blazepose_tf.errors import UserError
    from blazepose_tf.io.provenance import written_here
    from export.output_files import vouched

    out = tmp_path / "b.task"
    for _ in range(2):
        result = tm.build_bundle(str(official_detector), tiny, out, validate="off", log=lambda *a: None)
        assert vouched(out, result.report_path) and written_here(result.model_card_path)
    earlier = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def failing(bundle, *args, **kwargs):
        raise ModelError("MediaPipe could not load the bundle")

    monkeypatch.setattr(tm, "validate_bundle", failing)
    with pytest.raises(ModelError, match="could not load"):
        tm.build_bundle(str(official_detector), tiny, out, validate="require", log=lambda *a: None)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == earlier   # no staging file left either
    mine = tmp_path / "mine.task"
    mine.write_bytes(b"a bundle of the user's")
    with pytest.raises(UserError, match=f"--output {mine} exists and is not an unchanged blazepose_tf export"):
        tm.build_bundle(str(official_detector), tiny, mine, validate="off", log=lambda *a: None)
    assert mine.read_bytes() == b"a bundle of the user's"
    tm.build_bundle(str(official_detector), tiny, mine, validate="off", overwrite=True, log=lambda *a: None)
    assert read_bundle(mine).keys() == {DETECTOR_FILE, LANDMARKS_FILE}


def test_bundle_stopped_before_its_rename_keeps_a_replaceable_bundle(tiny, official_detector, tmp_path, monkeypatch):
    """The report (recording the earlier bundle's sha256 as ``replaces_sha256``) is written before the bundle is
    renamed into place: a run stopped between the two leaves the earlier bundle, which a rerun still replaces
    (the other order would leave the new bundle beside the earlier report, which does not vouch for it)."""
    from export.output_files import vouched

    out = tmp_path / "b.task"
    first = tm.build_bundle(str(official_detector), tiny, out, validate="off", log=lambda *a: None)
    earlier = out.read_bytes()
    real_replace, renamed = os.replace, []

    def stop_at_the_second_of_bundle_and_report(src, dst):
        if Path(dst) in (out, first.report_path):
            renamed.append(Path(dst).name)
            if len(renamed) == 2:
                raise OSError(5, "stopped")
        real_replace(src, dst)

    monkeypatch.setattr(tm.os, "replace", stop_at_the_second_of_bundle_and_report)
    with pytest.raises(UserError, match="stopped"):
        tm.build_bundle(str(official_detector), tiny, out, validate="off", log=lambda *a: None)
    monkeypatch.undo()
    assert renamed == ["b.task.report.json", "b.task"]
    assert out.read_bytes() == earlier and vouched(out, first.report_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.task", "b.task.model_card.md", "b.task.report.json"]
    tm.build_bundle(str(official_detector), tiny, out, validate="off", log=lambda *a: None)   # no overwrite needed
    assert vouched(out, first.report_path)


def _to_mediapipe(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "export.to_mediapipe", *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=300)


def test_cli_names_a_truncated_tflite_in_one_line(tiny, tmp_path):
    """A cut-off .tflite (a download stopped early) is a model error naming the file (exit 4), not a struct.error
    traceback from the flatbuffer reader; nothing is written."""
    from export.to_tflite import convert, prepare_model

    flat = convert(prepare_model(tiny, kind="tracker").model)
    cut = tmp_path / "cut.tflite"
    for n in (len(flat) // 3, len(flat) - 16):
        cut.write_bytes(flat[:n])
        proc = _to_mediapipe("--detector", str(cut), "--landmarks", str(cut), "--output", str(tmp_path / "b.task"),
                             "--validate", "off")
        assert proc.returncode == 4, proc.stderr
        assert "Traceback" not in proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith(f"error: {cut} is not a loadable TFLite model: truncated or corrupt flatbuffer ("), last
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.tflite"]


def test_non_utf8_task_output_is_refused_up_front(tmp_path):
    """A .task --output whose name is not valid UTF-8: one line, exit 2, before any model is read."""
    output = tmp_path / os.fsdecode(b"b\xe9.task")
    proc = _to_mediapipe("--detector", str(tmp_path / "d.tflite"), "--landmarks", str(tmp_path / "l.tflite"),
                         "--output", output)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == (f"error: --output {str(output)!r}: the name is not valid UTF-8, which the report "
                                   "written beside it (JSON text) needs; rename it")
    assert list(tmp_path.iterdir()) == []
