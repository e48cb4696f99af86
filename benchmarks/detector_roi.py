"""A person detector judged by what it feeds the tracker (issue #16): the overlap of the runtime's ROI with the
ground-truth ROI, and the tracker's PCK behind it.

    python -m benchmarks.detector_roi [--annotations A.json --images DIR --split test] [--limit N]
        [--detectors official,zoo,LABEL=PATH.keras|.tflite,...] [--landmarks official:pose_landmark_full]
        [--num_poses 1] [--json out/detector_roi.json] [--markdown out/detector_roi.md]

Data: LSPET's ``test`` split by default (docs/design.md §8: choose on ``dev``, report on ``test``;
``$BLAZEPOSE_TF_LSPET`` or ``../shared/data/lspet``), the images with a scored person
(:func:`blazepose_tf.evaluation.scored_records`), as ``python -m blazepose_tf.evaluate`` scores them.

Every detector (``--detectors``: ``official`` = MediaPipe's ``pose_detection``, ``zoo`` = the zoo's shipped
detector, or any ``.tflite``/``.keras`` file, optionally named ``LABEL=PATH``) runs in the runtime's IMAGE-mode
pipeline (:class:`~blazepose_tf.runtime.pipeline.PoseTracker`, the runtime's defaults) in front of one tracker
(``--landmarks``, default MediaPipe's Full), once per image. Reported per detector:

* per annotated person with a ground-truth ROI (:func:`blazepose_tf.codecs.targets.gt_alignment_roi`: the ROI the
  runtime's own rule (:func:`blazepose_tf.codecs.roi.alignment_roi`) derives from the annotated keypoints, with the
  alignment points ``data.prepare`` crops on: centre mid-hip, radius the farthest point; ``data.prepare`` also counts
  the teacher's face/hand/foot points there, this benchmark only the annotated ones), the runtime's
  ROIs (:func:`blazepose_tf.runtime.pipeline.roi_from_detection` of the first ``--num_poses`` detections: the crops
  the tracker gets) and their exact rotated-rectangle IoU with it (:func:`blazepose_tf.codecs.roi.roi_iou`); the
  best of them is the person's IoU (0 when the detector found nothing). **Matched**: that ROI's centre lies within
  :data:`~blazepose_tf.metrics.MATCH_RADIUS` of the ground-truth one (the training log's rule,
  :func:`~blazepose_tf.training.refit_crops.found_person`). IoU mean, median, share ≥ 0.5 and ≥ 0.7 over every
  person (misses count 0), mean over the matched ones, and the best IoU over *all* detections (what a perfect
  ranking would give); the matched ROIs' median centre offset (in ground-truth ROI sides), |log side ratio| and
  |rotation| (:func:`~blazepose_tf.training.refit_crops.roi_error`);
* the pipeline's PCK@0.2 (mid torso and diagonal, :func:`blazepose_tf.evaluation.evaluate`) and detection rate
  behind that detector, and the PCK difference to the first detector listed with a 95 % paired bootstrap interval
  over people.

Exit codes: 0 ok; 2 bad flags; 3 data missing or without scored people; 4 a model missing or breaking the I/O contract.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:  # allow `python benchmarks/detector_roi.py`
    sys.path.insert(0, str(_REPO))

import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from benchmarks.model_zoo import DEFAULT_LSPET, check_data, dataset_inputs  # noqa: E402
from benchmarks.ood_guard import write_outputs  # noqa: E402
from blazepose_tf import cli, zoo  # noqa: E402
from blazepose_tf.codecs.roi import roi_iou  # noqa: E402
from blazepose_tf.codecs.targets import gt_alignment_roi  # noqa: E402
from blazepose_tf.datasets.coco import ImageRecord, load_coco_keypoints  # noqa: E402
from blazepose_tf.errors import InputError, UserError, model_file  # noqa: E402
from blazepose_tf.evaluation import evaluate, scored_records  # noqa: E402
from blazepose_tf.metrics import PAIRED_RESAMPLES, paired_pck_delta  # noqa: E402
from blazepose_tf.runtime.pipeline import PoseTracker, roi_from_detection  # noqa: E402
from blazepose_tf.runtime.runners import load_runner  # noqa: E402
from blazepose_tf.training.refit_crops import found_person, roi_error  # noqa: E402
from blazepose_tf.types import Detection, Roi  # noqa: E402

#: ``--detectors`` names -> model specs (:func:`blazepose_tf.zoo.resolve`).
NAMED_DETECTORS = {"official": "official:pose_detection", "zoo": "zoo:detector"}
#: ``--landmarks`` names -> model specs.
NAMED_TRACKERS = {"official": "official:pose_landmark_full", "official_lite": "official:pose_landmark_lite",
                  "zoo": "zoo:full", "zoo_lite": "zoo:lite"}
DEFAULT_DETECTORS = ("official", "zoo")
DEFAULT_LANDMARKS = "official:pose_landmark_full"
IOU_THRESHOLDS = (0.5, 0.7)


@dataclass
class PersonRoi:
    """One annotated person: the ground-truth ROI, the runtime's best-overlapping ROI and the overlaps."""

    image_id: object
    gt: Roi
    roi: Optional[Roi]          # the best of the runtime's ROIs (first --num_poses detections); None: no detection
    iou: float                  # its IoU with ``gt`` (0 without one)
    iou_any: float              # best IoU over every detection of the image
    matched: bool


@dataclass
class DetectorResult:
    """One detector's numbers (percentages 0-100; IoUs 0-1; None when nothing was counted)."""

    label: str
    detector: str
    landmarks: str
    num_images: int
    num_people: int                              # annotated people with a ground-truth ROI
    num_matched: int
    matched: float
    iou_mean: float
    iou_median: float
    iou_shares: dict[str, float]                 # "0.5" / "0.7" -> share of people (percent)
    iou_mean_matched: Optional[float]
    iou_any_mean: float
    centre_offset_median: Optional[float]        # matched: |centre offset| / GT ROI side
    log_scale_median: Optional[float]            # matched: |log(side / GT side)|
    rotation_median_deg: Optional[float]         # matched: |rotation difference|
    pck: float
    pck_diagonal: float
    pck_groups: dict[str, float]
    detection_rate: float
    num_scored: int
    pck_delta: Optional[float] = None            # vs the first detector listed
    pck_delta_ci: Optional[list[float]] = None   # 95 % paired bootstrap over people
    errors: int = 0                              # unreadable images (missed)
    per_person_correct: list[list[int]] = field(default_factory=list, repr=False)   # (correct, annotated)


class RecordingDetector:
    """Wraps the pipeline's detector step and keeps every call's detections, in order."""

    def __init__(self, step):
        self.step = step
        self.log: list[list[Detection]] = []

    def __call__(self, image: np.ndarray) -> list[Detection]:
        dets = self.step(image)
        self.log.append(dets)
        return dets

    @property
    def calls(self) -> int:
        return self.step.calls


def person_rois(record: ImageRecord, detections: Sequence[Detection], num_poses: int) -> list[PersonRoi]:
    """Every non-crowd annotated person of ``record`` with a ground-truth ROI, against the runtime's ROIs of
    ``detections`` (its first ``num_poses``, as IMAGE mode crops them)."""
    rois = [roi_from_detection(d) for d in detections]
    out = []
    for person in record.people:
        gt = None if person.iscrowd else gt_alignment_roi(person.keypoints, person.available)
        if gt is None:
            continue
        ious = [roi_iou(r, gt) if r is not None else 0.0 for r in rois]
        used = ious[:num_poses]
        best = int(np.argmax(used)) if used else -1
        roi = rois[best] if best >= 0 else None
        out.append(PersonRoi(record.image_id, gt, roi, used[best] if best >= 0 else 0.0, max(ious, default=0.0),
                             found_person(roi, gt)))
    return out


def summarize(label: str, detector: str, landmarks: str, records: Sequence[ImageRecord], people: list[PersonRoi],
              evaluation) -> DetectorResult:
    """A detector's :class:`DetectorResult` from its people's ROIs and the pipeline's evaluation."""
    if not people:
        raise InputError("no annotated person with a ground-truth ROI (both shoulders and hips) to measure")
    ious = np.array([p.iou for p in people])
    matched = [p for p in people if p.matched]
    errors = np.array([roi_error(p.roi, p.gt) for p in matched]).reshape(-1, 4)

    def median(values: np.ndarray) -> Optional[float]:
        return float(np.median(values)) if len(values) else None

    rot = median(np.abs(errors[:, 3]))
    return DetectorResult(
        label=label, detector=detector, landmarks=landmarks, num_images=len(records), num_people=len(people),
        num_matched=len(matched), matched=100.0 * len(matched) / len(people), iou_mean=float(ious.mean()),
        iou_median=float(np.median(ious)),
        iou_shares={f"{t:g}": float(100.0 * np.mean(ious >= t)) for t in IOU_THRESHOLDS},
        iou_mean_matched=float(np.mean([p.iou for p in matched])) if matched else None,
        iou_any_mean=float(np.mean([p.iou_any for p in people])),
        centre_offset_median=median(np.hypot(errors[:, 0], errors[:, 1])),
        log_scale_median=median(np.abs(errors[:, 2])), rotation_median_deg=None if rot is None else math.degrees(rot),
        pck=evaluation.pck.pck, pck_diagonal=evaluation.pck_diagonal.pck, pck_groups=dict(evaluation.pck.per_group),
        detection_rate=evaluation.pck.detection_rate, num_scored=evaluation.pck.num_people,
        errors=len(evaluation.errors), per_person_correct=[list(p) for p in evaluation.pck.per_person])


def measure(label: str, detector: Path, landmarks: Path, records: Sequence[ImageRecord], num_poses: int = 1,
            num_threads: int = 1, progress: bool = True) -> DetectorResult:
    """Runs the IMAGE-mode pipeline (``detector`` + ``landmarks``, the runtime's defaults) over ``records``,
    recording the detector's detections, and scores ROIs and PCK."""
    tracker = PoseTracker(load_runner(detector, num_threads), load_runner(landmarks, num_threads), mode="image",
                          num_poses=num_poses)
    recorder = RecordingDetector(tracker.detector)
    tracker.detector = recorder
    evaluation = evaluate(tracker.process, records, progress=progress, desc=label)
    unreadable = {source for source, _ in evaluation.errors}
    calls = iter(recorder.log)
    people: list[PersonRoi] = []
    for rec in records:  # evaluate() calls the pipeline once per readable record, in order
        dets = [] if str(rec.file_path) in unreadable else next(calls)
        people += person_rois(rec, dets, num_poses)
    return summarize(label, str(detector), str(landmarks), records, people, evaluation)


# --------------------------------------------------------------------------------------------------------------
# Report


def _f(value: Optional[float], fmt: str = ".3f") -> str:
    return "n/a" if value is None or not math.isfinite(value) else format(value, fmt)


def markdown(results: Sequence[DetectorResult], info: dict) -> str:
    """The table: ROI overlap, matching and the tracker's PCK behind each detector."""
    first = results[0].label if results else ""
    lines = [f"Detectors on {info['dataset']}: {info['num_images']} images with a scored person, "
             f"{results[0].num_people if results else 0} people with a ground-truth ROI; tracker `{info['landmarks']}` "
             f"(IMAGE mode, {info['num_poses']} pose(s) per image). IoU: the runtime's ROI vs the ground-truth ROI "
             "(misses count 0).", "",
             "| detector | matched % | ROI IoU mean | median | ≥ 0.5 % | ≥ 0.7 % | IoU matched | IoU any det. | "
             "centre off. | abs log scale | abs rot. ° | detection rate % | PCK@0.2 | PCK diag. | "
             f"Δ PCK vs {first} [95% CI] |",
             "|---|" + "---:|" * 14]
    for r in results:
        delta = ("–" if r.pck_delta is None else
                 f"{r.pck_delta:+.2f} [{r.pck_delta_ci[0]:+.2f}, {r.pck_delta_ci[1]:+.2f}]")
        lines.append(
            f"| {r.label} | {r.matched:.1f} | {r.iou_mean:.3f} | {r.iou_median:.3f} | {r.iou_shares['0.5']:.1f} | "
            f"{r.iou_shares['0.7']:.1f} | {_f(r.iou_mean_matched)} | {r.iou_any_mean:.3f} | "
            f"{_f(r.centre_offset_median)} | {_f(r.log_scale_median)} | {_f(r.rotation_median_deg, '.1f')} | "
            f"{r.detection_rate:.1f} | {r.pck:.1f} | {r.pck_diagonal:.1f} | {delta} |")
    lines += ["", "Files: " + "; ".join(f"{r.label} = `{r.detector}`" for r in results)]
    return "\n".join(lines) + "\n"


def define_flags() -> None:
    """The command's flags (defined by ``__main__`` only: importing the module defines none)."""
    flags.DEFINE_string("annotations", str(DEFAULT_LSPET / "annotations.json"), "COCO-keypoints JSON.")
    flags.DEFINE_string("images", str(DEFAULT_LSPET / "images"), "Folder of its images.")
    flags.DEFINE_string("split", "test", "Split (splits.json beside --annotations; docs/design.md §8: choose on "
                        "dev, report on test).")
    flags.DEFINE_integer("limit", None, "Use the first N scored images only.", lower_bound=1)
    flags.DEFINE_list("detectors", list(DEFAULT_DETECTORS), "Detectors: official (MediaPipe's), zoo (the shipped "
                      "one), or .tflite/.keras files, each optionally LABEL=PATH. The first is the PCK reference.")
    flags.DEFINE_string("landmarks", DEFAULT_LANDMARKS, "Tracker behind every detector: official (Full), "
                        "official_lite, zoo (Full), zoo_lite, official:NAME, zoo:NAME or a .tflite/.keras file.")
    flags.DEFINE_integer("num_poses", 1, "People per image (IMAGE mode): the ROIs the tracker gets.", lower_bound=1)
    flags.DEFINE_integer("num_threads", 1, "CPU threads for TFLite inference.", lower_bound=1)
    flags.DEFINE_string("json", str(_REPO / "out" / "detector_roi.json"), "All numbers (JSON).")
    flags.DEFINE_string("markdown", str(_REPO / "out" / "detector_roi.md"), "The table (Markdown).")
    flags.DEFINE_bool("progress", True, "Show progress bars.")
    cli.define_overwrite_flag()


def resolve_model(spec: str, what: str, names: Optional[dict] = None) -> Path:
    """A named model (``names``: :data:`NAMED_DETECTORS` by default), ``official:NAME``/``zoo:NAME``, or an
    existing file."""
    spec = (NAMED_DETECTORS if names is None else names).get(spec, spec)
    if spec.partition(":")[0] in ("official", "zoo") and not Path(spec).exists():
        return zoo.resolve(spec, "tflite")
    return model_file(spec, f"{what} file")


def detector_specs(items: Sequence[str]) -> list[tuple[str, str]]:
    """(label, model spec) of each ``--detectors`` item, before anything is resolved or read."""
    out = []
    for item in items:
        label, sep, spec = item.partition("=")
        if not sep:
            spec = item.strip()
            label = f"{spec} detector" if spec in NAMED_DETECTORS else Path(spec).name
        label, spec = label.strip(), spec.strip()
        if not label or not spec:
            raise UserError(f"--detectors item {item!r} needs a label and a model (LABEL=PATH, a path, official "
                            "or zoo)")
        out.append((label, spec))
    if not out:
        raise UserError("nothing to measure: give --detectors")
    labels = [label for label, _ in out]
    if len(set(labels)) != len(labels):
        raise UserError(f"--detectors labels must differ, got {', '.join(labels)} (name them LABEL=PATH)")
    return out


def detectors(items: Sequence[str]) -> list[tuple[str, Path]]:
    """(label, file) of each ``--detectors`` item."""
    return [(label, resolve_model(spec, "--detectors")) for label, spec in detector_specs(items)]


def main(argv: list[str]) -> int:
    FLAGS = flags.FLAGS
    annotations, images = Path(FLAGS.annotations).expanduser(), Path(FLAGS.images).expanduser()
    check_data(annotations, images)
    specs = detector_specs(FLAGS.detectors)
    cli.check_outputs([("--markdown", FLAGS.markdown), ("--json", FLAGS.json)],
                      dataset_inputs(annotations, images) + [("--detectors", spec) for _, spec in specs]
                      + [("--landmarks", FLAGS.landmarks)], overwrite=FLAGS.overwrite)
    dets = [(label, resolve_model(spec, "--detectors")) for label, spec in specs]
    landmarks = resolve_model(FLAGS.landmarks, "--landmarks", NAMED_TRACKERS)
    records = scored_records(load_coco_keypoints(annotations, images, split=FLAGS.split), FLAGS.limit)
    if not records:
        raise InputError(f"no scored person in {annotations} split {FLAGS.split!r}")
    results = [measure(label, path, landmarks, records, FLAGS.num_poses, FLAGS.num_threads, FLAGS.progress)
               for label, path in dets]
    for r in results[1:]:
        r.pck_delta, r.pck_delta_ci = paired_pck_delta(results[0].per_person_correct, r.per_person_correct)
    info = {"dataset": f"`{annotations}` split `{FLAGS.split}`", "split": FLAGS.split, "num_images": len(records),
            "limit": FLAGS.limit, "landmarks": str(FLAGS.landmarks), "landmarks_file": str(landmarks),
            "num_poses": FLAGS.num_poses, "iou_thresholds": list(IOU_THRESHOLDS), "bootstrap": PAIRED_RESAMPLES}
    text = markdown(results, info)
    print(text, end="")
    write_outputs(FLAGS.markdown, text, FLAGS.json, info, results, FLAGS.overwrite)
    return 0


if __name__ == "__main__":
    define_flags()
    cli.run(main)
