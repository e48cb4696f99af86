"""BlazeFace-style person detector (paper §2.2, docs/design.md §4) as a Keras 3 functional model, with its presets.

Same I/O contract as the official ``pose_detection.tflite``: input (B, 224, 224, 3) RGB in [-1, 1]
(letterboxed); outputs ``regressors`` (B, 2254, 12) and ``scores`` (B, 2254, 1) logits, one row per anchor of
:func:`blazepose_tf.codecs.anchors.generate_anchors` in its order (28×28×2, 14×14×2, 7×7×6; cells row-major,
a cell's anchors consecutive). A regressor row is the box (cx, cy, w, h) then 4 alignment keypoints (x, y),
in input pixels relative to the anchor centre (:func:`blazepose_tf.codecs.detection.decode_boxes`).

Architecture::

    input 224² ─ stem 3×3/2 (112²) ─ stage1 56² ─ stage2 28² ─ stage3 14² ─ stage4 7²     BlazeBlock backbone
                                                    │            │            │
                                          fpn28 ◄───┴── fpn14 ◄──┴── fpn7 ◄───┘          top-down (FPN) path
                                            │             │            │
                                    head28 (2/cell) head14 (2/cell) head7 (6/cell)       cls + reg per level
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import keras
from keras import layers

from blazepose_tf.codecs.anchors import AnchorOptions, anchors_per_cell, strides_of
from blazepose_tf.contract import DETECTOR_ROLES, REGRESSOR_VALUES
from blazepose_tf.models.blocks import (ChannelAffine, blaze_block, blaze_stage, conv_bn_act, depthwise_initializer,
                                       pointwise, upsample_add)

DETECTOR_OUTPUT_NAMES = DETECTOR_ROLES


@dataclass(frozen=True)
class DetectorConfig:
    """Widths and depths of a detector preset.

    Attributes:
        name: preset name.
        stem_filters: channels of the 3×3 stride-2 stem (112² for a 224 input).
        stage_filters / stage_blocks: backbone stages at strides 4, 8, 16, 32 (each starts with a stride-2
            block).
        fpn_filters: widths of the top-down path at strides 8, 16, 32 (the head inputs).
        kernel_size: depthwise kernel of the backbone blocks (FPN and heads use 3).
        batch_norm / batch_norm_min_stride: BatchNorm on feature maps of at least this stride (see
            :class:`blazepose_tf.models.tracker.TrackerConfig`).
        prior_probability: initial score of every anchor (classification bias, as for focal loss).
        anchor_options: the SSD anchors the heads are laid out for.
        official: non-empty for MediaPipe's own detector: the name of the official model whose converted graph and
            weights the preset is (:func:`blazepose_tf.models.convert_official.load_converted`); it is loaded, not
            built, and the width/depth fields do not apply.
    """

    name: str
    stem_filters: int = 24
    stage_filters: tuple[int, ...] = (32, 64, 160, 320)
    stage_blocks: tuple[int, ...] = (2, 3, 4, 5)
    fpn_filters: tuple[int, ...] = (64, 128, 256)
    kernel_size: int = 5
    batch_norm: bool = True
    batch_norm_min_stride: int = 8
    prior_probability: float = 0.01
    anchor_options: AnchorOptions = field(default_factory=AnchorOptions)
    official: str = ""

    def __post_init__(self) -> None:
        if len(self.stage_filters) != 4 or len(self.stage_blocks) != 4:
            raise ValueError("stage_filters and stage_blocks need 4 entries (strides 4, 8, 16, 32)")
        if tuple(strides_of(self.anchor_options)) != (8, 16, 32):
            raise ValueError(f"the detector heads sit at strides 8, 16, 32; anchors use "
                             f"{tuple(strides_of(self.anchor_options))}")
        if len(self.fpn_filters) != 3:
            raise ValueError("fpn_filters needs 3 entries (strides 8, 16, 32)")

    @property
    def input_size(self) -> int:
        return self.anchor_options.input_size


#: Every detector preset (``--preset`` of ``python -m blazepose_tf.train --model=detector``): this project's
#: architectures, the tiny smoke-test one and MediaPipe's (``official``: converted, not built).
DETECTOR_PRESETS: dict[str, DetectorConfig] = {
    # ≈0.9M parameters (the official detector stores 2.97M, of which 0.92M are non-zero).
    "detector": DetectorConfig(name="detector", stem_filters=24, stage_filters=(32, 64, 160, 320),
                               stage_blocks=(2, 3, 4, 5), fpn_filters=(64, 128, 256)),
    # About 4x cheaper to train; for quick experiments on CPU.
    "detector_lite": DetectorConfig(name="detector_lite", stem_filters=16, stage_filters=(24, 48, 96, 192),
                                    stage_blocks=(1, 2, 2, 3), fpn_filters=(48, 96, 128)),
    # A detector that builds and traces fast: for smoke tests only.
    "detector_smoke": DetectorConfig(name="detector_smoke", stem_filters=8, stage_filters=(8, 16, 16, 16),
                                     stage_blocks=(1, 1, 1, 1), fpn_filters=(8, 16, 16)),
    # MediaPipe's person detector, converted with its weights (for fine-tuning).
    "official_detector": DetectorConfig(name="official_detector", official="pose_detection"),
}
#: The presets :func:`build_detector` builds (the official ones are converted models).
BUILT_DETECTOR_PRESETS: tuple[str, ...] = tuple(n for n, c in DETECTOR_PRESETS.items() if not c.official)


def resolve_detector_config(preset: str | DetectorConfig) -> DetectorConfig:
    """A preset name or a config → config (``KeyError`` listing the presets for an unknown name)."""
    if isinstance(preset, DetectorConfig):
        return preset
    try:
        return DETECTOR_PRESETS[preset]
    except KeyError:
        raise KeyError(f"unknown detector preset {preset!r}; known: {sorted(DETECTOR_PRESETS)}") from None


def build_detector(preset: str | DetectorConfig = "detector", name: str | None = None) -> keras.Model:
    """Builds the person detector (outputs ``regressors`` (B, A, 12) and ``scores`` (B, A, 1) logits).

    The raw regression convolution predicts offsets normalized to the input size; a constant scale turns them
    into the official model's input-pixel units inside the graph (folded into the convolution on export).

    Raises:
        KeyError: an unknown preset name; ValueError: an official preset (converted, not built).
    """
    cfg = resolve_detector_config(preset)
    if cfg.official:
        raise ValueError(f"detector preset {cfg.name!r} is MediaPipe's converted {cfg.official}, not built here "
                         "(blazepose_tf.models.convert_official.load_converted)")
    size = cfg.input_size
    k = cfg.kernel_size

    def bn(stride: int) -> bool:
        return cfg.batch_norm and stride >= cfg.batch_norm_min_stride

    inputs = keras.Input((size, size, 3), name="image")
    x = conv_bn_act(inputs, cfg.stem_filters, 3, 2, name="stem", batch_norm=bn(2))
    feats = []
    for i, (f, n) in enumerate(zip(cfg.stage_filters, cfg.stage_blocks), start=1):
        x = blaze_stage(x, f, n, strides=2, kernel_size=k, name=f"stage{i}", batch_norm=bn(2 ** (i + 1)))
        feats.append(x)
    c8, c16, c32 = feats[1:]
    f8, f16, f32 = cfg.fpn_filters
    p32 = blaze_block(pointwise(c32, f32, name="fpn7_proj", batch_norm=bn(32), activation="relu"), f32, 1, 3,
                      name="fpn7_block", batch_norm=bn(32))
    p16 = upsample_add(pointwise(p32, f16, name="fpn14_reduce", batch_norm=bn(32), activation="relu"), c16,
                       f16, name="fpn14", batch_norm=bn(16))
    p8 = upsample_add(pointwise(p16, f8, name="fpn28_reduce", batch_norm=bn(16), activation="relu"), c8, f8,
                      name="fpn28", batch_norm=bn(8))

    layout = anchors_per_cell(cfg.anchor_options)
    prior = -math.log((1 - cfg.prior_probability) / cfg.prior_probability)
    scores, regressors = [], []
    for feat, (side, per_cell) in zip((p8, p16, p32), layout):
        if int(feat.shape[1]) != side:
            raise ValueError(f"feature map {feat.shape[1]}² does not match the anchors' {side}²")
        tag = f"head{side}"
        c = layers.DepthwiseConv2D(3, padding="same", depthwise_initializer=depthwise_initializer(3),
                                   name=f"{tag}_cls_dw")(feat)
        c = layers.Conv2D(per_cell, 1, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                          bias_initializer=keras.initializers.Constant(prior), name=f"{tag}_cls")(c)
        scores.append(layers.Reshape((side * side * per_cell, 1), name=f"{tag}_cls_reshape")(c))
        r = layers.DepthwiseConv2D(3, padding="same", depthwise_initializer=depthwise_initializer(3),
                                   name=f"{tag}_reg_dw")(feat)
        r = layers.Conv2D(per_cell * REGRESSOR_VALUES, 1,
                          kernel_initializer=keras.initializers.RandomNormal(stddev=1e-3), name=f"{tag}_reg")(r)
        r = ChannelAffine([float(size)] * (per_cell * REGRESSOR_VALUES), name=f"{tag}_reg_scale")(r)
        regressors.append(layers.Reshape((side * side * per_cell, REGRESSOR_VALUES),
                                         name=f"{tag}_reg_reshape")(r))
    regressors_out = layers.Concatenate(axis=1, name="regressors")(regressors)
    scores_out = layers.Concatenate(axis=1, name="scores")(scores)
    return keras.Model(inputs, [regressors_out, scores_out], name=name or f"blazepose_{cfg.name}")


def with_detector_config(preset: str | DetectorConfig, **changes) -> DetectorConfig:
    """A preset with some fields replaced."""
    return replace(resolve_detector_config(preset), **changes)
