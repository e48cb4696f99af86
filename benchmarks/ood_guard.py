"""Out-of-domain guard (issue #16): does a model still find people, and keep MediaPipe's face, hands and feet, on
photos unlike LSPET?

    python -m benchmarks.ood_guard [--data ../shared/data/yoga_pose_photos] [--subset guard|all] [--limit N]
        [--models official,official_lite,ours,ours_lite] [--detector D] [--landmarks L]
        [--json out/ood_guard.json] [--markdown out/ood_guard.md] [--cache_dir DIR]

Data: the yoga photos (``--data``, default ``$BLAZEPOSE_TF_YOGA`` or ``../shared/data/yoga_pose_photos`` beside the
repository): a COCO-layout folder (``annotations.json`` naming the images, ``images/``; its annotations are empty
and unused) or a plain folder of images. Only the guard quarter of the photos is used (``--subset=guard``, by file
name: :func:`blazepose_tf.datasets.coco.is_guard_image`); the other three quarters are the ``train`` split that
``data.prepare`` writes for distillation when the photos come without a splits file, so a model trained on it is
never judged on photos it was trained on
(``--subset=all``: every photo). ``--limit N`` keeps the first N images.

Every model set (``--models``; ``--detector`` / ``--landmarks`` add one more pipeline, the role not given taken
from the reference set) runs as ``python -m blazepose_tf.track`` does on images: IMAGE mode, the runtime's
defaults (one pose, detection threshold 0.5, presence threshold 0.5, heatmap refinement). Reported per pipeline:

* **poses found**: share of the readable images where it returns a pose. Unreadable images (empty, truncated, not
  an image) are left out of every share, counted and named in the reports, with a ``warning:`` line; when none can
  be read the command stops with an ``error:`` line (exit 3) and writes no report;
* **agreement on the 21 points LSPET does not annotate** (face, hands, feet: the BlazePose-33 points whose name
  is not one of :data:`LSPET_KEYPOINTS`): on the images where both it and the reference (MediaPipe's detector +
  Full, the ``official`` set) find a pose, the share of those points within ``--threshold`` (0.1) × torso of the
  reference's prediction, torso = the reference pose's mid-shoulder ↔ mid-hip distance
  (:func:`blazepose_tf.metrics.pck` with the reference as ground truth). Fine-tuning on LSPET should not move
  these points: a drop means forgetting. The same share on the 12 annotated points is reported for information
  (they are meant to move toward LSP's labelling).

Predictions are cached per pipeline under ``~/.cache/blazepose_tf/ood_guard/`` (``--cache_dir``), one JSON file
keyed by the sha256 of the detector and landmark files and the runtime settings, entries keyed by the sha256 of
each image's bytes: a rerun only runs what is new. :func:`measure` is the library entry point
(``benchmarks.model_zoo`` calls it for its yoga columns).

Exit codes: 0 ok; 2 bad flags; 3 data missing or without images; 4 a model missing or breaking the I/O contract.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:  # allow `python benchmarks/ood_guard.py`
    sys.path.insert(0, str(_REPO))

import numpy as np  # noqa: E402
from absl import flags  # noqa: E402
from tqdm import tqdm  # noqa: E402

from blazepose_tf import cli, contract, zoo  # noqa: E402
from blazepose_tf.datasets.coco import GUARD_SPLIT, unlabelled_photos  # noqa: E402
from blazepose_tf.errors import InputError, UserError, model_file  # noqa: E402
from blazepose_tf.io.images import IMAGE_EXTENSIONS, decode_image, read_input_bytes  # noqa: E402
from blazepose_tf.io.video import write_bytes_atomic  # noqa: E402
from blazepose_tf.metrics import (AGREEMENT_THRESHOLD, ANNOTATED, LSPET_KEYPOINTS, UNANNOTATED,  # noqa: E402,F401
                                  UNANNOTATED_GROUPS, count_share, pck)
from blazepose_tf.official import cache_dir as official_cache_dir  # noqa: E402
from blazepose_tf.runtime.pipeline import PoseTracker  # noqa: E402
from blazepose_tf.runtime.runners import load_runner  # noqa: E402
from blazepose_tf.topology import BLAZEPOSE_33  # noqa: E402
from blazepose_tf.types import Pose  # noqa: E402

DEFAULT_YOGA = Path(os.environ.get("BLAZEPOSE_TF_YOGA") or _REPO.parent / "shared" / "data" / "yoga_pose_photos")
REFERENCE_SET = "official"
DEFAULT_SETS: tuple[str, ...] = ("official", "official_lite", "ours", "ours_lite")
THRESHOLD = AGREEMENT_THRESHOLD
#: The runtime's IMAGE-mode defaults (``python -m blazepose_tf.track``); part of the cache key.
SETTINGS = {"mode": "image", "num_poses": 1, "min_detection_confidence": 0.5, "min_presence": 0.5,
            "refine_heatmap": True, "roi_passes": contract.IMAGE_ROI_PASSES}
CACHE_VERSION = 1  # bump when what the runtime predicts for the same files changes
SAVE_EVERY = 200   # images between cache writes (an interrupted run keeps its work)

# One image's outcome: (33, 2) pixel keypoints of the first pose, None (no pose), or why the image is unreadable.
Outcome = Union[np.ndarray, None, str]


@dataclass(frozen=True)
class Pipeline:
    """A detector + landmark model pair, run as the runtime does on images."""

    label: str
    detector: Path
    landmarks: Path

    def tracker(self, num_threads: int = 1) -> PoseTracker:
        """The IMAGE-mode :class:`PoseTracker` with the runtime's defaults (:data:`SETTINGS`)."""
        return PoseTracker(load_runner(self.detector, num_threads), load_runner(self.landmarks, num_threads),
                           mode=SETTINGS["mode"], num_poses=SETTINGS["num_poses"],
                           min_detection_confidence=SETTINGS["min_detection_confidence"],
                           min_presence=SETTINGS["min_presence"], refine_heatmap=SETTINGS["refine_heatmap"],
                           roi_passes=SETTINGS["roi_passes"])

    def cache_key(self) -> str:
        """sha256 of both files and the settings (first 16 hex digits)."""
        text = json.dumps({"v": CACHE_VERSION, "detector": zoo.file_sha256(self.detector),
                           "landmarks": zoo.file_sha256(self.landmarks), "settings": SETTINGS}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def model_set_pipeline(name: str) -> Pipeline:
    """The pipeline of a named model set (:data:`blazepose_tf.zoo.MODEL_SETS`), its files verified."""
    det, lmk = zoo.model_set(name)
    return Pipeline(name, det, lmk)


@dataclass
class GuardResult:
    """One pipeline's guard numbers (shares are 0-1; None when nothing could be compared)."""

    label: str
    detector: str
    landmarks: str
    num_images: int
    num_readable: int                               # images it could read
    num_found: int
    found: float                                    # poses found / readable images (NaN: none readable)
    num_compared: int                               # images where it and the reference both found a pose
    agreement: Optional[float]                      # the 21 unannotated points
    agreement_annotated: Optional[float]            # the 12 annotated points (information)
    agreement_groups: dict[str, Optional[float]] = field(default_factory=dict)   # face / hands / feet
    per_keypoint: dict[str, Optional[float]] = field(default_factory=dict)
    errors: int = 0                                 # unreadable images
    unreadable: list[str] = field(default_factory=list)   # why each unreadable image could not be read


SUBSETS = (GUARD_SPLIT, "all")


def default_cache_dir() -> Path:
    """``~/.cache/blazepose_tf/ood_guard`` (beside the official models' cache; ``$BLAZEPOSE_TF_CACHE`` moves it)."""
    return official_cache_dir().parent / "ood_guard"


def image_files(data: str | os.PathLike, limit: Optional[int] = None,
                how: str = "pass --data or set BLAZEPOSE_TF_YOGA", subset: str = GUARD_SPLIT) -> list[Path]:
    """The guard's images (:func:`blazepose_tf.datasets.coco.unlabelled_photos`): with ``subset="guard"`` only the
    quarter that training never sees (``"all"``: every image); the first ``limit``.

    Raises:
        InputError: the folder does not exist or holds no image (one line naming it, ending with ``how`` to fix it).
    """
    if subset not in SUBSETS:
        raise UserError(f"subset must be one of {', '.join(SUBSETS)}, got {subset!r}")
    files = unlabelled_photos(data, IMAGE_EXTENSIONS, subset, how="the guard uses the yoga photos, "
                              f"../shared/data/yoga_pose_photos beside the repository; {how}")
    return files[:limit] if limit else files


def run_images(process: Callable[[np.ndarray], list[Pose]], images: Sequence[Path], progress: bool = False,
               desc: str = "images") -> list[Outcome]:
    """``process`` (image → poses) on every image: its :data:`Outcome`."""
    out: list[Outcome] = []
    for path in tqdm(images, desc=desc, unit="img", disable=not progress, file=sys.stderr):
        try:
            poses = process(decode_image(read_input_bytes(path, "image"), str(path)))
        except InputError as e:
            out.append(str(e))
            continue
        out.append(np.asarray(poses[0].keypoints, np.float64)[:, :2] if poses else None)
    return out


def keypoints(outcome: object) -> Optional[np.ndarray]:
    """The (33, 2) keypoints of an :data:`Outcome` (or of its cached JSON form), None without a pose."""
    if isinstance(outcome, (list, np.ndarray)):
        return np.asarray(outcome, np.float64)
    return None


def _cache_path(pipeline: Pipeline, cache_dir: Path) -> Path:
    return cache_dir / f"{pipeline.cache_key()}.json"


def _load_cache(path: Path) -> dict[str, object]:
    try:
        doc = json.loads(path.read_text())
        if doc.get("version") != CACHE_VERSION:
            return {}
        # why an image could not be read is found again each run (caches written before kept it as a string)
        return {k: v for k, v in dict(doc["predictions"]).items() if not isinstance(v, str)}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}  # absent or damaged: recomputed


def _save_cache(path: Path, pipeline: Pipeline, entries: dict[str, object]) -> None:
    doc = {"version": CACHE_VERSION, "detector": {"file": str(pipeline.detector),
                                                  "sha256": zoo.file_sha256(pipeline.detector)},
           "landmarks": {"file": str(pipeline.landmarks), "sha256": zoo.file_sha256(pipeline.landmarks)},
           "settings": SETTINGS, "predictions": entries}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, json.dumps(doc, separators=(",", ":")).encode())


def _image_key(path: Path) -> str:
    """sha256 of the image's bytes (the path for a file that cannot be read)."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return f"unreadable:{path}"


def cached_predictions(pipeline: Pipeline, images: Sequence[Path], cache_dir: Optional[Path] = None,
                       progress: bool = False, num_threads: int = 1) -> list[Outcome]:
    """The pipeline's :data:`Outcome` on every image, from the cache where it has them; the rest is run (the
    models load only then, for the first readable one) and added to the cache, which is written every
    :data:`SAVE_EVERY` images. Why an image could not be read is not cached: it is found again, naming this run's
    file."""
    path = _cache_path(pipeline, Path(cache_dir or default_cache_dir()))
    entries = _load_cache(path)
    keys = [_image_key(p) for p in images]
    todo = list(dict.fromkeys(k for k in keys if k not in entries))
    first = {k: images[i] for i, k in reversed(list(enumerate(keys)))}
    unreadable: dict[str, str] = {}
    tracker: Optional[PoseTracker] = None

    def process(image: np.ndarray) -> list[Pose]:
        nonlocal tracker
        if tracker is None:   # the models load for the first readable image
            tracker = pipeline.tracker(num_threads)
        return tracker.process(image)

    if todo:
        for start in range(0, len(todo), SAVE_EVERY):
            chunk = todo[start:start + SAVE_EVERY]
            outcomes = run_images(process, [first[k] for k in chunk], progress,
                                  f"{pipeline.label} ({start + len(chunk)}/{len(todo)} new)")
            for k, o in zip(chunk, outcomes):
                if isinstance(o, str):
                    unreadable[k] = o
                else:
                    entries[k] = np.round(o, 2).tolist() if isinstance(o, np.ndarray) else o
            if any(k in entries for k in chunk):   # something new to keep
                _save_cache(path, pipeline, entries)
    out = {**entries, **unreadable}
    return [out[k] if isinstance(out[k], str) else keypoints(out[k]) for k in keys]


def compare(label: str, reference: Sequence[Outcome], outcomes: Sequence[Outcome], threshold: float = THRESHOLD,
            detector: str = "", landmarks: str = "") -> GuardResult:
    """Guard numbers of ``outcomes`` against the ``reference`` pipeline's (aligned per image); the images it could
    not read are left out of every share (``found``: poses found / readable images)."""
    if len(reference) != len(outcomes):
        raise ValueError(f"{len(reference)} reference outcomes for {len(outcomes)} images")
    predictions = [keypoints(o) for o in outcomes]
    pairs = [(r, p) for r, p in zip(map(keypoints, reference), predictions) if r is not None and p is not None]
    everywhere = np.ones(BLAZEPOSE_33.num_keypoints, bool)
    counts = pck([(r, everywhere) for r, _ in pairs], [p for _, p in pairs], threshold=threshold).keypoint_counts
    found = sum(p is not None for p in predictions)
    unreadable = [o for o in outcomes if isinstance(o, str)]
    readable = len(predictions) - len(unreadable)
    return GuardResult(
        label=label, detector=detector, landmarks=landmarks, num_images=len(predictions), num_readable=readable,
        num_found=found, found=found / readable if readable else math.nan, num_compared=len(pairs),
        agreement=count_share(counts, UNANNOTATED), agreement_annotated=count_share(counts, ANNOTATED),
        agreement_groups={g: count_share(counts, names) for g, names in UNANNOTATED_GROUPS.items()},
        per_keypoint={n: count_share(counts, (n,)) for n in BLAZEPOSE_33.keypoints},
        errors=len(unreadable), unreadable=unreadable)


def measure(pipelines: Sequence[Pipeline], images: Sequence[Path], reference: Optional[Pipeline] = None,
            cache_dir: Optional[Path] = None, progress: bool = False, threshold: float = THRESHOLD,
            num_threads: int = 1) -> list[GuardResult]:
    """The guard of every pipeline on ``images`` against ``reference`` (default: the ``official`` set), cached
    (:func:`cached_predictions`)."""
    reference = reference or model_set_pipeline(REFERENCE_SET)
    ref = cached_predictions(reference, images, cache_dir, progress, num_threads)
    return [compare(p.label, ref, cached_predictions(p, images, cache_dir, progress, num_threads), threshold,
                    str(p.detector), str(p.landmarks)) for p in pipelines]


# --------------------------------------------------------------------------------------------------------------
# Report


def _pct(x: Optional[float]) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:.1f}"


def markdown(results: Sequence[GuardResult], info: dict) -> str:
    """The guard table (percentages) with what it measures."""
    which = {GUARD_SPLIT: "the guard quarter (never trained on) of ", "all": "every photo of "}.get(
        info.get("subset"), "")
    n, bad = info["num_images"], info.get("unreadable") or []
    photos = f"{n} photos" if not bad else (f"{n - len(bad)} readable photos ({len(bad)} of the {n} could not be "
                                            f"read and are left out of every share; first: {bad[0]})")
    lines = [f"Out-of-domain guard on {photos}, {which}`{info['data']}` (IMAGE mode, runtime defaults). Poses "
             f"found: share of the readable photos where the pipeline finds one. Agreement: share of points within "
             f"{info['threshold']:g} × torso of MediaPipe's Full (detector + Full) on the images where both find a "
             f"pose; 21 points = those LSPET does not annotate "
             f"(face {len(UNANNOTATED_GROUPS['face'])}, hands {len(UNANNOTATED_GROUPS['hands'])}, feet "
             f"{len(UNANNOTATED_GROUPS['feet'])}); 12 annotated points for information.", "",
             "| pipeline | poses found % | compared | agreement 21 pts % | face | hands | feet | "
             "agreement 12 annotated % |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r.label} | {_pct(r.found)} | {r.num_compared} | {_pct(r.agreement)} | "
                     + " | ".join(_pct(r.agreement_groups.get(g)) for g in UNANNOTATED_GROUPS)
                     + f" | {_pct(r.agreement_annotated)} |")
    return "\n".join(lines) + "\n"


def write_outputs(markdown_path: Optional[str], text: str, json_path: Optional[str], info: dict,
                  results: Sequence[object], overwrite: Optional[bool] = None) -> None:
    """Writes a benchmark's Markdown ``text`` (``--markdown``) and its ``{"info", "results"}`` JSON (``--json``,
    dataclass rows) as :func:`write_reports` does."""
    write_reports([("--markdown", markdown_path, text),
                   ("--json", json_path, {"info": info, "results": [asdict(r) for r in results]})], overwrite)


def write_reports(reports: Sequence[tuple[str, Optional[str | Path], str | dict]],
                  overwrite: Optional[bool] = None) -> None:
    """Writes each ``(flag, path, content)`` atomically, creating its folder (an empty or None path is skipped):
    Markdown text, or a dict as indented JSON; with blazepose_tf's mark (:mod:`blazepose_tf.io.provenance`: a
    rerun may replace it). With ``overwrite`` given (the command's ``--overwrite``), every path is checked again
    before any is written, so a file a user put at one of them during the run is kept and no report is written.
    The commands check the paths first (:func:`blazepose_tf.cli.check_outputs`), so a failure here is a full disk,
    or such a file: one line, exit 2."""
    reports = [(flag, target, content) for flag, target, content in reports if target]
    if overwrite is not None:
        for flag, target, _ in reports:
            cli.check_still_replaceable(flag, target, overwrite, lost=cli.NOT_SAVED)
    for flag, target, content in reports:
        cli.write_marked(target, content, flag, overwrite=overwrite)
        print(f"wrote {target}", file=sys.stderr)


def define_flags() -> None:
    """The command's flags (defined by ``__main__`` only: importing the module defines none)."""
    flags.DEFINE_string("data", str(DEFAULT_YOGA), "Folder of out-of-domain photos (COCO layout or plain images).")
    flags.DEFINE_enum("subset", GUARD_SPLIT, list(SUBSETS), "guard: only the quarter of the photos kept out of "
                      "training (data.prepare's guard split of unlabelled photos); all: every photo.")
    flags.DEFINE_integer("limit", None, "Use the first N images only (default: all).", lower_bound=1)
    flags.DEFINE_string("models", ",".join(DEFAULT_SETS), f"Model sets, among {', '.join(zoo.MODEL_SETS)}.")
    flags.DEFINE_string("detector", None, "Add a pipeline with this detector (.tflite/.keras; landmarks default to "
                        "the reference set's).")
    flags.DEFINE_string("landmarks", None, "Add a pipeline with this landmark model (.tflite/.keras; detector "
                        "defaults to the reference set's).")
    flags.DEFINE_float("threshold", THRESHOLD, "Agreement radius in reference torso lengths.", lower_bound=0.0)
    flags.DEFINE_string("json", str(_REPO / "out" / "ood_guard.json"), "Where to write the results as JSON.")
    flags.DEFINE_string("markdown", str(_REPO / "out" / "ood_guard.md"), "Where to write the Markdown table.")
    flags.DEFINE_string("cache_dir", None, "Prediction cache (default ~/.cache/blazepose_tf/ood_guard).")
    flags.DEFINE_integer("num_threads", 1, "CPU threads for TFLite inference.", lower_bound=1)
    flags.DEFINE_bool("progress", True, "Show progress bars.")
    cli.define_overwrite_flag()


def _pipelines(FLAGS) -> list[Pipeline]:
    names = [t.strip() for t in FLAGS.models.split(",") if t.strip()]
    bad = [n for n in names if n not in zoo.MODEL_SETS]
    if bad:
        raise UserError(f"--models must list names from {', '.join(zoo.MODEL_SETS)}, got {FLAGS.models!r}")
    out = [model_set_pipeline(n) for n in dict.fromkeys(names)]
    if FLAGS.detector or FLAGS.landmarks:
        ref = model_set_pipeline(REFERENCE_SET)
        det = model_file(FLAGS.detector, "--detector file") if FLAGS.detector else ref.detector
        lmk = model_file(FLAGS.landmarks, "--landmarks file") if FLAGS.landmarks else ref.landmarks
        out.append(Pipeline(f"{det.name} + {lmk.name}", det, lmk))
    if not out:
        raise UserError("nothing to measure: give --models and/or --detector/--landmarks")
    return out


def unreadable_images(results: Sequence[GuardResult]) -> list[str]:
    """Why each image the pipelines could not read failed (the longest list of ``results``: reading an image does
    not depend on the pipeline)."""
    return max((r.unreadable for r in results), key=len, default=[])


def main(argv: list[str]) -> int:
    """Measures every pipeline's guard and writes the reports (module docstring)."""
    FLAGS = flags.FLAGS
    cli.check_outputs([("--markdown", FLAGS.markdown), ("--json", FLAGS.json)],
                      [("--data", FLAGS.data), ("--detector", FLAGS.detector), ("--landmarks", FLAGS.landmarks)],
                      overwrite=FLAGS.overwrite)
    cache = Path(FLAGS.cache_dir).expanduser() if FLAGS.cache_dir else default_cache_dir()
    if cache.exists() and not cache.is_dir():
        raise UserError(f"--cache_dir {cache} is a file, not a folder")
    cli.check_output_folder(cache / "prediction.json", "--cache_dir")
    images = image_files(FLAGS.data, FLAGS.limit, subset=FLAGS.subset)
    pipelines = _pipelines(FLAGS)
    results = measure(pipelines, images, cache_dir=cache, progress=FLAGS.progress, threshold=FLAGS.threshold,
                      num_threads=FLAGS.num_threads)
    unreadable = unreadable_images(results)
    if unreadable and len(unreadable) >= len(images):   # earlier reports are kept: this run measured nothing
        raise InputError(f"none of the {len(images)} photos of --data {FLAGS.data} could be read; first: "
                         f"{unreadable[0]}")
    if unreadable:
        print(f"warning: {len(unreadable)} of the {len(images)} photos could not be read and are left out of every "
              f"share; first: {unreadable[0]}", file=sys.stderr)
    info = {"data": str(Path(FLAGS.data)), "subset": FLAGS.subset, "num_images": len(images),
            "num_readable": len(images) - len(unreadable), "unreadable": unreadable, "limit": FLAGS.limit,
            "threshold": FLAGS.threshold, "reference": REFERENCE_SET, "settings": SETTINGS,
            "unannotated": list(UNANNOTATED), "annotated": list(ANNOTATED), "cache_dir": str(cache)}
    text = markdown(results, info)
    print(text, end="")
    write_outputs(FLAGS.markdown, text, FLAGS.json, info, results, FLAGS.overwrite)
    return 0


if __name__ == "__main__":
    define_flags()
    cli.run(main)
