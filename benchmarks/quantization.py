"""int8 that keeps its accuracy: per tracker, fp32 / fp16 / int8 / int8-selective rows with pipeline PCK@0.2 on the
test split, size, share of MACs in int8 and 1-thread host latency, all measured in one run.

    python -m benchmarks.quantization [--models official_full,zoo_full,official_lite,zoo_lite,NAME=PATH.keras]
        [--representative ../shared/data/lspet:train] [--num_calibration 200] [--choose_split dev]
        [--report_split test] [--ranges_row] [--runs 100] [--rounds 5] [--out_dir out/quantization]
        [--output table.json]

Protocol (docs/design.md §8: choose on ``dev``, report on ``test``). Every tracker (the known keys, or any Keras
tracker given as ``NAME=PATH.keras``) is exported with :func:`export.to_tflite.export_model` (heatmap kept, as the
runtime uses it) as:

* ``fp32`` (the reference) and ``fp16``;
* ``int8``: ``export.to_tflite --quantize int8`` with its defaults (activation ranges, layer and output bias
  correction; no float layer);
* with ``--ranges_row``, ``int8-ranges``: ``--activation_ranges auto`` (min/max, percentile or MSE ranges, whichever
  scores best on dev);
* ``int8-selective``: ``--float_layers auto`` (with the ranges ``int8-ranges`` chose, when it ran): the float set
  of the greedy search (:mod:`export.float_search`) whose pipeline PCK on dev is first within ``--max_pck_drop`` of
  fp32, with at most ``--float_mac_budget`` of the MACs in float;
* with ``--heatmap_cost`` (default), also ``fp16 -heatmap`` (``--nokeep_heatmap``) for trackers with a heatmap:
  what dropping it costs.

int8 is calibrated on ``--num_calibration`` GT-aligned crops of ``--representative`` (train). Each file then runs in
the pipeline behind MediaPipe's detector (``--detector``), IMAGE mode, as ``python -m blazepose_tf.evaluate --split
SPLIT --models official --landmarks FILE``, on ``--report_split`` (and ``--choose_split``, the numbers the choices
were made on). Host latency: ai-edge-litert + XNNPACK, 1 thread, every file of every model interleaved in one run
(:func:`export.bench.measure`). The int8 speed-up is on ARM (dot-product kernels); the command printed under the
table benchmarks the same files on a phone (:mod:`android_harness.bench`).

Targets (issue #18): int8-selective of the shipped Full (``zoo_full``) and Lite (``official_lite`` until the zoo's
Lite is its head refit; ``zoo_lite``) within 1 point of fp32 pipeline PCK on test, with >= 80% of the MACs in int8,
and host latency no worse than fp16; other models are reported for information. Exit code 0 when every target
model benchmarked meets them, 1 otherwise (2-4 for usage/data/model errors).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:  # allow `python benchmarks/quantization.py`
    sys.path.insert(0, str(_REPO))

from absl import flags  # noqa: E402

from blazepose_tf import cli  # noqa: E402
from blazepose_tf.errors import UserError  # noqa: E402
from blazepose_tf.metrics import paired_pck_delta  # noqa: E402
from export.int8_export import DEFAULT_MAC_BUDGET, DEFAULT_MAX_PCK_DROP  # noqa: E402

DEFAULT_LSPET = os.environ.get("BLAZEPOSE_TF_LSPET") or str(_REPO.parent / "shared" / "data" / "lspet")
PCK_TARGET = 1.0          # points of test pipeline PCK int8-selective may lose against fp32
# Share of MACs int8-selective must keep in int8 (the target; the search itself may keep up to the export's
# DEFAULT_MAC_BUDGET in float, a looser bound, and the verdict below says when a choice falls between the two).
INT8_MAC_TARGET = 0.80
# The targets are checked for the shipped trackers (the zoo's Full and Lite) and the official Lite; every other model
# is reported for information.
TARGET_MODELS = ("zoo_full", "official_lite", "zoo_lite")
# The modules that decide what an exported file holds (conversion for every variant; calibration crops, ranges,
# corrections, the float-layer search and the pipeline scorer that chooses for int8, with the runtime it scores:
# its defaults, e.g. contract.IMAGE_ROI_PASSES): a change to any of them exports the variants again instead of
# reusing a cached file made by older code.
EXPORT_CODE = hashlib.sha1(b"".join((_REPO / f).read_bytes() for f in (
    "export/int8_export.py", "export/float_search.py", "export/int8_graph.py", "export/ranges.py",
    "export/bias_correction.py", "export/conversion.py", "export/layer_errors.py", "export/pipeline_score.py",
    "export/report.py", "export/tflite_model.py", "export/representative.py", "export/to_tflite.py",
    "blazepose_tf/codecs/landmarks.py", "blazepose_tf/runtime/pipeline.py", "blazepose_tf/contract.py",
))).hexdigest()[:12]


def _zoo(name: str) -> Callable[[], Path]:
    def path() -> Path:
        from blazepose_tf import zoo
        return zoo.weights_dir() / f"{name}.keras"
    return path


def _official(name: str) -> Callable[[], Path]:
    def path() -> Path:
        from blazepose_tf.models.official_cache import converted_model_path
        return converted_model_path(name)
    return path


# Benchmark key -> (table label, the Keras tracker's path).
MODELS: dict[str, tuple[str, Callable[[], Path]]] = {
    "official_full": ("official Full (pose_landmark_full)", _official("pose_landmark_full")),
    "zoo_full": ("zoo Full", _zoo("full")),
    "official_lite": ("official Lite (pose_landmark_lite)", _official("pose_landmark_lite")),
    "zoo_lite": ("zoo Lite", _zoo("lite")),
}
DEFAULT_MODELS = ("official_full", "zoo_full", "official_lite", "zoo_lite")

flags.DEFINE_string("models", ",".join(DEFAULT_MODELS),
                    f"Trackers to benchmark, comma-separated: {', '.join(MODELS)}, or any Keras tracker as "
                    "NAME=PATH.keras (or PATH.keras, named after the file).")
flags.DEFINE_string("representative", f"{DEFAULT_LSPET}:train", "int8 calibration dataset spec.")
flags.DEFINE_integer("num_calibration", 200, "int8 calibration crops.", lower_bound=1)
flags.DEFINE_string("dataset", DEFAULT_LSPET, "Annotated dataset (a folder with annotations.json and splits.json).")
flags.DEFINE_string("choose_split", "dev", "Split the int8 choices are made on.")
flags.DEFINE_string("report_split", "test", "Split the table reports.")
flags.DEFINE_string("detector", "official", "Detector of the pipeline: official (MediaPipe's) or a file.")
flags.DEFINE_float("max_pck_drop", DEFAULT_MAX_PCK_DROP, "int8-selective: dev PCK points it may lose against fp32 "
                   "(export.to_tflite's default).")
flags.DEFINE_float("float_mac_budget", DEFAULT_MAC_BUDGET, "int8-selective: largest share of MACs kept in float.")
flags.DEFINE_bool("ranges_row", False, "Also an int8-ranges row (--activation_ranges auto: min/max, percentile and "
                  "MSE ranges each scored on the choose split), whose ranges int8-selective then uses.")
flags.DEFINE_bool("heatmap_cost", True, "Also export fp16 without the heatmap, to measure what dropping it costs.")
flags.DEFINE_integer("runs", 100, "Timed runs per file at 1 thread.", lower_bound=1)
flags.DEFINE_integer("warmup", 10, "Warm-up runs per file.", lower_bound=0)
flags.DEFINE_integer("rounds", 5, "Interleaved timing rounds.", lower_bound=1)
flags.DEFINE_string("out_dir", "out/quantization", "Where the exported models and their reports go.")
flags.DEFINE_string("output", None, "Also write the table as JSON here.")
cli.define_overwrite_flag()
FLAGS = flags.FLAGS


@dataclass
class Variant:
    """One row: how the file is exported."""

    name: str
    quantization: str
    keep_heatmap: bool = True
    int8: Optional[dict] = None        # export.int8_export.Int8Settings fields


@dataclass
class Row:
    model: str
    variant: str
    path: str = ""
    source_sha256: str = ""
    size_mb: float = 0.0
    int8_mac_share: float = 0.0
    pck: dict = field(default_factory=dict)              # split -> pipeline PCK@0.2
    detection_rate: dict = field(default_factory=dict)   # split -> %
    vs_fp32: dict = field(default_factory=dict)          # split -> [PCK − fp32's, 95 % paired interval low, high]
    latency_ms: Optional[float] = None
    latency_p90_ms: Optional[float] = None
    float_layers: list = field(default_factory=list)
    activation_ranges: Optional[str] = None
    choice: dict = field(default_factory=dict)           # what the auto choices measured on dev
    error: Optional[str] = None


def variants(has_heatmap: bool) -> list[Variant]:
    """The rows of one tracker (see the module docstring)."""
    budget = {"max_pck_drop": FLAGS.max_pck_drop, "float_mac_budget": FLAGS.float_mac_budget}
    out = [Variant("fp32", "none"), Variant("fp16", "fp16"), Variant("int8", "int8", int8={})]
    if FLAGS.ranges_row:
        out.append(Variant("int8-ranges", "int8", int8={"activation_ranges": "auto"}))
    out.append(Variant("int8-selective", "int8", int8={**budget, "float_layers": "auto"}))
    if has_heatmap and FLAGS.heatmap_cost:
        out.append(Variant("fp16 -heatmap", "fp16", keep_heatmap=False))
    return out


def parse_models(text: str) -> dict[str, Path]:
    """{key: Keras path} of ``--models`` (known keys, ``NAME=PATH.keras`` or ``PATH.keras``)."""
    out: dict[str, Path] = {}
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        name, sep, path = item.partition("=")
        if not sep and item in MODELS:
            out[item] = MODELS[item][1]()
            continue
        path = path if sep else item
        name = name.strip() if sep else Path(path).stem
        if not path.endswith(".keras") or not Path(path).is_file() or not name:
            raise UserError(f"--models: {item!r} is neither one of {', '.join(MODELS)} nor NAME=PATH to an "
                            "existing .keras file")
        out[name] = Path(path)
    if not out:
        raise UserError("--models is empty")
    return out


def export_rows(key: str, source: Path, out_dir: Path, choose_spec: str) -> list[Row]:
    """Exports every variant of one tracker (cached: an existing file with its report is reused)."""
    from export.int8_graph import mac_split
    from export.to_tflite import Int8Settings, export_model, load_keras_model

    from blazepose_tf.zoo import file_sha256

    sha = file_sha256(source)
    keras_model = load_keras_model(source)
    has_heatmap = "heatmap" in keras_model.output_names
    rows: list[Row] = []
    for v in variants(has_heatmap):
        chosen = _find(rows, key, "int8-ranges")
        if v.name == "int8-selective" and chosen:   # the ranges int8-ranges chose on dev, not chosen again
            v.int8 = {**(v.int8 or {}), "activation_ranges": chosen.activation_ranges}
        slug = v.name.replace(" -heatmap", "_noheatmap").replace("-", "_")
        # A changed source model or export setting is exported again.
        settings_key = json.dumps([v.int8, v.keep_heatmap, FLAGS.representative, FLAGS.num_calibration,
                                   choose_spec, FLAGS.detector, EXPORT_CODE], sort_keys=True)
        path = out_dir / f"{key}_{sha[:12]}_{slug}_{hashlib.sha1(settings_key.encode()).hexdigest()[:8]}.tflite"
        row = Row(model=key, variant=v.name, path=str(path), source_sha256=sha)
        report_path = path.with_name(path.stem + ".report.json")
        if path.is_file() and report_path.is_file():
            print(f"[{key}] {v.name}: cached {path}", file=sys.stderr, flush=True)
            report = json.loads(report_path.read_text())
        else:
            print(f"[{key}] exporting {v.name} ...", file=sys.stderr, flush=True)
            settings = Int8Settings(**v.int8) if v.int8 is not None else None
            report = export_model(keras_model, path, v.quantization, representative=FLAGS.representative,
                                  num_calibration=FLAGS.num_calibration, eval_spec=choose_spec, num_eval=50,
                                  keep_heatmap=v.keep_heatmap, kind="tracker", name=f"{key}_{v.name}",
                                  int8=settings, eval_detector=FLAGS.detector, overwrite=True,  # its own cache
                                  log=lambda *a: print(*a, file=sys.stderr, flush=True)).report
        row.size_mb = os.path.getsize(path) / 1e6
        row.int8_mac_share = mac_split(path).int8_share
        int8 = report.get("int8") or {}
        if int8:
            row.activation_ranges = int8["activation_ranges"]["method"]
            row.float_layers = [f["layer"] for f in int8["float_layers"]["layers"]]
            row.choice = {k: v for k, v in {"ranges_pck": int8["activation_ranges"].get("pck"),
                                            **{k: int8["float_layers"].get(k) for k in
                                               ("float_pck", "target_pck", "met", "steps")}}.items() if v is not None}
        rows.append(row)
    del keras_model
    return rows


def evaluate_rows(rows: list[Row], splits: list[str]) -> None:
    """Pipeline PCK and detection rate of every row on every split (detector outputs computed once per image)."""
    from export.pipeline_score import PipelineScorer

    for split in splits:
        scorer = PipelineScorer(f"{FLAGS.dataset}:{split}", FLAGS.detector)
        people = {}
        for row in rows:
            result = scorer.evaluate(row.path)
            row.pck[split] = float(result.pck.pck)
            row.detection_rate[split] = float(result.pck.detection_rate)
            people[id(row)] = result.pck.per_person
            print(f"[{row.model}] {row.variant}: {split} PCK {row.pck[split]:.2f}", file=sys.stderr, flush=True)
        for row in rows:   # each file against its model's fp32 file, on the same people
            ref = _find(rows, row.model, "fp32")
            if ref is not None and ref is not row:
                delta, (lo, hi) = paired_pck_delta(people[id(ref)], people[id(row)])
                row.vs_fp32[split] = [delta, lo, hi]


def measure_latency(rows: list[Row]) -> None:
    """1-thread host latency of every file, interleaved in one run."""
    from export.bench import measure

    labels = {f"{r.model}:{r.variant}": r for r in rows}
    print(f"timing {len(rows)} files at 1 thread ...", file=sys.stderr, flush=True)
    for lat in measure([(k, r.path) for k, r in labels.items()], threads=[1], runs=FLAGS.runs, warmup=FLAGS.warmup,
                       rounds=FLAGS.rounds):
        labels[lat.model].latency_ms, labels[lat.model].latency_p90_ms = lat.median_ms, lat.p90_ms


def _find(rows: list[Row], model: str, variant: str) -> Optional[Row]:
    return next((r for r in rows if r.model == model and r.variant == variant), None)


def format_table(rows: list[Row], report: str, choose: str) -> str:
    """The printed table: PCK on the report split (its change against fp32), the choose split, size, MACs, speed."""
    head = (f"{'model':<14} {'variant':<15} {f'{report} PCK':>9} {'vs fp32':>7} {f'{choose} PCK':>8} {'det %':>6} "
            f"{'size MB':>7} {'int8 MACs':>9} {'1-thr ms':>8} {'vs fp16':>7}  float layers / ranges")
    lines = [head, "-" * len(head)]
    for r in rows:
        ref, fp16 = _find(rows, r.model, "fp32"), _find(rows, r.model, "fp16")
        dp = r.pck[report] - ref.pck[report] if ref else float("nan")
        speed = f"{r.latency_ms / fp16.latency_ms:.2f}x" if fp16 and fp16.latency_ms and r.latency_ms else "n/a"
        note = ""
        if r.activation_ranges:
            note = f"{r.activation_ranges} ranges" + (f"; {len(r.float_layers)} float: "
                                                      f"{', '.join(r.float_layers[:6])}"
                                                      f"{', ...' if len(r.float_layers) > 6 else ''}"
                                                      if r.float_layers else "")
        chosen = r.pck.get(choose, float("nan"))
        lines.append(f"{r.model:<14} {r.variant:<15} {r.pck[report]:>9.2f} {dp:>+7.2f} {chosen:>8.2f} "
                     f"{r.detection_rate[report]:>6.1f} {r.size_mb:>7.2f} {100 * r.int8_mac_share:>8.1f}% "
                     f"{(r.latency_ms or float('nan')):>8.2f} {speed:>7}  {note}")
    return "\n".join(lines)


def verdicts(rows: list[Row], report: str) -> list[tuple[str, bool, str]]:
    """(model, met, text) of issue #18's targets for int8-selective."""
    out = []
    for model in dict.fromkeys(r.model for r in rows):
        sel, ref, fp16 = (_find(rows, model, v) for v in ("int8-selective", "fp32", "fp16"))
        if not (sel and ref and fp16):
            continue
        drop = sel.pck[report] - ref.pck[report]
        interval = sel.vs_fp32.get(report)
        ci = f" [{interval[1]:+.2f}, {interval[2]:+.2f}]" if interval else ""
        ok_pck, ok_macs = drop >= -PCK_TARGET, sel.int8_mac_share >= INT8_MAC_TARGET
        ok_speed = bool(sel.latency_ms and fp16.latency_ms and sel.latency_ms <= fp16.latency_ms)
        met = ok_pck and ok_macs and ok_speed
        out.append((model, met, f"{model} int8-selective: {report} PCK {drop:+.2f}{ci} vs fp32 "
                    f"(target >= -{PCK_TARGET:g}) "
                    f"{'PASS' if ok_pck else 'FAIL'}; {100 * sel.int8_mac_share:.1f}% MACs in int8 (target >= "
                    f"{100 * INT8_MAC_TARGET:.0f}%) {'PASS' if ok_macs else 'FAIL'}; host {sel.latency_ms:.2f} ms vs "
                    f"fp16 {fp16.latency_ms:.2f} ms {'PASS' if ok_speed else 'FAIL'}"
                    + ("" if model in TARGET_MODELS else " (not a target)")))
    return out


def android_command(rows: list[Row], out_dir: Path) -> str:
    """The shell command a phone owner runs for the ARM numbers of the same files."""
    files = " ".join(str(Path(r.path)) for r in rows)
    return (f"for m in {files}; do\n  python -m android_harness.bench --model \"$m\" --benchmark_binary "
            f"benchmark_model --num_threads 1,2,4 --results {out_dir / 'arm_latency.csv'}\ndone")


def check_splits(dataset: str, choose: str, report: str) -> None:
    """One-line errors, before any export, for splits ``dataset`` lacks or a choice made on the reported split."""
    from blazepose_tf.datasets.coco import split_ids

    if choose == report or choose == "test":
        raise UserError(f"--choose_split={choose} --report_split={report}: int8 choices are made on one split and "
                        "another is reported (dev and test, docs/design.md §8)")
    for flag, split in (("choose_split", choose), ("report_split", report)):
        split_ids(Path(dataset).expanduser() / "splits.json", split, flag)


def main(argv: list[str]) -> int:
    keras_files = [("--models", item.partition("=")[2] or item) for item in FLAGS.models.split(",")
                   if item.strip().endswith(".keras")]
    cli.check_outputs([("--output", FLAGS.output)], [("--dataset", FLAGS.dataset), *keras_files] + (
        [("--detector", FLAGS.detector)] if FLAGS.detector != "official" else []), overwrite=FLAGS.overwrite)
    check_splits(FLAGS.dataset, FLAGS.choose_split, FLAGS.report_split)
    models = parse_models(FLAGS.models)
    out_dir = Path(FLAGS.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    choose_spec = f"{FLAGS.dataset}:{FLAGS.choose_split}"
    rows: list[Row] = []
    for key, source in models.items():
        rows += export_rows(key, source, out_dir, choose_spec)
    evaluate_rows(rows, [FLAGS.report_split, FLAGS.choose_split])
    measure_latency(rows)
    report, choose = FLAGS.report_split, FLAGS.choose_split
    print(f"pipeline PCK@0.2 (mid torso) behind the {FLAGS.detector} detector, IMAGE mode, on {FLAGS.dataset} "
          f"{report} (choices made on {choose}); host: ai-edge-litert + XNNPACK, 1 thread, median of {FLAGS.runs} "
          "runs, interleaved")
    print(format_table(rows, report, choose))
    results = verdicts(rows, report)
    for _, _, text in results:
        print(text)
    print("ARM latency (the int8 speed-up is on phones), on a phone over adb:\n" + android_command(rows, out_dir))
    if FLAGS.output:
        command = " ".join(["python -m benchmarks.quantization", *sys.argv[1:]])
        doc = {"command": command, "rows": [asdict(r) for r in rows], "verdicts": [t for _, _, t in results]}
        cli.write_marked(FLAGS.output, doc, overwrite=FLAGS.overwrite)
        print(f"table -> {FLAGS.output}")
    return 0 if results and all(ok for m, ok, _ in results if m in TARGET_MODELS) else 1


if __name__ == "__main__":
    cli.run(main)
