"""Teacher refit of the rows without ground truth (``blazepose_tf.training.teacher_crops``, command
``python -m blazepose_tf.training.refit_teacher``): synthetic features for the fit and the choice, the sample photo
with MediaPipe's models for the whole command (skipped without them)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from blazepose_tf.datasets.coco import is_guard_image, unlabelled_photos
from blazepose_tf.errors import EXIT_MODELS, EXIT_NO_INPUT, EXIT_USAGE, InputError
from blazepose_tf.io.images import IMAGE_EXTENSIONS, load_image
from blazepose_tf.io.samples import sample_image_path
from blazepose_tf.metrics import UNANNOTATED_GROUPS
from blazepose_tf.topology import BLAZEPOSE_33
from blazepose_tf.training.head_residual import coordinate_columns
from blazepose_tf.training.refit_crops import CropItem, Features
from blazepose_tf.training.refit_search import fit_residuals
from blazepose_tf.training.refit_teacher import TEACHER_GROUPS, group_indices, is_choose_photo
from blazepose_tf.training.teacher_crops import TeacherSet, agreement_counts, share
from blazepose_tf.types import Roi

REPO = Path(__file__).resolve().parents[1]
K = BLAZEPOSE_33.num_keypoints


def _teacher_set(n: int = 400, features: int = 12, seed: int = 0) -> tuple[TeacherSet, list[int]]:
    """A base head whose feet are off by a linear function of its features (the teacher's convention differs there)
    and right everywhere else."""
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(n, features))
    target = np.zeros((n, K, 2))
    target[:, :, 0] = rng.uniform(60, 196, (n, K))
    target[:, :, 1] = rng.uniform(60, 196, (n, K))
    # a torso of ~80 px: shoulders above hips
    for name, (x, y) in {"left_shoulder": (148, 88), "right_shoulder": (108, 88), "left_hip": (140, 168),
                         "right_hip": (116, 168)}.items():
        target[:, BLAZEPOSE_33.index(name)] = (x, y)
    landmarks = np.zeros((n, K, 5))
    landmarks[:, :, :2] = target
    feet = group_indices(["feet"])["feet"]
    planted = rng.normal(scale=6.0, size=(features, 2 * len(feet)))
    landmarks[:, feet, :2] -= (feats @ planted).reshape(n, len(feet), 2)
    f = Features(feats.astype(np.float32), landmarks.reshape(n, -1).astype(np.float32), np.ones(n, np.float32))
    items = [CropItem(Path(f"p{i}.jpg"), Roi(0.5, 0.5, 1.0, 1.0, 0.0)) for i in range(n)]
    return TeacherSet(f, items, target), feet


def _rows(data: TeacherSet, rows: np.ndarray) -> TeacherSet:
    f = data.features
    return TeacherSet(Features(f.features[rows], f.landmarks[rows], f.presence[rows]),
                      [it for it, keep in zip(data.items, rows) if keep], data.target[rows])


def test_groups_are_the_points_lspet_does_not_annotate():
    names = [n for g in TEACHER_GROUPS.values() for n in g]
    assert len(names) == len(set(names)) == 21 and TEACHER_GROUPS is UNANNOTATED_GROUPS
    assert {"left_heel", "right_foot_index", "left_thumb", "nose"} <= set(names)
    assert not {"left_hip", "left_ankle", "left_wrist"} & set(names)


def test_a_planted_convention_is_learned_on_the_fit_part_and_seen_on_the_choose_part():
    data, feet = _teacher_set()
    choose = np.array([is_choose_photo(it.path.name, 5) for it in data.items])
    fit, pick = _rows(data, ~choose), _rows(data, choose)
    assert 40 < len(pick) < 120
    base = agreement_counts(pick, None)
    others = [p for p in range(K) if p not in feet]
    assert share(base, others) == 1.0 and share(base, feet) < 0.5
    residual = fit_residuals(fit.training_set(), feet, [1e-6], float("inf"))[1e-6]
    assert list(residual.columns) == list(coordinate_columns(feet))
    refit = agreement_counts(pick, residual)
    assert share(refit, feet) == 1.0 and share(refit, others) == 1.0


def test_choose_part_is_a_stable_fraction_by_name():
    names = [f"photo_{i:04d}.jpg" for i in range(2000)]
    chosen = [n for n in names if is_choose_photo(n, 5)]
    assert 0.17 < len(chosen) / len(names) < 0.23
    assert chosen == [n for n in names if is_choose_photo(n, 5)]
    assert [n for n in names if is_choose_photo(n, 2)] != chosen


def test_photo_subsets_partition_a_folder(tmp_path: Path):
    for i in range(40):
        (tmp_path / f"yoga_{i:03d}.jpg").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a photo")
    train = unlabelled_photos(tmp_path, IMAGE_EXTENSIONS, "train")
    guard = unlabelled_photos(tmp_path, IMAGE_EXTENSIONS, "guard")
    every = unlabelled_photos(tmp_path, IMAGE_EXTENSIONS, "all")
    assert len(every) == 40 and sorted(train + guard) == every and not set(train) & set(guard)
    assert all(is_guard_image(p.name) for p in guard) and not any(is_guard_image(p.name) for p in train)
    with pytest.raises(InputError, match="not found"):
        unlabelled_photos(tmp_path / "absent", IMAGE_EXTENSIONS, "train")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "blazepose_tf.training.refit_teacher", "--noprogress", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=600)


def test_command_checks_flags_before_loading_anything(tmp_path: Path):
    proc = _run("--base", "m.keras")
    assert proc.returncode == EXIT_USAGE and "Traceback" not in proc.stderr
    assert "error: --detector, --photos, --output_dir required" in proc.stderr
    proc = _run("--base", "m.keras", "--detector", "d", "--photos", ".", "--output_dir", "o", "--groups", "feet,hips")
    assert proc.returncode == EXIT_USAGE and "--groups must list groups from face, hands, feet" in proc.stderr
    for bad, words in ((("--heatmap_lambdas=inf",), "--heatmap_lambdas must list finite numbers"),
                       (("--lambdas=1e-3,nan",), "--lambdas must list numbers > 0"),
                       (("--heatmap_floor=nan",), "--heatmap_floor must be a finite number")):
        proc = _run("--base", "m.keras", "--detector", "d", "--photos", ".", "--output_dir", "o", *bad)
        assert proc.returncode == EXIT_USAGE and "Traceback" not in proc.stderr and words in proc.stderr, proc.stderr
    done = tmp_path / "run"   # a refit already made there: refused, the file untouched
    done.mkdir()
    (done / "refit.json").write_text("{}")
    proc = _run("--base", "m.keras", "--detector", "d", "--photos", ".", "--output_dir", str(done))
    assert proc.returncode == EXIT_USAGE and "Traceback" not in proc.stderr
    assert f"error: --output_dir {done} already holds a refit (refit.json)" in proc.stderr
    assert (done / "refit.json").read_text() == "{}"
    proc = _run("--base", str(tmp_path / "absent.keras"), "--detector", "d", "--photos", str(tmp_path),
                "--output_dir", str(tmp_path / "new"))
    assert proc.returncode == EXIT_MODELS and "Traceback" not in proc.stderr and "absent.keras" in proc.stderr
    proc = _run("--base", str(REPO / "blazepose_tf/zoo/weights/lite.keras"), "--detector", str(tmp_path / "d.tflite"),
                "--photos", str(tmp_path), "--output_dir", str(tmp_path / "new"))
    assert proc.returncode == EXIT_MODELS and "error: --detector not found" in proc.stderr
    assert not (tmp_path / "new").exists()
    # Missing photos: one line before TensorFlow's start-up (the models are checked as files only).
    proc = _run("--base", str(REPO / "blazepose_tf/zoo/weights/lite.keras"), "--detector",
                str(REPO / "blazepose_tf/zoo/weights/detector.tflite"), "--photos", str(tmp_path / "absent"),
                "--output_dir", str(tmp_path / "new"))
    assert proc.returncode == EXIT_NO_INPUT and "Traceback" not in proc.stderr
    assert f"photos not found: {tmp_path / 'absent'} is not a folder (--photos)" in proc.stderr


def test_models_of_the_wrong_kind_are_refused_before_any_work(official_models, tmp_path: Path):
    """A detector given as the base or the teacher tracker is named as such (exit 4), before any photo is read."""
    from blazepose_tf.official import official_model_path

    detector = str(official_model_path("pose_detection"))
    lite = str(REPO / "blazepose_tf/zoo/weights/lite.keras")
    _photos(tmp_path / "photos", count=1)
    for args in (("--base", str(REPO / "blazepose_tf/zoo/weights/detector.keras"), "--detector", detector),
                 ("--base", lite, "--detector", detector, "--teacher_landmarks", detector)):
        proc = _run(*args, "--photos", str(tmp_path / "photos"), "--output_dir", str(tmp_path / "run"))
        assert proc.returncode == EXIT_MODELS and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert "detector" in proc.stderr.splitlines()[-1] and "landmark model" in proc.stderr.splitlines()[-1]
    assert not (tmp_path / "run").exists()


def _photos(root: Path, count: int = 8) -> None:
    """``count`` train-split photos made from the sample (shifted and scaled copies)."""
    image = load_image(sample_image_path())
    h, w = image.shape[:2]
    root.mkdir()
    made, i = 0, 0
    while made < count:
        name = f"person_{i:03d}.png"
        i += 1
        if is_guard_image(name):
            continue
        scale = 0.8 + 0.05 * made
        m = np.float32([[scale, 0, 0.1 * w * (1 - scale) + 3 * made], [0, scale, 0.1 * h * (1 - scale)]])
        out = cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
        cv2.imwrite(str(root / name), cv2.cvtColor(out, cv2.COLOR_RGB2BGR))
        made += 1


@pytest.mark.heavy
def test_command_refits_only_the_chosen_rows(official_models, tmp_path: Path):
    """MediaPipe's Lite as the base (the smaller model: three runs) and its detector as the student's, MediaPipe's
    Full as the teacher: the written model differs from the base only in the head rows and heatmap channels of
    refit groups, its agreement is the chosen one."""
    import keras

    from blazepose_tf.models.official_cache import converted_model_path
    from blazepose_tf.official import official_model_path
    from blazepose_tf.training.head_residual import head_matrix, heatmap_layer, landmark_head

    _photos(tmp_path / "photos")
    base = converted_model_path("pose_landmark_lite")
    args = ["--base", str(base), "--detector", str(official_model_path("pose_detection")),
            "--teacher_landmarks", str(official_model_path("pose_landmark_full")),
            "--photos", str(tmp_path / "photos"), "--choose_every", "2", "--lambdas", "1e-2,1",
            "--inlier_torso", "inf", "--cache_dir", str(tmp_path / "cache")]
    proc = _run(*args, "--output_dir", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    refit = json.loads((tmp_path / "run" / "refit.json").read_text())
    best = json.loads((tmp_path / "run" / "best.json").read_text())
    assert refit["fit_crops"] + refit["choose_crops"] == 8 and refit["choose_crops"] > 0
    assert best["agreement"] >= best["base_agreement"]
    assert set(refit["chosen"]) == set(TEACHER_GROUPS)
    base_model = keras.models.load_model(base, compile=False)
    written = keras.models.load_model(tmp_path / "run" / "best.keras", compile=False)
    w0, b0 = head_matrix(landmark_head(base_model))
    w1, b1 = head_matrix(landmark_head(written))
    refit_cols = [c for g, choice in refit["chosen"].items() if choice["option"] == "refit"
                  for c in coordinate_columns(group_indices([g])[g])]
    kept = np.setdiff1d(np.arange(w0.shape[1]), refit_cols)
    np.testing.assert_array_equal(w0[:, kept], w1[:, kept])
    np.testing.assert_array_equal(b0[kept], b1[kept])
    if refit_cols:
        assert not np.array_equal(w0[:, refit_cols], w1[:, refit_cols])
    # heatmap channels: refit only for the groups whose heatmap option is "refit", bit for bit elsewhere
    (k0, c0), (k1, c1) = (heatmap_layer(m).get_weights()[:2] for m in (base_model, written))
    refit_channels = [p for g, choice in refit["chosen"].items() if choice["heatmap"]["option"] == "refit"
                      for p in group_indices([g])[g]]
    kept = np.setdiff1d(np.arange(k0.shape[-1]), refit_channels)
    np.testing.assert_array_equal(k0[..., kept], k1[..., kept])
    np.testing.assert_array_equal(c0[kept], c1[kept])
    if refit_channels:
        assert not np.array_equal(k0[..., refit_channels], k1[..., refit_channels])
    assert any("heatmap_lam" in row for row in refit["grid"])
    # the caches make a second run cheap, and its choice the same
    again = _run(*args, "--output_dir", str(tmp_path / "again"))
    assert again.returncode == 0 and json.loads((tmp_path / "again" / "best.json").read_text()) == best
    # without the heatmap step the heatmap is the base's and the agreement is the rows'
    rows_only = _run(*args, "--heatmap_lambdas=", "--output_dir", str(tmp_path / "rows_only"))
    assert rows_only.returncode == 0, rows_only.stderr[-2000:]
    only = json.loads((tmp_path / "rows_only" / "best.json").read_text())
    assert only["agreement"] == pytest.approx(best["rows_agreement"], abs=1e-9)
    k2, c2 = heatmap_layer(keras.models.load_model(tmp_path / "rows_only" / "best.keras", compile=False)
                           ).get_weights()[:2]
    np.testing.assert_array_equal(k0, k2)
    np.testing.assert_array_equal(c0, c2)
