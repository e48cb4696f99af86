"""Exports a detector and a landmark model as a MediaPipe Tasks ``.task`` bundle that ``PoseLandmarker`` loads.

    python -m export.to_mediapipe --detector D --landmarks L --output pose_landmarker.task
        [--quantize none|fp16|dynamic|int8] [--representative SPEC] [--num_calibration 200]
        [--heatmap auto|placeholder] [--placeholders allow|refuse] [--name NAME] [--model_version 1]
        [--validate auto|require|off] [--validate_image IMG]

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
5. **Validation.** The bundle is written, then (``--validate auto|require``) loaded and run by MediaPipe Tasks
   itself, ``PoseLandmarker`` in IMAGE mode on ``--validate_image`` (default: the offline sample photo), in the
   isolated ``mediapipe==0.10.21`` virtual environment of :mod:`benchmarks.mediapipe_env` (mediapipe is never
   installed into the project's environment), and its landmarks are compared with our own pipeline
   (:class:`~blazepose_tf.runtime.pipeline.PoseTracker`) running the same two .tflite files. Keras sources
   are also compared with their converted models (max/mean abs error per output). A bundle MediaPipe cannot
   load is deleted and the command fails with MediaPipe's message. ``auto`` skips the MediaPipe check (with
   a note) when that environment cannot be created (offline); ``require`` fails instead.

Outputs: the bundle, ``<stem>.model_card.md`` (what is real and what is a placeholder, input normalization,
quantization, validation) and ``<stem>.report.json`` beside it.

Exit codes: 0 ok; 2 bad flags; 4 a model is unloadable, not convertible, lacks the contract (and
placeholders are refused), or MediaPipe rejects the bundle.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import subprocess
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from blazepose_tf.errors import ModelError, UserError
from blazepose_tf.runtime.runners import assign_roles
from blazepose_tf.topology import AUX_ROI_POINTS, BLAZEPOSE_33
from blazepose_tf import cli
from export import mediapipe_metadata as mpm
from export import metadata as md
from export.tflite_model import inspect_model, pack, read_bytes, unpack

QUANTIZATIONS = ("none", "fp16", "dynamic", "int8")
HEATMAP_CHOICES = ("auto", "placeholder")
PLACEHOLDER_CHOICES = ("allow", "refuse")
VALIDATE_CHOICES = ("auto", "require", "off")

DETECTOR_FILE = "pose_detector.tflite"
LANDMARKS_FILE = "pose_landmarks_detector.tflite"
DETECTOR_ORDER = ("regressors", "scores")
LANDMARK_ORDER = ("landmarks", "presence", "segmentation", "heatmap", "world")
DETECTOR_INPUT_HW = (224, 224)
DETECTOR_SHAPES = {"regressors": (1, 2254, 12), "scores": (1, 2254, 1)}
NUM_POINTS = 39                 # MediaPipe's landmark count (33 body + 2 ROI + 4 unused)
BODY_POINTS = 33
ROI_POINTS = len(AUX_ROI_POINTS)
VALUES_PER_POINT = 5
HEATMAP_STRIDE = 4
PLACEHOLDER_LOGIT = -10.0       # sigmoid(-10) ≈ 4.5e-5: empty mask, no heatmap refinement, invisible point
DEFAULT_RANGES = {"detector": (-1.0, 1.0), "landmarks": (0.0, 1.0)}
MEDIAPIPE_DEFAULTS = {"num_poses": 1, "min_pose_detection_confidence": 0.5, "min_pose_presence_confidence": 0.5,
                      "min_tracking_confidence": 0.5, "output_segmentation_masks": False}

OUTPUT_DESCRIPTIONS = {
    "regressors": "Per SSD anchor (2254): box (cx, cy, w, h) then 4 keypoints (x, y) — mid-hip, full-body scale "
                  "point, mid-shoulder, upper-body scale point — in input pixels relative to the anchor centre.",
    "scores": "Per SSD anchor (2254): person score logit.",
    "landmarks": "39 x (x, y, z, visibility logit, presence logit) in crop pixels: 0..32 body, 33..34 ROI "
                 "centre and scale/rotation points, 35..38 unused.",
    "presence": "Pose presence probability.",
    "segmentation": "Person segmentation logits at the input resolution.",
    "heatmap": "Per-landmark heatmap logits (stride 4), used by MediaPipe's heatmap refinement.",
    "world": "39 x (x, y, z) world coordinates in metres, origin between the hips.",
}
PLACEHOLDER_NOTES = {
    "landmarks": "points 35..38 are padding (x = y = z = 0, visibility/presence logits -10)",
    "segmentation": "PLACEHOLDER, segmentation unsupported: constant logits -10, MediaPipe returns an empty "
                    "mask with output_segmentation_masks=True",
    "heatmap": "PLACEHOLDER: constant logits -10, MediaPipe's heatmap refinement is disabled",
    "heatmap_padded": "the model's own heatmap; channels 35..38 constant -10 (no refinement of unused points)",
    "world": "PLACEHOLDER, world landmarks unsupported: all zeros (MediaPipe returns 33 points at the origin)",
}


def _log(*args: Any) -> None:
    print(*args, flush=True)


# ---------------------------------------------------------------------------------------------------------
# Results


@dataclass
class OutputInfo:
    """One output of an exported model: role, shape, and whether it is real or a placeholder."""

    name: str
    shape: tuple[int, ...]
    status: str = "model"     # "model" | "placeholder" | "padded"
    note: str = ""


@dataclass
class ExportedModel:
    """One of the two models of the bundle, ready to be zipped."""

    role: str                           # "detector" | "landmarks"
    data: bytes
    source: str
    source_kind: str                    # "keras" | "tflite"
    quantization: str
    input_shape: tuple[int, ...]
    mean: float
    std: float
    outputs: list[OutputInfo]
    parity: Optional[dict[str, dict[str, float]]] = None
    notes: list[str] = field(default_factory=list)

    @property
    def placeholders(self) -> list[str]:
        return [o.name for o in self.outputs if o.status == "placeholder"]


@dataclass
class BundleResult:
    """What :func:`build_bundle` wrote."""

    path: Path
    model_card_path: Path
    report_path: Path
    report: dict[str, Any]


# ---------------------------------------------------------------------------------------------------------
# Loading


def _load_source(source: Any) -> tuple[str, Any, str]:
    """(``"keras"`` | ``"tflite"``, Keras model or .tflite bytes, label) for a path, a Keras model or bytes."""
    if isinstance(source, (bytes, bytearray)):
        return "tflite", read_bytes(bytes(source)), "<tflite bytes>"
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        if not p.is_file():
            raise ModelError(f"model file not found: {p}")
        if p.suffix == ".tflite":
            return "tflite", read_bytes(p), p.name
        if p.suffix in (".keras", ".h5"):
            from export.to_tflite import load_keras_model

            return "keras", load_keras_model(p), p.name
        raise ModelError(f"unsupported model file {p.name!r}: expected .keras or .tflite")
    if hasattr(source, "inputs") and hasattr(source, "outputs"):
        return "keras", source, getattr(source, "name", "keras model")
    raise UserError(f"expected a .keras/.tflite path or a Keras model, got {type(source).__name__}")


def _input_hw(model) -> tuple[int, int]:
    shape = tuple(model.inputs[0].shape)
    if len(model.inputs) != 1 or len(shape) != 4 or shape[-1] != 3 or shape[1] is None or shape[2] is None:
        raise ModelError(f"expected one (N, H, W, 3) image input with a fixed size, got "
                         f"{[tuple(i.shape) for i in model.inputs]}")
    return int(shape[1]), int(shape[2])


def _symbolic_outputs(model, image) -> dict[str, Any]:
    """{role: KerasTensor} of ``model`` called on ``image``; roles from names, else shapes (to_tflite rules)."""
    from export.to_tflite import _named_outputs, output_roles

    outs = _named_outputs(model, model(image, training=False))
    names = list(outs)
    shapes = [tuple(1 if d is None else int(d) for d in outs[n].shape) for n in names]
    roles = output_roles(names, shapes, tuple(int(v) for v in image.shape[1:3]))
    return {r: outs[n] for n, r in zip(names, roles)}


# ---------------------------------------------------------------------------------------------------------
# Keras wrappers producing the official contract


def _wrapper_layers():
    """Small Keras layers used by :func:`landmark_contract_model` (created lazily: Keras is imported late)."""
    import keras
    from keras import ops

    class PadLandmarks(keras.layers.Layer):
        """(B, P·5) → (B, 39·5): appends unused points (x = y = z = 0, visibility/presence logits ``logit``)."""

        def __init__(self, num_in: int, num_out: int = NUM_POINTS, logit: float = PLACEHOLDER_LOGIT, **kw):
            super().__init__(**kw)
            self.num_in, self.num_out, self.logit = int(num_in), int(num_out), float(logit)

        def call(self, x):
            n = self.num_out - self.num_in
            pad = np.tile(np.array([0.0, 0.0, 0.0, self.logit, self.logit], np.float32), n)[None]
            return ops.concatenate([x, x[:, :1] * 0.0 + pad], axis=-1)

    class ConstantMap(keras.layers.Layer):
        """A (B, H/s, W/s, C) map of ``value`` computed from a (B, H, W, ·) tensor (never a constant output)."""

        def __init__(self, stride: int, channels: int, value: float = PLACEHOLDER_LOGIT, **kw):
            super().__init__(**kw)
            self.stride, self.channels, self.value = int(stride), int(channels), float(value)

        def call(self, x):
            base = x[:, ::self.stride, ::self.stride, :1] if self.stride > 1 else x[..., :1]
            return base * np.zeros((1, 1, 1, self.channels), np.float32) + self.value

    class PadChannels(keras.layers.Layer):
        """(B, h, w, P) → (B, h, w, C): extra channels constant ``value``."""

        def __init__(self, channels: int, value: float = PLACEHOLDER_LOGIT, **kw):
            super().__init__(**kw)
            self.channels, self.value = int(channels), float(value)

        def call(self, x):
            n = self.channels - int(x.shape[-1])
            return ops.concatenate([x, x[..., :1] * np.zeros((1, 1, 1, n), np.float32) + self.value], axis=-1)

    class ZerosLike(keras.layers.Layer):
        """(B, N) zeros from the first N values of a (B, M ≥ N) tensor."""

        def __init__(self, size: int, **kw):
            super().__init__(**kw)
            self.size = int(size)

        def call(self, x):
            return x[:, :self.size] * 0.0

    return PadLandmarks, ConstantMap, PadChannels, ZerosLike


def landmark_contract_model(model, heatmap: str = "auto", placeholders: str = "allow"):
    """Wraps a landmark model into one with the official outputs (see the module docstring, item 4).

    Returns ``(keras_model, [OutputInfo...] in official order)``; the Keras model has a (1, H, W, 3) input named
    ``image`` and dict outputs named by role.

    Raises:
        ModelError: the model is not a BlazePose-33 tracker (33 + 2 points, presence), or outputs are missing
            and ``placeholders == "refuse"``.
    """
    import keras

    if heatmap not in HEATMAP_CHOICES:
        raise UserError(f"--heatmap must be one of {', '.join(HEATMAP_CHOICES)}, got {heatmap!r}")
    if placeholders not in PLACEHOLDER_CHOICES:
        raise UserError(f"--placeholders must be one of {', '.join(PLACEHOLDER_CHOICES)}, got {placeholders!r}")
    hw = _input_hw(model)
    if hw[0] % HEATMAP_STRIDE or hw[1] % HEATMAP_STRIDE:
        raise ModelError(f"landmark model input {hw[0]}x{hw[1]} is not a multiple of {HEATMAP_STRIDE}")
    image = keras.Input(batch_shape=(1, hw[0], hw[1], 3), name="image", dtype="float32")
    outs = _symbolic_outputs(model, image)
    for r in ("landmarks", "presence"):
        if r not in outs:
            raise ModelError(f"the landmark model has no {r!r} output (outputs: {', '.join(outs)}); MediaPipe "
                             "needs landmarks and presence")
    lm = outs["landmarks"]
    size = int(lm.shape[-1])
    if len(lm.shape) != 2 or size % VALUES_PER_POINT:
        raise ModelError(f"'landmarks' output must be (1, P*5), got {tuple(lm.shape)}")
    points = size // VALUES_PER_POINT
    if not BODY_POINTS + ROI_POINTS <= points <= NUM_POINTS:
        raise ModelError(f"the landmark model predicts {points} points; MediaPipe's PoseLandmarker needs the "
                         f"BlazePose topology: {BODY_POINTS} body points then the {ROI_POINTS} ROI points "
                         f"(35..{NUM_POINTS} points); a model trained on another topology cannot be bundled")
    if tuple(int(d) for d in outs["presence"].shape[1:]) != (1,):
        raise ModelError(f"'presence' output must be (1, 1), got {tuple(outs['presence'].shape)}")
    hm_hw = (hw[0] // HEATMAP_STRIDE, hw[1] // HEATMAP_STRIDE)
    contract = {"landmarks": (1, NUM_POINTS * VALUES_PER_POINT), "presence": (1, 1),
                "segmentation": (1, hw[0], hw[1], 1), "heatmap": (1, *hm_hw, NUM_POINTS),
                "world": (1, NUM_POINTS * 3)}

    PadLandmarks, ConstantMap, PadChannels, ZerosLike = _wrapper_layers()
    result: dict[str, Any] = {}
    infos: dict[str, OutputInfo] = {}
    missing: list[str] = []

    if points < NUM_POINTS:
        result["landmarks"] = PadLandmarks(points, name="mp_pad_landmarks")(lm)
        infos["landmarks"] = OutputInfo("landmarks", contract["landmarks"], "padded", PLACEHOLDER_NOTES["landmarks"])
    else:
        result["landmarks"] = lm
        infos["landmarks"] = OutputInfo("landmarks", contract["landmarks"])
    result["presence"] = outs["presence"]
    infos["presence"] = OutputInfo("presence", (1, 1))

    seg = outs.get("segmentation")
    if seg is not None and tuple(int(d) for d in seg.shape[1:]) == contract["segmentation"][1:]:
        result["segmentation"] = seg
        infos["segmentation"] = OutputInfo("segmentation", contract["segmentation"])
    else:
        missing.append("segmentation")
        result["segmentation"] = ConstantMap(1, 1, name="mp_segmentation_placeholder")(image)
        infos["segmentation"] = OutputInfo("segmentation", contract["segmentation"], "placeholder",
                                           PLACEHOLDER_NOTES["segmentation"])

    hm = outs.get("heatmap") if heatmap == "auto" else None
    hm_ok = hm is not None and tuple(int(d) for d in hm.shape[1:3]) == hm_hw and int(hm.shape[-1]) == points
    if hm_ok and points < NUM_POINTS:
        result["heatmap"] = PadChannels(NUM_POINTS, name="mp_pad_heatmap")(hm)
        infos["heatmap"] = OutputInfo("heatmap", contract["heatmap"], "padded", PLACEHOLDER_NOTES["heatmap_padded"])
    elif hm_ok:
        result["heatmap"] = hm
        infos["heatmap"] = OutputInfo("heatmap", contract["heatmap"])
    else:
        if heatmap == "auto":
            missing.append("heatmap")
        result["heatmap"] = ConstantMap(HEATMAP_STRIDE, NUM_POINTS, name="mp_heatmap_placeholder")(image)
        why = "" if heatmap == "auto" and hm is None else (" (--heatmap placeholder)" if heatmap == "placeholder"
                                                           else f" (the model's heatmap {tuple(hm.shape)} does not "
                                                                f"match {points} points at {hm_hw})")
        infos["heatmap"] = OutputInfo("heatmap", contract["heatmap"], "placeholder",
                                      PLACEHOLDER_NOTES["heatmap"] + why)

    world = outs.get("world")
    if world is not None and int(world.shape[-1]) == NUM_POINTS * 3:
        result["world"] = world
        infos["world"] = OutputInfo("world", contract["world"])
    else:
        missing.append("world")
        result["world"] = ZerosLike(NUM_POINTS * 3, name="mp_world_placeholder")(result["landmarks"])
        infos["world"] = OutputInfo("world", contract["world"], "placeholder", PLACEHOLDER_NOTES["world"])

    if missing and placeholders == "refuse":
        raise ModelError(f"the landmark model has no {', '.join(missing)} output(s), which MediaPipe's "
                         "PoseLandmarker expects; rerun with --placeholders allow to bundle documented placeholders "
                         "(segmentation/world reported as unsupported in the model card)")
    wrapped = keras.Model(image, {r: result[r] for r in LANDMARK_ORDER}, name=f"{model.name}_mediapipe")
    return wrapped, [infos[r] for r in LANDMARK_ORDER]


def detector_contract_model(model):
    """The detector as a (1, 224, 224, 3) → {regressors, scores} model; checks MediaPipe's anchor layout."""
    from export.to_tflite import prepare_model

    prepared = prepare_model(model, kind="detector")
    if prepared.input_hw != DETECTOR_INPUT_HW:
        raise ModelError(f"the detector input is {prepared.input_hw[0]}x{prepared.input_hw[1]}; MediaPipe's pose "
                         f"detector graph hard-codes {DETECTOR_INPUT_HW[0]}x{DETECTOR_INPUT_HW[1]} and its anchors")
    for r, shape in DETECTOR_SHAPES.items():
        if prepared.output_shapes[r] != shape:
            raise ModelError(f"detector output {r!r} is {prepared.output_shapes[r]}; MediaPipe's pose detector "
                             f"graph expects {shape} (2254 SSD anchors)")
    return prepared.model, [OutputInfo(r, DETECTOR_SHAPES[r]) for r in DETECTOR_ORDER]


# ---------------------------------------------------------------------------------------------------------
# Flatbuffer edits


def _main_output_roles(flat: bytes, kind: str) -> tuple[list[str], list[tuple[int, ...]]]:
    """Role and shape of each output of the main subgraph, in the file's current order."""
    info = inspect_model(flat)
    shapes = [tuple(int(d) for d in t.shape) for t in info.outputs]
    tree_names = [t.name for t in info.outputs]
    # Prefer signature names (the converter's keys), by tensor index.
    sig_names: dict[int, str] = {}
    tree = unpack(flat)
    sg = tree.subgraphs[0]
    for sd in tree.signatureDefs or []:
        if (sd.subgraphIndex or 0) != 0:
            continue
        for t in sd.outputs or []:
            name = t.name.decode() if isinstance(t.name, bytes) else t.name
            sig_names[int(t.tensorIndex)] = name
    names = [sig_names.get(int(i), n) for i, n in zip(sg.outputs, tree_names)]
    hw = tuple(int(d) for d in info.inputs[0].shape[1:3]) if info.inputs else None
    return assign_roles(shapes, names, hw), shapes


def reorder_outputs(flat: bytes, order: Sequence[str], kind: str) -> tuple[bytes, dict[str, tuple[int, ...]]]:
    """Rewrites the main subgraph's output list into ``order`` (by role) and names the I/O tensors by role.

    Returns the new bytes and ``{role: shape}``. Raises ModelError when a role is missing or ambiguous.
    """
    roles, shapes = _main_output_roles(flat, kind)
    by_role: dict[str, int] = {}
    for pos, r in enumerate(roles):
        if r in by_role:
            raise ModelError(f"cannot tell the {kind} model's outputs apart (two outputs look like {r!r}: "
                             f"{shapes[by_role[r]]} and {shapes[pos]})")
        by_role[r] = pos
    missing = [r for r in order if r not in by_role]
    if missing:
        have = ", ".join(f"{r} {s}" for r, s in zip(roles, shapes))
        hint = ("; MediaPipe needs all five: pass the tracker's .keras model instead, so the missing outputs "
                "become documented placeholders" if kind == "landmarks" else "")
        raise ModelError(f"the {kind} .tflite has no {', '.join(missing)} output(s) (has: {have}){hint}")
    tree = unpack(flat)
    sg = tree.subgraphs[0]
    old = [int(i) for i in sg.outputs]
    sg.outputs = np.array([old[by_role[r]] for r in order], dtype=np.int32)
    for r in order:
        sg.tensors[old[by_role[r]]].name = r
    if len(sg.inputs) == 1:
        sg.tensors[int(sg.inputs[0])].name = "image"
    for sd in tree.signatureDefs or []:  # keep the signature's output list in the same order
        if (sd.subgraphIndex or 0) == 0 and sd.outputs:
            pos = {int(i): k for k, i in enumerate(sg.outputs)}
            sd.outputs = sorted(sd.outputs, key=lambda t: pos.get(int(t.tensorIndex), len(pos)))
    return pack(tree), {r: shapes[by_role[r]] for r in order}


def _input_normalization(flat: bytes, role: str) -> tuple[float, float, str]:
    """(mean, std, where it came from) for a .tflite: its blazepose_tf JSON, its TFLite Metadata, or the default."""
    doc = None
    try:
        doc = md.read_metadata(flat)
    except ModelError:
        doc = None
    if doc and isinstance(doc.get("input"), dict) and doc["input"].get("range"):
        mean, std = mpm.normalization_for_range(doc["input"]["range"])
        return mean, std, "blazepose_tf metadata"
    try:
        meta = mpm.read_tflite_metadata(flat)
    except ModelError:
        meta = None
    if meta and meta["inputs"] and meta["inputs"][0].get("std"):
        return float(meta["inputs"][0]["mean"][0]), float(meta["inputs"][0]["std"][0]), "existing TFLite metadata"
    mean, std = mpm.normalization_for_range(DEFAULT_RANGES[role])
    return mean, std, "default for the official contract"


def _description(role: str, name: str, exported: "ExportedModel") -> str:
    what = "person detector (BlazePose)" if role == "detector" else "pose landmark model (BlazePose, 33 points)"
    lines = [f"{name}: {what}, exported by blazepose_tf for MediaPipe Tasks PoseLandmarker. "
             f"Source {exported.source} ({exported.source_kind}), quantization {exported.quantization}."]
    for o in exported.outputs:
        if o.status != "model":
            lines.append(f"{o.name}: {o.note}.")
    return " ".join(lines)


def finalize_tflite(flat: bytes, exported: ExportedModel, name: str, version: str) -> bytes:
    """Writes TFLite Metadata (MediaPipe) and the blazepose_tf JSON into an already-reordered model."""
    order = [o.name for o in exported.outputs]
    image = mpm.ImageInputDoc("image", "RGB image, normalized as (pixel - mean) / std", exported.mean, exported.std)
    outs = [mpm.TensorDoc(o.name, OUTPUT_DESCRIPTIONS[o.name] + (f" [{o.note}]" if o.note else ""))
            for o in exported.outputs]
    description = _description(exported.role, name, exported)
    blob = mpm.build_model_metadata(name=name, description=description, version=version, image=image, outputs=outs)
    kind = "detector" if exported.role == "detector" else "tracker"
    doc = md.build_metadata(
        name=name, kind=kind, input_shape=exported.input_shape, outputs={o.name: o.shape for o in exported.outputs},
        quantization=exported.quantization, value_range=image.value_range,
        topology_name=BLAZEPOSE_33.name if kind == "tracker" else "detector",
        keypoints=BLAZEPOSE_33.keypoints if kind == "tracker" else md.DETECTOR_KEYPOINTS,
        auxiliary=AUX_ROI_POINTS if kind == "tracker" else (), version=version, source=exported.source,
        extra={"mediapipe": {"bundle_file": DETECTOR_FILE if kind == "detector" else LANDMARKS_FILE,
                             "output_order": order,
                             "outputs": {o.name: {"status": o.status, "note": o.note} for o in exported.outputs}}})
    entries = {mpm.TFLITE_METADATA_NAME: blob,
               md.METADATA_NAME: json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")}
    return md.set_metadata_buffers(flat, entries, description=f"blazepose_tf {exported.role} {name} for MediaPipe",
                                   name_io_tensors=False)


# ---------------------------------------------------------------------------------------------------------
# Exporting each model


def _sample_inputs(input_hw: tuple[int, int], value_range: Sequence[float], letterbox: bool) -> np.ndarray:
    """Two inputs for parity: the offline sample photo (letterboxed / centre-cropped) and seeded noise."""
    from blazepose_tf.codecs import roi as roi_codec
    from blazepose_tf.io.images import load_image
    from blazepose_tf.io.samples import sample_image_path
    from export.representative import normalize

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
    from export.to_tflite import keras_outputs, parity, tflite_outputs

    ref = keras_outputs(keras_model, batch)
    with tempfile.TemporaryDirectory(prefix="bp_mp_parity_") as tmp:
        path = Path(tmp) / "model.tflite"
        path.write_bytes(flat)
        got = tflite_outputs(path, batch)
    return parity(ref, got)


def export_one(role: str, source: Any, quantization: str = "none", *, representative: Optional[str] = None,
               num_calibration: int = 200, heatmap: str = "auto", placeholders: str = "allow",
               name: Optional[str] = None, version: str = "1", check_parity: bool = True,
               log=_log) -> ExportedModel:
    """Exports the detector (``role="detector"``) or landmark model (``role="landmarks"``) of a bundle.

    ``source`` is a ``.keras``/``.tflite`` path, a Keras model, or .tflite bytes. Returns the final .tflite
    bytes (official output order, TFLite Metadata, blazepose_tf JSON) with what each output is.
    """
    if role not in ("detector", "landmarks"):
        raise ValueError(f"role must be detector or landmarks, got {role!r}")
    if quantization not in QUANTIZATIONS:
        raise UserError(f"--quantize must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}")
    kind_src, obj, label = _load_source(source)
    order = DETECTOR_ORDER if role == "detector" else LANDMARK_ORDER
    notes: list[str] = []
    parity_stats = None
    if kind_src == "keras":
        if role == "detector":
            model, infos = detector_contract_model(obj)
        else:
            model, infos = landmark_contract_model(obj, heatmap=heatmap, placeholders=placeholders)
        hw = tuple(int(d) for d in model.inputs[0].shape[1:3])
        value_range = DEFAULT_RANGES[role]
        mean, std = mpm.normalization_for_range(value_range)
        calib = None
        if quantization == "int8":
            if not representative:
                raise UserError("--quantize int8 needs --representative SPEC (real inputs to calibrate on)")
            from export.representative import load_samples

            samples = load_samples(representative, "detector" if role == "detector" else "tracker", hw,
                                   value_range, num_calibration)
            calib = [s.tensor for s in samples]
            notes.append(f"int8 calibrated on {len(calib)} inputs from {representative}")
        from export.to_tflite import convert

        t0 = time.time()
        flat = convert(model, quantization, calib)
        log(f"{role}: converted {label} ({quantization}) in {time.time() - t0:.1f} s")
        flat, shapes = reorder_outputs(flat, order, role)
        if check_parity:
            parity_stats = _parity(model, flat, _sample_inputs(hw, value_range, role == "detector"))
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
        hw = input_shape[1:3]
        if info.custom_ops:
            raise ModelError(f"{label} uses custom/Flex ops ({', '.join(info.custom_ops)}), which MediaPipe's "
                             "builtin resolver cannot run")
        if role == "detector":
            if hw != DETECTOR_INPUT_HW or any(shapes[r] != DETECTOR_SHAPES[r] for r in DETECTOR_ORDER):
                raise ModelError(f"{label}: detector input {hw} / outputs {shapes} do not match MediaPipe's pose "
                                 f"detector contract (224x224 input, {DETECTOR_SHAPES})")
            infos = [OutputInfo(r, shapes[r]) for r in DETECTOR_ORDER]
        else:
            want = {"landmarks": (1, NUM_POINTS * VALUES_PER_POINT), "presence": (1, 1),
                    "segmentation": (1, hw[0], hw[1], 1),
                    "heatmap": (1, hw[0] // HEATMAP_STRIDE, hw[1] // HEATMAP_STRIDE, NUM_POINTS),
                    "world": (1, NUM_POINTS * 3)}
            bad = [f"{r} {shapes[r]} (expected {want[r]})" for r in LANDMARK_ORDER if shapes[r] != want[r]]
            if bad:
                raise ModelError(f"{label}: outputs do not match MediaPipe's landmark contract: {'; '.join(bad)}. "
                                 "Pass the .keras model so the outputs can be padded with documented placeholders")
            infos = [OutputInfo(r, shapes[r]) for r in LANDMARK_ORDER]
        mean, std, where = _input_normalization(obj, role)
        notes.append(f"input normalization from {where}")
        quant = info.guess_quantization()
        try:  # a blazepose_tf export documents its own placeholders
            prev = (md.read_metadata(obj) or {}).get("mediapipe", {}).get("outputs", {})
            for o in infos:
                if o.name in prev and prev[o.name].get("status", "model") != "model":
                    o.status, o.note = prev[o.name]["status"], prev[o.name].get("note", "")
        except ModelError:
            pass
    exported = ExportedModel(role=role, data=b"", source=label, source_kind=kind_src, quantization=quant,
                             input_shape=tuple(int(d) for d in input_shape), mean=float(mean), std=float(std),
                             outputs=infos, parity=parity_stats, notes=notes)
    model_name = name or (Path(label).stem if kind_src == "tflite" else getattr(obj, "name", role))
    exported.data = finalize_tflite(flat, exported, model_name, version)
    return exported


# ---------------------------------------------------------------------------------------------------------
# Bundle files


def write_bundle(detector: bytes, landmarks: bytes, output: Union[str, os.PathLike]) -> Path:
    """Writes the two models as a stored (uncompressed) zip, atomically."""
    output = Path(output)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.part")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as z:
        for fname, data in ((DETECTOR_FILE, detector), (LANDMARKS_FILE, landmarks)):
            zi = zipfile.ZipInfo(fname, date_time=(2024, 1, 1, 0, 0, 0))
            zi.compress_type = zipfile.ZIP_STORED
            zi.external_attr = 0o644 << 16
            z.writestr(zi, data)
    os.replace(tmp, output)
    return output


def read_bundle(path: Union[str, os.PathLike]) -> dict[str, bytes]:
    """{file name: bytes} of a .task bundle (checks that both model files are there)."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"bundle not found: {p}")
    try:
        with zipfile.ZipFile(p) as z:
            files = {n: z.read(n) for n in z.namelist()}
    except zipfile.BadZipFile:
        raise ModelError(f"{p} is not a .task bundle (not a zip file)") from None
    missing = [f for f in (DETECTOR_FILE, LANDMARKS_FILE) if f not in files]
    if missing:
        raise ModelError(f"{p} has no {', '.join(missing)}")
    return files


def extract_bundle(path: Union[str, os.PathLike], directory: Union[str, os.PathLike]) -> tuple[Path, Path]:
    """Writes the bundle's detector and landmark .tflite files into ``directory``; returns their paths."""
    files = read_bundle(path)
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    out = []
    for fname in (DETECTOR_FILE, LANDMARKS_FILE):
        (d / fname).write_bytes(files[fname])
        out.append(d / fname)
    return out[0], out[1]


# ---------------------------------------------------------------------------------------------------------
# Running MediaPipe Tasks (isolated venv)


WORKER_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "mp_worker_tasks.py"


def run_pose_landmarker(bundle: Union[str, os.PathLike], items: Sequence[Mapping[str, Any]], mode: str = "image",
                        options: Optional[Mapping[str, Any]] = None, cpu: Optional[Sequence[int]] = None,
                        fps: float = 30.0, warmup: int = 1, timeout: Optional[float] = None,
                        python: Optional[Path] = None) -> dict:
    """Runs MediaPipe Tasks ``PoseLandmarker`` on ``bundle`` in the isolated mediapipe venv.

    ``items`` are ``{"id": ..., "frames": [png paths]}`` (see :mod:`benchmarks.mp_worker_tasks` for modes and
    the result format). Returns the worker's JSON; a bundle MediaPipe cannot load gives ``{"error": msg}``.

    Raises:
        MediapipeEnvError: the venv cannot be created, or the worker crashed.
    """
    from benchmarks.mediapipe_env import MediapipeEnvError, ensure_mediapipe_env

    python = python or ensure_mediapipe_env(quiet=True)
    req = {"bundle": str(Path(bundle).resolve()), "mode": mode, "items": list(items),
           "options": {**MEDIAPIPE_DEFAULTS, **dict(options or {})}, "fps": fps, "warmup": warmup}
    with tempfile.TemporaryDirectory(prefix="bp_mp_tasks_") as tmp:
        rq, out = Path(tmp) / "request.json", Path(tmp) / "out.json"
        rq.write_text(json.dumps(req))
        cmd = [str(python), str(WORKER_SCRIPT), "--request", str(rq), "--output", str(out)]
        if cpu:
            cmd += ["--pin_cpu", ",".join(str(int(c)) for c in cpu)]
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        env.setdefault("GLOG_minloglevel", "2")
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise MediapipeEnvError(f"MediaPipe Tasks worker did not finish within {timeout} s") from None
        if out.is_file():
            return json.loads(out.read_text())
        tail = " | ".join([ln for ln in proc.stderr.strip().splitlines() if ln.strip()][-4:]) or "no output"
        raise MediapipeEnvError(f"MediaPipe Tasks worker failed (exit {proc.returncode}): {tail}")


def _write_png(image: np.ndarray, path: Path) -> Path:
    import cv2

    if not cv2.imwrite(str(path), np.ascontiguousarray(image[..., ::-1])):
        raise UserError(f"cannot write {path}")
    return path


def validate_bundle(bundle: Union[str, os.PathLike], image_path: Optional[Union[str, os.PathLike]] = None,
                    require: bool = False, log=_log) -> dict[str, Any]:
    """Loads and runs the bundle in MediaPipe Tasks (IMAGE mode) and our pipeline on the same .tflite files.

    Returns ``{"mediapipe": "ok" | "skipped" | "failed", "reason", "ours": {...}, "tasks": {...},
    "median_distance_px"}``. Raises ModelError when MediaPipe cannot load or run the bundle, and, with
    ``require``, when the mediapipe environment is unavailable.
    """
    from benchmarks.mediapipe_env import MediapipeEnvError
    from blazepose_tf.io.images import load_image
    from blazepose_tf.io.samples import sample_image_path
    from blazepose_tf.runtime.pipeline import PoseTracker
    from blazepose_tf.runtime.runners import load_runner

    image_path = Path(image_path) if image_path else sample_image_path()
    rgb = load_image(image_path)
    out: dict[str, Any] = {"image": str(image_path)}
    with tempfile.TemporaryDirectory(prefix="bp_mp_validate_") as tmp:
        det, lmk = extract_bundle(bundle, tmp)
        tracker = PoseTracker(load_runner(det), load_runner(lmk), mode="image")
        poses = tracker.process(rgb)
        ours = np.asarray(poses[0].keypoints, np.float64)[:BODY_POINTS, :2] if poses else None
        out["ours"] = {"poses": len(poses), "presence": float(poses[0].score) if poses else None}
        png = _write_png(rgb, Path(tmp) / "validate.png")
        try:
            res = run_pose_landmarker(bundle, [{"id": "validate", "frames": [str(png)]}], mode="image",
                                      timeout=600)
        except MediapipeEnvError as e:
            if require:
                raise ModelError(f"cannot validate the bundle in MediaPipe Tasks: {e}") from None
            out.update(mediapipe="skipped", reason=str(e))
            log(f"validation: MediaPipe Tasks check skipped ({e})")
            return out
    if "error" in res:
        out.update(mediapipe="failed", reason=res["error"])
        raise ModelError(f"MediaPipe Tasks PoseLandmarker rejected the bundle: {res['error']}")
    frame = res["results"][0]["frames"][0]
    if frame.get("error"):
        out.update(mediapipe="failed", reason=frame["error"])
        raise ModelError(f"MediaPipe Tasks loaded the bundle but failed running it: {frame['error']}")
    tposes = frame["poses"]
    out["tasks"] = {"poses": len(tposes), "create_ms": res["meta"].get("create_ms"),
                    "latency_ms": frame.get("latency_ms"), "mediapipe_version": res["meta"]["mediapipe_version"]}
    if tposes and len(tposes[0]["landmarks"]) != BODY_POINTS:
        raise ModelError(f"MediaPipe Tasks returned {len(tposes[0]['landmarks'])} landmarks, expected {BODY_POINTS}")
    if tposes and ours is not None:
        theirs = np.asarray([p[:2] for p in tposes[0]["landmarks"]], np.float64)
        out["median_distance_px"] = float(np.median(np.linalg.norm(theirs - ours, axis=1)))
    out["mediapipe"] = "ok"
    agree = (f", median distance to our pipeline {out['median_distance_px']:.2f} px"
             if "median_distance_px" in out else "")
    log(f"validation: MediaPipe Tasks {out['tasks']['mediapipe_version']} loaded the bundle and found "
        f"{len(tposes)} pose(s) on {image_path.name} (our pipeline: {len(poses)}){agree}")
    return out


# ---------------------------------------------------------------------------------------------------------
# Model card and the whole command


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def model_card(report: Mapping[str, Any]) -> str:
    """Markdown model card of a bundle (from its report)."""
    lines = [f"# {report['name']} — MediaPipe Tasks PoseLandmarker bundle", "",
             f"`{Path(report['bundle']).name}` ({report['size_bytes'] / 1e6:.2f} MB, sha256 "
             f"`{report['sha256'][:16]}…`), version {report['version']}, created {report['created']} by "
             f"blazepose_tf {report['blazepose_tf_version']}.", "",
             "Load it with `PoseLandmarker.create_from_options(PoseLandmarkerOptions(base_options="
             "BaseOptions(model_asset_path=...)))` (mediapipe 0.10.21).", ""]
    unsupported = []
    for m in report["models"]:
        for o in m["outputs"]:
            if o["status"] == "placeholder" and o["name"] in ("segmentation", "world"):
                unsupported.append(o["name"])
    if unsupported:
        lines += ["## Unsupported features", ""]
        if "segmentation" in unsupported:
            lines.append("* **Segmentation masks are unsupported.** The landmark model has no segmentation head: "
                         "its `segmentation` output is a placeholder (constant logits −10), so "
                         "`output_segmentation_masks=True` returns an empty (all ≈0) mask. Leave it False.")
        if "world" in unsupported:
            lines.append("* **World landmarks are unsupported.** The landmark model does not predict metric 3D "
                         "coordinates: its `world` output is all zeros, so `pose_world_landmarks` are 33 points "
                         "at the origin.")
        lines.append("")
    for m in report["models"]:
        lines += [f"## {m['file']} ({m['role']})", "",
                  f"* source: `{m['source']}` ({m['source_kind']}), quantization: {m['quantization']}, "
                  f"{m['size_bytes'] / 1e6:.2f} MB",
                  f"* input: {tuple(m['input_shape'])} float32 RGB, normalization (pixel − {m['mean']:g}) / "
                  f"{m['std']:g} → [{(0 - m['mean']) / m['std']:g}, {(255 - m['mean']) / m['std']:g}]", "",
                  "| # | output | shape | content |", "|---|---|---|---|"]
        for i, o in enumerate(m["outputs"]):
            what = "model output" if o["status"] == "model" else o["note"]
            lines.append(f"| {i} | {o['name']} | {tuple(o['shape'])} | {what} |")
        if m.get("parity"):
            worst = ", ".join(f"{k} {v['max_abs']:.3g}" for k, v in m["parity"].items())
            lines += ["", f"Converted vs Keras source (max abs error per output): {worst}"]
        if m.get("notes"):
            lines.append("")
        for note in m.get("notes", []):
            lines.append(f"* {note}")
        lines.append("")
    v = report.get("validation") or {}
    lines += ["## Validation", ""]
    if v.get("mediapipe") == "ok":
        t = v["tasks"]
        lines.append(f"Loaded and run by MediaPipe Tasks {t['mediapipe_version']} PoseLandmarker (IMAGE mode) on "
                     f"`{Path(v['image']).name}`: {t['poses']} pose(s); our pipeline on the same .tflite files: "
                     f"{v['ours']['poses']} pose(s)" + (f", median landmark distance {v['median_distance_px']:.2f} px"
                                                         if "median_distance_px" in v else "") + ".")
    elif v.get("mediapipe") == "skipped":
        lines.append(f"Not checked in MediaPipe Tasks: {v.get('reason')}")
    else:
        lines.append("Not validated (--validate off).")
    lines += ["", "Output order matters: MediaPipe maps the landmark model's outputs by position "
              "(landmarks, presence, segmentation, heatmap, world) and the detector's as (regressors, scores)."]
    return "\n".join(lines) + "\n"


def build_bundle(detector: Any, landmarks: Any, output: Union[str, os.PathLike], quantization: str = "none", *,
                 representative: Optional[str] = None, num_calibration: int = 200, heatmap: str = "auto",
                 placeholders: str = "allow", name: Optional[str] = None, version: str = "1",
                 validate: str = "auto", validate_image: Optional[str] = None, check_parity: bool = True,
                 log=_log) -> BundleResult:
    """Exports both models, writes the bundle, validates it, writes the model card and report."""
    import blazepose_tf

    output = Path(output)
    if output.suffix != ".task":
        raise UserError(f"--output must end in .task, got {output.name!r}")
    if not output.parent.exists():
        raise UserError(f"output folder does not exist: {output.parent}")
    if validate not in VALIDATE_CHOICES:
        raise UserError(f"--validate must be one of {', '.join(VALIDATE_CHOICES)}, got {validate!r}")
    t0 = time.time()
    common = dict(quantization=quantization, representative=representative, num_calibration=num_calibration,
                  version=version, check_parity=check_parity, log=log)
    det = export_one("detector", detector, **common)
    lmk = export_one("landmarks", landmarks, heatmap=heatmap, placeholders=placeholders, **common)
    for m in (det, lmk):
        for o in m.outputs:
            if o.status != "model":
                log(f"{m.role}: {o.name}: {o.note}")
    write_bundle(det.data, lmk.data, output)
    data = output.read_bytes()
    report: dict[str, Any] = {
        "bundle": str(output), "name": name or output.stem, "version": str(version),
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "blazepose_tf_version": blazepose_tf.__version__, "size_bytes": len(data), "sha256": _sha256(data),
        "models": [], "validation": None,
        "unsupported": sorted({o.name for o in lmk.outputs if o.status == "placeholder"
                               and o.name in ("segmentation", "world")}),
    }
    for m, fname in ((det, DETECTOR_FILE), (lmk, LANDMARKS_FILE)):
        entry = {k: v for k, v in asdict(m).items() if k != "data"}
        entry.update(file=fname, size_bytes=len(m.data), sha256=_sha256(m.data))
        report["models"].append(entry)
    if validate != "off":
        try:
            report["validation"] = validate_bundle(output, validate_image, require=validate == "require", log=log)
        except ModelError:
            output.unlink(missing_ok=True)
            raise
    else:
        report["validation"] = {"mediapipe": "off"}
    report["seconds"] = round(time.time() - t0, 1)
    card = output.with_name(output.stem + ".model_card.md")
    card.write_text(model_card(report))
    rpath = output.with_name(output.stem + ".report.json")
    rpath.write_text(json.dumps(report, indent=1, default=lambda o: list(o) if isinstance(o, tuple) else str(o)))
    return BundleResult(path=output, model_card_path=card, report_path=rpath, report=report)


def main(argv: list[str]) -> int:
    """Command-line entry point (flags in :func:`define_flags`)."""
    from absl import flags

    FLAGS = flags.FLAGS
    if not FLAGS.detector or not FLAGS.landmarks or not FLAGS.output:
        raise UserError("--detector, --landmarks and --output are required (see --help)")
    result = build_bundle(FLAGS.detector, FLAGS.landmarks, FLAGS.output, FLAGS.quantize,
                          representative=FLAGS.representative, num_calibration=FLAGS.num_calibration,
                          heatmap=FLAGS.heatmap, placeholders=FLAGS.placeholders, name=FLAGS.name,
                          version=FLAGS.model_version, validate=FLAGS.validate, validate_image=FLAGS.validate_image)
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
    from absl import flags

    flags.DEFINE_string("detector", None, "Detector model (.keras or .tflite), official contract (224x224 input, "
                        "2254x12 regressors + 2254x1 scores).")
    flags.DEFINE_string("landmarks", None, "Landmark model (.keras or .tflite): the official contract, or one of "
                        "our trackers (.keras; missing outputs become documented placeholders).")
    flags.DEFINE_string("output", None, "The .task bundle to write; model card and report go beside it.")
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
