"""The BlazePose tracker (paper §2.5, Fig. 4; docs/design.md §6) as a Keras 3 functional model, with its presets.

Architecture (BlazeBlocks throughout: depthwise k×k + pointwise 1×1, residual when the shape allows)::

    input 256² ─► stem (128²) ─► enc1 (64²) ─► enc2 (32²) ─► enc3 (16²) ─► enc4 (8²)
                                     │ skip         │ skip         │ skip         │
                                 dec64 (64²) ◄── dec32 (32²) ◄── dec16 (16²) ◄── dec8
                                     │  └─► hm_head ─► heatmap (64²·P), offsets (64²·2P)     [training only]
         stop-gradient ══════════════╪══════════════╪══════════════╪══════════════╪══════
                                     ▼              ▼              ▼              ▼
                                 reg_stage1 ─(+)─► 32² ── reg_stage2 ─(+)─► 16² ── reg_stage3 ─(+)─► 8²
                                 ── reg_stage4 (4²) ── reg_stage5 (2²) ─► landmarks (P·5), presence (1)

The regression encoder starts by downsampling dec64; dec32, dec16 and enc4 join it (1×1 projection, added)
at 32², 16² and 8². Its 2×2 output feeds two 2×2 "valid" convolutions (dense heads).

The heatmap branch is trained only by the heatmap/offset losses: every connection into the regression encoder
goes through a :class:`~blazepose_tf.models.blocks.StopGradient`, so regression losses never reach it. At
inference the heatmap and offset heads are dropped (:attr:`TrackerModels.inference`); a variant keeps the
heatmap for MediaPipe-style refinement (:attr:`TrackerModels.inference_with_heatmap`). All three models
share the same layer objects, hence the same weights.

Outputs (named, see ``blazepose_tf.runtime.runners``), with P = K + 2 (the topology's K points, then the two
auxiliary ROI points, centre and scale/rotation):

* ``landmarks`` (B, P·5): per point x, y, z in crop pixels (0..input_size; z at the scale of x), visibility
  logit, presence logit — the official model's layout;
* ``presence`` (B, 1): person presence probability (sigmoid inside the model);
* ``heatmap`` (B, 64, 64, P) logits and ``offsets`` (B, 64, 64, 2P) in heatmap cells, channel ``2i`` = dx and
  ``2i+1`` = dy of point i (training model; see :mod:`blazepose_tf.codecs.heatmap`).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import keras
from keras import layers

from blazepose_tf.contract import HEATMAP_STRIDE, NUM_ROI_POINTS, VALUES_PER_LANDMARK
from blazepose_tf.models.blocks import (BN_MOMENTUM, ChannelAffine, FusedBatchNorm, StopGradient, blaze_block,
                                       blaze_stage, conv_bn_act, depthwise_initializer, pointwise, upsample_add)
from blazepose_tf.topology import AUX_ROI_POINTS, BLAZEPOSE_33, Topology

OUTPUT_NAMES_TRAINING = ("landmarks", "presence", "heatmap", "offsets")
OUTPUT_NAMES_INFERENCE = ("landmarks", "presence")
OUTPUT_NAMES_WITH_HEATMAP = ("landmarks", "presence", "heatmap")


@dataclass(frozen=True)
class TrackerConfig:
    """Widths and depths of a tracker preset.

    Attributes:
        name: preset name.
        input_size: square input side (a multiple of 128; the contract is 256).
        stem_filters: channels of the 3×3 stride-2 stem.
        encoder_filters / encoder_blocks: heatmap encoder stages at input/4, /8, /16, /32, each starting
            with a stride-2 block (nothing but the stem runs at input/2: it is the costliest resolution to
            train on CPU).
        decoder_filters: width of the decoder (dec16, dec32, dec64) and of the heatmap head.
        regression_filters / regression_blocks: regression encoder stages at input/8 … input/128 (each starts
            with a stride-2 block; the first three receive stop-gradient skips from dec32, dec16 and enc4).
        kernel_size: depthwise kernel of encoder and regression blocks (decoder blocks use 3).
        small_kernel_max_stride: blocks at this stride or finer use 3×3 depthwise kernels instead (0: none);
            the high-resolution stages dominate training time, the coarse ones the parameter count. E.g.
            ``with_config("lite", small_kernel_max_stride=8, encoder_blocks=(1, 2, 3, 3))`` trains with ~16%
            less CPU per step than ``lite`` (measured) for 4k fewer parameters.
        batch_norm: BatchNorm after convolutions (folded into the convolutions by the TFLite converter).
        batch_norm_min_stride: BatchNorm only on feature maps of at least this stride (8: 32² and below for
            a 256 input). At 128² and 64² BatchNorm would cost more CPU training time than the convolutions
            (measured: the stem's BatchNorm alone triples its train-step time); those layers use biases.
        official: non-empty for MediaPipe's own architecture: the name of the official model whose converted
            graph and weights the preset is (:func:`blazepose_tf.models.convert_official.load_converted`); it is
            loaded, not built, and the width/depth fields do not apply.
    """

    name: str
    input_size: int = 256
    stem_filters: int = 24
    encoder_filters: tuple[int, ...] = (48, 96, 192, 352)
    encoder_blocks: tuple[int, ...] = (2, 3, 4, 4)
    decoder_filters: int = 48
    regression_filters: tuple[int, ...] = (96, 192, 352, 448, 448)
    regression_blocks: tuple[int, ...] = (2, 3, 4, 4, 4)
    kernel_size: int = 5
    small_kernel_max_stride: int = 0
    batch_norm: bool = True
    batch_norm_min_stride: int = 8
    official: str = ""

    def __post_init__(self) -> None:
        if self.input_size % 128:
            raise ValueError(f"input_size must be a multiple of 128, got {self.input_size}")
        if len(self.encoder_filters) != 4 or len(self.encoder_blocks) != 4:
            raise ValueError("encoder_filters and encoder_blocks need 4 entries (input/4 … input/32)")
        if len(self.regression_filters) != 5 or len(self.regression_blocks) != 5:
            raise ValueError("regression_filters and regression_blocks need 5 entries (input/8 … input/128)")
        if min(self.encoder_blocks + self.regression_blocks) < 1:
            raise ValueError("every stage needs at least one block")

    @property
    def heatmap_size(self) -> int:
        return self.input_size // HEATMAP_STRIDE


#: Every tracker preset (``--preset`` of ``python -m blazepose_tf.train``): this project's architectures, the tiny
#: smoke-test one and MediaPipe's (``official``: converted, not built).
TRACKER_PRESETS: dict[str, TrackerConfig] = {
    # ≈3.5M parameters (paper: BlazePose Full, 3.5M).
    "full": TrackerConfig(
        name="full", stem_filters=24, encoder_filters=(48, 96, 192, 352), encoder_blocks=(2, 3, 4, 4),
        decoder_filters=48, regression_filters=(96, 192, 352, 448, 448), regression_blocks=(2, 3, 4, 4, 4)),
    # ≈1.3M parameters (paper: BlazePose Lite, 1.3M).
    "lite": TrackerConfig(
        name="lite", stem_filters=16, encoder_filters=(32, 64, 128, 256), encoder_blocks=(2, 2, 3, 3),
        decoder_filters=32, regression_filters=(64, 128, 256, 256, 320), regression_blocks=(1, 2, 3, 3, 3)),
    # A Lite-shaped tracker that builds and traces fast: for smoke tests only.
    "smoke": TrackerConfig(
        name="smoke", stem_filters=8, encoder_filters=(8, 16, 16, 16), encoder_blocks=(1, 1, 1, 1),
        decoder_filters=8, regression_filters=(8, 16, 16, 16, 16), regression_blocks=(1, 1, 1, 1, 1)),
    # MediaPipe's BlazePose Full, converted with its weights (for fine-tuning; 33-point topology only).
    "official_full": TrackerConfig(name="official_full", official="pose_landmark_full"),
    # MediaPipe's BlazePose Lite, converted with its weights (for fine-tuning and distillation).
    "official_lite": TrackerConfig(name="official_lite", official="pose_landmark_lite"),
}
#: The presets :func:`build_tracker` builds (the official ones are converted models).
BUILT_TRACKER_PRESETS: tuple[str, ...] = tuple(n for n, c in TRACKER_PRESETS.items() if not c.official)


@dataclass
class TrackerModels:
    """The tracker's three views over one set of weights.

    Attributes:
        training: outputs ``landmarks``, ``presence``, ``heatmap``, ``offsets``.
        inference: outputs ``landmarks``, ``presence`` (heatmap branch heads removed).
        inference_with_heatmap: outputs ``landmarks``, ``presence``, ``heatmap`` (for heatmap refinement).
        config: the preset.
        topology: the K body keypoints; the model predicts ``num_points`` = K + 2.
    """

    training: keras.Model
    inference: keras.Model
    inference_with_heatmap: keras.Model
    config: TrackerConfig
    topology: Topology
    point_names: tuple[str, ...] = field(default=())

    @property
    def num_points(self) -> int:
        return self.topology.num_keypoints + NUM_ROI_POINTS


def resolve_tracker_config(preset: str | TrackerConfig) -> TrackerConfig:
    """A preset name or a config → config (``KeyError`` listing the presets for an unknown name)."""
    if isinstance(preset, TrackerConfig):
        return preset
    try:
        return TRACKER_PRESETS[preset]
    except KeyError:
        raise KeyError(f"unknown tracker preset {preset!r}; known: {sorted(TRACKER_PRESETS)}") from None


def build_tracker(preset: str | TrackerConfig = "full", topology: Topology = BLAZEPOSE_33,
                  name: str | None = None) -> TrackerModels:
    """Builds the training, inference and inference-with-heatmap tracker models (shared weights).

    Args:
        preset: a name of :data:`BUILT_TRACKER_PRESETS` or a :class:`TrackerConfig`.
        topology: the keypoint set; the model predicts its K points then the 2 auxiliary ROI points.
        name: model name prefix (default ``blazepose_tracker_{preset}``).
    Raises:
        KeyError: an unknown preset name; ValueError: an official preset (converted, not built).
    """
    cfg = resolve_tracker_config(preset)
    if cfg.official:
        raise ValueError(f"tracker preset {cfg.name!r} is MediaPipe's converted {cfg.official}, not built here "
                         "(blazepose_tf.models.convert_official.load_converted)")
    num_points = topology.num_keypoints + NUM_ROI_POINTS

    def k(stride: int) -> int:
        return 3 if stride <= cfg.small_kernel_max_stride else cfg.kernel_size
    base = name or f"blazepose_tracker_{cfg.name}"

    def bn(stride: int) -> bool:
        return cfg.batch_norm and stride >= cfg.batch_norm_min_stride

    inputs = keras.Input((cfg.input_size, cfg.input_size, 3), name="image")
    # ---- heatmap branch: encoder (stride 2 stem, then stages at strides 4, 8, 16, 32)
    x = conv_bn_act(inputs, cfg.stem_filters, 3, 2, name="stem", batch_norm=bn(2))
    feats = []
    for i, (f, n) in enumerate(zip(cfg.encoder_filters, cfg.encoder_blocks), start=1):
        x = blaze_stage(x, f, n, strides=2, kernel_size=k(2 ** (i + 1)), name=f"enc{i}",
                        batch_norm=bn(2 ** (i + 1)))
        feats.append(x)
    e1, e2, e3, e4 = feats
    # ---- heatmap branch: decoder (8² → 64² for a 256 input)
    d = cfg.decoder_filters
    dec8 = pointwise(e4, d, name="dec8_proj", batch_norm=bn(32), activation="relu")
    dec16 = upsample_add(dec8, e3, d, name="dec16", batch_norm=bn(16))
    dec32 = upsample_add(dec16, e2, d, name="dec32", batch_norm=bn(8))
    dec64 = upsample_add(dec32, e1, d, name="dec64", batch_norm=bn(4))
    # ---- heatmap / offset heads (training only; the heatmap may be kept for refinement)
    h = layers.DepthwiseConv2D(3, padding="same", use_bias=not bn(4), depthwise_initializer=depthwise_initializer(3),
                               name="hm_head_dw")(dec64)
    if bn(4):
        h = FusedBatchNorm(momentum=BN_MOMENTUM, name="hm_head_dw_bn")(h)
    h = layers.Activation("relu", name="hm_head_relu")(h)
    head_init = keras.initializers.RandomNormal(stddev=0.01)  # heads start at their bias (RetinaNet-style)
    heatmap = layers.Conv2D(num_points, 1, kernel_initializer=head_init,
                            bias_initializer=keras.initializers.Constant(-4.0), name="heatmap")(h)
    offsets = layers.Conv2D(2 * num_points, 1, kernel_initializer=head_init, name="offsets")(h)
    # ---- regression encoder (strides 8 … 128), fed through stop-gradient skip connections
    skips = {1: dec32, 2: dec16, 3: e4}
    r = StopGradient(name="reg_input_stopgrad")(dec64)
    for i, (f, n) in enumerate(zip(cfg.regression_filters, cfg.regression_blocks), start=1):
        stage, stride = f"reg_stage{i}", 2 ** (i + 2)
        r = blaze_block(r, f, 2, k(stride), name=f"{stage}_block1", batch_norm=bn(stride))
        if i in skips:
            sk = StopGradient(name=f"{stage}_skip_stopgrad")(skips[i])
            sk = pointwise(sk, f, name=f"{stage}_skip", batch_norm=bn(stride), activation="relu")
            r = layers.Add(name=f"{stage}_skip_add")([r, sk])
        for j in range(2, n + 1):
            r = blaze_block(r, f, 1, k(stride), name=f"{stage}_block{j}", batch_norm=bn(stride))
    side = int(r.shape[1])
    # ---- regression heads: a side×side valid convolution = a dense layer over the final map
    # Small initial weights: a fresh model predicts every point near the crop centre (not ±input_size away).
    # The fresh regression features have an L2 norm of 25-80 per example, so a stddev of 1e-4 spreads the first
    # predictions by about 1-2 px (1e-3 gave up to 80 px, depending on the random draw).
    lm = layers.Conv2D(num_points * VALUES_PER_LANDMARK, side, padding="valid",
                       kernel_initializer=keras.initializers.RandomNormal(stddev=1e-4), name="landmarks_conv")(r)
    s = float(cfg.input_size)
    # Predict normalized xyz (x, y around the crop centre) and scale to crop pixels in the graph.
    lm = ChannelAffine([s, s, s, 1.0, 1.0] * num_points, [s / 2, s / 2, 0.0, 0.0, 0.0] * num_points,
                       name="landmarks_scale")(lm)
    landmarks = layers.Reshape((num_points * VALUES_PER_LANDMARK,), name="landmarks")(lm)
    pr = layers.Conv2D(1, side, padding="valid", kernel_initializer=keras.initializers.RandomNormal(stddev=1e-3),
                       name="presence_conv")(r)
    pr = layers.Activation("sigmoid", name="presence_sigmoid")(pr)
    presence = layers.Reshape((1,), name="presence")(pr)

    training = keras.Model(inputs, [landmarks, presence, heatmap, offsets], name=f"{base}_training")
    inference = keras.Model(inputs, [landmarks, presence], name=f"{base}")
    with_hm = keras.Model(inputs, [landmarks, presence, heatmap], name=f"{base}_with_heatmap")
    names = tuple(topology.keypoints) + AUX_ROI_POINTS
    return TrackerModels(training=training, inference=inference, inference_with_heatmap=with_hm, config=cfg,
                         topology=topology, point_names=names)


def training_only_weights(models: TrackerModels) -> int:
    """Number of parameters in the training model that the inference model does not contain."""
    inf = {id(w) for w in models.inference.weights}
    return int(sum(int(_size(w)) for w in models.training.weights if id(w) not in inf))


def _size(w) -> int:
    n = 1
    for d in w.shape:
        n *= int(d)
    return n


def with_config(preset: str | TrackerConfig, **changes) -> TrackerConfig:
    """A preset with some fields replaced (e.g. ``with_config("lite", batch_norm=False)``)."""
    return replace(resolve_tracker_config(preset), **changes)
