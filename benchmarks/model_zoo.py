"""The model-zoo table: writes ``MODEL_ZOO.md`` (top level) from measurements, never from typed-in numbers.

    python -m benchmarks.model_zoo [--limit N] [--output MODEL_ZOO.md] [--json zoo.json] [--runs 1000]
        [--models official_detector,official_full,official_lite,detector,full,lite]
        [--quantizations fp32,fp16,dynamic,int8]
        [--skip_int8] [--num_calibration 200] [--nocrop_pck] [--annotations A.json --images DIR --split test]
        [--yoga ../shared/data/yoga_pose_photos | --noyoga_guard]

Models: MediaPipe's detector, Full and Lite landmark models (the reference rows; the Lite is the file this
package carries) and the zoo's detector, Full and Lite (:mod:`blazepose_tf.zoo`). Quantizations: ``fp16`` is the
shipped file itself (MediaPipe's .tflite, which stores fp16 weights, or the zoo's fp16 export); ``fp32``,
``dynamic`` and ``int8`` are exported from the Keras model (MediaPipe's models converted by
:mod:`blazepose_tf.models.convert_official`, the zoo's ``.keras``) with :func:`export.to_tflite.export_model`
into ``--cache_dir`` (reused while the source and settings are unchanged; int8 calibrated on ``--num_calibration``
GT-aligned crops / letterboxed images of the ``train`` split). A tracker export keeps the heatmap output exactly
when the shipped file has one.

Columns, all measured in this run:

* params (BatchNorm folded, as exported) and FLOPs (2 × MACs of Conv2D/DepthwiseConv2D/Dense) of the Keras
  model (:mod:`blazepose_tf.models.summary`); file size;
* host latency at 1 thread (ai-edge-litert + XNNPACK, :func:`export.bench.measure`, every file interleaved in
  one run) and its ratio to MediaPipe's ``pose_landmark_full.tflite`` measured in the same run;
* trackers: PCK@0.2 overall and per group (face / arms / legs; LSPET annotates no face point), detection rate
  and COCO keypoint AP of the whole pipeline (:func:`blazepose_tf.evaluation.evaluate`, IMAGE mode, detection
  threshold 0.5, as ``python -m blazepose_tf.evaluate``) with the set's shipped detector (official →
  MediaPipe's, ours → the zoo's), and PCK@0.2 on ground-truth-aligned crops (no detector;
  :func:`export.to_tflite.tracker_pck`);
* trackers: the out-of-domain guard on the yoga photos (:mod:`benchmarks.ood_guard`, its cached predictions):
  share of photos where the pipeline finds a pose, and agreement with MediaPipe's detector + Full on the 21 points
  LSPET does not annotate (face, hands, feet);
* detectors: detection rate (and the pipeline's PCK@0.2 and AP) with MediaPipe's Full landmark model.
* ours against the official models (:mod:`benchmarks.zoo_comparisons`): PCK@0.2 differences of the shipped
  files on the same people, with 95 % paired bootstrap intervals.

Evaluation on ``--split`` (default LSPET ``test``, ``../shared/data/lspet``; the protocol of docs/design.md §8:
checkpoints and settings are chosen on ``dev``, numbers are reported on ``test``): the first ``--limit`` scored
images (default all) for the pipeline, as many crops spread over the split for the crop PCK; the guard on the first
``--limit`` yoga photos (default all; ``--yoga``, ``--noyoga_guard`` to leave it out).

This module measures; the table's rows and their Markdown are :mod:`benchmarks.zoo_table`'s.

Exit codes: 0 ok; 2 bad flags; 3 dataset (or yoga photos) missing or without scorable images; 4 a model is missing
(e.g. a zoo model not published: restrict ``--models``) or unfetchable.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:  # allow `python benchmarks/model_zoo.py`
    sys.path.insert(0, str(_REPO))

from absl import flags  # noqa: E402

from benchmarks import ood_guard, zoo_comparisons  # noqa: E402
from benchmarks.zoo_table import GROUPS, REPORTED_SPLIT, Row, render  # noqa: E402
from blazepose_tf import cli, contract  # noqa: E402
from blazepose_tf.errors import InputError, UserError  # noqa: E402

DEFAULT_LSPET = Path(os.environ.get("BLAZEPOSE_TF_LSPET") or _REPO.parent / "shared" / "data" / "lspet")
# Table label -> export.to_tflite --quantize name: the table says "fp32" for float32 weights ("none" in export).
EXPORT_MODE = {("fp32" if q == "none" else q): q for q in contract.QUANTIZATIONS}
QUANTIZATIONS = tuple(EXPORT_MODE)
REFERENCE = "official:pose_landmark_full"
EXPORT_VERSION = 3  # bump to invalidate cached exports (3: percentile ranges, layer bias correction)
COMMAND_LINE: list[str] = ["benchmarks/model_zoo.py"]  # the command line, for the file header


@dataclass(frozen=True)
class ZooModel:
    """One model of the table."""

    key: str
    label: str
    kind: str                        # detector | tracker
    spec: str                        # official:NAME | zoo:NAME (blazepose_tf.zoo.resolve); also its latency label
    partner: Optional[str] = None    # trackers: the detector (model key) of their set

    def shipped(self) -> Path:
        """The fp16 .tflite the runtime uses (MediaPipe's file, or the zoo's), verified."""
        from blazepose_tf.zoo import resolve
        return resolve(self.spec, "tflite")

    def keras(self) -> Path:
        """The Keras source of the fp32/dynamic/int8 exports (official: converted on first use)."""
        from blazepose_tf.zoo import resolve
        return resolve(self.spec, "keras")


MODELS: dict[str, ZooModel] = {m.key: m for m in (
    ZooModel("official_detector", "official detector", "detector", "official:pose_detection"),
    ZooModel("official_full", "official Full", "tracker", REFERENCE, partner="official_detector"),
    ZooModel("official_lite", "official Lite", "tracker", "official:pose_landmark_lite", partner="official_detector"),
    ZooModel("detector", "ours detector", "detector", "zoo:detector"),
    ZooModel("full", "ours Full", "tracker", "zoo:full", partner="detector"),
    ZooModel("lite", "ours Lite", "tracker", "zoo:lite", partner="detector"),
)}

FLAGS = flags.FLAGS


def log(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)


def _list(text: str, known, what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in known]
    if bad or not items:
        raise UserError(f"{what} must list names from {', '.join(known)}, got {text!r}")
    return list(dict.fromkeys(items))


def check_data(annotations: Path, images: Path) -> None:
    """Exit 3 (InputError) with one line when the evaluation data is absent."""
    if not annotations.is_file():
        raise InputError(f"evaluation data not found: {annotations} does not exist (the model zoo is measured on "
                         "LSPET, ../shared/data/lspet; pass --annotations and --images)")
    if not images.is_dir():
        raise InputError(f"evaluation images not found: {images} is not a folder (pass --images)")


def dataset_inputs(annotations: Path, images: Path) -> list[tuple[str, Path]]:
    """The input files and folder of an annotated dataset (the splits file beside the annotations included), as
    :func:`blazepose_tf.cli.check_outputs` takes them: no report may be written over or into them."""
    return [("--annotations", annotations), ("--splits", annotations.with_name("splits.json")), ("--images", images)]


def cache_root() -> Path:
    if FLAGS.cache_dir:
        return Path(FLAGS.cache_dir).expanduser()
    from blazepose_tf.official import cache_dir
    return cache_dir().parent / "model_zoo"


def machine() -> dict[str, Any]:
    """CPU model, logical CPUs, load average, runtime versions."""
    import importlib.metadata as md

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for pkg in ("ai-edge-litert", "tensorflow"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = "?"
    try:
        load = round(os.getloadavg()[0], 2)
    except OSError:
        load = None
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "load_1min": load, "python": platform.python_version(),
            **versions}


# --------------------------------------------------------------------------------------------------------------
# Files: shipped fp16 files, cached exports, Keras statistics


def _sha(path: Path) -> str:
    from blazepose_tf.zoo import file_sha256
    return file_sha256(path)


def has_heatmap(path: Path) -> bool:
    from blazepose_tf.runtime.runners import TFLiteRunner
    return "heatmap" in TFLiteRunner(path).output_roles


def export_variant(model: ZooModel, keras_model, source: Path, quant: str, keep_heatmap: bool,
                   representative: str) -> Path:
    """The ``quant`` export of ``model`` (cached by source hash and settings)."""
    from export.to_tflite import export_model

    settings = {"v": EXPORT_VERSION, "source": _sha(source), "quant": quant, "heatmap": keep_heatmap,
                "calibration": [representative, FLAGS.num_calibration] if quant == "int8" else None}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    folder = cache_root()
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{model.key}_{quant}_{key}.tflite"
    if out.is_file():
        log(f"[{model.key}] {quant}: cached {out}")
        return out
    log(f"[{model.key}] exporting {quant} ...")
    export_model(keras_model, out, EXPORT_MODE[quant], overwrite=True,  # its own cache folder
                 representative=representative if quant == "int8" else None,
                 num_calibration=FLAGS.num_calibration, num_eval=8, keep_heatmap=keep_heatmap, kind=model.kind,
                 name=f"{model.key}_{quant}", source=source.name, log=lambda *a: log(*a))
    return out


def build_rows(keys: list[str], quants: list[str], representative: str) -> list[Row]:
    """Resolves, measures (params, FLOPs, size) and exports every (model, quantization)."""
    from export.to_tflite import ConversionError, load_keras_model

    from blazepose_tf.models.summary import count_macs, folded_params

    rows: list[Row] = []
    for key in keys:
        m = MODELS[key]
        shipped = m.shipped()
        source = m.keras()
        keras_model = load_keras_model(source)
        params, flops = folded_params(keras_model), 2 * count_macs(keras_model)
        heatmap = m.kind == "tracker" and has_heatmap(shipped)
        for quant in quants:
            row = Row(model=key, label=m.label, kind=m.kind, quantization=quant, params=params, flops=flops,
                      file="export")
            if quant == "fp16":
                row.file = "MediaPipe file" if key.startswith("official") else "zoo file"
                row.path = str(shipped)
            else:
                try:
                    row.path = str(export_variant(m, keras_model, source, quant, heatmap, representative))
                except ConversionError as e:
                    row.error = str(e)
                    log(f"warning: [{key}] {quant} export failed: {e}")
            if row.path:
                row.size_bytes = os.path.getsize(row.path)
            rows.append(row)
        del keras_model
    return rows


# --------------------------------------------------------------------------------------------------------------
# Latency, pipeline evaluation, crop PCK


def latency_label(row: Row) -> str:
    return MODELS[row.model].spec if row.file != "export" else f"{row.model}:{row.quantization}"


def measure_latency(rows: list[Row]) -> None:
    """1-thread latency of every file (and of the reference) in one interleaved run; ratios to the reference."""
    from export.bench import add_ratios, measure

    models = [(latency_label(r), r.path) for r in rows if r.path]
    labels = {label for label, _ in models}
    if REFERENCE not in labels:
        models.append((REFERENCE, str(MODELS["official_full"].shipped())))
    log(f"timing {len(models)} models at 1 thread ({FLAGS.runs} runs each, {FLAGS.rounds} interleaved rounds) ...")
    results = measure(models, threads=[1], runs=FLAGS.runs, warmup=FLAGS.warmup, rounds=FLAGS.rounds)
    add_ratios(results, REFERENCE)
    by_label = {r.model: r for r in results}
    for row in rows:
        if row.path:
            lat = by_label[latency_label(row)]
            row.latency_ms, row.latency_p90_ms, row.ratio = lat.median_ms, lat.p90_ms, lat.ratio


class Evaluator:
    """Runs the pipeline on the evaluation records, once per (detector, landmarks) pair."""

    def __init__(self, records):
        self.records = records
        self._cache: dict[tuple[str, str], Any] = {}

    def __call__(self, detector: str, landmarks: str):
        from blazepose_tf.evaluation import evaluate
        from blazepose_tf.runtime.pipeline import PoseTracker
        from blazepose_tf.runtime.runners import load_runner

        key = (detector, landmarks)
        if key not in self._cache:
            tracker = PoseTracker(load_runner(detector, 1), load_runner(landmarks, 1), mode="image", num_poses=1,
                                  min_detection_confidence=0.5)
            self._cache[key] = evaluate(tracker.process, self.records, progress=FLAGS.progress,
                                        desc=f"{Path(detector).stem} + {Path(landmarks).stem}")
        return self._cache[key]


def _finite(x: Optional[float]) -> Optional[float]:
    import math
    return float(x) if x is not None and math.isfinite(float(x)) else None


def evaluate_rows(rows: list[Row], records, crop_spec: Optional[str]) -> "Evaluator":
    """Pipeline metrics for every row, crop PCK for trackers; returns the evaluator (its pipelines cached)."""
    from export.bench import input_range
    from export.representative import load_samples
    from export.to_tflite import tflite_outputs, tracker_pck

    shipped: dict[str, str] = {}

    def shipped_path(key: str) -> str:
        if key not in shipped:
            shipped[key] = str(MODELS[key].shipped())
        return shipped[key]

    evaluator = Evaluator(records)
    samples: dict[tuple, list] = {}
    for row in rows:
        if not row.path:
            continue
        if row.kind == "tracker":
            det, lmk = shipped_path(MODELS[row.model].partner), row.path
        else:
            det, lmk = row.path, shipped_path("official_full")
        log(f"[{row.model} {row.quantization}] pipeline on {len(records)} images ...")
        result = evaluator(det, lmk)
        row.pipeline = {"detector": det, "landmarks": lmk}
        row.pck = _finite(result.pck.pck)
        row.per_group = {g: _finite(result.pck.per_group.get(g)) for g in GROUPS}
        row.detection_rate = _finite(result.pck.detection_rate)
        row.ap = _finite(result.coco.get("AP"))
        if row.kind == "tracker" and row.quantization == "fp16":  # the tracker alone, same detector for all
            official_det = shipped_path("official_detector")
            same = result if det == official_det else evaluator(official_det, lmk)
            row.pck_official_detector = _finite(same.pck.pck)
        if row.kind == "tracker" and crop_spec:
            from blazepose_tf.runtime.runners import TFLiteRunner

            hw = TFLiteRunner(row.path).input_shape[:2]
            rng = input_range(row.path)
            skey = (hw, rng)
            if skey not in samples:
                log(f"loading {len(records)} GT-aligned {hw[0]}x{hw[1]} crops of {crop_spec} ...")
                samples[skey] = load_samples(crop_spec, "tracker", hw, rng, len(records))
            crops = samples[skey]
            import numpy as np

            out = tflite_outputs(row.path, np.concatenate([s.tensor for s in crops], axis=0))
            score = tracker_pck(out["landmarks"], crops, input_size=hw[1])
            row.crop_pck = _finite(score["pck"]) if score else None
    return evaluator


def guard_rows(rows: list[Row], images: list[Path]) -> None:
    """The yoga guard (:func:`benchmarks.ood_guard.measure`, cached) of every tracker row behind its set's shipped
    detector, against MediaPipe's detector + Full."""
    tracker_rows = [r for r in rows if r.kind == "tracker" and r.path]
    pipelines = [ood_guard.Pipeline(f"{r.label} {r.quantization}", MODELS[MODELS[r.model].partner].shipped(),
                                    Path(r.path)) for r in tracker_rows]
    reference = ood_guard.Pipeline("official", MODELS["official_detector"].shipped(),
                                   MODELS["official_full"].shipped())
    log(f"yoga guard: {len(pipelines)} pipelines on {len(images)} photos (cached predictions are reused) ...")
    for row, result in zip(tracker_rows, ood_guard.measure(pipelines, images, reference, progress=FLAGS.progress)):
        row.yoga_found = 100 * result.found
        row.yoga_agreement = None if result.agreement is None else 100 * result.agreement


# --------------------------------------------------------------------------------------------------------------


def define_flags() -> None:
    """The command's absl flags (defined by ``__main__`` only: importing the module defines none)."""
    flags.DEFINE_string("annotations", str(DEFAULT_LSPET / "annotations.json"), "COCO-keypoints JSON to evaluate on.")
    flags.DEFINE_string("images", str(DEFAULT_LSPET / "images"), "Folder of its images.")
    flags.DEFINE_string("split", REPORTED_SPLIT, "Split evaluated (splits.json beside --annotations); the protocol "
                        "reports test (docs/design.md §8).")
    flags.DEFINE_string("calibration_split", "train", "Split int8 exports are calibrated on.")
    flags.DEFINE_integer("limit", None, "Evaluate on the first N scored images only (default: all).", lower_bound=1)
    flags.DEFINE_string("output", str(_REPO / "MODEL_ZOO.md"), "Markdown file to write.")
    flags.DEFINE_string("json", None, "Also write the rows as JSON here.")
    flags.DEFINE_string("models", ",".join(MODELS), f"Models (rows), among {', '.join(MODELS)}.")
    flags.DEFINE_string("quantizations", ",".join(QUANTIZATIONS), "Quantizations, among fp32, fp16, dynamic, int8.")
    flags.DEFINE_bool("skip_int8", False, "Leave out int8 (its calibration and conversion are the slowest part).")
    flags.DEFINE_integer("num_calibration", 200, "int8 calibration inputs.", lower_bound=1)
    flags.DEFINE_bool("crop_pck", True, "Also score trackers on ground-truth-aligned crops.")
    flags.DEFINE_integer("runs", 1000, "Timed runs per model (1 thread; at 100 runs the zoo Lite's fp16 and fp32 "
                         "files, one float graph under XNNPACK, differed by 3% in one run).", lower_bound=1)
    flags.DEFINE_integer("warmup", 10, "Warm-up runs per model.", lower_bound=0)
    flags.DEFINE_integer("rounds", 20, "Interleaved timing rounds.", lower_bound=1)
    flags.DEFINE_string("cache_dir", None, "Where exports are kept (default ~/.cache/blazepose_tf/model_zoo).")
    flags.DEFINE_string("yoga", str(ood_guard.DEFAULT_YOGA), "Out-of-domain photos of the yoga guard columns.")
    flags.DEFINE_bool("yoga_guard", True, "Measure the yoga guard columns (benchmarks.ood_guard).")
    flags.DEFINE_bool("progress", True, "Show progress bars.")
    cli.define_overwrite_flag()
    flags.DEFINE_string("quantization_table", None, "JSON written by `python -m benchmarks.quantization --output` "
                        "to include as the int8-selective section (its numbers come from its own run).")


def main(argv: list[str]) -> int:
    from blazepose_tf import zoo
    from blazepose_tf.datasets.coco import load_coco_keypoints
    from blazepose_tf.evaluation import scored_records

    t_start = time.time()
    if FLAGS.quantization_table and not Path(FLAGS.quantization_table).is_file():
        raise InputError(f"--quantization_table not found: {FLAGS.quantization_table}")
    keys = _list(FLAGS.models, MODELS, "--models")
    quants = _list(FLAGS.quantizations, QUANTIZATIONS, "--quantizations")
    if FLAGS.skip_int8:
        quants = [q for q in quants if q != "int8"]
    if not quants:
        raise UserError("no quantization left to measure (--quantizations / --skip_int8)")
    out = Path(FLAGS.output)
    if not out.parent.is_dir():
        raise UserError(f"output folder does not exist: {out.parent}")
    annotations, images = Path(FLAGS.annotations).expanduser(), Path(FLAGS.images).expanduser()
    check_data(annotations, images)
    cli.check_outputs([("--output", out), ("--json", FLAGS.json)], dataset_inputs(annotations, images) + [
        ("--quantization_table", FLAGS.quantization_table), ("--yoga", FLAGS.yoga if FLAGS.yoga_guard else None)],
        overwrite=FLAGS.overwrite)
    dataset = load_coco_keypoints(annotations, images, split=FLAGS.split)
    records = scored_records(dataset, FLAGS.limit)
    if not records:
        raise InputError(f"no scorable image in {annotations} split {FLAGS.split!r}")
    yoga = ood_guard.image_files(FLAGS.yoga, FLAGS.limit, how="pass --yoga, set BLAZEPOSE_TF_YOGA, or leave the "
                                 "guard columns out with --noyoga_guard") if FLAGS.yoga_guard else []
    representative = f"{annotations}:{FLAGS.calibration_split},images={images}"
    crop_spec = f"{annotations}:{FLAGS.split},images={images}" if FLAGS.crop_pck else None
    info: dict[str, Any] = {
        "command": "python -m benchmarks.model_zoo" + "".join(f" {shlex.quote(a)}" for a in COMMAND_LINE[1:]),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _git_commit(), "machine": machine(), "runs": FLAGS.runs,
        "dataset": f"`{_shown(annotations)}` split `{FLAGS.split}`", "num_images": len(records),
        "limit": FLAGS.limit, "int8": "int8" in quants, "num_calibration": FLAGS.num_calibration,
        "calibration": f"the `{FLAGS.calibration_split}` split", "crop_pck": bool(crop_spec),
        "num_crops": len(records), "split": FLAGS.split, "yoga_images": len(yoga),
    }
    # Every shipped file the run needs (rows, their pipeline partners, the latency reference), checked before
    # the slow part: a missing or unpublished model stops here with one line.
    needed = list(dict.fromkeys(keys + [MODELS[k].partner for k in keys if MODELS[k].partner] + ["official_full"]))
    for k in needed:
        MODELS[k].shipped()
    info["zoo"] = {k: zoo.model_entry(k) for k in needed if k in zoo.MODEL_KINDS}
    info["manifest"] = zoo.display_path(zoo.manifest_path())
    if FLAGS.quantization_table:
        try:
            info["quantization"] = json.loads(Path(FLAGS.quantization_table).read_text())
        except (OSError, ValueError) as e:
            raise InputError(f"--quantization_table {FLAGS.quantization_table}: {e}") from None
    rows = build_rows(keys, quants, representative)
    measure_latency(rows)
    evaluator = evaluate_rows(rows, records, crop_spec)
    comparisons = zoo_comparisons.measure(needed, lambda k: str(MODELS[k].shipped()), evaluator, log)
    info["comparisons"] = zoo_comparisons.as_json(comparisons)
    if yoga:
        guard_rows(rows, yoga)
    text = render(rows, info)
    ood_guard.write_reports([("--output", out, text),
                             ("--json", FLAGS.json, {"info": info, "rows": [asdict(r) for r in rows]})],
                            FLAGS.overwrite)
    print(text)
    log(f"table -> {out} ({time.time() - t_start:.0f} s)")
    return 0


def _shown(path: Path) -> str:
    try:
        return os.path.relpath(path.resolve(), _REPO)
    except ValueError:
        return str(path)


def _git_commit() -> Optional[str]:
    from blazepose_tf.zoo import git_commit
    return git_commit()


if __name__ == "__main__":
    COMMAND_LINE = list(sys.argv)
    define_flags()
    cli.run(main)
