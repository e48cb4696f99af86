"""The model I/O contract: what the runtime (:mod:`blazepose_tf.runtime`) and the exporter (:mod:`export.to_tflite`)
expect of a person detector and of a landmark model (tracker), and the checks that refuse anything else with one
line naming the model and what is wrong (:class:`blazepose_tf.errors.ModelError`).

MediaPipe's models define the contract (docs/design.md §3); this project's own models follow it:

* detector (role ``detector``, kind ``detector``): input 1x224x224x3; outputs ``regressors`` (1, 2254, 12) —
  per SSD anchor a box (cx, cy, w, h) and 4 keypoints (x, y) — and ``scores`` (1, 2254, 1) logits;
* landmark model (role ``landmarks``, kind ``tracker``): input 1x256x256x3 (any square size works: the ROI is
  cropped at the model's size; MediaPipe's Tasks accept such models too); outputs ``landmarks`` (1, P·5) —
  per point x, y, z, visibility and presence logits — for P ≥ 33 + 2 points (the body keypoints, then the two
  ROI points; MediaPipe's models have P = 39 = 33 + 6 auxiliary, this project's Lite tracker P = 35), and
  optionally ``presence`` (1, 1), ``segmentation`` (1, H, W, 1), ``heatmap`` (1, h, w, P) and ``world`` (1, P·3).
  ``offsets`` (a training-only head) is tolerated and ignored.

Outputs are identified by *role* (their name, else their shape: see
:func:`blazepose_tf.runtime.runners.assign_roles`); this module only sees ``role -> shape``. It imports nothing
but :mod:`blazepose_tf.errors` and :mod:`blazepose_tf.topology`.
"""
from __future__ import annotations

import math
from typing import Mapping, NamedTuple, Optional, Sequence, Union

from blazepose_tf.errors import ModelError
from blazepose_tf.topology import AUX_ROI_POINTS, BLAZEPOSE_33

#: The two model roles of the pipeline (the ``--detector`` / ``--landmarks`` flags, ``zoo.ROLES``).
DETECTOR = "detector"
LANDMARKS = "landmarks"
ROLES: tuple[str, ...] = (DETECTOR, LANDMARKS)
#: Role -> how messages call it, and the model *kind* stored in export metadata and the zoo manifest.
ROLE_TITLES: dict[str, str] = {DETECTOR: "detector", LANDMARKS: "landmark model"}
ROLE_KINDS: dict[str, str] = {DETECTOR: "detector", LANDMARKS: "tracker"}
KIND_ROLES: dict[str, str] = {kind: role for role, kind in ROLE_KINDS.items()}

#: Output roles per model role, in the official models' order.
DETECTOR_ROLES: tuple[str, ...] = ("regressors", "scores")
LANDMARK_ROLES: tuple[str, ...] = ("landmarks", "presence", "segmentation", "heatmap", "world")
OUTPUT_ROLES: dict[str, tuple[str, ...]] = {DETECTOR: DETECTOR_ROLES, LANDMARKS: LANDMARK_ROLES}
#: Outputs a model must have to play a role (the others are optional).
REQUIRED_OUTPUTS: dict[str, tuple[str, ...]] = {DETECTOR: DETECTOR_ROLES, LANDMARKS: ("landmarks",)}
#: Training-only heads a landmark model may still carry; the runtime ignores them, export drops them.
TRAINING_ONLY_ROLES: tuple[str, ...] = ("offsets",)

#: Input (H, W, C) per role: float RGB, detector in [-1, 1] (letterboxed), landmark model in [0, 1]. The runtime
#: needs the detector's exactly (its SSD anchors are laid out for it); a landmark model's may be any square size.
INPUT_SHAPES: dict[str, tuple[int, int, int]] = {DETECTOR: (224, 224, 3), LANDMARKS: (256, 256, 3)}

#: Input value range (lo, hi) per role: an RGB uint8 pixel v becomes lo + v / 255 · (hi − lo).
INPUT_RANGES: dict[str, tuple[float, float]] = {DETECTOR: (-1.0, 1.0), LANDMARKS: (0.0, 1.0)}

#: The ROI side is the alignment circle's diameter times this (detector keypoints or the tracker's two ROI
#: points; MediaPipe's ``scale_x/scale_y`` in its RectTransformation calculators).
ROI_SCALE = 1.25
#: Heatmap cells per input pixel: a 256x256 landmark model has a 64x64 heatmap.
HEATMAP_STRIDE = 4

#: The runtime's default detector score threshold (a probability; ``--min_detection_confidence``), also where a
#: gated detector switches score heads (:mod:`blazepose_tf.models.detector_gate`).
MIN_DETECTION_CONFIDENCE = 0.5

#: Tracker passes per person in IMAGE mode (``--roi_passes``): the first on the detection's ROI, each next one on
#: the ROI the previous pass's own two ROI points give (as VIDEO mode carries it to the next frame), kept while its
#: presence stays above the threshold. 1 is MediaPipe's graph; 2 (the default) scores 1.1–1.7 PCK@0.2 higher for
#: every model set on LSPET test at twice the tracker's time (docs/design.md §2).
IMAGE_ROI_PASSES = 2

#: Export precisions, as ``export.to_tflite --quantize`` names them ("none" = float32 weights).
QUANTIZATIONS: tuple[str, ...] = ("none", "fp16", "dynamic", "int8")

#: SSD anchors of the 224x224 detector: 28²·2 + 14²·2 + 7²·6 (docs/design.md §4).
DETECTOR_NUM_ANCHORS = 2254
DETECTOR_NUM_KEYPOINTS = 4
#: Values per anchor in ``regressors``: box (cx, cy, w, h), then (x, y) per detector keypoint.
REGRESSOR_VALUES = 4 + 2 * DETECTOR_NUM_KEYPOINTS

#: Body keypoints of the default topology and the auxiliary ROI points every landmark model must add.
NUM_KEYPOINTS = BLAZEPOSE_33.num_keypoints
NUM_ROI_POINTS = len(AUX_ROI_POINTS)
#: Landmark points of MediaPipe's models: 33 body + 6 auxiliary (2 ROI points, 4 unused).
OFFICIAL_LANDMARK_POINTS = 39
#: Values per landmark point in ``landmarks``: x, y, z, visibility logit, presence logit; in ``world``: x, y, z.
VALUES_PER_LANDMARK = 5
WORLD_VALUES_PER_POINT = 3

Shape = tuple[int, ...]
Outputs = Union[Mapping[str, Sequence[Optional[int]]], Sequence[tuple[str, Sequence[Optional[int]]]]]


class ModelIO(NamedTuple):
    """What the contract checks of a loaded model: a label naming it (its path), its input (H, W, C) and its
    outputs as (role, shape) pairs, batch dimension included."""

    label: str
    input_shape: tuple[int, ...]
    outputs: list[tuple[str, Shape]]


def format_shape(shape: Sequence[Optional[int]]) -> str:
    """``(1,2254,12)``; unknown dimensions as ``?``."""
    return "(" + ",".join("?" if d is None else str(int(d)) for d in shape) + ")"


def format_outputs(outputs: Outputs) -> str:
    """``regressors (1,2254,12), scores (1,2254,1)``."""
    return ", ".join(f"{role} {format_shape(shape)}" for role, shape in _pairs(outputs)) or "none"


def image_input_shape(label: str, input_shapes: Sequence[Sequence[Optional[int]]]) -> tuple[int, int, int]:
    """(H, W, 3) of a model's only input, a fixed-size (N, H, W, 3) image; else a :class:`ModelError` saying the
    model ``label`` is not a pose model."""
    shapes = [tuple(s) for s in input_shapes]
    if len(shapes) == 1 and len(shapes[0]) == 4 and shapes[0][3] == 3 and all(
            d is not None and int(d) > 0 for d in shapes[0][1:3]):
        return int(shapes[0][1]), int(shapes[0][2]), 3
    got = ", ".join(format_shape(s) for s in shapes) or "nothing"
    raise ModelError(f"{label} is not a pose model: it takes input {got}, not one fixed-size HxWx3 image")


def guess_role(outputs: Outputs) -> Optional[str]:
    """The role whose required outputs ``outputs`` all has (the detector's first), or None."""
    present = {role for role, _ in _pairs(outputs)}
    return next((r for r in ROLES if set(REQUIRED_OUTPUTS[r]) <= present), None)


def check_model(role: str, label: str, input_shape: Sequence[Optional[int]], outputs: Outputs, *,
                num_keypoints: int = NUM_KEYPOINTS, exact: bool = True) -> None:
    """Raises a one-line :class:`ModelError` naming ``label`` unless the model meets the contract of ``role``.

    Args:
        role: :data:`DETECTOR` or :data:`LANDMARKS`.
        label: how to name the model in the message (its path as the user gave it).
        input_shape: the model's input (H, W, C), without the batch dimension.
        outputs: ``{role: shape}`` or (role, shape) pairs (shapes with their batch dimension); a role seen twice
            means the outputs cannot be told apart.
        num_keypoints: body keypoints of the landmark model's topology (the model adds the 2 ROI points).
        exact: the runtime's contract (the detector's input exactly :data:`INPUT_SHAPES` with
            :data:`DETECTOR_NUM_ANCHORS` anchors, a square landmark-model input, no output outside the role's);
            False for export, which takes any fixed-size HxWx3 input and anchor count and drops the outputs it does
            not know.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    pairs = _pairs(outputs)
    title = ROLE_TITLES[role]
    present = [r for r, _ in pairs]
    missing = [r for r in REQUIRED_OUTPUTS[role] if r not in present]
    if missing:
        other = guess_role(pairs)
        no = f"no {', '.join(missing)} output" + ("s" if len(missing) > 1 else "")
        if other is not None:
            raise ModelError(f"{label} is a {ROLE_TITLES[other]} (outputs {format_outputs(pairs)}), not a {title}: "
                             f"{no}")
        raise ModelError(f"{label} is not a {title}: {no} (outputs: {format_outputs(pairs)})")
    dup = sorted({r for r in present if present.count(r) > 1})
    if dup:
        raise ModelError(f"{label}: cannot tell the outputs apart ({format_outputs(pairs)}: several look like "
                         f"{', '.join(dup)}); name them after their roles")
    known = OUTPUT_ROLES[role] + (TRAINING_ONLY_ROLES if role == LANDMARKS else ())
    unknown = [(r, s) for r, s in pairs if r not in known]
    if exact and unknown:
        raise ModelError(f"{label}: output {format_outputs(unknown)} is not part of the {title} contract (outputs "
                         f"{', '.join(OUTPUT_ROLES[role])})")
    _check_input(role, label, tuple(input_shape), exact)
    shapes = {r: tuple(1 if d is None else int(d) for d in s) for r, s in pairs if r in known}
    if role == DETECTOR:
        _check_detector_outputs(label, shapes, exact)
    else:
        _check_landmark_outputs(label, shapes, num_keypoints)


def check_not_swapped(detector: ModelIO, landmarks: ModelIO) -> None:
    """Raises a one-line :class:`ModelError` when the detector given is a landmark model and the landmark model a
    detector (the two flags swapped)."""
    if guess_role(detector.outputs) == LANDMARKS and guess_role(landmarks.outputs) == DETECTOR:
        raise ModelError(f"the detector and landmark models are swapped: {detector.label} is a landmark model and "
                         f"{landmarks.label} a detector")


def min_landmark_points(num_keypoints: int = NUM_KEYPOINTS) -> int:
    """The fewest points a landmark model may output for a topology of ``num_keypoints`` body keypoints."""
    return num_keypoints + NUM_ROI_POINTS


def _pairs(outputs: Outputs) -> list[tuple[str, Shape]]:
    items = outputs.items() if isinstance(outputs, Mapping) else outputs
    return [(str(r), tuple(s)) for r, s in items]


def _size(shape: Shape) -> int:
    return math.prod(shape[1:]) if len(shape) > 1 else 0


def _hwc(shape: Sequence[Optional[int]]) -> str:
    return "x".join("?" if d is None else str(d) for d in shape)


def _check_input(role: str, label: str, shape: tuple[Optional[int], ...], exact: bool) -> None:
    want = INPUT_SHAPES[role]
    if exact and role == DETECTOR and shape != want:
        raise ModelError(f"{label}: detector input must be {_hwc(want)}, got {_hwc(shape)}")
    image = len(shape) == 3 and shape[2] == 3 and all(d is not None and d > 0 for d in shape[:2])
    if exact and role == LANDMARKS and not (image and shape[0] == shape[1]):
        raise ModelError(f"{label}: landmark model input must be a square HxWx3 image (MediaPipe's is "
                         f"{_hwc(want)}), got {_hwc(shape)}")
    if not image:
        raise ModelError(f"{label}: {ROLE_TITLES[role]} input must be a fixed-size HxWx3 image, got {_hwc(shape)}")


def _check_detector_outputs(label: str, shapes: dict[str, Shape], exact: bool) -> None:
    reg, scores = shapes["regressors"], shapes["scores"]
    if len(reg) != 3 or reg[2] != REGRESSOR_VALUES:
        raise ModelError(f"{label}: detector output regressors {format_shape(reg)} must be (1,anchors,"
                         f"{REGRESSOR_VALUES}): a box and {DETECTOR_NUM_KEYPOINTS} keypoints per anchor")
    if len(scores) != 3 or scores[2] != 1:
        raise ModelError(f"{label}: detector output scores {format_shape(scores)} must be (1,anchors,1): one "
                         "logit per anchor")
    if reg[1] != scores[1]:
        raise ModelError(f"{label}: detector outputs disagree on the number of anchors: regressors "
                         f"{format_shape(reg)}, scores {format_shape(scores)}")
    if exact and reg[1] != DETECTOR_NUM_ANCHORS:
        raise ModelError(f"{label}: detector outputs {reg[1]} anchors, the {_hwc(INPUT_SHAPES[DETECTOR][:2])} SSD "
                         f"anchor layout has {DETECTOR_NUM_ANCHORS} (regressors {format_shape(reg)})")


def _check_landmark_outputs(label: str, shapes: dict[str, Shape], num_keypoints: int) -> None:
    lm = shapes["landmarks"]
    values = _size(lm)
    points = values // VALUES_PER_LANDMARK
    need = min_landmark_points(num_keypoints)
    if len(lm) != 2 or values % VALUES_PER_LANDMARK or points < need:
        raise ModelError(f"{label}: landmarks output {format_shape(lm)} must hold {VALUES_PER_LANDMARK} values "
                         f"(x, y, z, visibility, presence) for each of at least {need} points ({num_keypoints} "
                         f"keypoints + {NUM_ROI_POINTS} ROI points), got {values} values")
    if "presence" in shapes and _size(shapes["presence"]) != 1:
        raise ModelError(f"{label}: presence output {format_shape(shapes['presence'])} must be (1,1): one "
                         "probability")
    world = shapes.get("world")
    if world is not None and (len(world) != 2 or _size(world) != WORLD_VALUES_PER_POINT * points):
        raise ModelError(f"{label}: world output {format_shape(world)} must be (1,{WORLD_VALUES_PER_POINT * points})"
                         f": x, y, z for each of the {points} landmark points")
    heatmap = shapes.get("heatmap")
    if heatmap is not None and (len(heatmap) != 4 or heatmap[3] != points):
        raise ModelError(f"{label}: heatmap output {format_shape(heatmap)} must be (1,h,w,{points}): one channel "
                         f"per landmark point")
    seg = shapes.get("segmentation")
    if seg is not None and (len(seg) != 4 or seg[3] != 1):
        raise ModelError(f"{label}: segmentation output {format_shape(seg)} must be (1,H,W,1)")


#: Role of each of MediaPipe's official models, by the name :mod:`blazepose_tf.official` fetches it under.
OFFICIAL_MODEL_ROLES: dict[str, str] = {"pose_detection": DETECTOR, "pose_landmark_full": LANDMARKS,
                                         "pose_landmark_lite": LANDMARKS}
#: MediaPipe's official models, in the order the converter takes them.
OFFICIAL_NAMES: tuple[str, ...] = tuple(OFFICIAL_MODEL_ROLES)
