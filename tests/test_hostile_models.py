"""Hostile-user tests of the model I/O contract (:mod:`blazepose_tf.contract`): a model that breaks it — wrong input
size, wrong or missing outputs, not a pose model at all, the detector and landmark model swapped, a corrupt file —
is refused where it is loaded, by ``track`` and ``evaluate`` (through ``PoseTracker``) and by ``export.to_tflite``,
with exit 4 and one ``error:`` line naming the file and what is wrong; an unwritable ``--output`` of the export is
refused (exit 2) before the model is even loaded. The user's files are never changed and nothing is written.

The contract checker itself is unit-tested in-process on shapes (fast); the commands run as subprocesses on tiny
bad models built here (a few seconds each: only those loading a ``.keras`` import TensorFlow).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from blazepose_tf import contract
from blazepose_tf.contract import DETECTOR, LANDMARKS, ModelIO, check_model
from blazepose_tf.errors import EXIT_MODELS, EXIT_USAGE, ModelError
from hostile_utils import REPO, assert_clean_exit, checksums, run_module

OFFICIAL_DETECTOR = {"regressors": (1, 2254, 12), "scores": (1, 2254, 1)}
OFFICIAL_LANDMARKS = {"landmarks": (1, 195), "presence": (1, 1), "segmentation": (1, 256, 256, 1),
                      "heatmap": (1, 64, 64, 39), "world": (1, 117)}
ZOO_LITE = {"landmarks": (1, 175), "presence": (1, 1)}   # our Lite tracker: 33 + 2 ROI points, no optional heads
DET_IN, LMK_IN = (224, 224, 3), (256, 256, 3)


# ---------------------------------------------------------------------------------------------------------------
# The checker, in-process


@pytest.mark.parametrize("role, input_shape, outputs", [
    (DETECTOR, DET_IN, OFFICIAL_DETECTOR),
    (LANDMARKS, LMK_IN, OFFICIAL_LANDMARKS),
    (LANDMARKS, LMK_IN, ZOO_LITE),
    (LANDMARKS, LMK_IN, {"landmarks": (1, 175)}),                                   # presence is optional
    (LANDMARKS, LMK_IN, {**ZOO_LITE, "heatmap": (1, 64, 64, 35), "offsets": (1, 64, 64, 70)}),  # training heads
    (LANDMARKS, LMK_IN, [("world", (1, 117)), ("presence", (1, 1)), ("landmarks", (1, 195))]),  # any order
    (LANDMARKS, (64, 64, 3), ZOO_LITE),  # any square input: the ROI is cropped at the model's size
])
def test_valid_models_pass(role, input_shape, outputs):
    check_model(role, "m", input_shape, outputs)


def test_other_topologies_need_their_own_points():
    coco = {"landmarks": (1, 19 * 5), "presence": (1, 1), "world": (1, 19 * 3), "heatmap": (1, 64, 64, 19)}
    check_model(LANDMARKS, "coco.tflite", LMK_IN, coco, num_keypoints=17)
    with pytest.raises(ModelError, match=r"at least 35 points \(33 keypoints \+ 2 ROI points\), got 95 values"):
        check_model(LANDMARKS, "coco.tflite", LMK_IN, coco)


def _message(role, input_shape, outputs, **kwargs) -> str:
    with pytest.raises(ModelError) as info:
        check_model(role, "m.tflite", input_shape, outputs, **kwargs)
    text = str(info.value)
    assert "\n" not in text and "m.tflite" in text
    return text


@pytest.mark.parametrize("role, input_shape, outputs, expected", [
    # Wrong role (swapped flags), or no role at all.
    (LANDMARKS, DET_IN, OFFICIAL_DETECTOR, "m.tflite is a detector (outputs regressors (1,2254,12), scores "
                                           "(1,2254,1)), not a landmark model: no landmarks output"),
    (DETECTOR, LMK_IN, ZOO_LITE, "m.tflite is a landmark model (outputs landmarks (1,175), presence (1,1)), not a "
                                 "detector: no regressors, scores outputs"),
    (DETECTOR, DET_IN, {"regressors": (1, 2254, 12)}, "m.tflite is not a detector: no scores output (outputs: "
                                                      "regressors (1,2254,12))"),
    (LANDMARKS, LMK_IN, {"output_0": (1, 7, 7, 3)}, "m.tflite is not a landmark model: no landmarks output "
                                                    "(outputs: output_0 (1,7,7,3))"),
    # Outputs that cannot be told apart, or that the role does not define.
    (LANDMARKS, LMK_IN, [("landmarks", (1, 195)), ("presence", (1, 1)), ("presence", (1, 1))],
     "cannot tell the outputs apart"),
    (LANDMARKS, LMK_IN, {**ZOO_LITE, "output_2": (1, 10)}, "m.tflite: output output_2 (1,10) is not part of the "
                                                           "landmark model contract"),
    (DETECTOR, DET_IN, {**OFFICIAL_DETECTOR, "presence": (1, 1)}, "presence (1,1) is not part of the detector"),
    # Input.
    (DETECTOR, (128, 128, 3), OFFICIAL_DETECTOR, "m.tflite: detector input must be 224x224x3, got 128x128x3"),
    (DETECTOR, (224, 224, 1), OFFICIAL_DETECTOR, "m.tflite: detector input must be 224x224x3, got 224x224x1"),
    (LANDMARKS, (256, 192, 3), OFFICIAL_LANDMARKS, "m.tflite: landmark model input must be a square HxWx3 image "
                                                   "(MediaPipe's is 256x256x3), got 256x192x3"),
    (LANDMARKS, (256, 256, 1), OFFICIAL_LANDMARKS, "must be a square HxWx3 image (MediaPipe's is 256x256x3), got "
                                                   "256x256x1"),
    # Detector outputs.
    (DETECTOR, DET_IN, {"regressors": (1, 2254, 16), "scores": (1, 2254, 1)},
     "m.tflite: detector output regressors (1,2254,16) must be (1,anchors,12): a box and 4 keypoints per anchor"),
    (DETECTOR, DET_IN, {"regressors": (1, 2254, 12), "scores": (1, 2254, 2)}, "scores (1,2254,2) must be"),
    (DETECTOR, DET_IN, {"regressors": (1, 2254, 12), "scores": (1, 896, 1)}, "disagree on the number of anchors"),
    (DETECTOR, DET_IN, {"regressors": (1, 896, 12), "scores": (1, 896, 1)},
     "m.tflite: detector outputs 896 anchors, the 224x224 SSD anchor layout has 2254"),
    # Landmark outputs.
    (LANDMARKS, LMK_IN, {"landmarks": (1, 10)}, "m.tflite: landmarks output (1,10) must hold 5 values (x, y, z, "
                                                "visibility, presence) for each of at least 35 points"),
    (LANDMARKS, LMK_IN, {"landmarks": (1, 196)}, "got 196 values"),
    (LANDMARKS, LMK_IN, {"landmarks": (1, 39, 5)}, "landmarks output (1,39,5) must hold"),
    (LANDMARKS, LMK_IN, {"landmarks": (1, 195), "presence": (1, 2)}, "presence output (1,2) must be (1,1)"),
    (LANDMARKS, LMK_IN, {"landmarks": (1, 195), "world": (1, 99)}, "world output (1,99) must be (1,117)"),
    (LANDMARKS, LMK_IN, {"landmarks": (1, 195), "heatmap": (1, 64, 64, 33)}, "must be (1,h,w,39)"),
    (LANDMARKS, LMK_IN, {"landmarks": (1, 195), "segmentation": (1, 256, 256, 2)}, "must be (1,H,W,1)"),
])
def test_contract_violations_name_the_file_and_the_problem(role, input_shape, outputs, expected):
    assert expected in _message(role, input_shape, outputs)


def test_export_mode_takes_any_input_size_and_anchor_count_but_not_bad_outputs():
    check_model(DETECTOR, "tiny", (64, 64, 3), {"regressors": (1, 128, 12), "scores": (1, 128, 1)}, exact=False)
    check_model(LANDMARKS, "tiny", (64, 64, 3), {**ZOO_LITE, "output_3": (1, 7)}, exact=False)  # dropped at export
    assert "must be a fixed-size HxWx3 image, got 64x64x1" in _message(LANDMARKS, (64, 64, 1), ZOO_LITE, exact=False)
    assert "landmarks output (1,10)" in _message(LANDMARKS, (64, 64, 3), {"landmarks": (1, 10)}, exact=False)
    assert "is a detector" in _message(LANDMARKS, (64, 64, 3), {"regressors": (1, 128, 12), "scores": (1, 128, 1)},
                                       exact=False)


@pytest.mark.parametrize("inputs, got", [
    ([(None, 10)], "(?,10)"),
    ([(1, 256, 256, 3), (1, 1)], "(1,256,256,3), (1,1)"),
    ([(None, None, None, 3)], "(?,?,?,3)"),
    ([(1, 256, 256, 4)], "(1,256,256,4)"),
    ([], "nothing"),
])
def test_image_input_shape_refuses_non_image_models(inputs, got):
    with pytest.raises(ModelError) as info:
        contract.image_input_shape("x.keras", inputs)
    assert str(info.value) == f"x.keras is not a pose model: it takes input {got}, not one fixed-size HxWx3 image"
    assert contract.image_input_shape("x.keras", [(None, 128, 96, 3)]) == (128, 96, 3)


def test_swapped_models():
    det = ModelIO("d.tflite", DET_IN, list(OFFICIAL_DETECTOR.items()))
    lmk = ModelIO("l.tflite", LMK_IN, list(OFFICIAL_LANDMARKS.items()))
    contract.check_not_swapped(det, lmk)
    contract.check_not_swapped(det, det)  # not a swap: check_model reports the landmark model itself
    with pytest.raises(ModelError, match=r"^the detector and landmark models are swapped: l\.tflite is a landmark "
                                         r"model and d\.tflite a detector$"):
        contract.check_not_swapped(lmk, det)
    assert contract.guess_role(OFFICIAL_DETECTOR) == DETECTOR and contract.guess_role(ZOO_LITE) == LANDMARKS
    assert contract.guess_role({"presence": (1, 1)}) is None


def test_contract_facts_agree_with_the_codecs():
    from blazepose_tf.codecs.anchors import AnchorOptions, generate_anchors
    from blazepose_tf.codecs.landmarks import VALUES_PER_LANDMARK

    assert AnchorOptions().input_size == contract.INPUT_SHAPES[DETECTOR][0]
    assert len(generate_anchors(AnchorOptions())) == contract.DETECTOR_NUM_ANCHORS
    assert VALUES_PER_LANDMARK == contract.VALUES_PER_LANDMARK
    assert OFFICIAL_LANDMARKS["landmarks"][1] == contract.OFFICIAL_LANDMARK_POINTS * contract.VALUES_PER_LANDMARK
    assert contract.min_landmark_points() == 35
    with pytest.raises(ValueError, match="role must be"):
        check_model("tracker", "m", LMK_IN, ZOO_LITE)


def test_contract_imports_nothing_above_errors_and_topology():
    tree = ast.parse((REPO / "blazepose_tf" / "contract.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert {m for m in imported if m.startswith("blazepose_tf")} <= {"blazepose_tf.errors", "blazepose_tf.topology"}
    assert not {m for m in imported if m.split(".")[0] in ("tensorflow", "keras", "numpy", "export", "data")}


# ---------------------------------------------------------------------------------------------------------------
# The commands, as a user runs them


@pytest.fixture(scope="module")
def bad_models(tmp_path_factory) -> dict[str, Path]:
    """Tiny models that break the contract, saved as a user would have them."""
    keras = pytest.importorskip("keras")
    import tensorflow as tf

    folder = tmp_path_factory.mktemp("bad_models")
    keras.utils.set_random_seed(0)

    def detector_like(size: int):  # a detector's outputs, at the wrong input size
        inp = keras.Input((size, size, 3), name="image")
        x = keras.layers.Conv2D(8, 3, strides=8, padding="same")(inp)
        reg = keras.layers.Reshape((-1, 12), name="regressors")(keras.layers.Conv2D(24, 1)(x))
        return keras.Model(inp, [reg, keras.layers.Reshape((-1, 1), name="scores")(keras.layers.Conv2D(2, 1)(x))])

    inp = keras.Input((256, 256, 3), name="image")
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, strides=4)(inp))
    ten = keras.Model(inp, keras.layers.Dense(10)(pooled), name="ten_outputs")    # 10 values: 2 points, not 33 + 2
    twenty = keras.Model(inp, [keras.layers.Dense(100, name="landmarks")(pooled),  # 20 points
                               keras.layers.Dense(1, activation="sigmoid", name="presence")(pooled)])
    vec = keras.Input((10,))
    models = {"det128.keras": detector_like(128), "ten.keras": ten,
              "dense.keras": keras.Model(vec, keras.layers.Dense(4)(vec), name="not_pose")}
    paths = {}
    for name, model in models.items():
        model.save(folder / name)
        paths[name] = folder / name
    for name, model in (("det128.tflite", models["det128.keras"]), ("points20.tflite", twenty)):
        (folder / name).write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
        paths[name] = folder / name
    paths["corrupt.keras"] = folder / "corrupt.keras"  # a .keras cut short, as by an interrupted copy
    paths["corrupt.keras"].write_bytes((folder / "ten.keras").read_bytes()[:3000])
    return paths


def _official(name: str) -> Path:
    from blazepose_tf.official import official_model_path

    return official_model_path(name, fetch_if_missing=False)


def _assert_refused(proc, code: int, *words: str, before: dict, roots: list[Path], outputs: list[Path]) -> str:
    line = assert_clean_exit(proc, code, *words)
    assert checksums(*roots) == before, "an input file was changed"
    assert not [p for p in outputs if p.exists()], f"written despite the error: {outputs}"
    return line


@pytest.mark.parametrize("flags, words", [
    (["--detector", "det128.keras"], ["det128.keras: detector input must be 224x224x3, got 128x128x3"]),
    (["--detector", "det128.tflite"], ["det128.tflite: detector input must be 224x224x3, got 128x128x3"]),
    (["--landmarks", "ten.keras"], ["ten.keras: landmarks output (1,10) must hold 5 values",
                                    "at least 35 points (33 keypoints + 2 ROI points), got 10 values"]),
    (["--landmarks", "points20.tflite"], ["points20.tflite: landmarks output (1,100)", "got 100 values"]),
    (["--landmarks", "dense.keras"], ["dense.keras is not a pose model: it takes input (?,10)"]),
    (["--landmarks", "corrupt.keras"], ["corrupt.keras is corrupt or truncated"]),
])
def test_track_refuses_models_that_break_the_contract(bad_models, tmp_path, flags, words):
    args = [bad_models[f].as_posix() if f in bad_models else f for f in flags]
    folder = bad_models["ten.keras"].parent
    before = checksums(folder)
    out = tmp_path / "out.json"
    proc = run_module("blazepose_tf.track", "--input", "sample", "--output", out, "--noprogress", *args)
    line = _assert_refused(proc, EXIT_MODELS, *words, before=before, roots=[folder], outputs=[out])
    assert str(folder) in line and "not found" not in line


def test_track_refuses_swapped_or_misplaced_official_models(official_models, tmp_path):
    det, lmk = _official("pose_detection"), _official("pose_landmark_full")
    before = checksums(det, lmk)
    out = tmp_path / "out.json"
    proc = run_module("blazepose_tf.track", "--input", "sample", "--output", out, "--detector", lmk,
                      "--landmarks", det)
    line = _assert_refused(proc, EXIT_MODELS, before=before, roots=[det, lmk], outputs=[out])
    assert line == f"error: the detector and landmark models are swapped: {lmk} is a landmark model and {det} a " \
                   "detector"
    proc = run_module("blazepose_tf.track", "--input", "sample", "--output", out, "--models", "official",
                      "--landmarks", det)
    line = _assert_refused(proc, EXIT_MODELS, before=before, roots=[det, lmk], outputs=[out])
    assert line == f"error: {det} is a detector (outputs regressors (1,2254,12), scores (1,2254,1)), not a landmark " \
                   "model: no landmarks output"


def test_evaluate_refuses_a_detector_as_landmark_model(official_models, tmp_path):
    from export_fixtures import synthetic_coco

    det = _official("pose_detection")
    annotations = synthetic_coco(tmp_path / "coco", num_images=2)
    before = checksums(det, annotations.parent)
    out = tmp_path / "summary.json"
    proc = run_module("blazepose_tf.evaluate", "--annotations", annotations, "--images", annotations.parent / "images",
                      "--models", "official", "--landmarks", det, "--output", out)
    _assert_refused(proc, EXIT_MODELS, f"{det} is a detector", "not a landmark model", before=before,
                    roots=[det, annotations.parent], outputs=[out])


@pytest.mark.parametrize("model, extra, words", [
    ("ten.keras", [], ["ten.keras: landmarks output (1,10) must hold 5 values", "got 10 values"]),
    ("dense.keras", [], ["dense.keras is not a pose model: it takes input (?,10)"]),
    ("det128.keras", ["--kind", "tracker"], ["det128.keras is a detector (outputs regressors (1,512,12), scores "
                                             "(1,512,1)), not a landmark model: no landmarks output"]),
])
def test_export_refuses_models_that_break_the_contract(bad_models, tmp_path, model, extra, words):
    folder = bad_models[model].parent
    before = checksums(folder)
    out = tmp_path / "m.tflite"
    proc = run_module("export.to_tflite", "--model", bad_models[model], "--output", out, *extra)
    _assert_refused(proc, EXIT_MODELS, *words, before=before, roots=[folder],
                    outputs=[out, tmp_path / "m.report.json"])
    assert not list(tmp_path.iterdir())


def test_export_refuses_unwritable_outputs_before_loading(bad_models, tmp_path):
    folder = bad_models["ten.keras"].parent
    a_file = tmp_path / "a_file"
    a_file.write_text("a user's file")
    a_folder = tmp_path / "m.tflite"
    (a_folder / "inside").mkdir(parents=True)
    report_folder = tmp_path / "r.report.json"
    report_folder.mkdir()
    before = checksums(folder, tmp_path)
    # The model is corrupt: were it loaded first, the exit code would be 4.
    for output, words in [
        (a_file / "m.tflite", [f"cannot write --output {a_file / 'm.tflite'}: {a_file} is a file, not a folder"]),
        (a_file / "sub" / "m.tflite", [f"{a_file} is a file, not a folder"]),
        (a_folder, [f"cannot write {a_folder}: it is a folder; give a .tflite file name"]),
        (tmp_path / "r.tflite", [f"cannot write {report_folder}: it is a folder"]),
    ]:
        proc = run_module("export.to_tflite", "--model", bad_models["corrupt.keras"], "--output", output)
        assert_clean_exit(proc, EXIT_USAGE, *words)
        assert checksums(folder, tmp_path) == before


def test_export_creates_a_missing_output_folder_and_warns_of_the_runtime_contract(bad_models, tmp_path):
    out = tmp_path / "new" / "sub" / "det.tflite"
    proc = run_module("export.to_tflite", "--model", bad_models["det128.keras"], "--output", out)
    assert_clean_exit(proc, 0)
    assert out.is_file() and (out.parent / "det.report.json").is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == ["det.report.json", "det.tflite"]  # no temporary left
    assert "warning: " in proc.stdout and "detector input must be 224x224x3, got 128x128x3" in proc.stdout
    assert "track and evaluate will refuse" in proc.stdout



@pytest.mark.parametrize("module, flag", [("benchmarks.ood_guard", "--landmarks"),
                                          ("benchmarks.ood_guard", "--detector"),
                                          ("benchmarks.detector_roi", "--detectors"),
                                          ("benchmarks.keypoint_errors", "--landmarks")])
def test_benchmarks_report_a_missing_model_as_a_model_error(tmp_path, module, flag):
    """A missing model file is exit 4 (a model error, as the benchmarks document), not a bad flag, and is refused
    before any data is read."""
    missing = tmp_path / "none" / "model.tflite"
    proc = run_module(module, flag, missing, "--noprogress")
    assert_clean_exit(proc, EXIT_MODELS, f"{flag} file not found: {missing}")
    folder = tmp_path / "a_folder.tflite"
    folder.mkdir()
    proc = run_module(module, flag, folder, "--noprogress")
    assert_clean_exit(proc, EXIT_MODELS, f"{folder} is a folder, not a file")
    proc = run_module(module, flag, "/dev/null", "--noprogress")
    assert_clean_exit(proc, EXIT_MODELS, "/dev/null is not a regular file")
