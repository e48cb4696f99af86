"""Exports a detector and a landmark model as a MediaPipe Tasks ``.task`` bundle that ``PoseLandmarker`` loads.

    python -m export.to_mediapipe --detector D --landmarks L --output pose_landmarker.task
        [--quantize none|fp16|dynamic|int8] [--representative SPEC] [--num_calibration 200]
        [--heatmap auto|placeholder] [--placeholders allow|refuse] [--name NAME] [--model_version 1]
        [--validate auto|require|off] [--validate_image IMG] [--overwrite]

``D`` and ``L`` are Keras models (``.keras``) or ``.tflite`` files (e.g. the official ones, or ones written by
:mod:`export.to_tflite`, any quantization). Keras inputs are converted here with builtin ops only and
``--quantize`` (int8 needs ``--representative``, see :mod:`export.representative`); ``.tflite`` inputs are
kept as they are (their quantization is reported).

What MediaPipe 0.10.21's ``PoseLandmarker`` needs, and what this command does about it:

1. **A zip, stored without compression**, holding ``pose_detector.tflite`` and
   ``pose_landmarks_detector.tflite`` (MediaPipe looks the two files up by these names).
2. **TFLite Metadata with image-input NormalizationOptions** in both models (see
   :mod:`export.mediapipe_metadata`): float32 inputs are rejected without it. Written here: name, version,
   description, author, input normalization (detector: mean 127.5, std 127.5 → [-1, 1]; landmarks: mean 0,
   std 255 → [0, 1]; taken from a model's ``blazepose_tf`` metadata when it has some), RGB, and the output
   names, in output order. The project's own ``blazepose_tf`` JSON metadata is kept/added beside it.
3. **The official output contract, in the official output *order*.** MediaPipe maps the landmark model's
   outputs by position (its graph splits the output vector 0..4 into landmarks, presence, segmentation,
   heatmap, world) and the detector's as (regressors, scores); names are ignored. The TFLite converter orders
   a Keras model's outputs its own way, so the main subgraph's output list is rewritten to the official
   order after conversion (and for ``.tflite`` inputs whose order differs), from the signature names or,
   without a signature, from the shapes:

   ======== ===================== =========================================================================
   model    output (order)        shape
   ======== ===================== =========================================================================
   detector regressors, scores    (1, 2254, 12), (1, 2254, 1); input (1, 224, 224, 3) — MediaPipe's anchors
   landmark landmarks             (1, 195) = 39 × (x, y, z, visibility logit, presence logit), crop pixels
   landmark presence              (1, 1) probability
   landmark segmentation          (1, H, W, 1) logits (H × W = input size)
   landmark heatmap               (1, H/4, W/4, 39) logits
   landmark world                 (1, 117) = 39 × (x, y, z) metres
   ======== ===================== =========================================================================

4. **Our own trackers** (:func:`blazepose_tf.models.tracker.build_tracker`: 35 points = 33 body + 2 ROI points,
   outputs ``landmarks`` and ``presence``, optionally ``heatmap``) lack outputs MediaPipe expects. They are
   wrapped into a Keras model with the full contract; each missing piece is a **documented placeholder**,
   listed in the model card, the TFLite metadata description and the report:

   * ``landmarks``: our 35 points, then 4 unused points (x = y = z = 0, visibility and presence logits −10);
   * ``segmentation``: constant logits −10 (sigmoid ≈ 0): with ``output_segmentation_masks=True`` MediaPipe
     returns an *empty* mask. **Segmentation is unsupported.**
   * ``world``: all zeros. **World landmarks are unsupported** (MediaPipe returns 33 points at the origin).
   * ``heatmap``: with ``--heatmap auto`` (default) the model's own heatmap when it has one (our heatmaps use
     the official convention, so MediaPipe's heatmap refinement works as on the official model), its 4 unused
     channels constant −10; otherwise (no heatmap, or ``--heatmap placeholder``) constant −10 logits, which
     *disables* MediaPipe's heatmap refinement (the window's confidence never reaches 0.5).

   With ``--placeholders refuse`` the command stops with a message naming the missing outputs instead. A
   ``.tflite`` tracker without the full contract cannot be patched: pass its ``.keras`` model.
5. **Validation.** The bundle is written under a temporary name, then (``--validate auto|require``) loaded and
   run by MediaPipe Tasks itself, ``PoseLandmarker`` in IMAGE mode on ``--validate_image`` (default: the
   offline sample photo), in the isolated ``mediapipe==0.10.21`` virtual environment of
   :mod:`export.mediapipe_env` (mediapipe is never installed into the project's environment), and its landmarks
   are compared with our own pipeline (:class:`~blazepose_tf.runtime.pipeline.PoseTracker`) running the same two
   .tflite files. Keras sources
   are also compared with their converted models (max/mean abs error per output); only then is it renamed to
   ``--output``. A bundle MediaPipe cannot load is deleted and the command fails with MediaPipe's message,
   leaving an earlier bundle at ``--output`` as it was. ``auto`` skips the MediaPipe check (with
   a note) when that environment cannot be created (offline); ``require`` fails instead.

Outputs: the bundle, ``<name>.task.model_card.md`` (what is real and what is a placeholder, input normalization,
quantization, validation) and ``<name>.task.report.json`` beside it (named after the whole bundle name, so a
``.tflite`` export's ``<stem>.report.json`` beside it is not touched). The report records the bundle's sha256 and
carries blazepose_tf's mark: a rerun replaces what an earlier export wrote, while a bundle, card or report that is
not an unchanged export (the user's, or one edited since) is refused before any work unless ``--overwrite``.

Exit codes: 0 ok; 2 bad flags; 4 a model is unloadable, not convertible, lacks the contract (and
placeholders are refused), or MediaPipe rejects the bundle.

This module is the command and the per-model export; the pieces live beside it:
:mod:`export.mediapipe_contract` (MediaPipe's output contract, the Keras wrappers and placeholders, items 3-4),
:mod:`export.mediapipe_tflite` (output order and metadata in the flatbuffer, items 2-3),
:mod:`export.task_bundle` (the zip, item 1), :mod:`export.mediapipe_validate` (item 5) and
:mod:`export.mediapipe_card` (model card and report). Roles, shapes, input ranges and quantization names come
from :mod:`blazepose_tf.contract`.
"""
from __future__ import annotations

import functools
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
from absl import flags

from blazepose_tf import cli
from blazepose_tf.codecs import roi as roi_codec
from blazepose_tf.contract import (DETECTOR, DETECTOR_NUM_ANCHORS, INPUT_RANGES, LANDMARKS, OUTPUT_ROLES,
                                   QUANTIZATIONS, REGRESSOR_VALUES, ROLE_KINDS, ROLES)
from blazepose_tf.errors import ModelError, UserError, model_file
from blazepose_tf.io.images import load_image
from blazepose_tf.io.samples import sample_image_path
from export import mediapipe_metadata as mpm
from export.mediapipe_card import bundle_report, card_and_report_paths, write_card_and_report
from export.mediapipe_contract import (DETECTOR_INPUT_HW, HEATMAP_CHOICES, PLACEHOLDER_CHOICES, ExportedModel,
                                       check_tflite_outputs, detector_contract_model, landmark_contract_model)
from export.mediapipe_tflite import finalize_tflite, input_normalization, previous_placeholders, reorder_outputs
from export.mediapipe_validate import validate_bundle
from export.output_files import check_replaceable_export, check_utf8_path, install
from export.representative import SampleCount, load_samples, normalize
from export.task_bundle import write_bundle
from export.tflite_model import inspect_model, read_bytes
from export.to_tflite import convert, keras_outputs, load_keras_model, parity, tflite_outputs

VALIDATE_CHOICES = ("auto", "require", "off")

_log = functools.partial(print, flush=True)


@dataclass
class BundleResult:
    """What :func:`build_bundle` wrote."""

    path: Path
    model_card_path: Path
    report_path: Path
    report: dict[str, Any]


def _load_source(source: Any) -> tuple[str, Any, str]:
    """(``"keras"`` | ``"tflite"``, Keras model or .tflite bytes, label) for a path, a Keras model or bytes."""
    if isinstance(source, (bytes, bytearray)):
        return "tflite", read_bytes(bytes(source)), "<tflite bytes>"
    if isinstance(source, (str, os.PathLike)):
        p = model_file(source)
        if p.suffix == ".tflite":
            flat = read_bytes(p)
            inspect_model(flat, label=str(p))  # a truncated or corrupt file: one line naming it, before any edit
            return "tflite", flat, p.name
        if p.suffix in (".keras", ".h5"):
            return "keras", load_keras_model(p), p.name
        raise ModelError(f"unsupported model file {p.name!r}: expected .keras or .tflite")
    if hasattr(source, "inputs") and hasattr(source, "outputs"):
        return "keras", source, getattr(source, "name", "keras model")
    raise UserError(f"expected a .keras/.tflite path or a Keras model, got {type(source).__name__}")


def _sample_inputs(input_hw: tuple[int, int], value_range: Sequence[float], letterbox: bool) -> np.ndarray:
    """Two inputs for parity: the offline sample photo (letterboxed / centre-cropped) and seeded noise."""
    h, w = input_hw
    batch = []
    try:
        img = load_image(sample_image_path())
        roi, _ = roi_codec.letterbox_roi(img.shape[1], img.shape[0], w, h)
        batch.append(normalize(roi_codec.crop(img, roi, w, h, border="zero" if letterbox else "replicate"),
                               value_range))
    except UserError:
        pass
    lo, hi = value_range
    batch.append(np.random.default_rng(0).uniform(lo, hi, (1, h, w, 3)).astype(np.float32))
    return np.concatenate(batch, axis=0)


def _parity(keras_model, flat: bytes, batch: np.ndarray) -> dict[str, dict[str, float]]:
    ref = keras_outputs(keras_model, batch)
    with tempfile.TemporaryDirectory(prefix="bp_mp_parity_") as tmp:
        path = Path(tmp) / "model.tflite"
        path.write_bytes(flat)
        got = tflite_outputs(path, batch)
    return parity(ref, got)


def export_one(role: str, source: Any, quantization: str = "none", *, representative: Optional[str] = None,
               num_calibration: int = 200, heatmap: str = "auto", placeholders: str = "allow",
               name: Optional[str] = None, version: str = "1", check_parity: bool = True,
               log: Callable[..., None] = _log) -> ExportedModel:
    """Exports the detector (``role="detector"``) or landmark model (``role="landmarks"``) of a bundle.

    ``source`` is a ``.keras``/``.tflite`` path, a Keras model, or .tflite bytes. Returns the final .tflite
    bytes (official output order, TFLite Metadata, blazepose_tf JSON) with what each output is.
    """
    if role not in ROLES:
        raise ValueError(f"role must be detector or landmarks, got {role!r}")
    if quantization not in QUANTIZATIONS:
        raise UserError(f"--quantize must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}")
    kind_src, obj, label = _load_source(source)
    order = OUTPUT_ROLES[role]
    notes: list[str] = []
    parity_stats = None
    if kind_src == "keras":
        if role == DETECTOR:
            model, infos = detector_contract_model(obj)
        else:
            model, infos = landmark_contract_model(obj, heatmap=heatmap, placeholders=placeholders)
        hw = tuple(int(d) for d in model.inputs[0].shape[1:3])
        value_range = INPUT_RANGES[role]
        mean, std = mpm.normalization_for_range(value_range)
        calib = None
        if quantization == "int8":
            if not representative:
                raise UserError("--quantize int8 needs --representative SPEC (real inputs to calibrate on)")
            counts = SampleCount()
            samples = load_samples(representative, ROLE_KINDS[role], hw, value_range, num_calibration,
                                   counts=counts)
            calib = [s.tensor for s in samples]
            short = counts.shortfall("calibrating on", "--num_calibration")
            if short:
                log(f"warning: {role}: --representative {representative!r}: {short}")
            notes.append(f"int8 calibrated on {len(calib)} inputs from {representative}")
        t0 = time.time()
        flat = convert(model, quantization, calib)
        log(f"{role}: converted {label} ({quantization}) in {time.time() - t0:.1f} s")
        flat, shapes = reorder_outputs(flat, order, role)
        if check_parity:
            parity_stats = _parity(model, flat, _sample_inputs(hw, value_range, role == DETECTOR))
        quant = quantization
        input_shape = (1, *hw, 3)
    else:
        if quantization != "none":
            notes.append(f"--quantize {quantization} ignored: {label} is already a .tflite")
            log(f"{role}: note: {notes[-1]}")
        flat, shapes = reorder_outputs(obj, order, role)
        info = inspect_model(flat)
        if len(info.inputs) != 1 or len(info.inputs[0].shape) != 4:
            raise ModelError(f"{label}: expected one (1, H, W, 3) image input")
        input_shape = tuple(int(d) for d in info.inputs[0].shape)
        if info.custom_ops:
            raise ModelError(f"{label} uses custom/Flex ops ({', '.join(info.custom_ops)}), which MediaPipe's "
                             "builtin resolver cannot run")
        infos = check_tflite_outputs(label, role, input_shape[1:3], shapes)
        mean, std, where = input_normalization(obj, role)
        notes.append(f"input normalization from {where}")
        quant = info.guess_quantization()
        prev = previous_placeholders(obj)  # a blazepose_tf export documents its own placeholders
        for o in infos:
            if o.name in prev and prev[o.name].get("status", "model") != "model":
                o.status, o.note = prev[o.name]["status"], prev[o.name].get("note", "")
    exported = ExportedModel(role=role, data=b"", source=label, source_kind=kind_src, quantization=quant,
                             input_shape=tuple(int(d) for d in input_shape), mean=float(mean), std=float(std),
                             outputs=infos, parity=parity_stats, notes=notes)
    model_name = name or (Path(label).stem if kind_src == "tflite" else getattr(obj, "name", role))
    exported.data = finalize_tflite(flat, exported, model_name, version)
    return exported


def build_bundle(detector: Any, landmarks: Any, output: Union[str, os.PathLike], quantization: str = "none", *,
                 representative: Optional[str] = None, num_calibration: int = 200, heatmap: str = "auto",
                 placeholders: str = "allow", name: Optional[str] = None, version: str = "1",
                 validate: str = "auto", validate_image: Optional[str] = None, check_parity: bool = True,
                 overwrite: bool = False, log: Callable[..., None] = _log) -> BundleResult:
    """Exports both models, writes the bundle, validates it, writes the model card and report.

    The bundle is validated under a temporary name and only then renamed to ``output``, so a bundle that fails
    validation leaves an earlier one in place. Files at ``output`` and beside it that an earlier export did not
    write are refused unless ``overwrite`` (:func:`export.output_files.check_replaceable_export`).
    """
    output = Path(output)
    check_utf8_path(output)
    if output.suffix != ".task":
        raise UserError(f"--output must end in .task, got {output.name!r}")
    if not output.parent.exists():
        raise UserError(f"output folder does not exist: {output.parent}")
    card, rpath = card_and_report_paths(output)
    check_replaceable_export(output, rpath, [card], overwrite)
    if validate not in VALIDATE_CHOICES:
        raise UserError(f"--validate must be one of {', '.join(VALIDATE_CHOICES)}, got {validate!r}")
    t0 = time.time()
    common = dict(quantization=quantization, representative=representative, num_calibration=num_calibration,
                  version=version, check_parity=check_parity, log=log)
    det = export_one(DETECTOR, detector, **common)
    lmk = export_one(LANDMARKS, landmarks, heatmap=heatmap, placeholders=placeholders, **common)
    for m in (det, lmk):
        for o in m.outputs:
            if o.status != "model":
                log(f"{m.role}: {o.name}: {o.note}")
    staging = output.with_name(f".{output.name}.{os.getpid()}.staging.task")
    try:
        write_bundle(det.data, lmk.data, staging)
        report = bundle_report(staging, name or output.stem, version, (det, lmk))
        report["bundle"] = str(output)
        report["validation"] = (validate_bundle(staging, validate_image, require=validate == "require", log=log)
                                if validate != "off" else {"mediapipe": "off"})
        report["seconds"] = round(time.time() - t0, 1)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    install(output, staging, rpath, lambda doc: write_card_and_report(doc, output), report, [card], overwrite)
    report["replaces_sha256"] = None
    return BundleResult(path=output, model_card_path=card, report_path=rpath, report=report)


def main(argv: list[str]) -> int:
    """Command-line entry point (flags in :func:`define_flags`)."""
    FLAGS = flags.FLAGS
    if not FLAGS.detector or not FLAGS.landmarks or not FLAGS.output:
        raise UserError("--detector, --landmarks and --output are required (see --help)")
    result = build_bundle(FLAGS.detector, FLAGS.landmarks, FLAGS.output, FLAGS.quantize,
                          representative=FLAGS.representative, num_calibration=FLAGS.num_calibration,
                          heatmap=FLAGS.heatmap, placeholders=FLAGS.placeholders, name=FLAGS.name,
                          version=FLAGS.model_version, validate=FLAGS.validate, validate_image=FLAGS.validate_image,
                          overwrite=FLAGS.overwrite)
    r = result.report
    for m in r["models"]:
        kinds = ", ".join(f"{o['name']}" + ("" if o["status"] == "model" else f" ({o['status']})")
                          for o in m["outputs"])
        print(f"{m['file']}: {m['source']} ({m['quantization']}, {m['size_bytes'] / 1e6:.2f} MB): {kinds}")
    if r["unsupported"]:
        print(f"unsupported (placeholders, see the model card): {', '.join(r['unsupported'])}")
    print(f"bundle -> {result.path} ({r['size_bytes'] / 1e6:.2f} MB)\nmodel card -> {result.model_card_path}\n"
          f"report -> {result.report_path}")
    return 0


def define_flags() -> None:
    """The command's absl flags."""
    h, w = DETECTOR_INPUT_HW
    flags.DEFINE_string("detector", None, f"Detector model (.keras or .tflite), official contract ({h}x{w} input, "
                        f"{DETECTOR_NUM_ANCHORS}x{REGRESSOR_VALUES} regressors + {DETECTOR_NUM_ANCHORS}x1 scores).")
    flags.DEFINE_string("landmarks", None, "Landmark model (.keras or .tflite): the official contract, or one of "
                        "our trackers (.keras; missing outputs become documented placeholders).")
    flags.DEFINE_string("output", None, "The .task bundle to write; model card and report go beside it.")
    cli.define_overwrite_flag()
    flags.DEFINE_enum("quantize", "none", list(QUANTIZATIONS), "Quantization of Keras inputs (see export.to_tflite).")
    flags.DEFINE_string("representative", None, "Dataset spec for int8 calibration, e.g. ../shared/data/lspet:train.")
    flags.DEFINE_integer("num_calibration", 200, "Representative inputs for int8 calibration.", lower_bound=1)
    flags.DEFINE_enum("heatmap", "auto", list(HEATMAP_CHOICES), "auto: the tracker's own heatmap when it has one "
                      "(MediaPipe refines landmarks with it); placeholder: constant, refinement disabled.")
    flags.DEFINE_enum("placeholders", "allow", list(PLACEHOLDER_CHOICES), "What to do when the landmark model lacks "
                      "an output MediaPipe expects: allow documented placeholders, or refuse.")
    flags.DEFINE_string("name", None, "Bundle name in the model card (default: the output file's stem).")
    flags.DEFINE_string("model_version", "1", "Version stored in the metadata.")
    flags.DEFINE_enum("validate", "auto", list(VALIDATE_CHOICES), "Load and run the bundle in MediaPipe Tasks "
                      "(isolated venv): auto (skip if that venv cannot be made), require, off.")
    flags.DEFINE_string("validate_image", None, "Image for the validation run (default: the offline sample photo).")


def entry_point() -> None:
    """Console-script entry point (``[project.scripts]`` in pyproject.toml)."""
    define_flags()
    cli.run(main)


if __name__ == "__main__":
    entry_point()
