"""The model-zoo table's rows and their Markdown: ``MODEL_ZOO.md`` as :mod:`benchmarks.model_zoo` writes it from
its measurements (the per-kind tables, the paired comparisons of :mod:`benchmarks.zoo_comparisons`, the
int8-selective section of ``python -m benchmarks.quantization`` and the shipped models' manifest entries).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from benchmarks import zoo_comparisons
from export.int8_export import DEFAULT_MAC_BUDGET, DEFAULT_MAX_PCK_DROP

GROUPS = ("face", "arms", "legs")
REPORTED_SPLIT = "test"  # docs/design.md §8: choose on dev, report on test


@dataclass
class Row:
    """One (model, quantization) row."""

    model: str
    label: str
    kind: str
    quantization: str
    file: str                                   # MediaPipe file | zoo file | export
    path: Optional[str] = None
    error: Optional[str] = None                 # export failure
    params: Optional[int] = None
    flops: Optional[int] = None
    size_bytes: Optional[int] = None
    latency_ms: Optional[float] = None
    latency_p90_ms: Optional[float] = None
    ratio: Optional[float] = None               # latency / official Full's, same run
    pck: Optional[float] = None
    per_group: dict[str, Optional[float]] = field(default_factory=dict)
    detection_rate: Optional[float] = None
    ap: Optional[float] = None
    crop_pck: Optional[float] = None
    pipeline: Optional[dict[str, str]] = None   # detector / landmarks used for the pipeline numbers
    pck_official_detector: Optional[float] = None  # trackers' shipped files: pipeline with MediaPipe's detector
    yoga_found: Optional[float] = None          # trackers: yoga photos with a pose, percent
    yoga_agreement: Optional[float] = None      # trackers: agreement with the official Full on the 21 points, percent


def _num(x: Optional[float], fmt: str = "{:.1f}") -> str:
    return "n/a" if x is None else fmt.format(x)


def _table(head: list[str], body: list[list[str]], left: int = 3) -> list[str]:
    """A Markdown table; the first ``left`` columns left-aligned, the rest (numbers) right-aligned."""
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join("---" if i < left else "---:" for i in range(len(head))) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return lines


COMMON_HEAD = ["model", "quantization", "file", "params", "MFLOPs", "size MB", "1-thread ms", "vs official Full"]


def _common(r: Row) -> list[str]:
    """The :data:`COMMON_HEAD` cells of a row."""
    cells = [r.label, r.quantization, r.file, _num(r.params and r.params / 1e6, "{:.2f}M"),
             _num(r.flops and r.flops / 1e6, "{:.0f}")]
    if r.error:
        return cells + [f"export failed: {r.error}", "", ""]
    return cells + [_num(r.size_bytes and r.size_bytes / 1e6, "{:.2f}"), _num(r.latency_ms, "{:.2f}"),
                    _num(r.ratio, "{:.2f}×")]


def _kind_table(rows: list[Row], kind: str, head: list[str], cells: Callable[[Row], list[str]]) -> list[str]:
    """The table of one kind's rows: common columns, then ``head`` filled by ``cells`` (blank after an error)."""
    body = [_common(r) + ([""] * len(head) if r.error else cells(r)) for r in rows if r.kind == kind]
    return _table(COMMON_HEAD + head, body) if body else [f"(no {kind} measured)"]


def quantization_section(table: dict[str, Any]) -> list[str]:
    """The "int8 that keeps its accuracy" section from ``python -m benchmarks.quantization --output`` JSON."""
    rows = [r for r in table["rows"] if not r.get("error")]
    fp32 = {r["model"]: r["pck"].get("test") for r in rows if r["variant"] == "fp32"}
    # Where the files and the JSON went does not change a number: left out of the quoted command.
    command = re.sub(r"\s--(out_dir|output)[= ]\S+", "", table.get("command", "python -m benchmarks.quantization"))
    body = []
    for r in rows:
        pck, ref = r["pck"].get("test"), fp32.get(r["model"])
        delta = "" if pck is None or ref is None or r["variant"] == "fp32" else f"{pck - ref:+.2f}"
        # vs_fp32: [difference, 95 % paired interval low, high] when the table measured them; a row carried over
        # from an earlier table as printed there keeps its printed difference alone ([difference]) and its count
        # of float ops (float_ops) instead of their names.
        vs = (r.get("vs_fp32") or {}).get("test")
        if delta and vs:
            delta = f"{vs[0]:+.2f}" + (f" [{vs[1]:+.2f}, {vs[2]:+.2f}]" if len(vs) == 3 else "")
        float_ops = r.get("float_ops", len(r.get("float_layers") or []))
        body.append([r["model"], r["variant"], _num(pck), delta, _num(r["pck"].get("dev")),
                     _num(r["size_mb"], "{:.2f}"), _num(100 * r["int8_mac_share"], "{:.1f}"),
                     _num(r["latency_ms"], "{:.2f}"), str(float_ops)])
    return ["## int8 that keeps its accuracy", "",
            f"From `{command}` (its own run: latency ratios are "
            "within this table only). Pipeline PCK@0.2 behind MediaPipe's detector on `test` (reported) and `dev` "
            "(where int8's choices were made); int8: `export.to_tflite --quantize int8` defaults; int8-selective: "
            "`--float_layers auto` (layers kept in float, chosen greedily by keypoint error removed per float MAC, "
            f"until dev PCK is within {DEFAULT_MAX_PCK_DROP:g} point of fp32, the export's default `--max_pck_drop`, "
            f"at most {DEFAULT_MAC_BUDGET:.0%} of the MACs in float); vs fp32 with its 95 % paired bootstrap "
            "interval over the test people when measured; fp16 -heatmap: what "
            "`--nokeep_heatmap` costs. The int8 "
            "speed-up is on ARM: `python -m android_harness.bench --model FILE --benchmark_binary benchmark_model`.",
            "", *_table(["model", "variant", "PCK@0.2 test", "vs fp32", "PCK@0.2 dev", "size MB", "int8 MACs %",
                         "1-thread ms", "float ops"], body, left=2)]


def render(rows: list[Row], info: dict[str, Any]) -> str:
    """The MODEL_ZOO.md text."""
    m = info["machine"]
    lines = [
        "# Model zoo",
        "",
        f"Generated by `{info['command']}` on {info['date']} (repository commit {info['commit'] or 'unknown'}); "
        "do not edit by hand, rerun the command.",
        "",
        f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs (1-minute load average {m['load_1min']} at start); "
        f"latency with ai-edge-litert {m['ai-edge-litert']} + XNNPACK at 1 thread, median of {info['runs']} runs, "
        f"every file interleaved in the same run; ratios are to MediaPipe's `pose_landmark_full.tflite` "
        f"measured in that run (< 1 is faster). TensorFlow {m['tensorflow']}, Python {m['python']}.",
        "",
        f"Accuracy: {info['dataset']}, {info['num_images']} scored images"
        + (f" (first {info['limit']}, `--limit`)" if info["limit"] else "") + ". "
        + (f"Reported on `{REPORTED_SPLIT}` as the protocol says (docs/design.md §8): checkpoints and settings are "
           f"chosen on `dev`, `{REPORTED_SPLIT}` is only reported. " if info["split"] == REPORTED_SPLIT else
           f"Note: split `{info['split']}` is not the reported split (`{REPORTED_SPLIT}`, docs/design.md §8). ")
        + "Pipeline numbers run detector → tracker on the whole image (IMAGE mode, detection threshold 0.5, as "
        "`python -m blazepose_tf.evaluate`); a missed person counts all its points wrong. PCK@0.2 with the "
        "mid-torso size; groups face / arms / legs (n/a: the dataset annotates none of the group's points); "
        "AP: COCO keypoint AP over the COCO-17 points the dataset annotates.",
        "",
        "fp16 rows are the shipped files (MediaPipe's own .tflite for the official models, "
        "`blazepose_tf/zoo/weights/*.tflite` for ours); fp32, dynamic and int8 are exported from the Keras models "
        "(the official ones converted by `blazepose_tf.models.convert_official`) with `export.to_tflite`"
        + (f", int8 with its defaults: calibrated on {info['num_calibration']} inputs of {info['calibration']}, "
           "percentile activation ranges, layer and output biases corrected for the mean float − int8 shift "
           "(`export/int8_export.py`), every layer in int8 (the int8-selective files are in the section below)"
           if info["int8"] else "")
        + ". Params: BatchNorm folded, as exported; MFLOPs: 2 × MACs of the convolutions and dense layers at the "
        "model's input size.",
        "",
        "## Trackers",
        "",
        "Pipeline with the set's shipped detector (official Full and Lite → MediaPipe's detector, ours → our "
        "detector); "
        "\"with MediaPipe's detector\": the shipped (fp16) trackers all behind MediaPipe's detector, to compare the "
        "trackers alone. Crop PCK: the tracker alone on ground-truth-aligned crops"
        + (f" ({info['num_crops']} crops spread over the split)" if info["crop_pck"] else " (not measured)") + ". "
        + (f"Yoga guard (`python -m benchmarks.ood_guard`, out of domain): on {info['yoga_images']} yoga photos "
           "(unannotated; the guard quarter, never trained on: `data.prepare` writes the other photos as the "
           "`train` split for distillation), the share where the pipeline finds a pose, and its agreement with "
           "MediaPipe's detector + Full on the 21 points LSPET does not annotate (face, hands, feet): share within "
           "0.1 torso of the official Full's prediction where both find a pose; a drop means forgetting."
           if info["yoga_images"]
           else "Yoga guard not measured (`--noyoga_guard`)."),
        "",
    ]
    lines += _kind_table(rows, "tracker", ["PCK@0.2", "face", "arms", "legs", "AP", "detection rate",
                                           "PCK@0.2 with MediaPipe's detector", "crop PCK@0.2", "yoga poses found",
                                           "yoga agreement 21 pts"],
                         lambda r: [_num(r.pck), *(_num(r.per_group.get(g)) for g in GROUPS), _num(r.ap, "{:.3f}"),
                                    _num(r.detection_rate), _num(r.pck_official_detector), _num(r.crop_pck),
                                    _num(r.yoga_found), _num(r.yoga_agreement)])
    lines += ["", "## Detectors", "",
              "Pipeline with MediaPipe's Full landmark model: detection rate = scored people found.", ""]
    lines += _kind_table(rows, "detector", ["detection rate", "pipeline PCK@0.2", "AP"],
                         lambda r: [_num(r.detection_rate), _num(r.pck), _num(r.ap, "{:.3f}")])
    comparisons = [zoo_comparisons.Comparison(**c) for c in info.get("comparisons") or []]
    if comparisons:
        lines += ["", *zoo_comparisons.section(comparisons, info.get("split"))]
    if info.get("quantization"):
        lines += ["", *quantization_section(info["quantization"])]
    if info["zoo"]:
        lines += ["", f"## Shipped models (`{info['manifest']}`)", ""]
        body = []
        for name, e in info["zoo"].items():
            metrics = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                for k, v in (e.get("dev_metrics") or {}).items()) or "n/a"
            tfl = e["files"]["tflite"]
            step = "n/a" if e.get("step") is None else str(e["step"])
            body.append([name, e["kind"], f"`{tfl['sha256'][:12]}`", step, f"`{e.get('command')}`", metrics,
                         str(e.get("published_at"))])
        lines += _table(["name", "kind", "tflite sha256", "step", "training command", "dev metrics at export",
                         "published"], body, left=7)
    return "\n".join(lines) + "\n"
