"""Refits a tracker's landmark-head rows and heatmap channels of the points without ground truth toward a teacher,
on unlabelled photos.

    python -m blazepose_tf.training.refit_teacher --base M.keras --detector D.tflite --photos DIR --output_dir RUN
        [--groups face,hands,feet] [--lambdas 1e-4,...] [--inlier_torso 0.3,...] [--heatmap_lambdas 1e3,...]
        [--flagfile=configs/X.flags]

A tracker fine-tuned on labels of 12 points (LSPET) and distilled on the rest can drift from the teacher's
convention on the other 21 out of domain: before this refit (step 6 of the zoo's Lite), the zoo Lite's feet agreed
with MediaPipe's Full on 50% of the yoga guard photos, MediaPipe's own Lite's on 56% (after it: 58.7%,
``configs/lite_teacher_refit.flags``). This refits only what produces those points, in closed form, as
:mod:`blazepose_tf.training.refit_head` refits the annotated ones:

1. On each photo of the ``train`` split of ``--photos`` (the ``guard`` quarter, which ``benchmarks.ood_guard``
   judges forgetting on, is never read) the student pipeline (``--detector`` + ``--base``) and the teacher's
   (``--teacher_detector`` + ``--teacher_landmarks``, default MediaPipe's detector + Full, the guard's reference)
   run as the runtime runs on images (IMAGE mode, its defaults). Where both find a pose, the student's final ROI is
   the crop and the teacher's points, in that crop's pixels, are the targets. ROIs, targets and the base's
   penultimate features are cached under ``--cache_dir``.
2. **Rows.** The photos are split by name into a fit part and a choose part (one in ``--choose_every``). Per
   inlier radius, ridge residuals of the rows of ``--groups``' points are fitted on the fit part for every λ
   (:func:`blazepose_tf.training.refit_search.fit_residuals`); per group, the choose part picks the base rows or
   the (radius, λ) whose points agree with the teacher's most often (within 0.1 torso, the guard's measure, after
   the heatmap refinement the runtime applies).
3. **Heatmap** (unless ``--heatmap_lambdas`` is empty). The runtime refines each point with the heatmap around it,
   so the heatmap carries the teacher's convention as much as the rows: the heatmap channels of the groups' points
   are refit toward the teacher tracker's logits on the same crops (:mod:`blazepose_tf.training.heatmap_refit`:
   ridge from the heatmap convolution's input patches, on the cells within ``--heatmap_radius`` of the teacher's
   point, logits floored at ``--heatmap_floor``), one fit per λ; per group, the choose part picks the base channels
   or the λ whose points agree most after the chosen rows.
4. ``RUN/best.keras`` is the base with the chosen groups' residual rows added and heatmap channels replaced: every
   other weight (the 12 annotated points' rows and heatmap channels, the auxiliary points the next ROI comes from,
   presence) is bit for bit the base's, so its crops and every float LSPET number stay the same. ``RUN/best.json``
   holds the choose part's agreement (read by ``python -m blazepose_tf.zoo.publish``; ``rows_agreement``: after
   step 2 only), ``RUN/refit.json`` every setting's. A ``RUN`` that already holds one of them is refused before any
   work.

Report the written model with ``python -m benchmarks.ood_guard`` (the guard quarter).
Exit codes: 0 ok; 2 bad flags; 3 unusable data (no photo or crop to fit on); 4 a model missing or unusable.
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path
from dataclasses import replace
from typing import Any, Optional, Sequence

import numpy as np

from absl import flags

from blazepose_tf import cli
from blazepose_tf.datasets.coco import unlabelled_photos
from blazepose_tf.errors import InputError, ModelError, UserError, model_file
from blazepose_tf.io.images import IMAGE_EXTENSIONS
from blazepose_tf.models.loading import check_keras_file
from blazepose_tf.metrics import UNANNOTATED_GROUPS
from blazepose_tf.training.refit_outputs import (OUTPUT_FILES, check_cache_dir, check_output_dir, json_float, log,
                                                 parse_numbers, write_json)

#: Point groups a teacher refit can choose for: the points LSPET does not annotate, by body part.
TEACHER_GROUPS = UNANNOTATED_GROUPS
CHOOSE_SALT = "blazepose_tf.refit_teacher.choose:"

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command's flags (defined by ``__main__`` only: importing the module defines none)."""
    flags.DEFINE_string("base", None, "The .keras tracker whose rows are refit.")
    flags.DEFINE_string("detector", None, "The student pipeline's detector (.tflite or .keras), e.g. the zoo's.")
    flags.DEFINE_string("photos", None, "Folder of unlabelled photos (COCO layout or plain images); only its train "
                        "split is read.")
    flags.DEFINE_string("teacher_detector", None, "The teacher pipeline's detector (default MediaPipe's).")
    flags.DEFINE_string("teacher_landmarks", None, "The teacher pipeline's tracker (default MediaPipe's Full).")
    flags.DEFINE_list("groups", list(TEACHER_GROUPS), f"Point groups to refit, among {', '.join(TEACHER_GROUPS)}.")
    flags.DEFINE_list("lambdas", ["1e-4", "3e-4", "1e-3", "3e-3", "1e-2"], "Ridge penalties per training sample.")
    flags.DEFINE_list("inlier_torso", ["0.3"], "Fit each point on the crops where the base head is within this many "
                      "torso lengths of the teacher ('inf': all).")
    flags.DEFINE_list("heatmap_lambdas", ["3e2", "1e3", "3e3", "1e4"], "Ridge penalties per crop of the heatmap "
                      "channels' refit toward the teacher's logits (empty: the heatmap is kept).")
    flags.DEFINE_integer("heatmap_radius", 2, "Fit the heatmap on the cells within this many cells of the teacher's "
                         "point.", lower_bound=0)
    flags.DEFINE_float("heatmap_floor", -1.0, "Teacher logits below this are fitted as this.")
    flags.DEFINE_integer("choose_every", 5, "One photo in this many (by name) chooses; the rest fit.", lower_bound=2)
    flags.DEFINE_string("output_dir", None, "Folder for best.keras, best.json and refit.json.")
    flags.DEFINE_string("cache_dir", "~/.cache/blazepose_tf/refit_teacher", "Cache of ROIs, targets and features.")
    flags.DEFINE_integer("batch_size", 32, "Crops per model call.", lower_bound=1)
    flags.DEFINE_bool("progress", True, "Show progress bars.")


def is_choose_photo(name: str, every: int) -> bool:
    """Whether a photo (by file name) is in the choose part: sha256(salt + name) mod ``every`` is 0."""
    return int.from_bytes(hashlib.sha256(f"{CHOOSE_SALT}{name}".encode()).digest()[:8], "big") % every == 0


def _check_flags() -> tuple[list[float], list[float], list[float]]:
    missing = [f"--{n}" for n in ("base", "detector", "photos", "output_dir") if not getattr(FLAGS, n)]
    if missing:
        raise UserError(f"{', '.join(missing)} required (see --help)")
    unknown = [g for g in FLAGS.groups if g not in TEACHER_GROUPS]
    if unknown or not FLAGS.groups:
        raise UserError(f"--groups must list groups from {', '.join(TEACHER_GROUPS)}, got {','.join(FLAGS.groups)}")
    check_output_dir(Path(FLAGS.output_dir).expanduser())
    check_cache_dir(Path(FLAGS.cache_dir).expanduser())
    if not math.isfinite(FLAGS.heatmap_floor):
        raise UserError(f"--heatmap_floor must be a finite number, got {FLAGS.heatmap_floor}")
    numbers = (parse_numbers(FLAGS.lambdas, "lambdas", finite=True),
               parse_numbers(FLAGS.inlier_torso, "inlier_torso"),
               parse_numbers(FLAGS.heatmap_lambdas, "heatmap_lambdas", finite=True) if FLAGS.heatmap_lambdas else [])
    # The files and photos, before TensorFlow's start-up and the models' loading (one line each).
    check_keras_file(Path(FLAGS.base).expanduser(), "--base")
    for flag in ("detector", "teacher_detector", "teacher_landmarks"):
        value = getattr(FLAGS, flag)
        if value:
            model_file(value, f"--{flag}")
    if not unlabelled_photos(FLAGS.photos, IMAGE_EXTENSIONS, "train", how="--photos"):
        raise InputError(f"--photos {FLAGS.photos} holds no photo of the train split")
    return numbers


def group_indices(groups: Sequence[str]) -> dict[str, list[int]]:
    """Topology indices of each of ``groups`` (names of :data:`TEACHER_GROUPS`)."""
    from blazepose_tf.training.refit_search import group_points
    return {g: group_points([g], table=TEACHER_GROUPS) for g in groups}


def _heatmap_weights(crops) -> tuple[np.ndarray, np.ndarray]:
    """The base's heatmap kernel and bias, after checking that both trackers' heatmaps can be used (one-line model
    errors naming the flag and the way out)."""
    from blazepose_tf.training.head_residual import refittable_heatmap

    try:
        weights = refittable_heatmap(crops.base_model())
        crops.check_teacher_heatmap()
    except ModelError as e:
        raise ModelError(f"{e} (--heatmap_lambdas= refits the rows only)") from None
    return weights


def _refit_heatmap(crops, fit, pick, landmarks: np.ndarray, groups: dict[str, list[int]], lambdas: list[float],
                   chosen: dict[str, dict[str, Any]], weights: tuple[np.ndarray, np.ndarray]
                   ) -> tuple[Optional[tuple[list[int], Any, Any]], list[dict]]:
    """Step 3 (module docstring): the heatmap channels of ``groups``' points refit toward the teacher's logits on
    the fit part (:mod:`blazepose_tf.training.heatmap_refit`), per group the base's or the λ whose points agree
    most on the choose part, refined with the refit channels after the chosen rows (``landmarks``). Returns
    (points, kernel, bias) of the chosen channels (None: none chosen) and the grid rows; records the choice in
    ``chosen[group]["heatmap"]``. ``weights``: the base's heatmap kernel and bias."""
    from blazepose_tf.training.heatmap_refit import accumulate, centres_in_cells, convolve, solve
    from blazepose_tf.training.refit_crops import INPUT_SIZE
    from blazepose_tf.training.teacher_crops import agreement_counts, share

    points = sorted(p for pts in groups.values() for p in pts)
    kernel, bias = (w[..., points] for w in weights)
    fmaps, teacher = crops.heatmap_data(fit, points)
    centres = centres_in_cells(fit.target[:, points], INPUT_SIZE, fmaps.shape[1])
    equations = accumulate(fmaps, teacher, centres, kernel.shape[0], FLAGS.heatmap_radius, FLAGS.heatmap_floor)
    del fmaps, teacher
    pick_fmaps, _ = crops.heatmap_data(pick, points, teacher=False)
    best = {g: {"option": "base", "agreement": c["agreement"]} for g, c in chosen.items()}
    solutions, grid = {}, []
    for lam in lambdas:
        solutions[lam] = solve(equations, kernel, bias, lam)
        heatmap = np.array(pick.features.heatmap, copy=True)
        heatmap[..., points] = convolve(pick_fmaps, *solutions[lam])
        counts = agreement_counts(pick, None, replace(pick.features, landmarks=landmarks, heatmap=heatmap))
        row = {"heatmap_lam": lam, "groups": {g: share(counts, pts) for g, pts in groups.items()}}
        grid.append(row)
        log(f"heatmap λ {lam:g}: agreement " + ", ".join(f"{g} {100 * v:.1f}%" for g, v in row["groups"].items()))
        for g, value in row["groups"].items():
            if value > best[g]["agreement"]:
                best[g] = {"option": "refit", "agreement": value, "lam": lam}
    for g, choice in best.items():
        chosen[g]["heatmap"] = choice
    refit = [(p, best[g]["lam"]) for g, pts in groups.items() if best[g]["option"] == "refit" for p in pts]
    if not refit:
        return None, grid
    new_kernel = np.stack([solutions[lam][0][..., points.index(p)] for p, lam in refit], axis=-1)
    new_bias = np.array([solutions[lam][1][points.index(p)] for p, lam in refit])
    return ([p for p, _ in refit], new_kernel, new_bias), grid


def main(argv: list[str]) -> int:
    """Fits, chooses and writes the refit tracker (module docstring)."""
    lambdas, radii, heatmap_lambdas = _check_flags()
    # TensorFlow and the models: after the flags are checked (and not for --help)
    from blazepose_tf.training.head_residual import coordinate_columns
    from blazepose_tf.training.refit_search import fit_residuals, refit_landmarks
    from blazepose_tf.training.teacher_crops import TeacherCrops, agreement_counts, share

    crops = TeacherCrops(photos=FLAGS.photos, base=FLAGS.base, detector=FLAGS.detector,
                         teacher_detector=FLAGS.teacher_detector, teacher_landmarks=FLAGS.teacher_landmarks,
                         cache_dir=Path(FLAGS.cache_dir).expanduser(), batch_size=FLAGS.batch_size,
                         progress=FLAGS.progress)
    heatmap_weights = _heatmap_weights(crops) if heatmap_lambdas else None   # refused before any work
    fit, pick = crops.sets(lambda name: is_choose_photo(name, FLAGS.choose_every))
    groups = group_indices(FLAGS.groups)
    points = sorted(p for pts in groups.values() for p in pts)
    base_counts = agreement_counts(pick, None)
    chosen: dict[str, dict[str, Any]] = {g: {"option": "base", "agreement": share(base_counts, pts)}
                                         for g, pts in groups.items()}
    residuals: dict[str, Any] = {}
    grid = []
    for radius in radii:
        for lam, residual in fit_residuals(fit.training_set(), points, lambdas, radius).items():
            counts = agreement_counts(pick, residual)
            row = {"inlier_torso": json_float(radius), "lam": lam,
                   "groups": {g: share(counts, pts) for g, pts in groups.items()}}
            grid.append(row)
            log(f"inlier {radius:g} λ {lam:g}: agreement " + ", ".join(f"{g} {100 * v:.1f}%"
                                                                       for g, v in row["groups"].items()))
            for g, value in row["groups"].items():
                if value > chosen[g]["agreement"]:
                    chosen[g] = {"option": "refit", "agreement": value, "inlier_torso": row["inlier_torso"],
                                 "lam": lam}
                    residuals[g] = residual
    rows_counts = dict(base_counts)   # the choose part with the chosen rows (refinement by the base heatmap)
    landmarks = np.array(pick.features.landmarks, np.float64)
    for g, residual in residuals.items():
        cols = coordinate_columns(groups[g])
        landmarks[:, cols] = refit_landmarks(pick.features.landmarks, pick.features.features, residual)[:, cols]
    if residuals:
        rows_counts = agreement_counts(pick, None, replace(pick.features, landmarks=landmarks))
    heatmap = None
    if heatmap_lambdas:
        heatmap, heatmap_grid = _refit_heatmap(crops, fit, pick, landmarks, groups, heatmap_lambdas, chosen,
                                               heatmap_weights)
        grid += heatmap_grid
    out = Path(FLAGS.output_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    model_path, check = crops.write_model(out / OUTPUT_FILES[0], {g: (residuals[g], groups[g]) for g in residuals},
                                          pick, heatmap)
    all_points = [p for pts in groups.values() for p in pts]
    metrics = {"split": f"{Path(FLAGS.photos).name} train, choose part (1 in {FLAGS.choose_every})",
               "teacher": crops.teacher_label, "detector": str(FLAGS.detector), "photos": len(pick),
               "agreement": 100 * share(check, all_points), "base_agreement": 100 * share(base_counts, all_points),
               "rows_agreement": 100 * share(rows_counts, all_points),
               **{f"agreement_{g}": 100 * share(check, pts) for g, pts in groups.items()},
               **{f"base_agreement_{g}": 100 * share(base_counts, pts) for g, pts in groups.items()}}
    log(f"{model_path}: agreement with the teacher on the choose part {metrics['agreement']:.2f}% "
        f"(base {metrics['base_agreement']:.2f}%, rows refit {metrics['rows_agreement']:.2f}%; " + ", ".join(
            f"{g} {metrics[f'base_agreement_{g}']:.1f} -> {metrics[f'agreement_{g}']:.1f}" for g in groups) + ")")
    write_json(out / OUTPUT_FILES[1], metrics)
    write_json(out / OUTPUT_FILES[2], {"command": " ".join(sys.argv), "base": FLAGS.base, "fit_crops": len(fit),
                                       "choose_crops": len(pick), "chosen": chosen, "dev": metrics, "grid": grid})
    print(json.dumps({"model": str(model_path), **metrics,
                      "chosen": {g: c["option"] for g, c in chosen.items()}}))
    return 0


if __name__ == "__main__":
    define_flags()
    cli.run(main)
