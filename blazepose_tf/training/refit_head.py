"""Refits a tracker's landmark head in closed form and chooses the refit in the pipeline on the dev split.

    python -m blazepose_tf.training.refit_head --annotations COCO.json --images DIR --output_dir RUN
        [--base official|official_lite|M.keras] [--detector D.tflite] [--train_crops gt,jitter,detector]
        [--lambdas 1e-3,1e-2,...] [--inlier_torso 0.3,...] [--flagfile=configs/full_refit.flags]

1. The base tracker (``official``: MediaPipe's Full converted to Keras, ``official_lite``: its Lite,
   :func:`blazepose_tf.models.convert_official.load_converted`; or a ``.keras`` tracker of the same kind) runs on
   the crops of :mod:`blazepose_tf.training.refit_crops`: training crops of ``--train_split`` (each source of
   ``--train_crops``), and the pipeline's crops of ``--dev_split`` behind ``--detector`` (the runtime's ROI of its
   first detection). Its penultimate features (the landmark head's input), landmarks, presence and heatmap are
   cached under ``--cache_dir``, keyed on the data (annotations and splits files, the images folder and each
   image's size and modification time) and the models' sha256; an unreadable cache file is computed again.
   ``--images`` holding none of a split's images, and a ``--cache_dir`` that cannot be used, are refused before
   the detector runs.
2. Per crop source and inlier radius, ridge residuals of the 12 limb points' rows are fitted for every λ
   (:func:`blazepose_tf.training.refit_search.fit_residuals`); per λ, each point group takes the option (official
   rows, refit rows with refinement as is, refit rows with its heatmap channels silenced) that scores best in the
   pipeline on the dev split. The setting with the highest dev pipeline PCK@0.2 wins; the base itself (every group
   ``official``) is always a candidate.
3. The winner is written as ``RUN/best.keras``: the base model with the refit rows added to its head and the chosen
   heatmap channels silenced (:mod:`blazepose_tf.training.head_residual`): same layers, same I/O contract, every
   other weight identical. It is run again on the dev crops to check the chosen score. ``RUN/best.json`` holds its
   dev metrics (read by ``python -m blazepose_tf.zoo.publish``), ``RUN/refit.json`` every setting's dev result.
   A ``RUN`` that already holds one of them is refused before any work: an earlier refit is never overwritten.

Dev numbers are for choosing; report the chosen model on the ``test`` split with ``python -m blazepose_tf.evaluate``.
Exit codes: 0 ok; 2 bad flags; 3 unusable data (no photo or crop to fit on); 4 a model missing or unusable.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

from absl import flags

from blazepose_tf import cli
from blazepose_tf.errors import UserError
from blazepose_tf.training.refit_outputs import (check_cache_dir, check_output_dir, json_float, log, parse_numbers,
                                                 write_json)

flags.DEFINE_string("annotations", None, "COCO-keypoints JSON file (e.g. ../shared/data/lspet/annotations.json).")
flags.DEFINE_string("images", None, "Folder the JSON's file_name entries are relative to.")
flags.DEFINE_string("splits", None, "Splits JSON (default: splits.json beside --annotations).")
flags.DEFINE_string("train_split", "train", "Split the residuals are fitted on.")
flags.DEFINE_string("dev_split", "dev", "Split the settings are chosen on (never the test split).")
flags.DEFINE_string("base", "official", "Tracker whose head is refit: 'official' (MediaPipe's Full, converted), "
                    "'official_lite' (MediaPipe's Lite, converted) or a .keras tracker.")
flags.DEFINE_string("detector", None, "Detector the pipeline crops come from (.tflite or .keras; default MediaPipe's "
                    "pose_detection).")
flags.DEFINE_list("train_crops", ["jitter", "detector"], "Training crop sources to try: gt (ground-truth aligned), "
                  "jitter (ground-truth ROI moved by measured detector errors), detector (the detector's own ROI).")
flags.DEFINE_integer("jitter_copies", 2, "Jittered crops per person.", lower_bound=1)
flags.DEFINE_list("lambdas", ["1e-3", "3e-3", "1e-2", "3e-2", "1e-1"], "Ridge penalties per training sample.")
flags.DEFINE_list("inlier_torso", ["0.3"], "Fit each point on the crops where the base head is within this many "
                  "torso lengths of the label ('inf': all).")
flags.DEFINE_string("output_dir", None, "Folder for best.keras, best.json and refit.json.")
flags.DEFINE_string("cache_dir", "~/.cache/blazepose_tf/refit_head", "Cache of detector ROIs and extracted features.")
flags.DEFINE_integer("seed", 0, "Seed of the jittered crops.")
flags.DEFINE_integer("batch_size", 32, "Crops per model call.", lower_bound=1)
flags.DEFINE_bool("progress", True, "Show progress bars.")
FLAGS = flags.FLAGS


def _check_flags() -> tuple[list[float], list[float]]:
    from blazepose_tf.training.refit_crops import CROP_SOURCES

    if not FLAGS.annotations or not FLAGS.images or not FLAGS.output_dir:
        raise UserError("--annotations, --images and --output_dir are required (see --help)")
    unknown = [s for s in FLAGS.train_crops if s not in CROP_SOURCES]
    if unknown or not FLAGS.train_crops:
        raise UserError(f"--train_crops must list sources from {', '.join(CROP_SOURCES)}, got {FLAGS.train_crops}")
    if FLAGS.dev_split == "test":
        raise UserError("--dev_split=test: settings are chosen on dev, test is only reported (docs/design.md §8)")
    check_output_dir(Path(FLAGS.output_dir).expanduser())
    check_cache_dir(Path(FLAGS.cache_dir).expanduser())
    return parse_numbers(FLAGS.lambdas, "lambdas", finite=True), parse_numbers(FLAGS.inlier_torso, "inlier_torso")


def main(argv: list[str]) -> int:
    """Fits, chooses on dev and writes the refit tracker (module docstring)."""
    lambdas, radii = _check_flags()
    # TensorFlow and the models: after the flags are checked (and not for --help)
    from blazepose_tf.training.refit_run import RefitRun
    from blazepose_tf.training.refit_search import POINT_GROUPS, fit_residuals, group_points

    run = RefitRun(annotations=Path(FLAGS.annotations), images=Path(FLAGS.images),
                   splits=Path(FLAGS.splits) if FLAGS.splits else None, base=FLAGS.base, detector=FLAGS.detector,
                   cache_dir=Path(FLAGS.cache_dir).expanduser(), batch_size=FLAGS.batch_size,
                   progress=FLAGS.progress)
    for split in (FLAGS.dev_split, FLAGS.train_split):
        run.people(split)   # a wrong --images is said now, before the detector pass
    dev = run.pipeline(FLAGS.dev_split)
    points = group_points(list(POINT_GROUPS))
    grid, best = [], None
    base_counts: Optional[dict] = None
    for source in FLAGS.train_crops:
        train = run.training_set(FLAGS.train_split, source, FLAGS.jitter_copies, FLAGS.seed)
        for radius in radii:
            residuals = fit_residuals(train, points, lambdas, radius)
            for lam, residual in residuals.items():
                row = run.score(dev, residual, points)
                row.update(train_crops=source, crops=len(train), inlier_torso=json_float(radius), lam=lam)
                base_counts = row.pop("base_counts")
                grid.append(row)
                log(f"{source:8s} inlier {radius:g} λ {lam:g}: dev pipeline PCK {row['pck']:.2f} "
                     f"({', '.join(f'{g} {o}' for g, o in row['options'].items() if o != 'official') or 'no change'})")
                if best is None or row["pck"] > best[0]["pck"]:
                    best = (row, residual)
    assert best is not None and base_counts is not None
    row, residual = best
    out = Path(FLAGS.output_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    model_path, check = run.write_model(out / "best.keras", residual, row["options"], dev)
    metrics = run.dev_metrics(check, base_counts, FLAGS.dev_split)
    log(f"{model_path}: dev pipeline PCK {metrics['pipeline_pck']:.2f} when run again (chosen at {row['pck']:.2f}; "
         f"base {metrics['base_pipeline_pck']:.2f})")
    write_json(out / "best.json", metrics)
    write_json(out / "refit.json", {"command": " ".join(sys.argv), "base": FLAGS.base, "detector": run.detector_label,
                                     "dev_split": FLAGS.dev_split, "train_split": FLAGS.train_split,
                                     "jitter_errors": run.jitter,
                                     "chosen": {k: v for k, v in row.items() if k != "counts"}, "dev": metrics,
                                     "grid": [{k: v for k, v in r.items() if k != "counts"} for r in grid]})
    print(json.dumps({"model": str(model_path), **metrics, "chosen": {k: row[k] for k in
                                                                       ("train_crops", "inlier_torso", "lam",
                                                                        "options")}}))
    return 0


if __name__ == "__main__":
    cli.run(main)
