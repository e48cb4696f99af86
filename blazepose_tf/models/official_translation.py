"""Translation of MediaPipe's official BlazePose .tflite graphs into fine-tunable Keras models.

The TFLite subgraph (read by :class:`blazepose_tf.tflite_file.TFLiteGraph`, weights straight from the flatbuffer:
fp16 weights dequantized, the detector's sparse weights densified) is walked in order; weight-producing
``DEQUANTIZE``/``DENSIFY`` ops are folded into constants, and every other op becomes one named Keras layer:
``Conv2D``/``DepthwiseConv2D`` with the fused activation, ``Add`` (followed by an ``Activation`` layer when
the add has a fused ReLU6), ``MaxPooling2D``, ``Concatenate``, ``Activation("sigmoid")``, and the custom
layers of :mod:`blazepose_tf.models.official_layers` for ``PAD``, ``RESIZE_BILINEAR`` (exact flags),
``DEPTH_TO_SPACE`` and ``RESHAPE``, so converting the Keras model back to .tflite gives the official op list
(minus the weight ops). Layer names come from the TFLite tensor names where they identify the layer
(``conv2d_12``, ``depthwise_conv2d_3``, ``add_5``...). The outputs are named by role in the official order
(:data:`blazepose_tf.contract.OUTPUT_ROLES`): ``landmarks, presence, segmentation, heatmap, world`` for the
tracker and ``regressors, scores`` for the detector, so the runtime's runners and ``PoseTracker`` use them
unchanged.

The official graphs are inference graphs: batch normalisation is already folded into the convolution kernels
and biases, so the Keras models have no BatchNormalization layers (fine-tuning trains the folded kernels and
biases directly; add normalisation yourself if you need it). See :func:`pose_landmark_full`,
:func:`pose_landmark_lite` and :func:`pose_detection` for how each official architecture differs from the paper's.
"""
from __future__ import annotations

import contextlib
import io
import re
from typing import Any, Callable, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from blazepose_tf import contract
from blazepose_tf.errors import ModelError
from blazepose_tf.models.official_layers import BatchReshape, DepthToSpace, ResizeBilinear, ZeroPad
from blazepose_tf.official import official_model_path
from blazepose_tf.tflite_file import WEIGHT_OPS, OpInfo, TFLiteGraph

#: The official models the converter handles, by name (as :mod:`blazepose_tf.official` fetches them).
OFFICIAL_NAMES = contract.OFFICIAL_NAMES

_FUSED_ACTIVATIONS = {0: None, 1: "relu", 3: "relu6", 4: "tanh"}
# A 1x1 convolution computes the same with SAME and VALID padding. SAME it is: TensorFlow's oneDNN graph pass
# (mkl_layout_pass, TF 2.21) merges a VALID Conv2D+BiasAdd+Add with *any* PAD among its inputs as if it padded the
# convolution's input, and crashes (segfault) inside tf.function when the PAD is the residual operand, as in the
# Lite's BlazeBlocks (1x1 conv + channel-padded max-pool shortcut). Only Conv2D with VALID padding is merged.
_ONE_BY_ONE_PADDING = "same"
_ACTIVATION_NAMES = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}


def _name_parts(segment: str) -> tuple[str, str]:
    parts = [p for p in segment.split("/") if p]
    while parts and re.fullmatch(r"model(_\d+)?", parts[0]):
        parts = parts[1:]
    if not parts:
        return "", ""
    return parts[0], (parts[1] if len(parts) > 1 else "")


def _matches(kind: str, layer: str, op: str) -> bool:
    if kind == "CONV_2D":
        return not layer.startswith("depthwise") and op.startswith(("Conv2D", "BiasAdd"))
    if kind == "DEPTHWISE_CONV_2D":
        return layer.startswith("depthwise_conv2d") and op.startswith(("depthwise", "BiasAdd"))
    prefix = {"ADD": "add", "PAD": "zero_padding2d", "RESIZE_BILINEAR": "up_sampling2d",
              "MAX_POOL_2D": "max_pooling2d", "DEPTH_TO_SPACE": "d2sp"}.get(kind)
    return layer.startswith(prefix) if prefix else not layer.lower().startswith("identity")


class _Namer:
    """Unique Keras layer names derived from the TFLite tensor names (fused names list several layers)."""

    def __init__(self):
        self.used: set[str] = set()

    def __call__(self, kind: str, tensor_name: str, index: int, fixed: Optional[str] = None) -> str:
        if fixed:
            name = fixed
        else:
            candidates = [layer for layer, op in map(_name_parts, tensor_name.split(";")) if layer
                          and _matches(kind, layer, op)]
            candidates = [re.sub(r"[^A-Za-z0-9_.\-]", "_", c) for c in candidates]
            free = [c for c in candidates if c not in self.used]
            name = free[-1] if free else f"{kind.lower()}_op{index}"
        if name in self.used:
            name = f"{name}_op{index}"
        self.used.add(name)
        return name


def _activation(op: OpInfo, graph: TFLiteGraph) -> Optional[str]:
    code = int(op.options.get("activation", 0))
    if code not in _FUSED_ACTIVATIONS:
        raise ModelError(f"{graph.path.name}: op {op.index} {op.kind} has unsupported fused activation "
                         f"{_ACTIVATION_NAMES.get(code, code)}")
    return _FUSED_ACTIVATIONS[code]


def _activation_layer_namer(namer: _Namer, role: Optional[str], index: int) -> Callable[[str, str], str]:
    """Names the activation layer that follows a split op: the output role if any, else ``<base>_<act>``."""
    def name(base: str, act: str) -> str:
        return namer("ACTIVATION", "", index, fixed=role or f"{base}_{act}")
    return name


def translate(graph: TFLiteGraph, model_name: str, output_roles: Sequence[str]) -> keras.Model:
    """Builds a Keras functional model reproducing ``graph`` op for op, with its weights loaded.

    Args:
        graph: the parsed .tflite subgraph.
        model_name: the Keras model's name.
        output_roles: names for the graph outputs, in the graph's output order (for the official models, their
            role's :data:`blazepose_tf.contract.OUTPUT_ROLES`).
    Raises:
        ModelError: the graph uses an op or option this translator does not handle.
    """
    if len(graph.inputs) != 1 or len(graph.tensors[graph.inputs[0]].shape) != 4:
        raise ModelError(f"{graph.path.name}: expected one NHWC image input")
    if len(output_roles) != len(graph.outputs):
        raise ModelError(f"{graph.path.name}: {len(graph.outputs)} outputs, {len(output_roles)} roles given")
    in_t = graph.tensors[graph.inputs[0]]
    role_of = dict(zip(graph.outputs, output_roles))
    namer = _Namer()
    image = keras.Input(shape=in_t.shape[1:], batch_size=None, name="image", dtype="float32")
    values: dict[int, Any] = {in_t.index: image}

    def data(i: int):
        if i not in values:
            raise ModelError(f"{graph.path.name}: tensor {graph.tensors[i].name!r} is used before it is computed "
                             "or is an unsupported constant operand")
        return values[i]

    def weights(i: int, what: str) -> np.ndarray:
        w = graph.constant(i)
        if w is None:
            raise ModelError(f"{graph.path.name}: {what} {graph.tensors[i].name!r} is not a constant")
        return np.asarray(w, dtype=np.float32)

    for op in graph.ops:
        out = op.outputs[0]
        if op.kind in WEIGHT_OPS:
            if graph.constant(out) is None:
                raise ModelError(f"{graph.path.name}: op {op.index} {op.kind} on a run-time tensor is not supported")
            continue
        tname = graph.tensors[out].name
        role = role_of.get(out)
        # An op with a fused activation that Keras cannot fuse (ADD, pools, CONCATENATION) becomes two layers;
        # the role name then goes to the activation, the last one.
        split = op.kind in ("ADD", "MAX_POOL_2D", "AVERAGE_POOL_2D", "CONCATENATION") \
            and _activation(op, graph) is not None
        name = namer(op.kind, tname, op.index, fixed=None if split else role)
        act_name = _activation_layer_namer(namer, role, op.index)
        if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            x = data(op.inputs[0])
            w = weights(op.inputs[1], "weight")
            bias = graph.constant(op.inputs[2]) if len(op.inputs) > 2 else None
            o = op.options
            common = dict(strides=(o["stride_h"], o["stride_w"]), padding=o["padding"],
                          dilation_rate=(o.get("dilation_h", 1), o.get("dilation_w", 1)),
                          activation=_activation(op, graph), use_bias=bias is not None, name=name)
            in_ch = int(x.shape[-1])
            if op.kind == "CONV_2D":
                if w.shape[3] != in_ch:
                    raise ModelError(f"{graph.path.name}: grouped CONV_2D (op {op.index}) is not supported")
                if tuple(w.shape[1:3]) == (1, 1):
                    common["padding"] = _ONE_BY_ONE_PADDING
                layer = keras.layers.Conv2D(w.shape[0], w.shape[1:3], **common)
                kernel = w.transpose(1, 2, 3, 0)
            else:
                mult = w.shape[3] // in_ch
                layer = keras.layers.DepthwiseConv2D(w.shape[1:3], depth_multiplier=mult, **common)
                kernel = w.reshape(w.shape[1], w.shape[2], in_ch, mult)
            y = layer(x)
            layer.set_weights([kernel] + ([np.asarray(bias, np.float32)] if bias is not None else []))
        elif op.kind == "ADD":
            if any(graph.constant(i) is not None for i in op.inputs):
                raise ModelError(f"{graph.path.name}: ADD with a constant operand (op {op.index}) is not supported")
            act = _activation(op, graph)
            y = keras.layers.Add(name=name)([data(i) for i in op.inputs])
            if act:
                y = keras.layers.Activation(act, name=act_name(name, act))(y)
        elif op.kind == "PAD":
            pads = graph.constant(op.inputs[1])
            if pads is None or len(op.inputs) > 2 and graph.constant(op.inputs[2]) is not None \
                    and np.any(graph.constant(op.inputs[2])):
                raise ModelError(f"{graph.path.name}: PAD (op {op.index}) needs constant zero padding")
            pads = np.asarray(pads, np.int64).reshape(-1, 2)
            if pads.shape[0] != 4 or np.any(pads[0]):
                raise ModelError(f"{graph.path.name}: PAD (op {op.index}) must pad an NHWC tensor, not its batch")
            y = ZeroPad(pads[1:].tolist(), name=name)(data(op.inputs[0]))
        elif op.kind in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
            o = op.options
            cls = keras.layers.MaxPooling2D if op.kind == "MAX_POOL_2D" else keras.layers.AveragePooling2D
            act = _activation(op, graph)
            y = cls((o["filter_h"], o["filter_w"]), strides=(o["stride_h"], o["stride_w"]), padding=o["padding"],
                    name=name)(data(op.inputs[0]))
            if act:
                y = keras.layers.Activation(act, name=act_name(name, act))(y)
        elif op.kind == "RESIZE_BILINEAR":
            size = graph.constant(op.inputs[1])
            if size is None:
                raise ModelError(f"{graph.path.name}: RESIZE_BILINEAR (op {op.index}) needs a constant size")
            y = ResizeBilinear([int(v) for v in np.asarray(size).reshape(-1)],
                               align_corners=bool(op.options.get("align_corners", False)),
                               half_pixel_centers=bool(op.options.get("half_pixel_centers", False)),
                               name=name)(data(op.inputs[0]))
        elif op.kind == "DEPTH_TO_SPACE":
            y = DepthToSpace(op.options["block_size"], name=name)(data(op.inputs[0]))
        elif op.kind == "RESHAPE":
            target = graph.tensors[out].shape
            y = BatchReshape(target[1:], name=name)(data(op.inputs[0]))
        elif op.kind == "CONCATENATION":
            act = _activation(op, graph)
            axis = int(op.options.get("axis", -1))
            y = keras.layers.Concatenate(axis=axis, name=name)([data(i) for i in op.inputs])
            if act:
                y = keras.layers.Activation(act, name=act_name(name, act))(y)
        elif op.kind in ("LOGISTIC", "RELU", "RELU6", "TANH"):
            act = {"LOGISTIC": "sigmoid", "RELU": "relu", "RELU6": "relu6", "TANH": "tanh"}[op.kind]
            y = keras.layers.Activation(act, name=name)(data(op.inputs[0]))
        else:
            raise ModelError(f"{graph.path.name}: TFLite op {op.kind} (op {op.index}) is not supported by the "
                             "converter")
        got = tuple(int(d) for d in y.shape[1:])
        want = graph.tensors[out].shape[1:]
        if got != tuple(want):
            raise ModelError(f"{graph.path.name}: op {op.index} {op.kind} gives shape {got}, TFLite says {want}")
        values[out] = y
    outputs = [data(i) for i in graph.outputs]
    return keras.Model(image, outputs, name=model_name)


def official_role(name: str) -> str:
    """The contract role (:data:`blazepose_tf.contract.DETECTOR` or ``LANDMARKS``) of an official model;
    :class:`ModelError` for a name the converter does not know."""
    if name not in OFFICIAL_NAMES:
        raise ModelError(f"unknown official model {name!r}; known: {', '.join(OFFICIAL_NAMES)}")
    return contract.OFFICIAL_MODEL_ROLES[name]


def convert(name: str) -> keras.Model:
    """Converts an official model (a name of :data:`OFFICIAL_NAMES`) to a Keras model.

    The official .tflite is fetched if needed (the Lite is packaged). See :func:`pose_detection`,
    :func:`pose_landmark_full` and :func:`pose_landmark_lite` for the architectures. Raises ModelError when the model
    cannot be fetched or translated.
    """
    role = official_role(name)
    graph = TFLiteGraph(official_model_path(name))
    model = translate(graph, f"{name}_official", contract.OUTPUT_ROLES[role])
    contract.check_model(role, graph.path.name, tuple(model.inputs[0].shape[1:]),
                         [(r, tuple(o.shape)) for r, o in zip(model.output_names, model.outputs)])
    return model


def pose_landmark_full() -> keras.Model:
    """MediaPipe's official BlazePose **Full** landmark model (``pose_landmark_full.tflite``) as Keras.

    Input ``(256, 256, 3)`` RGB in [0, 1]. Outputs, in the official order: ``landmarks`` (195 = 39 × (x, y, z
    in crop pixels, visibility logit, presence logit)), ``presence`` (1, already a sigmoid probability),
    ``segmentation`` (256×256×1 logits), ``heatmap`` (64×64×39 logits), ``world`` (117 = 39 × xyz metres).
    About 3.2M parameters.

    Architecture (read from the graph; BatchNorm is folded into the convolutions):

    * Shared encoder, MobileNetV2-style inverted residuals with linear bottlenecks and ReLU6, 3×3 and 5×5
      depthwise kernels, expansion 6 (stride-2 depthwise convolutions use explicit zero ``PAD`` + VALID):
      stem 3×3/2 conv (24 ch, 128²) → 16 ch (128²) → 24 (64², 2 blocks) → 32 (32², 2) → 64 (16², 3) → 88 (16², 3)
      → 144 (8², 4) → 1×1 expansion to 864 + depthwise 3×3 = the 8×8×864 bottleneck.
    * Heatmap decoder (kept at inference): the bottleneck goes through depthwise + 1×1 to 48 channels, then
      three bilinear ×2 upsamplings (half-pixel centres), each added to a lateral depthwise + 1×1 (48 ch)
      projection of the encoder at 16², 32², 64² → a 64×64×48 map → 1×1 conv → 39 heatmaps. There are no
      offset maps in the released graph.
    * Segmentation decoder (not in the paper): from the 64² map, depthwise + 1×1 to 8 ch, ×2 upsample + a
      lateral from the 128² encoder stage, two residual blocks (depthwise + 1×1, add + ReLU6), ×2 upsample to
      256², two more residual blocks, 3×3 conv → one logit map.
    * Regression branch: BlazeBlocks (depthwise 3×3 + 1×1 linear, residual add + ReLU6; stride-2 blocks with
      a 2×2 max-pool shortcut) at 288 channels: depthwise + 1×1 to 288 on the 8×8 bottleneck, stride-2 block +
      4 blocks at 4×4, stride-2 block + 5 blocks at 2×2, then three 2×2 VALID convolutions: 195 landmark
      values, 117 world coordinates, and 1 presence logit followed by a sigmoid.

    How this differs from the paper's Fig. 4: the paper feeds the regression encoder with (stop-gradient)
    skip connections from every resolution of the heatmap decoder; in the released Full graph the regression
    branch reads **only the encoder's 8×8 bottleneck** — the decoder never reaches it, so heatmap and
    regression are two heads on one shared encoder. The heatmap head is not dropped (MediaPipe uses it to
    refine the landmarks), it has 39 channels and no offsets; and the graph adds a segmentation decoder and a
    metric ``world`` head (GHUM-fitted 3D) that the paper does not describe. 39 points are regressed: the
    33 body points, the 2 auxiliary ROI points and 4 unused ones.
    """
    return convert("pose_landmark_full")


def pose_landmark_lite() -> keras.Model:
    """MediaPipe's official BlazePose **Lite** landmark model (``pose_landmark_lite.tflite``, packaged) as Keras.

    Same I/O as :func:`pose_landmark_full`, except ``segmentation`` is 128×128×1. About 1.4M parameters.

    Architecture (read from the graph; BatchNorm folded into the convolutions): BlazeBlocks throughout
    (depthwise 3×3 + 1×1 linear, residual add + ReLU; stride-2 blocks have a 2×2 max-pool shortcut whose channels
    are zero-padded, ``PAD``), not the Full's MobileNetV2 blocks.

    * Encoder: stem 3×3/2 conv + ReLU (16 ch, 128²) → 1 block (128²) → 32 ch (64², 3 blocks) → 64 (32², 4)
      → 128 (16², 5) → 192 (8², 6).
    * Heatmap decoder: depthwise + 1×1 to 32 channels at 8², three bilinear ×2 upsamplings, each added to a
      lateral depthwise + 1×1 (32 ch) projection of the encoder at 16², 32², 64² → a 64×64×32 map → 3×3 conv →
      39 heatmaps (no offsets).
    * Segmentation decoder: from the 64² map, depthwise + 1×1 + ReLU to 8 ch, ×2 upsample + a lateral
      depthwise + 1×1 + ReLU from the 128² encoder stage, depthwise + 1×1 + ReLU, 3×3 conv → one 128×128 logit
      map.
    * Regression branch: BlazeBlocks on the **decoder's** 64×64×32 map down to 32² (64 ch), 16² (128), 8² (192),
      each stage ending with an add of a lateral depthwise + 1×1 projection of the encoder stage at that
      resolution; then 4² and 2² (192 ch, a stride-2 block + 5 blocks each) and three 2×2 VALID convolutions:
      195 landmark values, 117 world coordinates, 1 presence logit followed by a sigmoid.

    Unlike the released Full, this is the paper's Fig. 4 layout: the regression encoder reads the heatmap decoder's
    output plus skips from every encoder resolution (whether training stopped their gradient cannot be seen in an
    inference graph). The extra heads (39-channel heatmap kept for refinement, segmentation, ``world``) are the
    Full's.
    """
    return convert("pose_landmark_lite")


def pose_detection() -> keras.Model:
    """MediaPipe's official BlazePose person detector (``pose_detection.tflite``) as Keras.

    Input ``(224, 224, 3)`` RGB in [-1, 1], letterboxed. Outputs, in the official order: ``regressors``
    (2254 × 12: box cx, cy, w, h and 4 keypoints x, y, input pixels relative to the anchor centre) and
    ``scores`` (2254 × 1 logits); anchors 28²×2 + 14²×2 + 7²×6. About 3.0M parameters (the .tflite stores
    them pruned and sparse — 0.9M non-zero — the Keras model holds them dense, zeros included, so pruned
    weights start at zero but are free to train).

    Architecture (read from the graph; BatchNorm folded into the convolutions):

    * Backbone: MobileNetV2-style inverted residuals (ReLU6, linear bottlenecks, 3×3/5×5 depthwise,
      explicit ``PAD`` before stride-2 depthwise): stem 3×3/2 (24 ch, 112²) → 16 → 24 (56²) → 40 (28²) →
      80, 112 (14²) → 192 (7², 4 blocks, expansion 1152) → 1×1 to 1152 + depthwise 3×3: a 7×7×1152 map.
    * Feature pyramid (top-down): bilinear ×2 of the 7² map → 1×1 (192, ReLU6) + a lateral depthwise + 1×1
      of the 14² backbone stage → two residual blocks (depthwise + 1×1, add + ReLU6) → 14×14×192; the same
      again to 28×28×96.
    * Heads: each level (28²×96, 14²×192, 7²×1152) goes through ``DEPTH_TO_SPACE`` (block 2; 56²×24, 28²×48,
      14²×288), zero ``PAD`` and a stride-2 depthwise 3×3 (one per head), then a 1×1 classifier (2, 2, 6
      anchors per cell) and a 1×1 regressor (12 values per anchor); reshaped and concatenated in anchor
      order.

    How this differs from the paper: the paper describes a BlazeFace-like detector built from BlazeBlocks on
    a single-shot multi-scale head; the released detector is a MobileNetV2-style backbone with a two-level
    top-down feature pyramid and depth-to-space heads, and it is a *whole-body* person detector whose 4
    keypoints are the mid-hip centre, the body-circle scale point, the mid-shoulder and the upper-body scale
    point (docs/design.md, person detector).
    """
    return convert("pose_detection")


def to_tflite(model: keras.Model) -> bytes:
    """Converts a Keras model back to a .tflite flatbuffer with builtin ops only (raises if that fails)."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    with contextlib.redirect_stdout(io.StringIO()):  # Keras prints the traced signature and its captures
        return converter.convert()


def count_params(model: keras.Model) -> tuple[int, int]:
    """(total parameters, trainable parameters) of a Keras model."""
    total = int(sum(int(np.prod(w.shape)) for w in model.weights))
    trainable = int(sum(int(np.prod(w.shape)) for w in model.trainable_weights))
    return total, trainable
