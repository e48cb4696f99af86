"""Keras model → TFLite flatbuffer: the inference graph that gets exported (training-only heads dropped, a fixed
(1, H, W, 3) input named ``image``, outputs named by role; :func:`prepare_model`) and its conversion with builtin
ops only, optionally quantized (:func:`convert`). Steps 1-4 of :mod:`export.to_tflite`."""
from __future__ import annotations

import contextlib
import io
import os
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from blazepose_tf import contract
from blazepose_tf.contract import DETECTOR_ROLES, LANDMARK_ROLES, QUANTIZATIONS, TRAINING_ONLY_ROLES
from blazepose_tf.errors import ModelError, UserError, model_file
from blazepose_tf.runtime.runners import assign_roles
from blazepose_tf.topology import BLAZEPOSE_33, Topology
from export.tflite_model import inspect_model

# Outputs a tracker may carry that the export drops on request (the heatmap: --nokeep_heatmap) or always.
TRAINING_ONLY = ("heatmap",) + TRAINING_ONLY_ROLES
KEPT_ROLES = {"tracker": tuple(r for r in LANDMARK_ROLES if r != "heatmap"), "detector": DETECTOR_ROLES}
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
    model_file(path, what)
    from blazepose_tf.models.loading import load_keras_model as load

    return load(path, what)


def _output_names(model) -> list[str]:
    names = list(getattr(model, "output_names", None) or [])
    return [n.split("/")[0] for n in names]


def named_outputs(model, outputs) -> dict[str, Any]:
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
    """Wraps ``model`` into the graph that gets exported (steps 1 and 3 of :mod:`export.to_tflite`).

    Args:
        model: a Keras model.
        kind: ``auto`` (from the outputs), ``tracker`` or ``detector``.
        keep_heatmap: keep a tracker's heatmap output when it has one (the runtime refines the landmarks with it;
            :func:`export.to_tflite.export_model` keeps it by default).
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
    outs = named_outputs(model, model(image, training=False))
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


def _converter(model, quantization: str, representative: Optional[Sequence[np.ndarray]] = None):
    """A ``TFLiteConverter`` for a prepared Keras model, set up for ``quantization`` (builtin ops only; int8
    calibrated on ``representative`` with float32 input and output tensors)."""
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
    return converter


def _run_converter(convert_fn, what: str) -> bytes:
    """Runs ``convert_fn()`` (a TFLite converter call) quietly; its failures become :class:`ConversionError`:
    ops with no builtin kernel (named), or the converter's first error line. The result must hold no custom op."""
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            flat = convert_fn()
    except Exception as e:  # noqa: BLE001 - the converter raises ConverterError, RuntimeError, ValueError...
        text = str(e)
        flex = _flex_ops_from_error(text)
        if flex:
            raise ConversionError(
                f"the model uses TensorFlow ops with no TFLite builtin kernel: {', '.join(flex)} (they would need "
                "Flex/Select TF ops, which exported models must not use); replace those layers") from None
        raise ConversionError(f"TFLite conversion ({what}) failed: {_first_error_line(text)}") from None
    info = inspect_model(flat)
    if info.custom_ops:
        raise ConversionError(f"the converted model contains custom/Flex ops: {', '.join(info.custom_ops)}")
    return bytes(flat)


def convert(model, quantization: str = "none", representative: Optional[Sequence[np.ndarray]] = None) -> bytes:
    """Converts a prepared Keras model (see :func:`prepare_model`) with builtin ops only. int8 is
    :func:`calibrate` then :func:`quantize_calibrated` (what the converter does in one call).

    Raises:
        ConversionError: ops with no builtin kernel (named), or any other converter failure (first error line).
        UserError: unknown quantization, or int8 without representative inputs.
    """
    if quantization == "int8":
        return quantize_calibrated(calibrate(model, representative or ()))
    converter = _converter(model, quantization)
    return _run_converter(converter.convert, quantization)


def calibrate(model, representative: Sequence[np.ndarray]) -> bytes:
    """The float model with each activation tensor's calibrated range (its min and max over ``representative``)
    stored in its quantization parameters: the converter's int8 path stopped before quantizing
    (``_experimental_calibrate_only``, as ``tf.lite.experimental.QuantizationDebugger`` does). It runs as a
    float model; :mod:`export.ranges` may narrow its ranges and :mod:`export.bias_correction` shift its output
    biases before :func:`quantize_calibrated` turns it into the int8 model.

    Raises:
        ConversionError / UserError: as :func:`convert`.
    """
    converter = _converter(model, "int8", representative)
    converter._experimental_calibrate_only = True  # noqa: SLF001 - the debugger's documented route
    return _run_converter(converter.convert, "int8 calibration")


def quantize_calibrated(calibrated: bytes, float_nodes: Sequence[str] = ()) -> bytes:
    """Quantizes a :func:`calibrate` model to int8 (per-channel weights, float32 input and output tensors), the
    ops whose output tensor is named in ``float_nodes`` left in float (``denylisted_nodes`` of the converter's
    MLIR quantizer, which ``QuantizationDebugOptions`` passes the same way); identical to the converter's own int8
    result when nothing was changed.

    Raises:
        ConversionError: the quantizer failed.
    """
    import tensorflow as tf
    from tensorflow.lite.python import convert as tf_convert

    return _run_converter(lambda: tf_convert.mlir_quantize(
        bytes(calibrated), disable_per_channel=False, input_data_type=tf.float32, output_data_type=tf.float32,
        denylisted_nodes=list(float_nodes) or None), "int8")


def runtime_mismatch(prepared: PreparedModel, label: str, topology: Topology = BLAZEPOSE_33) -> Optional[str]:
    """Why the runtime (:mod:`blazepose_tf.runtime`) would refuse the exported ``prepared`` model (e.g. an input
    size other than the contract's), or None when it meets the runtime's I/O contract."""
    try:
        contract.check_model(contract.KIND_ROLES[prepared.kind], label, (*prepared.input_hw, 3),
                             prepared.output_shapes, num_keypoints=topology.num_keypoints)
    except ModelError as e:
        return str(e)
    return None
