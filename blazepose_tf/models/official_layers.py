"""Small Keras layers for TFLite ops that have no exact built-in Keras equivalent.

Used by :mod:`blazepose_tf.models.convert_official` to rebuild MediaPipe's official graphs op for op. Every
layer is registered as ``blazepose_tf>Name`` (no Lambda layers), so converted models save to and load from
``.keras`` files, and each one lowers to a single TFLite builtin op when the model is converted back with
``tf.lite.TFLiteConverter.from_keras_model``:

* :class:`ZeroPad` → ``PAD`` (any axis, including the channel axis that BlazeBlocks pad to widen a residual);
* :class:`ResizeBilinear` → ``RESIZE_BILINEAR`` with the exact ``align_corners`` / ``half_pixel_centers``;
* :class:`DepthToSpace` → ``DEPTH_TO_SPACE``;
* :class:`BatchReshape` → one ``RESHAPE`` with a constant shape (``keras.layers.Reshape`` adds shape ops).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import keras
import tensorflow as tf

PACKAGE = "blazepose_tf"


@keras.saving.register_keras_serializable(package=PACKAGE)
class ZeroPad(keras.layers.Layer):
    """Zero padding of the non-batch axes of an NHWC tensor, as TFLite ``PAD``.

    Args:
        paddings: ``((top, bottom), (left, right), (channel_before, channel_after))``; the batch axis is never
            padded.
    """

    def __init__(self, paddings: Sequence[Sequence[int]], **kwargs: Any):
        super().__init__(**kwargs)
        self.paddings = tuple(tuple(int(v) for v in p) for p in paddings)
        if any(len(p) != 2 or min(p) < 0 for p in self.paddings):
            raise ValueError(f"paddings must be non-negative (before, after) pairs, got {paddings}")

    def call(self, inputs):
        return keras.ops.pad(inputs, ((0, 0),) + self.paddings)

    def compute_output_shape(self, input_shape):
        out = [input_shape[0]]
        for dim, (a, b) in zip(input_shape[1:], self.paddings):
            out.append(None if dim is None else dim + a + b)
        return tuple(out)

    def get_config(self) -> dict:
        return {**super().get_config(), "paddings": [list(p) for p in self.paddings]}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ResizeBilinear(keras.layers.Layer):
    """Bilinear resize of NHWC images to a fixed ``size`` with TFLite's exact sampling flags.

    Args:
        size: output ``(height, width)``.
        align_corners: TFLite/TF ``align_corners``.
        half_pixel_centers: TFLite/TF ``half_pixel_centers`` (``keras.layers.UpSampling2D`` uses True).
    """

    def __init__(self, size: Sequence[int], align_corners: bool = False, half_pixel_centers: bool = True,
                 **kwargs: Any):
        super().__init__(**kwargs)
        self.size = (int(size[0]), int(size[1]))
        self.align_corners = bool(align_corners)
        self.half_pixel_centers = bool(half_pixel_centers)
        if self.align_corners and self.half_pixel_centers:
            raise ValueError("align_corners and half_pixel_centers cannot both be true")

    def call(self, inputs):
        return tf.raw_ops.ResizeBilinear(images=inputs, size=tf.constant(self.size, tf.int32),
                                         align_corners=self.align_corners,
                                         half_pixel_centers=self.half_pixel_centers)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.size[0], self.size[1], input_shape[3])

    def get_config(self) -> dict:
        return {**super().get_config(), "size": list(self.size), "align_corners": self.align_corners,
                "half_pixel_centers": self.half_pixel_centers}


@keras.saving.register_keras_serializable(package=PACKAGE)
class DepthToSpace(keras.layers.Layer):
    """Rearranges ``block_size``² channel groups into space (NHWC, DCR order), as TFLite ``DEPTH_TO_SPACE``."""

    def __init__(self, block_size: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.block_size = int(block_size)
        if self.block_size < 2:
            raise ValueError(f"block_size must be >= 2, got {block_size}")

    def call(self, inputs):
        return tf.nn.depth_to_space(inputs, self.block_size)

    def compute_output_shape(self, input_shape):
        b = self.block_size

        def mul(d: Optional[int]) -> Optional[int]:
            return None if d is None else d * b

        c = input_shape[3]
        return (input_shape[0], mul(input_shape[1]), mul(input_shape[2]), None if c is None else c // (b * b))

    def get_config(self) -> dict:
        return {**super().get_config(), "block_size": self.block_size}


@keras.saving.register_keras_serializable(package=PACKAGE)
class BatchReshape(keras.layers.Layer):
    """Reshape that keeps the batch axis, as TFLite ``RESHAPE`` with a constant ``(-1, *target_shape)``.

    Unlike ``keras.layers.Reshape`` (which builds the shape from the run-time batch size and so exports as
    SHAPE + STRIDED_SLICE + PACK + RESHAPE), this exports as one ``RESHAPE`` op.
    """

    def __init__(self, target_shape: Sequence[int], **kwargs: Any):
        super().__init__(**kwargs)
        self.target_shape = tuple(int(v) for v in target_shape)
        if any(v < 1 for v in self.target_shape):
            raise ValueError(f"target_shape must be fully known (no -1), got {target_shape}")

    def call(self, inputs):
        return tf.reshape(inputs, (-1,) + self.target_shape)

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + self.target_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "target_shape": list(self.target_shape)}


CUSTOM_OBJECTS = {"ZeroPad": ZeroPad, "ResizeBilinear": ResizeBilinear, "DepthToSpace": DepthToSpace,
                  "BatchReshape": BatchReshape}
