"""Runs the BlazePose detector→tracker pipeline on images, a folder of images, or a video.

    python -m blazepose_tf.track --input IMG|DIR|VIDEO --output results.json [--overlay out.png|DIR|out.mp4]

Output JSON (schema ``blazepose_tf.track/1``)::

    {"schema": "blazepose_tf.track/1",
     "models": {"detector": "...", "landmarks": "..."}, "mode": "image"|"video",
     "keypoint_names": [33 names],
     "results": [                       # one entry per image, or per video frame
        {"source": "path", "frame": null|int, "timestamp": null|float, "width": W, "height": H,
         "poses": [{"score": person presence,
                    "keypoints": [[x_px, y_px, z, visibility, presence], ... 33],
                    "roi": {"x_center", "y_center", "width", "height", "rotation" (rad)},
                    "detection_score": float|null}]}],
     "errors": [{"source": "path", "error": "one-line reason"}],
     "summary": {"inputs": n, "processed": n, "skipped": n, "frames": n, "with_pose": n, "detector_calls": n}}

Coordinates are image pixels (z: relative depth at the scale of x, hips ≈ 0).
Exit codes: 0 all inputs processed (finding no person is not an error); 2 bad flags or arguments;
3 nothing could be processed (missing path, every input unreadable, empty video); 4 model files missing or
unfetchable; 5 some inputs were unreadable and skipped (listed under "errors"), the rest processed.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

from absl import flags
from tqdm import tqdm

from blazepose_tf import cli
from blazepose_tf.errors import EXIT_NO_INPUT, EXIT_OK, EXIT_PARTIAL, InputError, UserError
from blazepose_tf.io.images import InputItem, collect_inputs, load_image
from blazepose_tf.io.samples import SAMPLE_NAMES, sample_image_path
from blazepose_tf.io.video import VideoReader, VideoWriter
from blazepose_tf.overlay import draw_poses, save_image
from blazepose_tf.types import Pose

SCHEMA = "blazepose_tf.track/1"

flags.DEFINE_string("input", None, "An image, a folder of images/videos, a video file, or `sample` (a photo "
                    "bundled with scikit-image, for a first run without data).")
flags.DEFINE_string("output", None, "Where to write the results JSON.")
flags.DEFINE_string("overlay", None, "Overlay output: an image path (single image), a folder (several "
                    "images), or a .mp4/.avi path (video).")
flags.DEFINE_enum("mode", "auto", ["auto", "image", "video"],
                  "auto: VIDEO mode for videos, IMAGE mode for images.")
flags.DEFINE_integer("num_poses", 1, "Maximum people per image (IMAGE mode).", lower_bound=1)
flags.DEFINE_float("min_detection_confidence", 0.5, "Detector score threshold.", lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_float("min_presence", 0.5, "Tracker presence threshold.", lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_bool("smooth", True, "One Euro smoothing in VIDEO mode.")
flags.DEFINE_bool("progress", True, "Show a progress bar.")
cli.define_model_flags()
FLAGS = flags.FLAGS


def pose_to_json(pose: Pose) -> dict:
    """The JSON form of one pose (see the module docstring)."""
    kps = [[round(float(x), 3), round(float(y), 3), round(float(z), 3), round(float(v), 4), round(float(p), 4)]
           for (x, y, z), v, p in zip(pose.keypoints, pose.visibility, pose.presence)]
    return {"score": round(float(pose.score), 4), "keypoints": kps, "roi": pose.roi.to_dict(),
            "detection_score": None if pose.detection is None else round(float(pose.detection.score), 4)}


def _overlay_target(items: list[InputItem], overlay: Optional[str]) -> Optional[Path]:
    if not overlay:
        return None
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
    _make_folder(out if many else out.parent, "--overlay")
    return out


def _make_folder(folder: Path, flag: str) -> None:
    """Creates ``folder`` (and parents) for an output flag; a file in the way is a one-line UserError."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create folder {folder} for {flag}: {e.strerror or e}") from None


def _write_json(path: Path, doc: dict) -> None:
    """Writes ``doc`` atomically (``.part`` file, then rename); failures are one-line UserErrors."""
    tmp = path.with_name(path.name + ".part")
    try:
        with open(tmp, "w") as f:
            json.dump(doc, f)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write --output {path}: {e.strerror or e}") from None


def _overlay_path(target: Optional[Path], item: InputItem, many: bool) -> Optional[Path]:
    if target is None:
        return None
    if not many:
        return target
    return target / (item.path.stem + (".mp4" if item.kind == "video" else ".png"))


def _process_video(tracker, item: InputItem, overlay: Optional[Path], results: list, show: bool) -> int:
    tracker.reset()
    frames = 0
    with VideoReader(item.path) as reader:
        writer = VideoWriter(overlay, reader.fps, (reader.width, reader.height)) if overlay else None
        try:
            total = reader.frame_count if reader.frame_count > 0 else None
            for index, ts, frame in tqdm(reader, total=total, desc=item.path.name, unit="frame",
                                         disable=not show, leave=False):
                poses = tracker.process(frame, timestamp=ts)
                results.append({"source": str(item.path), "frame": index, "timestamp": round(ts, 4),
                                "width": int(frame.shape[1]), "height": int(frame.shape[0]),
                                "poses": [pose_to_json(p) for p in poses]})
                if writer is not None:
                    writer.write(draw_poses(frame, poses, tracker.topology))
                frames += 1
        finally:
            if writer is not None:
                writer.close()
        if reader.truncated:
            print(f"warning: {item.path} is truncated: decoded {frames} of {reader.frame_count} frames",
                  file=sys.stderr)
    return frames


def main(argv: list[str]) -> int:
    if not FLAGS.input or not FLAGS.output:
        raise UserError("--input and --output are required (see --help)")
    out_path = Path(FLAGS.output)
    if out_path.suffix.lower() != ".json":
        raise UserError(f"--output must be a .json file, got {out_path.name}")
    items = collect_inputs(sample_image_path() if FLAGS.input in SAMPLE_NAMES else FLAGS.input)
    if out_path.is_dir():
        raise UserError(f"--output {out_path} is a directory; give a .json file name")
    _make_folder(out_path.parent, "--output")
    overlay = _overlay_target(items, FLAGS.overlay)
    many = len(items) > 1
    has_video = any(i.kind == "video" for i in items)
    mode = FLAGS.mode if FLAGS.mode != "auto" else ("video" if has_video else "image")
    if mode == "video" and FLAGS.num_poses != 1:
        raise UserError("VIDEO mode tracks one person: use --num_poses=1 or --mode=image")
    tracker = cli.build_tracker(FLAGS, mode, num_poses=FLAGS.num_poses,
                                min_detection_confidence=FLAGS.min_detection_confidence,
                                min_presence=FLAGS.min_presence, smooth=FLAGS.smooth)
    results: list[dict] = []
    errors: list[dict] = []
    processed = 0
    show = FLAGS.progress and (many or has_video)
    for item in tqdm(items, desc="inputs", unit="file", disable=not (FLAGS.progress and many)):
        try:
            if item.kind == "video":
                _process_video(tracker, item, _overlay_path(overlay, item, many), results, FLAGS.progress)
            else:
                if mode == "video":
                    tracker.reset()
                image = load_image(item.path)
                poses = tracker.process(image)
                results.append({"source": str(item.path), "frame": None, "timestamp": None,
                                "width": int(image.shape[1]), "height": int(image.shape[0]),
                                "poses": [pose_to_json(p) for p in poses]})
                target = _overlay_path(overlay, item, many)
                if target is not None:
                    save_image(target, draw_poses(image, poses, tracker.topology))
            processed += 1
        except InputError as e:
            errors.append({"source": str(item.path), "error": str(e)})
            print(f"skipped: {e}", file=sys.stderr)
    summary = {"inputs": len(items), "processed": processed, "skipped": len(errors), "frames": len(results),
               "with_pose": sum(1 for r in results if r["poses"]), "detector_calls": tracker.detector_calls}
    doc = {"schema": SCHEMA, "mode": mode,
           "models": cli.model_labels(FLAGS),
           "keypoint_names": list(tracker.topology.keypoints), "results": results, "errors": errors,
           "summary": summary}
    _write_json(out_path, doc)
    print(f"{summary['processed']}/{summary['inputs']} inputs, {summary['frames']} frames/images, "
          f"{summary['with_pose']} with a pose -> {out_path}")
    if processed == 0:
        print("error: no input could be processed", file=sys.stderr)
        return EXIT_NO_INPUT
    return EXIT_PARTIAL if errors else EXIT_OK


if __name__ == "__main__":
    cli.run(main)
