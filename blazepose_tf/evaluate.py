"""Scores the pipeline on a COCO-keypoints dataset: PCK@0.2 (docs/design.md §8: overall, per keypoint and group,
detection rate; mid-torso and diagonal-torso variants) and COCO keypoint AP with pycocotools.

    python -m blazepose_tf.evaluate --annotations COCO.json --images DIR [--split dev] [--output summary.json]

Keypoints are matched to the 33-point topology by name. Images that cannot be read are scored as misses and
listed under "errors". Annotations the loader drops (keypoints that are not a list of numbers, of the wrong
length, or with NaN/inf values; unknown image ids; other categories) and other dataset problems are reported
as one ``warning:`` line per reason, with counts, before scoring.

The ``--output`` summary JSON has the keys ``written_by`` (the mark of an unchanged output,
:mod:`blazepose_tf.io.provenance`), ``schema`` (``blazepose_tf.evaluate/1``), ``annotations``, ``split``, ``num_images`` (scored images),
``models`` ({"detector", "landmarks"}), ``pck`` and ``pck_diagonal`` (``PckResult.to_dict()``: ``pck`` in %,
``per_keypoint``, ``per_group``, ``detection_rate``, counts, ``threshold``, ``diagonal``), ``coco`` (AP, AP50,
AP75, AP_M, AP_L, AR, ... as fractions), ``errors`` ([{"source", "error"}]), ``dropped_annotations`` (their
number) and ``dataset_problems`` ({reason: count}, the warnings' counts; reasons as in
``blazepose_tf.datasets.coco.PROBLEMS``). Undefined values (NaN, e.g. AP_M when no person is medium-sized) are
written as ``null``, so the file is strict JSON.

Exit codes: 0 ok (some unreadable images allowed); 2 bad flags or arguments (missing or invalid --annotations
JSON or one without an 'annotations' list, unknown --split, missing --images folder, an --output that cannot be
written, is not a .json file, or would overwrite an input: the annotations, the splits file, anything in the --images
folder or an image the annotations name elsewhere); 3
nothing to score: an empty 'images' or 'annotations' list, no scorable image in the dataset (none with both
shoulders and both hips annotated) or every scored image unreadable (an earlier file at --output is then kept as
it was); 4 model files missing, corrupt or breaking the I/O contract. An existing --output that is not an unchanged
blazepose_tf output (a summary written by this or an earlier run carries its mark) is refused unless --overwrite
(exit 2).
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
from absl import flags

from blazepose_tf import cli, contract
from blazepose_tf.zoo import model_flags
from blazepose_tf.datasets.coco import load_coco_keypoints
from blazepose_tf.errors import EXIT_NO_INPUT, EXIT_OK, InputError, UserError
from blazepose_tf.evaluation import evaluate, scored_records
from blazepose_tf.metrics import format_pck_table

SCHEMA = "blazepose_tf.evaluate/1"

flags.DEFINE_string("annotations", None, "COCO-keypoints JSON file.")
flags.DEFINE_string("images", None, "Folder the JSON's file_name entries are relative to.")
flags.DEFINE_string("split", None, "Keep only this split's image ids (from --splits).")
flags.DEFINE_string("splits", None, "Splits JSON {name: [image ids]} (default: splits.json beside --annotations).")
flags.DEFINE_integer("limit", None, "Score only the first N scored images.", lower_bound=1)
flags.DEFINE_string("output", None, "Write the JSON summary here.")
flags.DEFINE_integer("num_poses", 1, "People per image the pipeline may return.", lower_bound=1)
flags.DEFINE_float("min_detection_confidence", contract.MIN_DETECTION_CONFIDENCE, "Detector score threshold.",
                   lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_bool("progress", True, "Show a progress bar.")
cli.define_overwrite_flag()
model_flags.define_model_flags()
FLAGS = flags.FLAGS


def _json_ready(value):
    """``value`` with numpy scalars turned into Python numbers and NaN/inf into None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def main(argv: list[str]) -> int:
    """Command-line entry point (run through :func:`blazepose_tf.cli.run`)."""
    if not FLAGS.annotations or not FLAGS.images:
        raise UserError("--annotations and --images are required (see --help)")
    if FLAGS.output and not Path(FLAGS.output).parent.is_dir():
        raise UserError(f"output folder does not exist: {Path(FLAGS.output).parent}")
    if FLAGS.output and Path(FLAGS.output).is_dir():
        raise UserError(f"--output {FLAGS.output} is a directory; give a .json file name")
    splits = FLAGS.splits or Path(FLAGS.annotations).with_name("splits.json")
    cli.check_outputs([("--output", FLAGS.output)], [("--annotations", FLAGS.annotations), ("--splits", splits),
                                                      ("--images", FLAGS.images), *model_flags.model_inputs(FLAGS)],
                      overwrite=FLAGS.overwrite)
    if FLAGS.output and Path(FLAGS.output).suffix.lower() != ".json":
        raise UserError(f"--output must be a .json file, got {Path(FLAGS.output).name}")
    dataset = load_coco_keypoints(FLAGS.annotations, FLAGS.images, split=FLAGS.split, splits_json=FLAGS.splits,
                                  require_annotations=True)
    # The annotations may name images outside --images (e.g. "../other/x.jpg"): none of them is an output either.
    if FLAGS.output:
        cli.check_outputs([("--output", FLAGS.output)], [("--annotations image", r.file_path) for r in dataset.records])
    for line in dataset.problem_messages():
        print(f"warning: {line}", file=sys.stderr)
    dropped = dataset.dropped_annotations
    dropped_note = f" ({dropped} annotation{'s' * (dropped != 1)} dropped, see the warnings)" if dropped else ""
    records = scored_records(dataset, FLAGS.limit)
    if not records:
        raise InputError("no image in the dataset has a person with both shoulders and both hips annotated"
                         + dropped_note)
    tracker = model_flags.build_tracker(FLAGS, "image", num_poses=FLAGS.num_poses,
                                min_detection_confidence=FLAGS.min_detection_confidence)
    result = evaluate(tracker.process, records, progress=FLAGS.progress)
    print(f"dataset {FLAGS.annotations}" + (f" split {FLAGS.split}" if FLAGS.split else "") +
          f": {len(records)} scored images{dropped_note}, keypoints matched by name: "
          f"{', '.join(dataset.covered_names)}")
    print(format_pck_table(result.pck))
    print(f"PCK@0.2 diagonal-torso variant: {result.pck_diagonal.pck:.1f}%")
    c = result.coco
    print(f"COCO keypoint AP {c['AP']:.3f}  AP50 {c['AP50']:.3f}  AP75 {c['AP75']:.3f}  AR {c['AR']:.3f} "
          f"(COCO-17 points the dataset annotates)")
    if result.errors:
        print(f"{len(result.errors)} unreadable images were scored as misses; first: {result.errors[0][1]}")
    none_read = bool(result.errors) and len(result.errors) >= len(records)
    if FLAGS.output and none_read and Path(FLAGS.output).exists():
        print(f"--output {FLAGS.output} kept as it was: this run read no image", file=sys.stderr)
    elif FLAGS.output:
        doc = {"schema": SCHEMA, "annotations": str(FLAGS.annotations), "split": FLAGS.split, "num_images": len(records),
               "models": model_flags.model_labels(FLAGS), "roi_passes": FLAGS.roi_passes, **result.summary(),
               "dropped_annotations": dropped, "dataset_problems": dict(sorted(dataset.problems.items()))}
        cli.write_marked(FLAGS.output, _json_ready(doc), overwrite=FLAGS.overwrite, allow_nan=False)
        print(f"summary -> {FLAGS.output}")
    if none_read:
        print(f"error: none of the {len(records)} scored images could be read; first: {result.errors[0][1]}",
              file=sys.stderr)
        return EXIT_NO_INPUT
    return EXIT_OK


def entry_point() -> None:
    """Console-script entry point (``[project.scripts]`` in pyproject.toml)."""
    cli.run(main)


if __name__ == "__main__":
    entry_point()
