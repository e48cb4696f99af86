"""Exports a Keras detector or tracker to TFLite (builtin ops only), optionally quantized, with embedded
metadata and a parity report.

    python -m export.to_tflite --model MODEL.keras --output out.tflite [--quantize none|fp16|dynamic|int8]
        [--representative SPEC] [--num_calibration 200] [--eval SPEC] [--num_eval 100] [--keep_heatmap]
        [--kind auto|tracker|detector] [--topology blazepose33] [--name NAME] [--model_version 1]

Steps:

1. Training-only heads are dropped: the exported graph keeps ``landmarks``, ``presence`` (and ``world`` /
   ``segmentation`` when the model has them) for a tracker, ``regressors`` and ``scores`` for a detector;
   ``heatmap`` only with ``--keep_heatmap``; ``offsets`` and unrecognised outputs never.
2. Conversion uses the builtin op set only (``TFLITE_BUILTINS``; ``TFLITE_BUILTINS_INT8`` for int8). A model
   that needs TensorFlow (Flex / Select TF) ops fails with a message naming them: we never ship Flex ops.
3. The input is a fixed (1, H, W, 3) float32 tensor named ``image``; the signature's outputs (and the output
   tensors) are named after their roles, so :class:`blazepose_tf.runtime.runners.TFLiteRunner` finds them.
4. Quantization: ``none`` (fp32), ``fp16`` (fp16 weights), ``dynamic`` (int8 weights, float activations),
   ``int8`` (full integer: weights and activations int8, calibrated on ``--num_calibration`` real inputs from
   ``--representative``). int8 models keep float32 input and output tensors (QUANTIZE/DEQUANTIZE at the
   edges), so the runtime contract (input range, output units) is the same for every mode. int8 pays off on
   phones (ARM dot-product kernels; measure with :mod:`android_harness.bench`); on an x86 host with AVX2 and no
   VNNI, XNNPACK's int8 kernels are about as fast as fp32, and dynamic-range models are slower.
5. Metadata (name, kind, topology, input normalization, quantization, version) is embedded as JSON, see
   :mod:`export.metadata`.
6. A report is written beside the model (``out.report.json``): file size, op histogram, I/O, and parity
   against the Keras model on real inputs (max / mean absolute and max relative error per output); for a
   tracker evaluated on an annotated dataset, PCK@0.2 of the exported model versus the Keras one on
   ground-truth-aligned crops.

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

import contextlib
import io
import json
import os
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from blazepose_tf import cli, contract
from blazepose_tf.contract import DETECTOR_ROLES, LANDMARK_ROLES
from blazepose_tf.errors import ModelError, UserError
from blazepose_tf.runtime.runners import assign_roles
from blazepose_tf.topology import AUX_ROI_POINTS, BLAZEPOSE_33, Topology
from export import metadata as md
from export.representative import Sample, load_samples
from export.tflite_model import inspect_model

QUANTIZATIONS = ("none", "fp16", "dynamic", "int8")
TRAINING_ONLY = ("heatmap", "offsets")
KEPT_ROLES = {"tracker": ("landmarks", "presence", "world", "segmentation"), "detector": DETECTOR_ROLES}
INPUT_NAME = "image"


class ConversionError(ModelError):
    """The model cannot be converted with TFLite builtin ops (or the converter failed)."""


@dataclass
class PreparedModel:
    """The inference-only Keras model to convert and what was kept/dropped."""

    model: Any                      # keras.Model, input (1, H, W, 3) named "image", dict outputs by role
    kind: str
    input_hw: tuple[int, int]
    kept: list[str]
    dropped: list[str]
    output_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    source_names: dict[str, str] = field(default_factory=dict)   # role → the Keras model's output name


def load_keras_model(path: str | os.PathLike, what: str = "model"):
    """:func:`blazepose_tf.models.loading.load_keras_model`, imported on first use: importing the
    :mod:`blazepose_tf.models` package imports Keras and TensorFlow (whose start-up lines on stderr would come
    before the ``error:`` line), so a missing file is reported before that."""
    if not Path(path).expanduser().exists():
        raise ModelError(f"{what} not found: {Path(path).expanduser()}")
    from blazepose_tf.models.loading import load_keras_model as load

    return load(path, what)


def _output_names(model) -> list[str]:
    names = list(getattr(model, "output_names", None) or [])
    return [n.split("/")[0] for n in names]


def _named_outputs(model, outputs) -> dict[str, Any]:
    """The model's outputs (a dict, list or tensor) as {name: tensor}."""
    if isinstance(outputs, Mapping):
        return dict(outputs)
    if not isinstance(outputs, (list, tuple)):
        outputs = [outputs]
    names = _output_names(model)
    if len(names) != len(outputs):
        names = [f"output_{i}" for i in range(len(outputs))]
    return dict(zip(names, outputs))


def output_roles(names: Sequence[str], shapes: Sequence[tuple[int, ...]], input_hw: tuple[int, int]) -> list[str]:
    """Role of each Keras output: its name when it is a known role or training-only head, else by shape."""
    known = set(DETECTOR_ROLES) | set(LANDMARK_ROLES) | set(TRAINING_ONLY)
    by_shape = assign_roles(shapes, names, input_hw)
    roles = [n if n in known else by_shape[i] for i, n in enumerate(names)]
    dup = sorted({r for r in roles if roles.count(r) > 1})
    if dup:
        raise ModelError(f"cannot tell the model's outputs apart ({', '.join(names)} -> {', '.join(roles)}); "
                         "name the output layers landmarks/presence/heatmap/offsets or regressors/scores")
    return roles


def prepare_model(model, kind: str = "auto", keep_heatmap: bool = False, *, label: Optional[str] = None,
                  topology: Topology = BLAZEPOSE_33) -> PreparedModel:
    """Wraps ``model`` into the graph that gets exported (see step 1 and 3 of the module docstring).

    Args:
        model: a Keras model.
        kind: ``auto`` (from the outputs), ``tracker`` or ``detector``.
        keep_heatmap: keep a tracker's heatmap output.
        label: names the model in error messages (default: the Keras model's name).
        topology: the tracker's keypoints (it must output them and the 2 ROI points).

    Raises:
        ModelError: the model does not meet the tracker or detector I/O contract
            (:func:`blazepose_tf.contract.check_model`, at any fixed input size).
    """
    import keras

    label = label or str(getattr(model, "name", "model"))
    h, w, _ = contract.image_input_shape(label, [tuple(i.shape) for i in model.inputs])
    image = keras.Input(batch_shape=(1, h, w, 3), name=INPUT_NAME, dtype="float32")
    outs = _named_outputs(model, model(image, training=False))
    names = list(outs)
    shapes = [tuple(1 if d is None else int(d) for d in outs[n].shape) for n in names]
    try:
        roles = output_roles(names, shapes, (h, w))
    except ModelError as e:
        raise ModelError(f"{label}: {e}") from None
    if kind == "auto":
        role = contract.guess_role(list(zip(roles, shapes)))
        if role is None:
            raise ModelError(f"{label}: cannot tell whether the model is a tracker or a detector from its outputs "
                             f"{contract.format_outputs(list(zip(names, shapes)))}; pass --kind")
        kind = contract.ROLE_KINDS[role]
    if kind not in KEPT_ROLES:
        raise UserError(f"--kind must be auto, tracker or detector, got {kind!r}")
    contract.check_model(contract.KIND_ROLES[kind], label, (h, w, 3), list(zip(roles, shapes)),
                         num_keypoints=topology.num_keypoints, exact=False)
    keep = set(KEPT_ROLES[kind]) | ({"heatmap"} if keep_heatmap and kind == "tracker" else set())
    kept = {r: outs[n] for n, r in zip(names, roles) if r in keep}
    dropped = [n for n, r in zip(names, roles) if r not in keep]
    if keep_heatmap and "heatmap" not in kept:
        raise UserError("--keep_heatmap given but the model has no heatmap output")
    wrapped = keras.Model(image, kept, name=f"{model.name}_inference")
    return PreparedModel(model=wrapped, kind=kind, input_hw=(h, w), kept=list(kept), dropped=dropped,
                         output_shapes={r: tuple(int(d) for d in kept[r].shape) for r in kept},
                         source_names={r: n for n, r in zip(names, roles) if r in keep})


_FLEX_PATTERNS = (re.compile(r"TF Select ops: ([^\n]+)"),
                  re.compile(r"'tf\.(\w+)' op is neither a custom op nor a flex op"))


def _flex_ops_from_error(text: str) -> list[str]:
    ops: list[str] = []
    for pat in _FLEX_PATTERNS:
        for m in pat.finditer(text):
            for op in re.split(r"[,\s]+", m.group(1).strip()):
                if op and op not in ops:
                    ops.append(op)
    return ops


def _first_error_line(text: str) -> str:
    for line in text.splitlines():
        low = line.lower()
        if "error:" in low and "failed while converting" not in low:
            return line.split("error:", 1)[1].strip()[:300]
    return (text.strip().splitlines() or ["unknown converter error"])[0][:300]


def convert(model, quantization: str = "none", representative: Optional[Sequence[np.ndarray]] = None) -> bytes:
    """Converts a prepared Keras model (see :func:`prepare_model`) with builtin ops only.

    Raises:
        ConversionError: ops with no builtin kernel (named), or any other converter failure (first error line).
        UserError: unknown quantization, or int8 without representative inputs.
    """
    import tensorflow as tf

    if quantization not in QUANTIZATIONS:
        raise UserError(f"--quantize must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantization == "int8":
        if not representative:
            raise UserError("int8 quantization needs representative inputs (--representative SPEC)")
        data = [np.asarray(x, np.float32) for x in representative]
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([x] for x in data)
        ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.float32    # keep the float contract: (de)quantize inside the graph
        converter.inference_output_type = tf.float32
    converter.target_spec.supported_ops = ops
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            flat = converter.convert()
    except Exception as e:  # noqa: BLE001 - the converter raises ConverterError, RuntimeError, ValueError...
        text = str(e)
        flex = _flex_ops_from_error(text)
        if flex:
            raise ConversionError(
                f"the model uses TensorFlow ops with no TFLite builtin kernel: {', '.join(flex)} (they would need "
                "Flex/Select TF ops, which exported models must not use); replace those layers") from None
        raise ConversionError(f"TFLite conversion ({quantization}) failed: {_first_error_line(text)}") from None
    info = inspect_model(flat)
    if info.custom_ops:
        raise ConversionError(f"the converted model contains custom/Flex ops: {', '.join(info.custom_ops)}")
    return bytes(flat)


# ---------------------------------------------------------------------------------------------------------
# Parity and PCK


def keras_outputs(model, batch: np.ndarray, chunk: int = 16) -> dict[str, np.ndarray]:
    """Runs a (prepared or original) Keras model on a (N, H, W, 3) batch; {name: (N, ...)}."""
    import tensorflow as tf

    fn = tf.function(lambda t: model(t, training=False), reduce_retracing=True)
    parts: list[dict[str, np.ndarray]] = []
    x = np.asarray(batch, np.float32)
    for i in range(0, len(x), chunk):
        piece = x[i:i + chunk]
        if model.inputs[0].shape[0] == 1:  # the prepared model has a fixed batch of one
            outs = [_named_outputs(model, fn(piece[j:j + 1])) for j in range(len(piece))]
            parts.extend({k: np.asarray(v) for k, v in o.items()} for o in outs)
        else:
            parts.append({k: np.asarray(v) for k, v in _named_outputs(model, fn(piece)).items()})
    return {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}


def tflite_outputs(path: str | os.PathLike, batch: np.ndarray) -> dict[str, np.ndarray]:
    """Runs a .tflite model with :class:`TFLiteRunner` on a (N, H, W, 3) batch; {role: (N, ...)}."""
    from blazepose_tf.runtime.runners import TFLiteRunner

    return TFLiteRunner(path)(np.asarray(batch, np.float32))


def parity(reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Per output: max and mean absolute error, and max error relative to the reference's largest magnitude."""
    out = {}
    for name, ref in reference.items():
        if name not in candidate:
            raise ModelError(f"exported model has no {name!r} output (has {', '.join(candidate)})")
        ref = np.asarray(ref, np.float64)
        got = np.asarray(candidate[name], np.float64).reshape(ref.shape)
        diff = np.abs(got - ref)
        scale = float(np.abs(ref).max()) if ref.size else 0.0
        out[name] = {"max_abs": float(diff.max()), "mean_abs": float(diff.mean()),
                     "max_rel": float(diff.max() / max(scale, 1e-12)), "ref_max_abs": scale}
    return out


def tracker_pck(landmarks: np.ndarray, samples: Sequence[Sample], topology: Topology = BLAZEPOSE_33,
                input_size: int = 256) -> Optional[dict[str, Any]]:
    """PCK@0.2 (mid-torso and diagonal) of tracker outputs on GT-aligned crops; None without annotations."""
    from blazepose_tf.codecs.landmarks import decode_landmarks
    from blazepose_tf.codecs.roi import project_to_image
    from blazepose_tf.metrics import pck

    people = [s.person for s in samples]
    if not samples or any(p is None for p in people):
        return None
    n = topology.num_keypoints
    preds = []
    for raw, s in zip(landmarks, samples):
        lm = decode_landmarks(raw, input_size=input_size)
        if lm.xyz.shape[0] < n:
            return None
        preds.append(project_to_image(lm.xyz[:n], s.roi)[:, :2])
    mid = pck(people, preds, topology=topology)
    diag = pck(people, preds, topology=topology, diagonal=True)
    return {"pck": mid.pck, "pck_diagonal": diag.pck, "num_people": mid.num_people, "num_points": mid.num_points,
            "per_keypoint": mid.per_keypoint}


# ---------------------------------------------------------------------------------------------------------
# Whole export


@dataclass
class ExportResult:
    """What :func:`export_model` wrote."""

    path: Path
    report_path: Path
    report: dict[str, Any]


def report_path_for(output: Path) -> Path:
    """``out.tflite`` → ``out.report.json``."""
    return output.with_name(output.stem + ".report.json")


def check_output_path(output: Path) -> None:
    """Raises a one-line :class:`UserError` (exit 2) unless ``output`` and its report can be written: neither is a
    folder, and their folder exists or can be created (its nearest existing ancestor is a writable folder).
    Cheap: :func:`export_model` calls it before loading or converting anything."""
    if output.suffix != ".tflite":
        raise UserError(f"--output must end in .tflite, got {output.name!r}")
    for path in (output, report_path_for(output)):
        if path.is_dir():
            raise UserError(f"cannot write {path}: it is a folder" + (
                "; give a .tflite file name" if path == output else " (the report goes beside the model)"))
    folder = output.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise UserError(f"cannot write --output {output}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"cannot write --output {output}: folder {folder} is not writable")


def _write_atomically(path: Path, data: bytes) -> Path:
    """Writes ``data`` to a new temporary file beside ``path`` (creating the folder; usual permissions), returned
    for :func:`os.replace`; a write failure is a one-line :class:`UserError` and leaves nothing behind."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.time_ns()}.part")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    return tmp


def correct_int8_biases(model, prepared: PreparedModel, flat: bytes, inputs: Sequence[np.ndarray],
                        log=print, rounds: int = 1) -> tuple[bytes, Optional[dict]]:
    """Converts ``prepared`` to int8 again, ``rounds`` times, each time with the biases of its dense outputs
    shifted by the mean float − int8 difference left by the previous conversion on ``inputs``
    (:mod:`export.bias_correction`); ``model``'s weights are restored afterwards. One round by default: on the
    official Full (LSPET dev, behind MediaPipe's detector) pipeline PCK int8 43.8 → 48.7 with one round, 49.0
    with two, but the second round pushes the detection rate past the float model's (92.3% against 90.9%).
    Returns the last flatbuffer and a report ({role: shift summary}), or ``flat`` unchanged and None when no output can be corrected."""
    import tempfile
    from export import bias_correction as bc

    by_name = bc.find_correctable(model)
    correctable = {r: by_name[n] for r, n in prepared.source_names.items() if n in by_name}
    if not correctable or not inputs:
        return flat, None
    batch = np.concatenate(inputs, axis=0)
    ref = keras_outputs(prepared.model, batch)          # the float model, before any shift
    saved = bc.snapshot(correctable)
    total = {r: 0.0 for r in correctable}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "int8.tflite"
            for _ in range(rounds):
                path.write_bytes(flat)
                shifts = bc.bias_shifts(correctable, ref, tflite_outputs(path, batch))
                bc.apply_shifts(correctable, shifts)
                total = {r: total[r] + shifts[r] for r in shifts}
                flat = convert(prepared.model, "int8", list(inputs))
    finally:
        bc.restore(saved)
    summary = {r: {"layer": correctable[r].layer.name, "rounds": rounds,
                   "mean_abs_shift": float(np.abs(v).mean()), "max_abs_shift": float(np.abs(v).max()),
                   "channels": int(np.size(v))} for r, v in total.items()}
    log("int8 bias correction: " + ", ".join(f"{r} (mean |shift| {v['mean_abs_shift']:.3g})"
                                            for r, v in summary.items()))
    return flat, summary


def export_model(model, output: str | os.PathLike, quantization: str = "none", *,
                 representative: Optional[str] = None, num_calibration: int = 200,
                 eval_spec: Optional[str] = None, num_eval: int = 100, keep_heatmap: bool = False,
                 kind: str = "auto", topology: Topology = BLAZEPOSE_33, name: Optional[str] = None,
                 version: str = "1", value_range: Optional[Sequence[float]] = None,
                 source: Optional[str] = None, bias_correction: bool = True, log=print) -> ExportResult:
    """Prepares, converts, embeds metadata, checks parity and writes the model and its report.

    Args:
        model: a Keras model (or a ``.keras`` path).
        output: the .tflite file to write (its folder is created if missing); it and its report are written
            atomically, and only once the export succeeded.
        quantization: one of :data:`QUANTIZATIONS`.
        representative: dataset spec for int8 calibration (and parity when ``eval_spec`` is None).
        num_calibration / num_eval: how many inputs to calibrate on / to compare and score.
        eval_spec: dataset spec for parity and (annotated, tracker) PCK.
        keep_heatmap: keep the tracker's heatmap output.
        kind: ``auto``, ``tracker`` or ``detector``.
        topology: keypoints of the tracker (PCK, metadata).
        name / version / source: metadata fields (name defaults to the Keras model's name).
        value_range: model input range (default: tracker [0, 1], detector [-1, 1]).
        bias_correction: int8 only: correct the systematic int8 shift of dense outputs
            (:mod:`export.bias_correction`; converts twice).
        log: where progress lines go.

    Raises:
        UserError: bad arguments, or ``output`` cannot be written (checked before anything is loaded).
        ModelError: the model does not load, does not meet the tracker or detector I/O contract
            (:mod:`blazepose_tf.contract`), or does not convert.
    """
    t_start = time.time()
    output = Path(output)
    check_output_path(output)
    if quantization not in QUANTIZATIONS:
        raise UserError(f"--quantize must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}")
    if quantization == "int8" and not representative:
        raise UserError("--quantize int8 needs --representative SPEC (real inputs to calibrate on)")
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
        calib = load_samples(representative, kind, prepared.input_hw, value_range,
                             num_calibration if quantization == "int8" else num_eval, topology=topology)
        log(f"representative set {representative!r}: {len(calib)} inputs")
    t0 = time.time()
    flat = convert(prepared.model, quantization, [s.tensor for s in calib] if quantization == "int8" else None)
    correction = None
    if quantization == "int8" and bias_correction:
        flat, correction = correct_int8_biases(model, prepared, flat, [s.tensor for s in calib], log)
    conversion_s = time.time() - t0

    doc = md.build_metadata(
        name=name or model.name, kind=kind, input_shape=(1, *prepared.input_hw, 3),
        outputs={r: prepared.output_shapes[r] for r in prepared.kept}, quantization=quantization,
        value_range=value_range,
        topology_name=topology.name if kind == "tracker" else "detector",
        keypoints=topology.keypoints if kind == "tracker" else md.DETECTOR_KEYPOINTS,
        auxiliary=AUX_ROI_POINTS if kind == "tracker" else (), version=version, source=source)
    flat = md.write_metadata(flat, doc, description=f"blazepose_tf {kind} {doc['name']} ({quantization})")
    model_tmp = _write_atomically(output, flat)
    try:
        info = inspect_model(flat)
        # Parity (and PCK) on real inputs, of the written model.
        if eval_spec:
            samples = load_samples(eval_spec, kind, prepared.input_hw, value_range, num_eval, topology=topology)
            data_note = eval_spec
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
            "size_bytes": info.size_bytes, "size_mb": round(info.size_bytes / 1e6, 3),
            "op_histogram": info.op_histogram, "custom_ops": info.custom_ops, "flex_ops": info.flex_ops,
            "inputs": [vars(t) for t in info.inputs], "outputs": [vars(t) for t in info.outputs],
            "kept_outputs": prepared.kept, "dropped_outputs": prepared.dropped,
            "io_types": "float32 in / float32 out" + (" (int8 inside)" if quantization == "int8" else ""),
            "calibration": ({"dataset": representative, "num_inputs": len(calib)} if quantization == "int8"
                            else None),
            "bias_correction": correction,
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
        report_tmp = _write_atomically(rpath, json.dumps(report, indent=1, default=float).encode())
    except BaseException:
        model_tmp.unlink(missing_ok=True)
        raise
    os.replace(model_tmp, output)
    os.replace(report_tmp, rpath)
    return ExportResult(path=output, report_path=rpath, report=report)


def runtime_mismatch(prepared: PreparedModel, label: str, topology: Topology = BLAZEPOSE_33) -> Optional[str]:
    """Why the runtime (:mod:`blazepose_tf.runtime`) would refuse the exported ``prepared`` model (e.g. an input
    size other than the contract's), or None when it meets the runtime's I/O contract."""
    try:
        contract.check_model(contract.KIND_ROLES[prepared.kind], label, (*prepared.input_hw, 3),
                             prepared.output_shapes, num_keypoints=topology.num_keypoints)
    except ModelError as e:
        return str(e)
    return None


def format_report(report: Mapping[str, Any]) -> str:
    """A few human-readable lines summarizing a report."""
    ops = ", ".join(f"{k}×{v}" for k, v in report["op_histogram"].items())
    lines = [f"{report['model']}: {report['kind']} {report['name']}, {report['quantization']}, "
             f"{report['size_mb']:.3f} MB, no Flex ops",
             f"ops: {ops}",
             f"parity vs Keras on {report['parity']['num_inputs']} inputs ({report['parity']['dataset']}):"]
    for name, e in report["parity"]["outputs"].items():
        lines.append(f"  {name:<12} max abs {e['max_abs']:.3g}  mean abs {e['mean_abs']:.3g}  "
                     f"max rel {e['max_rel']:.3g}")
    if report.get("pck"):
        p = report["pck"]
        lines.append(f"PCK@0.2 on {p['keras']['num_people']} GT-aligned crops: Keras {p['keras']['pck']:.2f}%  "
                     f"TFLite {p['tflite']['pck']:.2f}%  (delta {p['delta_points']:+.2f} points)")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Command-line entry point (flags in :func:`define_flags`)."""
    from absl import flags

    from blazepose_tf.topology import get_topology

    FLAGS = flags.FLAGS
    if not FLAGS.model or not FLAGS.output:
        raise UserError("--model and --output are required (see --help)")
    try:
        topology = get_topology(FLAGS.topology)
    except KeyError as e:
        raise UserError(str(e.args[0])) from None
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
                          bias_correction=FLAGS.bias_correction)
    print(format_report(result.report))
    print(f"model -> {result.path}\nreport -> {result.report_path}")
    return 0


def define_flags() -> None:
    """The command's absl flags."""
    from absl import flags

    flags.DEFINE_string("model", None, "Keras model to export (.keras).")
    flags.DEFINE_string("output", None, "The .tflite file to write; the report goes beside it (.report.json).")
    flags.DEFINE_enum("quantize", "none", list(QUANTIZATIONS),
                      "none (fp32), fp16 (fp16 weights), dynamic (int8 weights), int8 (full integer, float I/O).")
    flags.DEFINE_string("representative", None, "Dataset spec PATH[:SPLIT][,images=DIR] for int8 calibration "
                        "(and parity when --eval is not given), e.g. ../shared/data/lspet:train.")
    flags.DEFINE_integer("num_calibration", 200, "Representative inputs for int8 calibration.", lower_bound=1)
    flags.DEFINE_string("eval", None, "Dataset spec for parity and, annotated, PCK@0.2 (e.g. ../shared/data/lspet:dev).")
    flags.DEFINE_integer("num_eval", 100, "Inputs to compare (and score) the exported model on.", lower_bound=1)
    flags.DEFINE_bool("keep_heatmap", False, "Keep the tracker's heatmap output (for heatmap refinement).")
    flags.DEFINE_bool("bias_correction", True, "int8: shift the biases of dense outputs (a tracker's landmarks, "
                      "presence and world landmarks; spatial outputs such as heatmaps and the detector's anchor "
                      "maps are left as they are) by their mean float - int8 difference on the calibration inputs, "
                      "then convert again.")
    flags.DEFINE_enum("kind", "auto", ["auto", "tracker", "detector"], "Model kind (auto: from the output names).")
    flags.DEFINE_string("topology", BLAZEPOSE_33.name, "Tracker keypoint topology (blazepose33, coco17).")
    flags.DEFINE_string("name", None, "Model name stored in the metadata (default: the Keras model's name).")
    flags.DEFINE_string("model_version", "1", "Model version stored in the metadata.")
    flags.DEFINE_string("input_range", None, "Input range LO,HI (default: tracker 0,1; detector -1,1).")


def entry_point() -> None:
    """Console-script entry point (``[project.scripts]`` in pyproject.toml)."""
    define_flags()
    cli.run(main)


if __name__ == "__main__":
    entry_point()
