"""Runs the BlazePose detector→tracker pipeline on images, a folder of images, or a video.

    python -m blazepose_tf.track --input IMG|DIR|VIDEO --output results.json [--overlay out.png|DIR|out.mp4]

Output JSON (schema ``blazepose_tf.track/1``)::

    {"written_by": "blazepose_tf sha256:...",   # the mark of an unchanged output (blazepose_tf.io.provenance)
     "schema": "blazepose_tf.track/1",
     "models": {"detector": "...", "landmarks": "..."}, "mode": "image"|"video",
     "keypoint_names": [33 names],
     "results": [                       # one entry per image, or per video frame
        {"source": "path", "frame": null|int, "timestamp": null|float, "width": W, "height": H,
         "overlay": "path"|null,        # this input's overlay (a video's, on each frame); null if none written
         "poses": [{"score": person presence,
                    "keypoints": [[x_px, y_px, z, visibility, presence], ... 33],
                    "roi": {"x_center", "y_center", "width", "height", "rotation" (rad)},
                    "detection_score": float|null}]}],
     "errors": [{"source": "path", "error": "one-line reason"}],   # skipped inputs; overlays not written
     "summary": {"inputs": n, "processed": n, "skipped": n, "frames": n, "with_pose": n, "detector_calls": n}}

Coordinates are image pixels (z: relative depth at the scale of x, hips ≈ 0).

Overlays: with one input, ``--overlay`` is the file to write; with a folder of inputs, it is a folder that
receives ``<input file name>.png`` per image and ``<input file name>.mp4`` per video (``person.jpg`` ->
``person.jpg.png``, so ``person.jpg`` and ``person.png`` get distinct overlays), each result naming its own.

Your files are safe: an ``--overlay`` or ``--output`` that would write over an input (symbolic links and ``..``
resolved; the ``--input`` folder as the ``--overlay`` folder) or over each other, or whose folder cannot be
written, is refused before any model is loaded; so is one where a file is that is not an unchanged blazepose_tf
output (the outputs carry a mark with their digest, :mod:`blazepose_tf.io.provenance`, so a rerun replaces its
own, but not a file of yours, an edited output or one from an older version), unless ``--overwrite``. Every output is written to a temporary file next to it and then
renamed, so a failed write (disk full) never leaves a partial file and keeps an earlier one unchanged. An overlay
that cannot be written is reported (``warning:`` line, an entry under "errors") and the run goes on.

Exit codes: 0 all inputs processed and written (finding no person is not an error); 2 bad flags or arguments,
an output that would overwrite an input or cannot be written (checked before the models load), or the results
JSON could not be written at the end; 3 nothing could be processed (missing path, every input unreadable, empty
video; the results JSON lists why, unless a file is already at ``--output``, which such a run keeps as it was);
4 model files missing, unfetchable, corrupt or breaking the I/O contract (blazepose_tf/contract.py); 5 some inputs
were unreadable and skipped, or some overlays could not be written (listed under "errors"), the rest processed.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import numpy as np
from absl import flags
from tqdm import tqdm

from blazepose_tf import cli, contract
from blazepose_tf.zoo import model_flags
from blazepose_tf.errors import EXIT_NO_INPUT, EXIT_OK, EXIT_PARTIAL, InputError, UserError
from blazepose_tf.io.images import InputItem, collect_inputs, load_image
from blazepose_tf.io.samples import SAMPLE_NAMES, sample_image_path
from blazepose_tf.io.video import VideoReader, VideoWriter
from blazepose_tf.overlay import draw_poses, save_image
from blazepose_tf.types import Pose

SCHEMA = "blazepose_tf.track/1"

flags.DEFINE_string("input", None, "An image, a folder of images/videos, a video file, or `sample` (a photo "
                    "bundled with scikit-image, for a first run without data; a file or folder named `sample` here wins).")
flags.DEFINE_string("output", None, "Where to write the results JSON.")
flags.DEFINE_string("overlay", None, "Overlay output: an image path (single image), a .mp4/.avi path (video), "
                    "or a folder (several inputs: one INPUT_NAME.png per image, INPUT_NAME.mp4 per video). Never "
                    "an input or the --input folder.")
flags.DEFINE_enum("mode", "auto", ["auto", "image", "video"],
                  "auto: VIDEO mode for videos, IMAGE mode for images.")
flags.DEFINE_integer("num_poses", 1, "Maximum people per image (IMAGE mode).", lower_bound=1)
flags.DEFINE_float("min_detection_confidence", contract.MIN_DETECTION_CONFIDENCE, "Detector score threshold.",
                   lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_float("min_presence", 0.5, "Tracker presence threshold.", lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_bool("smooth", True, "One Euro smoothing in VIDEO mode.")
flags.DEFINE_bool("progress", True, "Show a progress bar.")
cli.define_overwrite_flag()
model_flags.define_model_flags()
FLAGS = flags.FLAGS


def pose_to_json(pose: Pose) -> dict:
    """The JSON form of one pose (see the module docstring)."""
    kps = [[round(float(x), 3), round(float(y), 3), round(float(z), 3), round(float(v), 4), round(float(p), 4)]
           for (x, y, z), v, p in zip(pose.keypoints, pose.visibility, pose.presence)]
    return {"score": round(float(pose.score), 4), "keypoints": kps, "roi": pose.roi.to_dict(),
            "detection_score": None if pose.detection is None else round(float(pose.detection.score), 4)}


def _overlay_targets(items: list[InputItem], overlay: Optional[str]) -> dict[Path, Path]:
    """Where each input's overlay goes (input path -> overlay path); empty without ``--overlay``.

    A single input's overlay is the ``--overlay`` file itself; several inputs' go into the ``--overlay`` folder as
    ``<input file name>.png`` (``.mp4`` for a video), e.g. ``person.jpg.png``, so that ``person.jpg`` and
    ``person.png`` get distinct overlays. Names that differ only in case are numbered (``a.jpg.2.png``), as they
    would clash on a case-insensitive file system. Bad values are one-line UserErrors; ``main`` creates the folder
    once the models have loaded, so that a failed start leaves nothing behind.
    """
    if not overlay:
        return {}
    out = Path(overlay)
    many = len(items) > 1
    if many and out.suffix:
        raise UserError(f"--overlay must be a folder when --input has several files, got {out}")
    if not many and items[0].kind == "video" and out.suffix.lower() not in (".mp4", ".avi"):
        raise UserError(f"--overlay for a video must end in .mp4 or .avi, got {out.name}")
    if not many and items[0].kind == "image" and out.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise UserError(f"--overlay for an image must end in .png or .jpg, got {out.name}")
    if not many and out.is_dir():
        raise UserError(f"--overlay {out} is a directory, not a file")
    if not many:
        return {items[0].path: out}
    targets: dict[Path, Path] = {}
    taken: set[str] = set()
    for item in items:
        suffix = ".mp4" if item.kind == "video" else ".png"
        name, number = item.path.name + suffix, 1
        while name.casefold() in taken:
            number += 1
            name = f"{item.path.name}.{number}{suffix}"
        taken.add(name.casefold())
        targets[item.path] = out / name
    return targets


def _make_folder(folder: Path, flag: str) -> None:
    """Creates ``folder`` (and parents) for an output flag; a file in the way is a one-line UserError."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create folder {folder} for {flag}: {e.strerror or e}") from None


def _check_outputs(items: list[InputItem], out_path: Path, overlays: dict[Path, Path]) -> None:
    """Refuses, before any model is loaded, outputs that would write over an input (an input file, or a model file
    the run reads: ``--detector``, ``--landmarks`` or the ``--models`` set's) or over each other or over a file this
    package did not write (without ``--overwrite``), outputs that are not regular files, and output folders that
    cannot be written: one-line UserErrors (:func:`cli.check_outputs`)."""
    if len(items) > 1 and overlays:
        folder = next(iter(overlays.values())).parent
        if cli.path_identities(folder) & cli.path_identities(items[0].path.parent):
            raise UserError(f"--overlay {folder} is the --input folder: the overlays would be mixed with (and could "
                            "overwrite) the inputs; choose another folder")
    inputs = [("--input", item.path) for item in items] + model_flags.model_inputs(FLAGS)
    outputs = [("--overlay", target) for target in overlays.values()] + [("--output", out_path)]
    cli.check_outputs(outputs, inputs, overwrite=FLAGS.overwrite)


def _result(item: InputItem, frame: np.ndarray, poses: list[Pose], index: Optional[int] = None,
            timestamp: Optional[float] = None) -> dict:
    """The results entry of one image or video frame (see the module docstring); ``overlay`` is set once written."""
    return {"source": str(item.path), "frame": index, "timestamp": None if timestamp is None else round(timestamp, 4),
            "width": int(frame.shape[1]), "height": int(frame.shape[0]), "overlay": None,
            "poses": [pose_to_json(p) for p in poses]}


def _process_image(tracker, item: InputItem, overlay: Optional[Path], results: list, reset: bool) -> Optional[str]:
    """Runs the pipeline on one image and appends its entry to ``results``; writes its overlay (if asked).

    Returns why the overlay could not be written (the results are kept), or None.
    Raises:
        InputError: the image cannot be read.
    """
    if reset:
        tracker.reset()
    image = load_image(item.path)
    poses = tracker.process(image)
    entry = _result(item, image, poses)
    results.append(entry)
    if overlay is None:
        return None
    try:
        cli.check_still_replaceable("--overlay", overlay, FLAGS.overwrite)
        save_image(overlay, draw_poses(image, poses, tracker.topology))
    except UserError as e:
        return str(e)
    entry["overlay"] = str(overlay)
    return None


def _process_video(tracker, item: InputItem, overlay: Optional[Path], results: list, show: bool) -> Optional[str]:
    """Tracks one video, appending an entry per frame to ``results``; writes its overlay video (if asked).

    A failing overlay does not stop the tracking: it is deleted (never left partly written) and the reason
    returned; None when there was no failure.
    Raises:
        InputError: the video cannot be read (frames decoded before the error stay in ``results``).
    """
    tracker.reset()
    start = len(results)
    failure: Optional[str] = None
    with VideoReader(item.path) as reader:
        writer: Optional[VideoWriter] = None
        if overlay is not None:
            try:
                writer = VideoWriter(overlay, reader.fps, (reader.width, reader.height))
            except UserError as e:
                failure = str(e)
        try:
            total = reader.frame_count if reader.frame_count > 0 else None
            for index, ts, frame in tqdm(reader, total=total, desc=item.path.name, unit="frame",
                                         disable=not show, leave=False):
                poses = tracker.process(frame, timestamp=ts)
                results.append(_result(item, frame, poses, index, ts))
                if writer is not None:
                    try:
                        writer.write(draw_poses(frame, poses, tracker.topology))
                    except ValueError as e:   # a frame of another size than the first
                        writer.discard()
                        writer, failure = None, f"cannot write video {overlay}: {e}"
            if writer is not None:
                try:
                    cli.check_still_replaceable("--overlay", overlay, FLAGS.overwrite)
                    writer.close()
                except UserError as e:
                    failure = str(e)
                else:
                    for entry in results[start:]:
                        entry["overlay"] = str(overlay)
        finally:
            if writer is not None:
                writer.discard()   # after an error; a no-op once closed
        if reader.truncated:
            print(f"warning: {item.path} is truncated: decoded {len(results) - start} of {reader.frame_count} "
                  "frames", file=sys.stderr)
    return failure


def main(argv: list[str]) -> int:
    if not FLAGS.input or not FLAGS.output:
        raise UserError("--input and --output are required (see --help)")
    out_path = Path(FLAGS.output)
    if out_path.suffix.lower() != ".json":
        raise UserError(f"--output must be a .json file, got {out_path.name}")
    # The bundled photo, unless the user has a file or folder of that name here (theirs wins).
    sample = FLAGS.input in SAMPLE_NAMES and not Path(FLAGS.input).exists()
    items = collect_inputs(sample_image_path() if sample else FLAGS.input)
    if out_path.is_dir():
        raise UserError(f"--output {out_path} is a directory; give a .json file name")
    overlays = _overlay_targets(items, FLAGS.overlay)
    _check_outputs(items, out_path, overlays)
    many = len(items) > 1
    has_video = any(i.kind == "video" for i in items)
    mode = FLAGS.mode if FLAGS.mode != "auto" else ("video" if has_video else "image")
    if mode == "video" and FLAGS.num_poses != 1:
        raise UserError("VIDEO mode tracks one person: use --num_poses=1 or --mode=image")
    tracker = model_flags.build_tracker(FLAGS, mode, num_poses=FLAGS.num_poses,
                                min_detection_confidence=FLAGS.min_detection_confidence,
                                min_presence=FLAGS.min_presence, smooth=FLAGS.smooth)
    for folder, flag in [(out_path.parent, "--output")] + [(t.parent, "--overlay") for t in overlays.values()]:
        _make_folder(folder, flag)
    results: list[dict] = []
    errors: list[dict] = []
    processed = 0
    for item in tqdm(items, desc="inputs", unit="file", disable=not (FLAGS.progress and many)):
        overlay = overlays.get(item.path)
        try:
            if item.kind == "video":
                failure = _process_video(tracker, item, overlay, results, FLAGS.progress)
            else:
                failure = _process_image(tracker, item, overlay, results, reset=mode == "video")
        except InputError as e:
            errors.append({"source": str(item.path), "error": str(e)})
            print(f"skipped: {e}", file=sys.stderr)
            continue
        processed += 1
        if failure is not None:
            errors.append({"source": str(item.path), "error": f"overlay not written: {failure}"})
            print(f"warning: overlay for {item.path} not written: {failure} (its results are kept)", file=sys.stderr)
    summary = {"inputs": len(items), "processed": processed, "skipped": len(items) - processed,
               "frames": len(results), "with_pose": sum(1 for r in results if r["poses"]),
               "detector_calls": tracker.detector_calls}
    doc = {"schema": SCHEMA, "mode": mode,
           "models": model_flags.model_labels(FLAGS),
           "keypoint_names": list(tracker.topology.keypoints), "results": results, "errors": errors,
           "summary": summary}
    if processed == 0 and out_path.exists():  # a run with nothing to save does not replace earlier results
        print(f"error: no input could be processed; the earlier {out_path} is kept as it was", file=sys.stderr)
        return EXIT_NO_INPUT
    cli.write_marked(out_path, doc, overwrite=FLAGS.overwrite, indent=None)
    print(f"{summary['processed']}/{summary['inputs']} inputs, {summary['frames']} frames/images, "
          f"{summary['with_pose']} with a pose -> {out_path}")
    if processed == 0:
        print("error: no input could be processed", file=sys.stderr)
        return EXIT_NO_INPUT
    return EXIT_PARTIAL if errors else EXIT_OK


def entry_point() -> None:
    """Console-script entry point (``[project.scripts]`` in pyproject.toml)."""
    cli.run(main)


if __name__ == "__main__":
    entry_point()
