"""Per-keypoint bias and spread of trackers against the ground truth, on ground-truth-aligned crops (issue #16).

    python -m benchmarks.keypoint_errors [--annotations A.json --images DIR --split test] [--limit N]
        [--models official_full,official_lite,full,lite] [--landmarks extra.tflite]
        [--png out/keypoint_errors.png] [--json out/keypoint_errors.json] [--markdown out/keypoint_errors.md]
        [--arrow_scale 5]

Data: LSPET's ``test`` split by default (docs/design.md §8; ``$BLAZEPOSE_TF_LSPET`` or ``../shared/data/lspet``).
Every scored person (:func:`blazepose_tf.metrics.select_scored_person`) is cropped on the one ground-truth
alignment (:func:`blazepose_tf.codecs.targets.gt_alignment_roi`, the ROI a perfect detector would give) and each
tracker (the official Full and Lite, the zoo's Full and Lite, ``--landmarks``) runs on the crop as the runtime's
:class:`~blazepose_tf.runtime.pipeline.LandmarkEstimator` does: decoded, then projected back; twice, without
("regressed") and with ("refined") MediaPipe's heatmap refinement, which the runtime applies when the tracker has a
heatmap.

For every annotated point the error ``prediction − ground truth`` is expressed in the person's frame: rotated into
the ground-truth ROI (x along its horizontal axis, y along its vertical axis, downwards: the torso points up) and
divided by the person's torso (ground-truth mid-shoulder ↔ mid-hip). With ``--mirror`` (default) the x axis of a
person seen from behind (ground-truth left shoulder + hip on the ROI's −x side) is negated, so that +x is the
person's left for everyone: a left/right-symmetric bias (hips labelled wider, say) then adds up over front and back
views instead of cancelling. Per keypoint: the **bias** (mean offset vector), its length, the median offset (robust
to LSPET's left/right label swaps, which inflate the mean), the **spread** (std per axis) and PCK@0.2
(:func:`blazepose_tf.metrics.pck`). The PNG draws the mean (red) and median (blue) offsets as arrows scaled up by
``--arrow_scale`` (written on each panel) on a body diagram (the mean ground-truth pose in the same frame), with
1-std ellipses at true scale; one panel per model, a row per decoding (regressed, refined).

Exit codes: 0 ok; 2 bad flags; 3 data missing or without scored people; 4 a model missing.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:  # allow `python benchmarks/keypoint_errors.py`
    sys.path.insert(0, str(_REPO))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from absl import flags  # noqa: E402
from tqdm import tqdm  # noqa: E402

from benchmarks.model_zoo import DEFAULT_LSPET, MODELS, check_data, dataset_inputs  # noqa: E402
from benchmarks.ood_guard import write_outputs  # noqa: E402
from blazepose_tf import cli  # noqa: E402
from blazepose_tf.codecs.roi import image_to_crop  # noqa: E402
from blazepose_tf.codecs.targets import gt_alignment_roi  # noqa: E402
from blazepose_tf.datasets.coco import ImageRecord, PersonAnnotation, load_coco_keypoints  # noqa: E402
from blazepose_tf.errors import InputError, UserError, model_file  # noqa: E402
from blazepose_tf.evaluation import scored_records  # noqa: E402
from blazepose_tf.io.images import load_image  # noqa: E402
from blazepose_tf.metrics import pck, select_scored_person  # noqa: E402
from blazepose_tf.overlay import save_image  # noqa: E402
from blazepose_tf.runtime.pipeline import LandmarkEstimator  # noqa: E402
from blazepose_tf.runtime.runners import ModelRunner, load_runner  # noqa: E402
from blazepose_tf.topology import BLAZEPOSE_33, torso_size  # noqa: E402
from blazepose_tf.types import Roi  # noqa: E402

TRACKERS: tuple[str, ...] = tuple(k for k, m in MODELS.items() if m.kind == "tracker")
DECODINGS: tuple[str, ...] = ("regressed", "refined")
ARROW_SCALE = 5.0
PANEL = (420, 520)          # width, height in pixels
PX_PER_TORSO = 110.0
MEAN_COLOR = (220, 30, 30)
MEDIAN_COLOR = (30, 90, 220)
#: The torso points (annotated in every scored person) that say which side of the ROI a person's left is on.
SIDE_POINTS = {"left": ("left_shoulder", "left_hip"), "right": ("right_shoulder", "right_hip")}


@dataclass
class AlignedPerson:
    """A scored person, its image, the ground-truth-aligned ROI and whether its frame is mirrored."""

    image: Path
    person: PersonAnnotation
    roi: Roi
    mirrored: bool = False

    @property
    def torso(self) -> float:
        """Ground-truth mid-shoulder ↔ mid-hip distance, pixels."""
        return torso_size(self.person.keypoints)

    def person_frame(self, points: np.ndarray) -> np.ndarray:
        """(K, 2) image pixels → the person's frame: ROI axes (x negated when ``mirrored``), origin at the ROI
        centre, torso units."""
        scale = np.array([-self.roi.width if self.mirrored else self.roi.width, self.roi.height]) / self.torso
        return (image_to_crop(points, self.roi).astype(np.float64) - 0.5) * scale


def seen_from_behind(person: AlignedPerson) -> bool:
    """Whether the ground truth's left shoulder + hip lie left of its right ones in the ROI (a back view)."""
    u = image_to_crop(person.person.keypoints, person.roi)[:, 0]
    return bool(sum(u[BLAZEPOSE_33.index(n)] for n in SIDE_POINTS["left"])
                < sum(u[BLAZEPOSE_33.index(n)] for n in SIDE_POINTS["right"]))


def aligned_people(records: Sequence[ImageRecord], mirror: bool = True) -> list[AlignedPerson]:
    """The scored person of every record with its ground-truth alignment ROI (people without one are left out).
    With ``mirror``, a person whose ground-truth left side is on the ROI's −x side (seen from behind) gets a
    mirrored frame, so that x points to the person's left for everyone (left/right biases then add up instead of
    cancelling between front and back views)."""
    out = []
    for rec in records:
        person = select_scored_person(rec)
        roi = gt_alignment_roi(person.keypoints, person.available) if person is not None else None
        if roi is not None:
            p = AlignedPerson(rec.file_path, person, roi)
            p.mirrored = mirror and seen_from_behind(p)
            out.append(p)
    return out


def predict_crops(runner: ModelRunner, people: Sequence[AlignedPerson], progress: bool = False,
                  desc: str = "crops") -> dict[str, list[Optional[np.ndarray]]]:
    """{decoding: per person (33, 2) image-pixel keypoints, None for an unreadable image}: the runtime's
    :class:`LandmarkEstimator` on each ground-truth-aligned crop, without and with heatmap refinement (the same
    as without for a tracker that has no heatmap)."""
    estimators = {d: LandmarkEstimator(runner, refine_heatmap=(d == "refined")) for d in DECODINGS}
    refines = "heatmap" in runner.output_roles
    out: dict[str, list[Optional[np.ndarray]]] = {d: [] for d in DECODINGS}
    for p in tqdm(people, desc=desc, unit="crop", disable=not progress, file=sys.stderr):
        try:
            image = load_image(p.image)
        except InputError:
            for d in DECODINGS:
                out[d].append(None)
            continue
        regressed = estimators["regressed"](image, p.roi).keypoints[:, :2]
        out["regressed"].append(regressed)
        out["refined"].append(estimators["refined"](image, p.roi).keypoints[:, :2] if refines else regressed)
    return out


def person_offsets(people: Sequence[AlignedPerson], predictions: Sequence[Optional[np.ndarray]]) -> np.ndarray:
    """(P, 33, 2) prediction − ground truth in each person's frame (torso units); NaN where the point is not
    annotated, the prediction is missing or not finite."""
    out = np.full((len(people), BLAZEPOSE_33.num_keypoints, 2), np.nan)
    for i, (p, pred) in enumerate(zip(people, predictions)):
        if pred is None:
            continue
        d = p.person_frame(pred) - p.person_frame(p.person.keypoints)
        d[~p.person.available] = np.nan
        out[i] = np.where(np.isfinite(d).all(axis=1, keepdims=True), d, np.nan)
    return out


@dataclass
class KeypointStats:
    """One keypoint's errors in the person's frame (torso units)."""

    name: str
    n: int
    mean: tuple[float, float]      # the bias vector (x, y)
    bias: float                    # its length
    median: tuple[float, float]
    std: tuple[float, float]       # the spread per axis
    pck: Optional[float] = None    # PCK@0.2 (percent)


def keypoint_stats(offsets: np.ndarray) -> list[KeypointStats]:
    """Stats of every keypoint with at least one finite offset (topology order)."""
    out = []
    for k, name in enumerate(BLAZEPOSE_33.keypoints):
        d = offsets[:, k][np.isfinite(offsets[:, k]).all(axis=1)]
        if not len(d):
            continue
        mean = d.mean(axis=0)
        out.append(KeypointStats(name, len(d), (float(mean[0]), float(mean[1])), float(np.hypot(*mean)),
                                 tuple(float(v) for v in np.median(d, axis=0)),
                                 tuple(float(v) for v in d.std(axis=0))))
    return out


@dataclass
class ModelErrors:
    """A tracker's errors for one decoding."""

    label: str
    landmarks: str
    decoding: str
    has_heatmap: bool
    num_people: int
    pck: float
    keypoints: list[KeypointStats] = field(default_factory=list)

    def top_biases(self, n: int = 3, robust: bool = False) -> list[KeypointStats]:
        """The ``n`` keypoints with the longest mean (``robust``: median) offset."""
        return sorted(self.keypoints, key=lambda s: -float(np.hypot(*(s.median if robust else s.mean))))[:n]


def measure_tracker(label: str, runner: ModelRunner, people: Sequence[AlignedPerson], progress: bool = False
                    ) -> list[ModelErrors]:
    """The tracker's :class:`ModelErrors`, one per decoding (:data:`DECODINGS`)."""
    preds = predict_crops(runner, people, progress, label)
    gts = [p.person for p in people]
    out = []
    for decoding in DECODINGS:
        score = pck(gts, preds[decoding])
        stats = keypoint_stats(person_offsets(people, preds[decoding]))
        for s in stats:
            s.pck = score.per_keypoint.get(s.name)
        out.append(ModelErrors(label, runner.label, decoding, "heatmap" in runner.output_roles, len(people),
                               score.pck, stats))
    return out


def mean_pose(people: Sequence[AlignedPerson]) -> np.ndarray:
    """(33, 2) mean ground-truth pose in the person's frame; NaN for points never annotated."""
    frames = np.stack([np.where(p.person.available[:, None], p.person_frame(p.person.keypoints), np.nan)
                       for p in people])
    counts = np.isfinite(frames[..., 0]).sum(axis=0)
    sums = np.nansum(frames, axis=0)
    return np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], np.nan)


# --------------------------------------------------------------------------------------------------------------
# Drawing


def _text(canvas: np.ndarray, text: str, at: tuple[int, int], size: float = 0.45, color=(0, 0, 0)) -> None:
    cv2.putText(canvas, text, at, cv2.FONT_HERSHEY_SIMPLEX, size, color, 1, cv2.LINE_AA)


def draw_panel(errors: ModelErrors, pose: np.ndarray, arrow_scale: float) -> np.ndarray:
    """One model's arrows on the body diagram, (H, W, 3) uint8 RGB."""
    w, h = PANEL
    canvas = np.full((h, w, 3), 255, np.uint8)
    known = np.isfinite(pose).all(axis=1)
    centre = np.nanmean(pose[known], axis=0) if known.any() else np.zeros(2)
    origin = np.array([w / 2, h / 2 + 20]) - centre * PX_PER_TORSO

    def px(p: np.ndarray) -> tuple[int, int]:
        q = origin + np.asarray(p) * PX_PER_TORSO
        return int(round(q[0])), int(round(q[1]))

    for a, b in BLAZEPOSE_33.edges:
        if known[a] and known[b]:
            cv2.line(canvas, px(pose[a]), px(pose[b]), (190, 190, 190), 2, cv2.LINE_AA)
    for s in errors.keypoints:
        k = BLAZEPOSE_33.index(s.name)
        if not known[k]:
            continue
        axes = tuple(max(1, int(round(v * PX_PER_TORSO))) for v in s.std)
        cv2.ellipse(canvas, px(pose[k]), axes, 0, 0, 360, (170, 200, 235), 1, cv2.LINE_AA)
        cv2.circle(canvas, px(pose[k]), 3, (60, 60, 60), -1, cv2.LINE_AA)
        for offset, color in ((s.median, MEDIAN_COLOR), (s.mean, MEAN_COLOR)):
            tip = pose[k] + arrow_scale * np.asarray(offset)
            cv2.arrowedLine(canvas, px(pose[k]), px(tip), color, 2, cv2.LINE_AA, tipLength=0.2)
    heading = f"{errors.label} ({errors.decoding}{'' if errors.has_heatmap else ', no heatmap'})"
    _text(canvas, heading, (8, 18), 0.5)
    _text(canvas, f"n={errors.num_people}  PCK@0.2 {errors.pck:.1f}", (8, 38))
    for y, robust in ((56, False), (74, True)):
        for s in errors.top_biases(1, robust):
            d = s.median if robust else s.mean
            _text(canvas, f"largest {'median' if robust else 'mean'}: {s.name} ({d[0]:+.3f}, {d[1]:+.3f}) torso",
                  (8, y))
    bar = int(round(0.1 * arrow_scale * PX_PER_TORSO))
    for y, color, what in ((h - 48, MEAN_COLOR, "mean"), (h - 30, MEDIAN_COLOR, "median")):
        cv2.arrowedLine(canvas, (10, y), (10 + bar, y), color, 2, cv2.LINE_AA, tipLength=0.2)
        _text(canvas, f"{what} offset 0.1 torso (arrows x{arrow_scale:g})", (16 + bar, y + 5))
    _text(canvas, "ellipses: 1 std, true scale; +x person's left, +y down", (8, h - 8), 0.4)
    return canvas


def draw_figure(results: Sequence[ModelErrors], pose: np.ndarray, arrow_scale: float) -> np.ndarray:
    """All panels: a column per model, a row per decoding."""
    labels = list(dict.fromkeys(r.label for r in results))
    rows = []
    for decoding in DECODINGS:
        by_label = {r.label: r for r in results if r.decoding == decoding}
        rows.append(np.concatenate([draw_panel(by_label[lb], pose, arrow_scale) for lb in labels], axis=1))
    figure = np.concatenate(rows, axis=0)
    for x in range(PANEL[0], figure.shape[1], PANEL[0]):
        figure[:, x - 1] = 0
    for y in range(PANEL[1], figure.shape[0], PANEL[1]):
        figure[y - 1] = 0
    return figure


# --------------------------------------------------------------------------------------------------------------
# Report


def markdown(results: Sequence[ModelErrors], info: dict, top: int = 5) -> str:
    """Summary tables: per model and decoding, PCK and the ``top`` largest biases; then every keypoint."""
    frame = ("+x the person's left (back views mirrored: " f"{info['num_mirrored']})" if info["mirror"]
             else "+x the ROI's right")
    lines = [f"Keypoint errors on {info['num_people']} ground-truth-aligned crops of {info['dataset']} (torso units, "
             f"person's frame: {frame}, +y down with the torso up).", "",
             "| model | decoding | PCK@0.2 | largest mean offsets (keypoint: (x, y) ± std x/y) | "
             "largest median offsets (keypoint: (x, y)) |",
             "|---|---|---:|---|---|"]
    for r in results:
        mean = "; ".join(f"{s.name} ({s.mean[0]:+.3f}, {s.mean[1]:+.3f}) ± {s.std[0]:.2f}/{s.std[1]:.2f}"
                         for s in r.top_biases(top))
        median = "; ".join(f"{s.name} ({s.median[0]:+.3f}, {s.median[1]:+.3f})" for s in r.top_biases(top, True))
        lines.append(f"| {r.label} | {r.decoding} | {r.pck:.1f} | {mean} | {median} |")
    names = [s.name for s in results[0].keypoints] if results else []
    lines += ["", "Mean offset (x, y) per keypoint, regressed / refined:", "",
              "| keypoint | " + " | ".join(dict.fromkeys(r.label for r in results)) + " |",
              "|---|" + "---:|" * len(dict.fromkeys(r.label for r in results))]
    cells: dict[tuple[str, str], dict[str, KeypointStats]] = {(r.label, r.decoding): {s.name: s for s in r.keypoints}
                                                               for r in results}
    for name in names:
        row = []
        for label in dict.fromkeys(r.label for r in results):
            parts = [cells.get((label, d), {}).get(name) for d in DECODINGS]
            row.append(" / ".join(f"({s.mean[0]:+.3f}, {s.mean[1]:+.3f})" if s else "n/a" for s in parts))
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def define_flags() -> None:
    """The command's flags (defined by ``__main__`` only: importing the module defines none)."""
    flags.DEFINE_string("annotations", str(DEFAULT_LSPET / "annotations.json"), "COCO-keypoints JSON.")
    flags.DEFINE_string("images", str(DEFAULT_LSPET / "images"), "Folder of its images.")
    flags.DEFINE_string("split", "test", "Split (splits.json beside --annotations; docs/design.md §8).")
    flags.DEFINE_integer("limit", None, "Use the first N scored images only.", lower_bound=1)
    flags.DEFINE_string("models", ",".join(TRACKERS), f"Trackers, among {', '.join(TRACKERS)}.")
    flags.DEFINE_string("landmarks", None, "Also measure this tracker (.tflite or .keras).")
    flags.DEFINE_float("arrow_scale", ARROW_SCALE, "How much the PNG's arrows magnify the mean offsets.",
                       lower_bound=0.1)
    flags.DEFINE_string("png", str(_REPO / "out" / "keypoint_errors.png"), "Arrow figure (PNG).")
    flags.DEFINE_string("json", str(_REPO / "out" / "keypoint_errors.json"), "All numbers (JSON).")
    flags.DEFINE_string("markdown", str(_REPO / "out" / "keypoint_errors.md"), "Summary tables (Markdown).")
    flags.DEFINE_bool("mirror", True, "Mirror the frame of people seen from behind so that +x is the person's left.")
    flags.DEFINE_bool("progress", True, "Show progress bars.")
    cli.define_overwrite_flag()


def _trackers(FLAGS) -> list[tuple[str, Path]]:
    keys = [t.strip() for t in FLAGS.models.split(",") if t.strip()]
    bad = [k for k in keys if k not in TRACKERS]
    if bad:
        raise UserError(f"--models must list names from {', '.join(TRACKERS)}, got {FLAGS.models!r}")
    out = [(MODELS[k].label, MODELS[k].shipped()) for k in dict.fromkeys(keys)]
    if FLAGS.landmarks:
        path = model_file(FLAGS.landmarks, "--landmarks file")
        out.append((path.name, path))
    if not out:
        raise UserError("nothing to measure: give --models and/or --landmarks")
    return out


def main(argv: list[str]) -> int:
    FLAGS = flags.FLAGS
    annotations, images = Path(FLAGS.annotations).expanduser(), Path(FLAGS.images).expanduser()
    check_data(annotations, images)
    cli.check_outputs([("--markdown", FLAGS.markdown), ("--json", FLAGS.json), ("--png", FLAGS.png)],
                      dataset_inputs(annotations, images) + [("--landmarks", FLAGS.landmarks)], overwrite=FLAGS.overwrite)
    trackers = _trackers(FLAGS)
    people = aligned_people(scored_records(load_coco_keypoints(annotations, images, split=FLAGS.split),
                                           FLAGS.limit), mirror=FLAGS.mirror)
    if not people:
        raise InputError(f"no scored person with a ground-truth alignment in {annotations} split {FLAGS.split!r}")
    results: list[ModelErrors] = []
    for label, path in trackers:
        results += measure_tracker(label, load_runner(path), people, FLAGS.progress)
    info = {"dataset": f"`{annotations}` split `{FLAGS.split}`", "num_people": len(people), "limit": FLAGS.limit,
            "mirror": FLAGS.mirror, "num_mirrored": sum(p.mirrored for p in people), "arrow_scale": FLAGS.arrow_scale,
            "models": {label: str(path) for label, path in trackers}}
    text = markdown(results, info)
    print(text, end="")
    write_outputs(FLAGS.markdown, text, FLAGS.json, info, results, FLAGS.overwrite)
    if FLAGS.png:
        try:
            Path(FLAGS.png).parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot write --png {FLAGS.png}: {e.strerror or e}") from None
        cli.check_still_replaceable("--png", FLAGS.png, FLAGS.overwrite, lost="the figure was not saved")
        save_image(FLAGS.png, draw_figure(results, mean_pose(people), FLAGS.arrow_scale))
        print(f"wrote {FLAGS.png}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    define_flags()
    cli.run(main)
