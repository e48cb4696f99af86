"""What MediaPipe Tasks' ``PoseLandmarker`` expects of the two models of a ``.task`` bundle, and the Keras
wrappers that give our own models that contract (item 4 of :mod:`export.to_mediapipe`).

The roles, their order, the input shapes and the point counts come from :mod:`blazepose_tf.contract`; this
module adds what is particular to MediaPipe's graph: every landmark output present (``landmarks`` with
:data:`~blazepose_tf.contract.OFFICIAL_LANDMARK_POINTS` points, ``presence``, ``segmentation`` at the input
resolution, ``heatmap`` at stride :data:`~blazepose_tf.contract.HEATMAP_STRIDE`, ``world``), the detector's
anchor layout, and the documented placeholders standing in for the outputs our trackers lack.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from blazepose_tf.contract import (DETECTOR, DETECTOR_NUM_ANCHORS, DETECTOR_ROLES, HEATMAP_STRIDE, INPUT_SHAPES,
                                   LANDMARK_ROLES, NUM_KEYPOINTS, NUM_ROI_POINTS,
                                   OFFICIAL_LANDMARK_POINTS, REGRESSOR_VALUES, VALUES_PER_LANDMARK,
                                   WORLD_VALUES_PER_POINT)
from blazepose_tf.errors import ModelError, UserError
from export.to_tflite import _named_outputs, output_roles, prepare_model

HEATMAP_CHOICES = ("auto", "placeholder")
PLACEHOLDER_CHOICES = ("allow", "refuse")

#: MediaPipe's pose detector graph hard-codes the detector's input size and its SSD anchors.
DETECTOR_INPUT_HW: tuple[int, int] = INPUT_SHAPES[DETECTOR][:2]
DETECTOR_SHAPES: dict[str, tuple[int, ...]] = {"regressors": (1, DETECTOR_NUM_ANCHORS, REGRESSOR_VALUES),
                                               "scores": (1, DETECTOR_NUM_ANCHORS, 1)}
PLACEHOLDER_LOGIT = -10.0       # sigmoid(-10) ≈ 4.5e-5: empty mask, no heatmap refinement, invisible point
#: Landmark outputs that, as placeholders, make a MediaPipe feature unsupported (named in the model card).
UNSUPPORTED_IF_PLACEHOLDER = ("segmentation", "world")

_POINTS = OFFICIAL_LANDMARK_POINTS
_OURS = NUM_KEYPOINTS + NUM_ROI_POINTS      # points of our own trackers: the body, then the ROI points
OUTPUT_DESCRIPTIONS = {
    "regressors": f"Per SSD anchor ({DETECTOR_NUM_ANCHORS}): box (cx, cy, w, h) then 4 keypoints (x, y) — mid-hip, "
                  "full-body scale point, mid-shoulder, upper-body scale point — in input pixels relative to the "
                  "anchor centre.",
    "scores": f"Per SSD anchor ({DETECTOR_NUM_ANCHORS}): person score logit.",
    "landmarks": f"{_POINTS} x (x, y, z, visibility logit, presence logit) in crop pixels: 0..{NUM_KEYPOINTS - 1} "
                 f"body, {NUM_KEYPOINTS}..{_OURS - 1} ROI centre and scale/rotation points, {_OURS}..{_POINTS - 1} "
                 "unused.",
    "presence": "Pose presence probability.",
    "segmentation": "Person segmentation logits at the input resolution.",
    "heatmap": f"Per-landmark heatmap logits (stride {HEATMAP_STRIDE}), used by MediaPipe's heatmap refinement.",
    "world": f"{_POINTS} x (x, y, z) world coordinates in metres, origin between the hips.",
}
PLACEHOLDER_NOTES = {
    "landmarks": f"points {_OURS}..{_POINTS - 1} are padding (x = y = z = 0, visibility/presence logits -10)",
    "segmentation": "PLACEHOLDER, segmentation unsupported: constant logits -10, MediaPipe returns an empty "
                    "mask with output_segmentation_masks=True",
    "heatmap": "PLACEHOLDER: constant logits -10, MediaPipe's heatmap refinement is disabled",
    "heatmap_padded": f"the model's own heatmap; channels {_OURS}..{_POINTS - 1} constant -10 (no refinement of "
                      "unused points)",
    "world": f"PLACEHOLDER, world landmarks unsupported: all zeros (MediaPipe returns {NUM_KEYPOINTS} points at the "
             "origin)",
}


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
        """Roles of the outputs that are placeholders."""
        return [o.name for o in self.outputs if o.status == "placeholder"]


def landmark_output_shapes(input_hw: tuple[int, int]) -> dict[str, tuple[int, ...]]:
    """{role: shape} of MediaPipe's landmark outputs for a landmark model of input ``input_hw``."""
    h, w = input_hw
    return {"landmarks": (1, _POINTS * VALUES_PER_LANDMARK), "presence": (1, 1), "segmentation": (1, h, w, 1),
            "heatmap": (1, h // HEATMAP_STRIDE, w // HEATMAP_STRIDE, _POINTS),
            "world": (1, _POINTS * WORLD_VALUES_PER_POINT)}


def _input_hw(model) -> tuple[int, int]:
    shape = tuple(model.inputs[0].shape)
    if len(model.inputs) != 1 or len(shape) != 4 or shape[-1] != 3 or shape[1] is None or shape[2] is None:
        raise ModelError(f"expected one (N, H, W, 3) image input with a fixed size, got "
                         f"{[tuple(i.shape) for i in model.inputs]}")
    return int(shape[1]), int(shape[2])


def _symbolic_outputs(model, image) -> dict[str, Any]:
    """{role: KerasTensor} of ``model`` called on ``image``; roles from names, else shapes (to_tflite rules)."""
    outs = _named_outputs(model, model(image, training=False))
    names = list(outs)
    shapes = [tuple(1 if d is None else int(d) for d in outs[n].shape) for n in names]
    roles = output_roles(names, shapes, tuple(int(v) for v in image.shape[1:3]))
    return {r: outs[n] for n, r in zip(names, roles)}


def _wrapper_layers():
    """Small Keras layers used by :func:`landmark_contract_model` (created lazily: Keras is imported late)."""
    import keras
    from keras import ops

    class PadLandmarks(keras.layers.Layer):
        """(B, P·5) → (B, 39·5): appends unused points (x = y = z = 0, visibility/presence logits ``logit``)."""

        def __init__(self, num_in: int, num_out: int = _POINTS, logit: float = PLACEHOLDER_LOGIT, **kw):
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
    """Wraps a landmark model into one with the official outputs (see :mod:`export.to_mediapipe`, item 4).

    Returns ``(keras_model, [OutputInfo...] in official order)``; the Keras model has a (1, H, W, 3) input named
    ``image`` and dict outputs named by role.

    Raises:
        ModelError: the model is not a BlazePose-33 tracker (33 + 2 points, presence), or outputs are missing
            and ``placeholders == "refuse"``.
    """
    import keras  # heavy: only when a Keras model is wrapped

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
    if len(lm.shape) != 2 or size % VALUES_PER_LANDMARK:
        raise ModelError(f"'landmarks' output must be (1, P*5), got {tuple(lm.shape)}")
    points = size // VALUES_PER_LANDMARK
    if not _OURS <= points <= _POINTS:
        raise ModelError(f"the landmark model predicts {points} points; MediaPipe's PoseLandmarker needs the "
                         f"BlazePose topology: {NUM_KEYPOINTS} body points then the {NUM_ROI_POINTS} ROI points "
                         f"({_OURS}..{_POINTS} points); a model trained on another topology cannot be bundled")
    if tuple(int(d) for d in outs["presence"].shape[1:]) != (1,):
        raise ModelError(f"'presence' output must be (1, 1), got {tuple(outs['presence'].shape)}")
    contract = landmark_output_shapes(hw)
    hm_hw = contract["heatmap"][1:3]

    PadLandmarks, ConstantMap, PadChannels, ZerosLike = _wrapper_layers()
    result: dict[str, Any] = {}
    infos: dict[str, OutputInfo] = {}
    missing: list[str] = []

    if points < _POINTS:
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
    if hm_ok and points < _POINTS:
        result["heatmap"] = PadChannels(_POINTS, name="mp_pad_heatmap")(hm)
        infos["heatmap"] = OutputInfo("heatmap", contract["heatmap"], "padded", PLACEHOLDER_NOTES["heatmap_padded"])
    elif hm_ok:
        result["heatmap"] = hm
        infos["heatmap"] = OutputInfo("heatmap", contract["heatmap"])
    else:
        if heatmap == "auto":
            missing.append("heatmap")
        result["heatmap"] = ConstantMap(HEATMAP_STRIDE, _POINTS, name="mp_heatmap_placeholder")(image)
        why = "" if heatmap == "auto" and hm is None else (" (--heatmap placeholder)" if heatmap == "placeholder"
                                                           else f" (the model's heatmap {tuple(hm.shape)} does not "
                                                                f"match {points} points at {hm_hw})")
        infos["heatmap"] = OutputInfo("heatmap", contract["heatmap"], "placeholder",
                                      PLACEHOLDER_NOTES["heatmap"] + why)

    world = outs.get("world")
    if world is not None and int(world.shape[-1]) == contract["world"][1]:
        result["world"] = world
        infos["world"] = OutputInfo("world", contract["world"])
    else:
        missing.append("world")
        result["world"] = ZerosLike(contract["world"][1], name="mp_world_placeholder")(result["landmarks"])
        infos["world"] = OutputInfo("world", contract["world"], "placeholder", PLACEHOLDER_NOTES["world"])

    if missing and placeholders == "refuse":
        raise ModelError(f"the landmark model has no {', '.join(missing)} output(s), which MediaPipe's "
                         "PoseLandmarker expects; rerun with --placeholders allow to bundle documented placeholders "
                         "(segmentation/world reported as unsupported in the model card)")
    wrapped = keras.Model(image, {r: result[r] for r in LANDMARK_ROLES}, name=f"{model.name}_mediapipe")
    return wrapped, [infos[r] for r in LANDMARK_ROLES]


def detector_contract_model(model):
    """The detector as a (1, 224, 224, 3) → {regressors, scores} model; checks MediaPipe's anchor layout."""
    prepared = prepare_model(model, kind="detector")
    if prepared.input_hw != DETECTOR_INPUT_HW:
        raise ModelError(f"the detector input is {prepared.input_hw[0]}x{prepared.input_hw[1]}; MediaPipe's pose "
                         f"detector graph hard-codes {DETECTOR_INPUT_HW[0]}x{DETECTOR_INPUT_HW[1]} and its anchors")
    for r, shape in DETECTOR_SHAPES.items():
        if prepared.output_shapes[r] != shape:
            raise ModelError(f"detector output {r!r} is {prepared.output_shapes[r]}; MediaPipe's pose detector "
                             f"graph expects {shape} ({DETECTOR_NUM_ANCHORS} SSD anchors)")
    return prepared.model, [OutputInfo(r, DETECTOR_SHAPES[r]) for r in DETECTOR_ROLES]


def check_tflite_outputs(label: str, role: str, input_hw: tuple[int, ...],
                         shapes: dict[str, tuple[int, ...]]) -> list[OutputInfo]:
    """The outputs of a ``.tflite`` model kept as it is, in official order; a :class:`ModelError` unless they are
    exactly MediaPipe's (a .tflite cannot be padded with placeholders)."""
    if role == DETECTOR:
        if tuple(input_hw) != DETECTOR_INPUT_HW or any(shapes[r] != DETECTOR_SHAPES[r] for r in DETECTOR_ROLES):
            raise ModelError(f"{label}: detector input {input_hw} / outputs {shapes} do not match MediaPipe's pose "
                             f"detector contract ({DETECTOR_INPUT_HW[0]}x{DETECTOR_INPUT_HW[1]} input, "
                             f"{DETECTOR_SHAPES})")
        return [OutputInfo(r, shapes[r]) for r in DETECTOR_ROLES]
    want = landmark_output_shapes(tuple(input_hw))
    bad = [f"{r} {shapes[r]} (expected {want[r]})" for r in LANDMARK_ROLES if shapes[r] != want[r]]
    if bad:
        raise ModelError(f"{label}: outputs do not match MediaPipe's landmark contract: {'; '.join(bad)}. "
                         "Pass the .keras model so the outputs can be padded with documented placeholders")
    return [OutputInfo(r, shapes[r]) for r in LANDMARK_ROLES]

