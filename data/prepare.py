"""Prepares training data: aligned tracker crops with targets, as sharded TFRecords plus a manifest.

    python -m data.prepare --annotations COCO.json --images DIR [--splits splits.json] --output_dir OUT \
        [--overwrite] [--kind tracker|detector] [--teacher official|none] [--crop_size 384] [--limit N]

Reads any COCO-keypoints dataset (LSPET in ../shared/data, COCO, a user's own), maps its keypoints onto the
tracker topology by name, and — with ``--teacher official`` — fills the points the dataset does not annotate
(face, hands, feet, depth) with pseudo-labels from the official Full model run through the runtime pipeline.
Ground truth always wins: each point records its source (0 none, 1 ground truth, 2 teacher) and a weight.
A dataset with images but no annotations (e.g. yoga_pose_photos) is labelled by the teacher alone; without a
splits file it is written as two splits, ``train`` and ``guard`` (a fixed quarter of the photos by file name, kept
for ``benchmarks.ood_guard``: train on ``train-*`` only).

Each person with a torso becomes one example: the alignment crop of docs/design.md §5 (centre mid-hip, side
2.5·r, rotated upright) enlarged by ``--margin`` so augmentation can scale/shift/rotate without running out of
pixels, at ``crop_size`` pixels, JPEG-encoded. Keypoints are stored in that crop's pixels; the two auxiliary
ROI points (centre, scale point) are appended after the body points.

With ``--kind detector`` each image becomes one example instead: the whole image, downscaled so its longer
side is at most ``--image_size`` pixels, with every usable person's merged 33 keypoints (image pixels),
availability and source, up to ``MAX_PEOPLE`` people; the detector pipeline letterboxes and augments it and
encodes the anchor targets (:mod:`blazepose_tf.training.detector_data`).

Bad records — missing or unreadable image, keypoints outside the image, no torso — are counted per reason in
the manifest and printed; never fatal, never silently dropped.

``--output_dir`` must be new or empty; ``--overwrite`` replaces the content of an earlier output (a folder
holding only shards and a manifest). Everything is written into a hidden sibling folder first and swapped in
at the end, so the output folder holds either its old content or the complete new one, never a mix; a failed
or interrupted run removes its temporary folder and leaves the old content untouched.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

import numpy as np
from absl import flags
from tqdm import tqdm

from blazepose_tf import cli
from blazepose_tf.codecs import roi as roi_codec
from blazepose_tf.codecs.detector_targets import MAX_PEOPLE  # people stored per detector example
from blazepose_tf.codecs.targets import alignment_keypoints
from blazepose_tf.contract import ROI_SCALE  # inference ROI = 2·r·ROI_SCALE (docs/design.md §5)
from blazepose_tf.datasets.coco import ImageRecord, KeypointDataset, load_coco_keypoints
from blazepose_tf.datasets.coco import DEV_ALL, UNLABELLED_SPLITS, is_unlabelled, read_json, read_splits
from blazepose_tf.errors import InputError, UserError
from blazepose_tf.io.images import load_image
from blazepose_tf.metrics import match_prediction
from blazepose_tf.topology import BLAZEPOSE_33, Topology

SOURCE_NONE, SOURCE_GT, SOURCE_TEACHER = 0, 1, 2
OUTSIDE_TOLERANCE = 0.05   # GT points further than this fraction of the image outside it are dropped

flags.DEFINE_string("annotations", None, "COCO-keypoints JSON (images without annotations: teacher labels only).")
flags.DEFINE_string("images", None, "Folder the JSON's file_name entries are relative to.")
flags.DEFINE_string("splits", None, "Splits JSON {name: [image ids]}; default splits.json beside --annotations "
                    "if present, else one split 'all'.")
flags.DEFINE_list("split_names", None, "Only these splits (default: every split in the file).")
flags.DEFINE_string("output_dir", None, "Where to write <split>-NNNNN.tfrecord shards and manifest.json (a new "
                    "or empty folder, or an earlier output with --overwrite).")
cli.define_overwrite_flag("Replace the content of a non-empty --output_dir from an earlier run (atomically, once "
                          "the new data is complete).")
flags.DEFINE_enum("kind", "tracker", ["tracker", "detector"], "tracker: one aligned crop per person; detector: "
                  "one downscaled whole image per example with all its people.")
flags.DEFINE_integer("image_size", 320, "--kind detector: longer image side stored, in pixels.", lower_bound=64)
flags.DEFINE_enum("teacher", "official", ["official", "none"], "Pseudo-label teacher for unannotated points.")
flags.DEFINE_integer("crop_size", 384, "Stored crop side in pixels (the 256 training crop plus margin).",
                     lower_bound=32)
flags.DEFINE_float("margin", 1.5, "Stored crop side relative to the inference ROI side (at least the ROI).",
                   lower_bound=1.0)
flags.DEFINE_float("teacher_weight", 0.5, "Loss weight of teacher pseudo-labels (ground truth has 1).",
                   lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_integer("shard_size", 1000, "Examples per TFRecord shard.", lower_bound=1)
flags.DEFINE_integer("limit", None, "Only the first N images of each split (for quick runs).", lower_bound=1)
flags.DEFINE_integer("num_threads", 2, "Threads for the teacher's TFLite inference.", lower_bound=1)
flags.DEFINE_bool("progress", True, "Show progress bars.")
FLAGS = flags.FLAGS


def _bytes(v: bytes):
    import tensorflow as tf
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))


def _floats(v: np.ndarray):
    import tensorflow as tf
    return tf.train.Feature(float_list=tf.train.FloatList(value=np.asarray(v, np.float32).reshape(-1).tolist()))


def _ints(v: np.ndarray):
    import tensorflow as tf
    return tf.train.Feature(int64_list=tf.train.Int64List(value=np.asarray(v, np.int64).reshape(-1).tolist()))


class Labeller:
    """Merges ground truth with teacher pseudo-labels and cuts the aligned crop of one person."""

    def __init__(self, teacher, topology: Topology, crop_size: int, margin: float, teacher_weight: float):
        self.teacher = teacher
        self.topology = topology
        self.crop_size = crop_size
        self.margin = margin
        self.teacher_weight = teacher_weight

    def people(self, record: ImageRecord, image: np.ndarray, problems: Counter) -> Iterable[dict]:
        """Yields one labelled tracker example (aligned crop + targets) per usable person of ``record``."""
        for merged in self.merged_people(record, image, problems):
            ex = self.crop_example(image, merged, problems)
            if ex is not None:
                yield ex

    def merged_people(self, record: ImageRecord, image: np.ndarray, problems: Counter) -> Iterable[dict]:
        """Yields each usable person's ground truth merged with the teacher's pose (image pixels): ``points``
        (K, 3), ``source``, ``weight``, ``visible``, ``vis_weight``, ``z_weight`` (K,)."""
        h, w = image.shape[:2]
        poses = self.teacher.process(image) if self.teacher is not None else []
        people = [p for p in record.people if not p.iscrowd and p.num_available > 0]
        if not record.people:  # unannotated dataset: every teacher pose is a person
            for pose in poses:
                yield self._merge(None, None, pose)
            if not poses:
                problems["teacher_found_no_person"] += 1
            return
        if not people:
            problems["no_keypoints"] += 1
        for person in people:
            gt = person.keypoints.astype(np.float32)
            avail = person.available.copy()
            tol = OUTSIDE_TOLERANCE * max(w, h)
            outside = avail & ((gt[:, 0] < -tol) | (gt[:, 1] < -tol) | (gt[:, 0] > w + tol) | (gt[:, 1] > h + tol))
            if outside.any():
                problems["keypoints_outside_image"] += int(outside.sum())
                avail &= ~outside
            pose = match_prediction((gt, avail), poses) if poses and avail.any() else None
            if pose is not None:  # a teacher pose is only used if it agrees with the person's annotation
                err = np.linalg.norm(pose.keypoints[avail, :2] - gt[avail], axis=1)
                span = max(float(np.ptp(gt[avail], axis=0).max()), 1.0)
                if float(np.median(err)) > 0.3 * span:
                    pose = None
                    problems["teacher_disagrees"] += 1
            yield self._merge(gt, avail, pose)

    def _merge(self, gt, avail, pose) -> dict:
        k = self.topology.num_keypoints
        pts = np.zeros((k, 3), np.float32)
        source = np.zeros(k, np.int64)
        weight = np.zeros(k, np.float32)
        visible = np.zeros(k, np.float32)
        vis_weight = np.zeros(k, np.float32)
        z_weight = np.zeros(k, np.float32)
        if pose is not None:
            pts[:] = pose.keypoints
            source[:] = SOURCE_TEACHER
            weight[:] = self.teacher_weight
            visible[:] = (pose.visibility > 0.5).astype(np.float32)
            vis_weight[:] = self.teacher_weight
            z_weight[:] = self.teacher_weight
        if gt is not None:
            pts[avail, :2] = gt[avail]
            source[avail] = SOURCE_GT
            weight[avail] = 1.0
            visible[avail] = 1.0     # v=2 in LSPET; v=1 (COCO "labelled, occluded") is not kept by the loader
            vis_weight[avail] = 1.0
            if pose is None:
                source[~avail] = SOURCE_NONE
                weight[~avail] = 0.0
                vis_weight[~avail] = 0.0
        return {"points": pts, "source": source, "weight": weight, "visible": visible, "vis_weight": vis_weight,
                "z_weight": z_weight}

    def crop_example(self, image: np.ndarray, merged: dict, problems: Counter) -> Optional[dict]:
        """The aligned crop (with margin) of one merged person and its per-point arrays in crop pixels; None
        (counted in ``problems``) without a torso or when the person is too small."""
        pts, source = merged["points"], merged["source"]
        known = source > SOURCE_NONE
        align, ok = alignment_keypoints(pts, known, self.topology)
        if not ok.all():
            problems["no_torso"] += 1
            return None
        roi = roi_codec.alignment_roi(align[0], align[1], scale=ROI_SCALE * self.margin)
        if roi.width < 8:
            problems["person_too_small"] += 1
            return None
        crop = roi_codec.crop(image, roi, self.crop_size, self.crop_size, border="replicate")
        s = self.crop_size
        xy = roi_codec.image_to_crop(pts[:, :2], roi) * s
        z = pts[:, 2:3] / roi.width * s
        aux = roi_codec.image_to_crop(align[:2], roi) * s
        kps = np.concatenate([np.concatenate([xy, z], 1), np.concatenate([aux, np.zeros((2, 1), np.float32)], 1)])
        ones = np.ones(2, np.float32)
        zeros = np.zeros(2, np.float32)
        return {"crop": crop, "keypoints": kps.astype(np.float32),
                "weight": np.concatenate([merged["weight"], ones]),
                "visible": np.concatenate([merged["visible"], ones]),
                "vis_weight": np.concatenate([merged["vis_weight"], zeros]),
                "z_weight": np.concatenate([merged["z_weight"], zeros]),
                "source": np.concatenate([source, [SOURCE_GT, SOURCE_GT]])}

    def image_example(self, record: ImageRecord, image: np.ndarray, problems: Counter,
                      image_size: int) -> Optional[dict]:
        """One detector example: the image downscaled to at most ``image_size`` on its longer side, with every
        merged person (up to ``MAX_PEOPLE``) scaled alike; None (counted) when no person has a torso."""
        import cv2
        people = []
        for merged in self.merged_people(record, image, problems):
            known = merged["source"] > SOURCE_NONE
            if not alignment_keypoints(merged["points"], known, self.topology)[1].all():
                problems["no_torso"] += 1
                continue
            people.append(merged)
        if not people:
            problems["image_without_usable_person"] += 1
            return None
        if len(people) > MAX_PEOPLE:
            problems["people_beyond_max"] += len(people) - MAX_PEOPLE
            people = people[:MAX_PEOPLE]
        h, w = image.shape[:2]
        scale = min(1.0, image_size / max(h, w))
        if scale < 1.0:
            image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                               interpolation=cv2.INTER_AREA)
            scale_x, scale_y = image.shape[1] / w, image.shape[0] / h
        else:
            scale_x = scale_y = 1.0
        points = np.stack([p["points"][:, :2] * np.array([scale_x, scale_y], np.float32) for p in people])
        return {"crop": image, "points": points.astype(np.float32),
                "valid": np.stack([(p["source"] > SOURCE_NONE).astype(np.float32) for p in people]),
                "source": np.stack([p["source"] for p in people])}


def _encode_jpeg(image: np.ndarray, source_path: str) -> bytes:
    import cv2
    ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:
        raise InputError(f"could not encode image of {source_path}")
    return jpg.tobytes()


def to_example(ex: dict, image_id, source_path: str) -> bytes:
    """Serializes one tracker example (JPEG crop + per-point arrays) as a tf.train.Example."""
    import tensorflow as tf
    feats = {"image/encoded": _bytes(_encode_jpeg(ex["crop"], source_path)), "image/size": _ints([ex["crop"].shape[0]]),
             "image/id": _bytes(str(image_id).encode()), "image/source": _bytes(source_path.encode()),
             "keypoints": _floats(ex["keypoints"]), "weight": _floats(ex["weight"]),
             "visible": _floats(ex["visible"]), "vis_weight": _floats(ex["vis_weight"]),
             "z_weight": _floats(ex["z_weight"]), "source": _ints(ex["source"])}
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


def to_detector_example(ex: dict, image_id, source_path: str) -> bytes:
    """Serializes one detector example (downscaled JPEG image + people × keypoints) as a tf.train.Example;
    ``people/keypoints`` is (N, K, 2) image pixels, ``people/valid`` and ``people/source`` (N, K), flattened."""
    import tensorflow as tf
    h, w = ex["crop"].shape[:2]
    feats = {"image/encoded": _bytes(_encode_jpeg(ex["crop"], source_path)), "image/height": _ints([h]),
             "image/width": _ints([w]), "image/id": _bytes(str(image_id).encode()),
             "image/source": _bytes(source_path.encode()), "people/count": _ints([len(ex["points"])]),
             "people/keypoints": _floats(ex["points"]), "people/valid": _floats(ex["valid"]),
             "people/source": _ints(ex["source"])}
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


class ShardWriter:
    """Writes examples into ``<prefix>-NNNNN.tfrecord`` shards; a shard appears only when complete."""

    def __init__(self, out_dir: Path, prefix: str, shard_size: int):
        self.out_dir, self.prefix, self.shard_size = out_dir, prefix, shard_size
        self.count, self.shards, self._writer, self._in_shard = 0, [], None, 0

    def write(self, data: bytes) -> None:
        import tensorflow as tf
        if self._writer is None:
            name = f"{self.prefix}-{len(self.shards):05d}.tfrecord"
            self._part = self.out_dir / (name + ".part")
            self._writer = tf.io.TFRecordWriter(str(self._part))
            self.shards.append(name)
        self._writer.write(data)
        self.count += 1
        self._in_shard += 1
        if self._in_shard >= self.shard_size:
            self.close()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            os.replace(self._part, self.out_dir / self.shards[-1])
            self._writer, self._in_shard = None, 0


def prepare_split(dataset, labeller: Labeller, out_dir: Path, split: str, shard_size: int,
                  progress: bool = True, kind: str = "tracker", image_size: int = 320) -> dict:
    """Labels and writes one split (tracker crops or detector images); returns its manifest entry."""
    problems: Counter = Counter(dataset.problems)
    k = labeller.topology.num_keypoints
    coverage_gt = np.zeros(k, np.int64)
    coverage_teacher = np.zeros_like(coverage_gt)
    people = 0
    writer = ShardWriter(out_dir, split, shard_size)
    for rec in tqdm(dataset.records, desc=f"prepare {split}", unit="img", disable=not progress, file=sys.stderr):
        try:
            image = load_image(rec.file_path)
        except InputError as e:
            missing = "not found" in str(e) or "no such" in str(e).lower()
            problems["missing_image" if missing else "unreadable_image"] += 1
            continue
        if kind == "detector":
            ex = labeller.image_example(rec, image, problems, image_size)
            examples = [ex] if ex is not None else []
            serialize = to_detector_example
        else:
            examples = labeller.people(rec, image, problems)
            serialize = to_example
        for ex in examples:
            writer.write(serialize(ex, rec.image_id, str(rec.file_path)))
            sources = np.reshape(ex["source"], (-1, ex["source"].shape[-1]))[:, :k]
            people += len(sources)
            coverage_gt += (sources == SOURCE_GT).sum(0)
            coverage_teacher += (sources == SOURCE_TEACHER).sum(0)
    writer.close()
    names = labeller.topology.keypoints
    return {"examples": writer.count, "people": people, "images": len(dataset.records), "shards": writer.shards,
            "problems": dict(problems),
            "coverage": {n: {"ground_truth": int(g), "teacher": int(t)}
                         for n, g, t in zip(names, coverage_gt, coverage_teacher)}}


# What data.prepare writes into --output_dir; --overwrite only replaces a folder holding nothing else.
OUTPUT_SUFFIXES = (".tfrecord", ".tfrecord.part", "manifest.json", "manifest.json.part")


def check_output_dir(out_dir: Path, overwrite: bool, inputs: Iterable[Path]) -> None:
    """Refuses (one-line :class:`UserError`) an ``out_dir`` that is a file, holds or is one of the ``inputs``,
    is not empty without ``overwrite``, or (with it) holds anything but an earlier output of this command."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--output_dir {out_dir} is a file, not a folder")
    root = out_dir.resolve()
    for path in inputs:
        if path.resolve() == root or root in path.resolve().parents:
            raise UserError(f"--output_dir {out_dir} holds the input {path}; choose another folder")
    if not out_dir.is_dir():
        return
    content = sorted(out_dir.iterdir())
    if content and not overwrite:
        raise UserError(f"--output_dir {out_dir} is not empty ({len(content)} entries, e.g. {content[0].name}); "
                        "pass --overwrite to replace its content")
    foreign = [p.name for p in content if p.is_dir() or not p.name.endswith(OUTPUT_SUFFIXES)]
    if foreign:
        raise UserError(f"--output_dir {out_dir} holds {foreign[0]!r}, which data.prepare does not write; "
                        "not replacing it with --overwrite (choose another folder)")


def read_split_names(splits_json: Path, required: bool, annotations: Optional[Path] = None) -> list[Optional[str]]:
    """The split names (keys holding a list of image ids) of ``splits_json``; when it is absent and not
    ``required``: the derived ``train`` / ``guard`` splits of unlabelled photos (``annotations`` names images but
    no people, :data:`blazepose_tf.datasets.coco.GUARD_SALT`), else ``[None]`` (one split, 'all'); a one-line
    :class:`UserError` when it is malformed."""
    if not splits_json.is_file():
        if required:
            raise UserError(f"splits file not found: {splits_json}")
        if annotations is not None and is_unlabelled(read_json(annotations, "annotations file")):
            return list(UNLABELLED_SPLITS)
        return [None]
    return [name for name in read_splits(splits_json) if name != DEV_ALL]


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turns SIGTERM into KeyboardInterrupt inside the block, so ``finally`` clauses clean up after a kill."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Holds SIGINT/SIGTERM back inside the block (they are delivered when it ends)."""
    held = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, held)


def write_atomically(out_dir: Path, write: Callable[[Path], None]) -> None:
    """Runs ``write(folder)`` on a new hidden sibling folder of ``out_dir``, then swaps it in (the old
    ``out_dir`` renamed aside, the new one renamed in, the old one deleted). ``out_dir`` holds its old content
    until the swap; if ``write`` fails or is interrupted (Ctrl-C, SIGTERM) the sibling is removed and
    ``out_dir`` is left untouched."""
    final = Path(os.path.realpath(out_dir))  # a symlinked output folder is replaced where it points
    tmp = final.with_name(f".{final.name}.prepare-{uuid.uuid4().hex[:8]}")
    aside = tmp.with_name(tmp.name + "-old")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
    except OSError as e:
        raise UserError(f"cannot create --output_dir {out_dir}: {e.strerror or e}") from None
    swapped = False
    try:
        with sigterm_as_interrupt():
            write(tmp)
            with interrupts_deferred():  # no interrupt between the two renames
                if final.exists():
                    os.rename(final, aside)
                    try:
                        os.rename(tmp, final)
                    except OSError:
                        os.rename(aside, final)
                        raise
                else:
                    os.rename(tmp, final)
                swapped = True
    except OSError as e:
        raise UserError(f"cannot write --output_dir {out_dir}: {e.strerror or e}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if swapped:
            shutil.rmtree(aside, ignore_errors=True)


def write_output(folder: Path, datasets: dict[str, KeypointDataset], labeller: Labeller, manifest: dict) -> None:
    """Writes every split's shards and then ``manifest.json`` into ``folder``; prints a line per split."""
    for name, ds in datasets.items():
        entry = prepare_split(ds, labeller, folder, name, FLAGS.shard_size, FLAGS.progress, FLAGS.kind,
                              FLAGS.image_size)
        manifest["splits"][name] = entry
        problems = ", ".join(f"{k}={v}" for k, v in sorted(entry["problems"].items())) or "none"
        print(f"{name}: {entry['examples']} examples ({entry['people']} people) from {entry['images']} images; "
              f"problems: {problems}")
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))


def main(argv: list[str]) -> int:
    if not FLAGS.annotations or not FLAGS.images or not FLAGS.output_dir:
        raise UserError("--annotations, --images and --output_dir are required (see --help)")
    out_dir = Path(FLAGS.output_dir).expanduser()
    splits_json = Path(FLAGS.splits).expanduser() if FLAGS.splits else Path(FLAGS.annotations).parent / "splits.json"
    check_output_dir(out_dir, FLAGS.overwrite, [Path(FLAGS.annotations), Path(FLAGS.images), splits_json])
    split_names = read_split_names(splits_json, required=bool(FLAGS.splits), annotations=Path(FLAGS.annotations))
    if FLAGS.split_names:
        unknown = set(FLAGS.split_names) - set(split_names)
        if unknown:
            raise UserError(f"unknown split(s) {sorted(unknown)}; known: {split_names}")
        split_names = list(FLAGS.split_names)
    datasets: dict[str, KeypointDataset] = {}
    for split in split_names:  # every input is checked before anything is written
        ds = load_coco_keypoints(FLAGS.annotations, FLAGS.images, split=split,
                                 splits_json=splits_json if split and splits_json.is_file() else None)
        if FLAGS.limit:
            ds.records = ds.records[:FLAGS.limit]
        datasets[split or "all"] = ds
    teacher = None
    if FLAGS.teacher == "official":
        from blazepose_tf.runtime.pipeline import PoseTracker
        # MediaPipe's graph (one tracker pass per person), as the shipped recipes' data were labelled
        teacher = PoseTracker.from_official(mode="image", num_threads=FLAGS.num_threads, num_poses=3, roi_passes=1)
    labeller = Labeller(teacher, BLAZEPOSE_33, FLAGS.crop_size, FLAGS.margin, FLAGS.teacher_weight)
    manifest = {"kind": FLAGS.kind, "annotations": str(FLAGS.annotations), "teacher": FLAGS.teacher,
                "crop_size": FLAGS.crop_size, "image_size": FLAGS.image_size, "max_people": MAX_PEOPLE,
                "margin": FLAGS.margin, "roi_scale": ROI_SCALE, "topology": list(BLAZEPOSE_33.keypoints),
                "aux_points": ["roi_center", "roi_scale"], "splits": {}}
    write_atomically(out_dir, lambda folder: write_output(folder, datasets, labeller, manifest))
    print(f"manifest -> {out_dir / 'manifest.json'}")
    return 0


def entry_point() -> None:
    """Console-script entry point (``[project.scripts]`` in pyproject.toml)."""
    cli.run(main)


if __name__ == "__main__":
    entry_point()
