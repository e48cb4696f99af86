"""Exports a Keras detector or tracker to TFLite (builtin ops only), optionally quantized, with embedded
metadata and a parity report. This module is the command and :func:`export_model`; the steps live in
:mod:`export.conversion` (1-4), :mod:`export.int8_export` (int8: ranges, float layers, bias correction, per-layer
error), :mod:`export.metadata` (5),
:mod:`export.report` (6) and :mod:`export.output_files` (where and how the files are written).

    python -m export.to_tflite --model MODEL.keras --output out.tflite [--quantize none|fp16|dynamic|int8]
        [--representative SPEC] [--num_calibration 200] [--eval SPEC] [--num_eval 100] [--nokeep_heatmap]
        [--activation_ranges minmax|percentile|mse|auto] [--float_layers auto|N|name,...] [--float_mac_budget 0.3]
        [--max_pck_drop 1] [--eval_detector official|FILE] [--nolayer_bias_correction] [--nobias_correction]
        [--kind auto|tracker|detector] [--topology blazepose33] [--name NAME] [--model_version 1]

Steps:

1. Training-only heads are dropped: the exported graph keeps everything the runtime uses, in every quantization:
   ``landmarks``, ``presence``, ``heatmap`` (the runtime's heatmap refinement) and ``world`` / ``segmentation``
   when the model has them for a tracker, ``regressors`` and ``scores`` for a detector; ``offsets`` and
   unrecognised outputs never. ``--nokeep_heatmap`` drops the heatmap, at a measured cost (its help).
2. Conversion uses the builtin op set only (``TFLITE_BUILTINS``; ``TFLITE_BUILTINS_INT8`` for int8). A model
   that needs TensorFlow (Flex / Select TF) ops fails with a message naming them: we never ship Flex ops.
3. The input is a fixed (1, H, W, 3) float32 tensor named ``image``; the signature's outputs (and the output
   tensors) are named after their roles, so :class:`blazepose_tf.runtime.runners.TFLiteRunner` finds them.
4. Quantization: ``none`` (fp32), ``fp16`` (fp16 weights), ``dynamic`` (int8 weights, float activations),
   ``int8`` (full integer: weights and activations int8, calibrated on ``--num_calibration`` real inputs from
   ``--representative``). int8 models keep float32 input and output tensors (QUANTIZE/DEQUANTIZE at the
   edges), so the runtime contract (input range, output units) is the same for every mode. int8 is built by
   :mod:`export.int8_export`: calibrated once, activation ranges ``--activation_ranges``, layers kept float with
   ``--float_layers`` (``auto``: a greedy search, :mod:`export.float_search`, then the first of its float sets whose
   pipeline PCK on ``--eval`` is within ``--max_pck_drop`` points of float, within ``--float_mac_budget``), output
   biases corrected; its report gives the share of MACs in int8 and the per-layer error against float, worst first.
   int8 pays off on phones (ARM dot-product kernels; measure with :mod:`android_harness.bench`); on an x86 host
   with AVX2 and no VNNI, XNNPACK's int8 kernels are about as fast as fp32, and dynamic-range models are slower.
5. Metadata (name, kind, topology, input normalization, quantization, version) is embedded as JSON, see
   :mod:`export.metadata`.
6. A report is written beside the model (``out.report.json``): file size, op histogram, I/O, and parity
   against the Keras model on real inputs (max / mean absolute and max relative error per output); for a
   tracker evaluated on an annotated dataset, PCK@0.2 of the exported model versus the Keras one on
   ground-truth-aligned crops; for int8, ``int8`` (ranges, float layers and how they were chosen, MACs in int8,
   ``layer_errors``) and ``bias_correction``.

Datasets are given as specs, ``PATH[:SPLIT][,images=DIR]`` (see :mod:`export.representative`): e.g.
``--representative ../shared/data/lspet:train --eval ../shared/data/lspet:dev``. Parity uses ``--eval``, or the
representative inputs when no ``--eval`` is given, or (fp32/fp16/dynamic without any dataset) random inputs,
flagged as such in the report.

The model must meet the tracker or detector I/O contract (:mod:`blazepose_tf.contract`: role-named or
shape-recognisable outputs of the right shapes, e.g. a tracker's ``landmarks`` holding 5 values for each of the
topology's keypoints and the 2 ROI points) at any fixed input size; a model the runtime would refuse (e.g. a detector
input other than 224x224, a non-square tracker input) is exported with a warning (``runtime_contract`` in the report).

Exit codes: 0 ok; 2 bad flags or dataset spec, or an ``--output`` that cannot be written (checked before loading
the model); 3 dataset without usable images; 4 model unloadable, not a tracker or detector by the I/O contract, or
not convertible with builtin ops.
"""
from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from absl import flags

from blazepose_tf import cli
from blazepose_tf.contract import QUANTIZATIONS
from blazepose_tf.errors import UserError
from blazepose_tf.io.provenance import marked_json
from blazepose_tf.topology import AUX_ROI_POINTS, BLAZEPOSE_33, TOPOLOGIES, Topology, get_topology
from export import metadata as md
from export.conversion import (ConversionError, PreparedModel, convert, load_keras_model, named_outputs,
                               output_roles, prepare_model, runtime_mismatch)
from export.int8_export import AUTO, DEFAULT_MAC_BUDGET, DEFAULT_MAX_PCK_DROP, Int8Settings, build_int8
from export.output_files import check_output_path, install, report_path_for, write_temporary
from export.report import format_report, keras_outputs, parity, tflite_outputs, tracker_pck
from export.pipeline_score import OFFICIAL_DETECTOR, PipelineScorer
from export.ranges import RANGE_METHODS
from export.representative import Sample, SampleCount, load_samples
from export.tflite_model import inspect_model

# The export's parts live in export.conversion, export.report, export.output_files and export.bias_correction;
# their names stay importable from here (the zoo, the benchmarks and export.to_mediapipe use them).
_named_outputs = named_outputs
__all__ = [
    "QUANTIZATIONS", "ConversionError", "ExportResult", "Int8Settings", "PreparedModel", "check_output_path",
    "convert", "export_model", "format_report", "keras_outputs", "load_keras_model", "main",
    "output_roles", "parity", "prepare_model", "report_path_for", "runtime_mismatch", "tflite_outputs",
    "tracker_pck",
]


@dataclass
class ExportResult:
    """What :func:`export_model` wrote."""

    path: Path
    report_path: Path
    report: dict[str, Any]


def export_model(model, output: str | os.PathLike, quantization: str = "none", *,
                 representative: Optional[str] = None, num_calibration: int = 200,
                 eval_spec: Optional[str] = None, num_eval: int = 100, keep_heatmap: bool = True,
                 kind: str = "auto", topology: Topology = BLAZEPOSE_33, name: Optional[str] = None,
                 version: str = "1", value_range: Optional[Sequence[float]] = None,
                 source: Optional[str] = None, bias_correction: bool = True, int8: Optional[Int8Settings] = None,
                 eval_detector: str = OFFICIAL_DETECTOR, overwrite: bool = False, log=print) -> ExportResult:
    """Prepares, converts, embeds metadata, checks parity and writes the model and its report.

    Args:
        model: a Keras model (or a ``.keras`` path).
        output: the .tflite file to write (its folder is created if missing); it and its report are written
            atomically, and only once the export succeeded.
        quantization: one of :data:`blazepose_tf.contract.QUANTIZATIONS`.
        representative: dataset spec for int8 calibration (and parity when ``eval_spec`` is None).
        num_calibration / num_eval: how many inputs to calibrate on / to compare and score.
        eval_spec: dataset spec for parity and (annotated, tracker) PCK.
        keep_heatmap: keep the tracker's heatmap output when it has one (default: the runtime refines the
            landmarks with it; see the ``--keep_heatmap`` flag for what dropping it costs).
        kind: ``auto``, ``tracker`` or ``detector``.
        topology: keypoints of the tracker (PCK, metadata).
        name / version / source: metadata fields (name defaults to the Keras model's name).
        value_range: model input range (default: tracker [0, 1], detector [-1, 1]).
        bias_correction: int8 only: correct the systematic int8 shift of dense outputs
            (:func:`export.bias_correction.correct_int8_biases`; quantizes twice). Ignored when ``int8`` is given.
        int8: int8 only: activation ranges, layer and output bias correction, float layers
            (:class:`export.int8_export.Int8Settings`; default: its defaults with ``bias_correction``).
        eval_detector: the detector (``official`` or a file) behind which ``auto`` int8 choices score the
            candidates' pipeline PCK on ``eval_spec``.
        overwrite: replace files at ``output`` and its report that an earlier export did not write (without it they
            are refused: :func:`export.output_files.check_replaceable_export`).
        log: where progress lines go.

    Raises:
        UserError: bad arguments, or ``output`` cannot be written (checked before anything is loaded).
        ModelError: the model does not load, does not meet the tracker or detector I/O contract
            (:mod:`blazepose_tf.contract`), or does not convert.
    """
    t_start = time.time()
    output = Path(output)
    check_output_path(output, overwrite)
    if quantization not in QUANTIZATIONS:
        raise UserError(f"--quantize must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}")
    if quantization == "int8" and not representative:
        raise UserError("--quantize int8 needs --representative SPEC (real inputs to calibrate on)")
    settings = int8 or Int8Settings(bias_correction=bias_correction)
    if quantization != "int8" and int8 is not None and (
            int8.float_layers.strip() or int8.activation_ranges != Int8Settings.activation_ranges):
        raise UserError("--float_layers and --activation_ranges are int8 settings: they need --quantize int8")
    if quantization == "int8":
        settings.check()
        if settings.needs_scorer and not eval_spec:
            raise UserError(f"--activation_ranges {AUTO} / --float_layers {AUTO} need --eval SPEC (an annotated split "
                            "to choose on, e.g. ../shared/data/lspet:dev)")
    label = None
    if isinstance(model, (str, os.PathLike)):
        label, source = str(model), source or Path(model).name
        model = load_keras_model(model, what="model file")
    prepared = prepare_model(model, kind=kind, keep_heatmap=keep_heatmap, label=label, topology=topology)
    kind = prepared.kind
    value_range = tuple(value_range) if value_range else md.NORMALIZATION[kind][0]
    log(f"{kind} {model.name}: input {prepared.input_hw[0]}x{prepared.input_hw[1]}, exporting "
        f"{', '.join(prepared.kept)}" + (f"; dropped {', '.join(prepared.dropped)}" if prepared.dropped else ""))
    runtime_contract = runtime_mismatch(prepared, label or model.name, topology)
    if runtime_contract:
        log(f"warning: {runtime_contract}; track and evaluate will refuse the exported model")

    calib: list[Sample] = []
    if representative and (quantization == "int8" or not eval_spec):  # else only --eval is used
        counts = SampleCount()
        calib = load_samples(representative, kind, prepared.input_hw, value_range,
                             num_calibration if quantization == "int8" else num_eval, topology=topology,
                             counts=counts)
        log(f"representative set {representative!r}: {len(calib)} inputs")
        short = (counts.shortfall("calibrating on", "--num_calibration") if quantization == "int8"
                 else counts.shortfall("comparing on", "--num_eval", small_is_fine=True))   # inputs for parity only
        if short:
            log(f"warning: --representative {representative!r}: {short}")
    t0 = time.time()
    correction, int8_report = None, None
    if quantization == "int8":
        scorer = PipelineScorer(eval_spec, eval_detector) if settings.needs_scorer and eval_spec else None
        result = build_int8(prepared, [s.tensor for s in calib], settings, scorer, log)
        flat, correction, int8_report = result.flat, result.bias_correction, result.report
    else:
        flat = convert(prepared.model, quantization)
    conversion_s = time.time() - t0

    doc = md.build_metadata(
        name=name or model.name, kind=kind, input_shape=(1, *prepared.input_hw, 3),
        outputs={r: prepared.output_shapes[r] for r in prepared.kept}, quantization=quantization,
        value_range=value_range,
        topology_name=topology.name if kind == "tracker" else "detector",
        keypoints=topology.keypoints if kind == "tracker" else md.DETECTOR_KEYPOINTS,
        auxiliary=AUX_ROI_POINTS if kind == "tracker" else (), version=version, source=source)
    flat = md.write_metadata(flat, doc, description=f"blazepose_tf {kind} {doc['name']} ({quantization})")
    model_tmp = write_temporary(output, flat)
    try:
        info = inspect_model(flat)
        # Parity (and PCK) on real inputs, of the written model.
        if eval_spec:
            counts = SampleCount()
            samples = load_samples(eval_spec, kind, prepared.input_hw, value_range, num_eval, topology=topology,
                                   counts=counts)
            data_note = eval_spec
            short = counts.shortfall("comparing on", "--num_eval", small_is_fine=True)
            if short:
                log(f"warning: --eval {eval_spec!r}: {short}")
        elif calib:
            samples, data_note = calib[:num_eval], representative
        else:
            rng = np.random.default_rng(0)
            lo, hi = value_range
            samples = [Sample(tensor=rng.uniform(lo, hi, (1, *prepared.input_hw, 3)).astype(np.float32),
                              roi=None, source="random") for _ in range(min(num_eval, 8))]  # type: ignore[arg-type]
            data_note = "random inputs (no dataset given: not real crops)"
        batch = np.concatenate([s.tensor for s in samples], axis=0)
        ref = keras_outputs(prepared.model, batch)
        got = tflite_outputs(model_tmp, batch)
        par = parity(ref, got)
        report: dict[str, Any] = {
            "model": str(output), "source": source, "name": doc["name"], "kind": kind, "quantization": quantization,
            "sha256": hashlib.sha256(flat).hexdigest(), "size_bytes": info.size_bytes, "size_mb": round(info.size_bytes / 1e6, 3),
            "op_histogram": info.op_histogram, "custom_ops": info.custom_ops, "flex_ops": info.flex_ops,
            "inputs": [vars(t) for t in info.inputs], "outputs": [vars(t) for t in info.outputs],
            "kept_outputs": prepared.kept, "dropped_outputs": prepared.dropped,
            "io_types": "float32 in / float32 out" + (" (int8 inside)" if quantization == "int8" else ""),
            "calibration": ({"dataset": representative, "num_inputs": len(calib)} if quantization == "int8"
                            else None),
            "bias_correction": correction,
            "int8": int8_report,
            "parity": {"dataset": data_note, "num_inputs": len(samples), "outputs": par},
            "pck": None, "metadata": doc, "conversion_seconds": round(conversion_s, 2),
        }
        if kind == "tracker" and samples and samples[0].person is not None:
            k = tracker_pck(ref["landmarks"], samples, topology, prepared.input_hw[1])
            t = tracker_pck(got["landmarks"], samples, topology, prepared.input_hw[1])
            if k and t:
                report["pck"] = {"dataset": data_note, "threshold": 0.2, "keras": k, "tflite": t,
                                 "delta_points": t["pck"] - k["pck"]}
        report["runtime_contract"] = runtime_contract or "ok"
        report["seconds"] = round(time.time() - t_start, 2)
        rpath = report_path_for(output)
    except BaseException:
        model_tmp.unlink(missing_ok=True)
        raise

    def write_report(doc: dict) -> None:
        os.replace(write_temporary(rpath, marked_json(doc, indent=1, default=float)), rpath)

    install(output, model_tmp, rpath, write_report, report, overwrite=overwrite)
    report["replaces_sha256"] = None
    return ExportResult(path=output, report_path=rpath, report=report)


def main(argv: list[str]) -> int:
    """Command-line entry point (flags in :func:`define_flags`)."""
    FLAGS = flags.FLAGS
    if not FLAGS.model or not FLAGS.output:
        raise UserError("--model and --output are required (see --help)")
    topology = get_topology(FLAGS.topology)   # one of the flag's choices
    value_range = None
    if FLAGS.input_range:
        try:
            value_range = tuple(float(v) for v in FLAGS.input_range.split(","))
            assert len(value_range) == 2 and value_range[1] > value_range[0]
        except (ValueError, AssertionError):
            raise UserError(f"--input_range must be LO,HI with LO < HI, got {FLAGS.input_range!r}") from None
    result = export_model(FLAGS.model, FLAGS.output, FLAGS.quantize, representative=FLAGS.representative,
                          num_calibration=FLAGS.num_calibration, eval_spec=FLAGS.eval, num_eval=FLAGS.num_eval,
                          keep_heatmap=FLAGS.keep_heatmap, kind=FLAGS.kind, topology=topology, name=FLAGS.name,
                          version=FLAGS.model_version, value_range=value_range,
                          int8=Int8Settings(activation_ranges=FLAGS.activation_ranges,
                                            range_percentile=FLAGS.range_percentile,
                                            bias_correction=FLAGS.bias_correction,
                                            layer_bias_correction=FLAGS.layer_bias_correction,
                                            float_layers=FLAGS.float_layers,
                                            float_mac_budget=FLAGS.float_mac_budget,
                                            max_pck_drop=FLAGS.max_pck_drop),
                          eval_detector=FLAGS.eval_detector, overwrite=FLAGS.overwrite)
    print(format_report(result.report))
    print(f"model -> {result.path}\nreport -> {result.report_path}")
    return 0


# Measured with python -m benchmarks.quantization (fp16 exports with and without the heatmap, LSPET test, 291 images,
# behind MediaPipe's detector).
HEATMAP_HELP = ("Keep a tracker's heatmap output (default, in every quantization: the runtime refines the landmarks "
                "with it). --nokeep_heatmap drops it, which costs points of pipeline PCK@0.2 (LSPET test, MediaPipe's "
                "detector, fp16, measured when the runtime ran one tracker pass per image: official Full 55.7 -> "
                "52.6, official Lite 43.8 -> 42.0; python -m benchmarks.quantization measures it for any tracker, "
                "its 'fp16 -heatmap' row).")


def define_flags() -> None:
    """The command's absl flags."""
    flags.DEFINE_string("model", None, "Keras model to export (.keras).")
    cli.define_overwrite_flag()
    flags.DEFINE_string("output", None, "The .tflite file to write; the report goes beside it (.report.json).")
    flags.DEFINE_enum("quantize", "none", list(QUANTIZATIONS),
                      "none (fp32), fp16 (fp16 weights), dynamic (int8 weights), int8 (full integer, float I/O).")
    flags.DEFINE_string("representative", None, "Dataset spec PATH[:SPLIT][,images=DIR] for int8 calibration "
                        "(and parity when --eval is not given), e.g. ../shared/data/lspet:train.")
    flags.DEFINE_integer("num_calibration", 200, "Representative inputs for int8 calibration.", lower_bound=1)
    flags.DEFINE_string("eval", None,
                        "Dataset spec for parity and, annotated, PCK@0.2 (e.g. ../shared/data/lspet:dev).")
    flags.DEFINE_integer("num_eval", 100, "Inputs to compare (and score) the exported model on.", lower_bound=1)
    flags.DEFINE_bool("keep_heatmap", True, HEATMAP_HELP)
    flags.DEFINE_bool("bias_correction", True, "int8: shift the biases of dense outputs (a tracker's landmarks, "
                      "presence and world landmarks; spatial outputs such as heatmaps and the detector's anchor "
                      "maps are left as they are) by their mean float - int8 difference on the calibration inputs, "
                      "then quantize again.")
    flags.DEFINE_enum("activation_ranges", Int8Settings.activation_ranges, list(RANGE_METHODS) + [AUTO],
                      "int8: activation ranges: minmax (calibrated min/max), percentile (--range_percentile; the "
                      "default: the best on LSPET dev for every tracker), mse (least squared int8 error), auto (the "
                      "best pipeline PCK on --eval).")
    flags.DEFINE_float("range_percentile", Int8Settings.range_percentile,
                       "int8, --activation_ranges percentile: the percentile kept.")
    flags.DEFINE_string("float_layers", "", "int8: ops kept in float: auto (a greedy search adds, one per round, "
                        "the activation tensor or the low-resolution tail of the network that removes the most "
                        "keypoint error (a detector: relative output error) per float MAC, within "
                        "--float_mac_budget; the first round whose pipeline PCK on --eval is within --max_pck_drop of "
                        "float is kept), N (the float set after N rounds), or names from the report's "
                        "int8.layer_errors (layer, tensor or #op).")
    flags.DEFINE_float("float_mac_budget", DEFAULT_MAC_BUDGET, "int8, --float_layers auto|N: largest share of the "
                       "MACs that may stay float.", lower_bound=0.0, upper_bound=1.0)
    flags.DEFINE_float("max_pck_drop", DEFAULT_MAX_PCK_DROP, "int8, --float_layers auto: pipeline PCK@0.2 points on "
                       "--eval the int8 model may lose against the float one.", lower_bound=0.0)
    flags.DEFINE_string("eval_detector", OFFICIAL_DETECTOR, "Detector behind which the auto int8 choices score "
                        "the pipeline PCK on --eval: official (MediaPipe's) or a detector file.")
    flags.DEFINE_bool("layer_bias_correction", True, "int8: shift every convolution's bias, in graph order, by the "
                      "mean int8 error of its output channels on 32 calibration inputs; kept only when that lowers "
                      "the keypoint error on 64 other calibration inputs (it helps the Full models, not the official "
                      "Lite).")
    flags.DEFINE_enum("kind", "auto", ["auto", "tracker", "detector"], "Model kind (auto: from the output names).")
    flags.DEFINE_enum("topology", BLAZEPOSE_33.name, sorted(TOPOLOGIES), "Tracker keypoint topology.")
    flags.DEFINE_string("name", None, "Model name stored in the metadata (default: the Keras model's name).")
    flags.DEFINE_string("model_version", "1", "Model version stored in the metadata.")
    flags.DEFINE_string("input_range", None, "Input range LO,HI (default: tracker 0,1; detector -1,1).")


def entry_point() -> None:
    """Console-script entry point (``[project.scripts]`` in pyproject.toml)."""
    define_flags()
    cli.run(main)


if __name__ == "__main__":
    entry_point()
