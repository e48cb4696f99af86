"""SSD anchor generation (MediaPipe's SsdAnchorsCalculator semantics) for the BlazePose person detector."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class AnchorOptions:
    """SSD anchor parameters; the defaults are the official pose detector's (docs/design.md §4)."""

    input_size: int = 224
    num_layers: int = 5
    min_scale: float = 0.1484375
    max_scale: float = 0.75
    strides: tuple[int, ...] = (8, 16, 32, 32, 32)
    aspect_ratios: tuple[float, ...] = (1.0,)
    interpolated_scale_aspect_ratio: float = 1.0
    anchor_offset: float = 0.5
    fixed_anchor_size: bool = True


def _scale(min_scale: float, max_scale: float, index: int, count: int) -> float:
    if count == 1:
        return (min_scale + max_scale) / 2
    return min_scale + (max_scale - min_scale) * index / (count - 1)


def generate_anchors(options: AnchorOptions = AnchorOptions()) -> np.ndarray:
    """Returns (N, 4) anchors as (x_center, y_center, width, height), normalized to [0, 1].

    Layers that share a stride are merged into one feature map with all their anchors per cell, as MediaPipe
    does; with the default options this gives 28·28·2 + 14·14·2 + 7·7·6 = 2254 anchors. With
    ``fixed_anchor_size`` the width and height are 1 (the regressors are then plain offsets in input units).
    """
    if len(options.strides) != options.num_layers:
        raise ValueError("strides must have num_layers entries")
    anchors: list[tuple[float, float, float, float]] = []
    layer = 0
    while layer < options.num_layers:
        sizes: list[tuple[float, float]] = []
        last = layer
        while last < options.num_layers and options.strides[last] == options.strides[layer]:
            scale = _scale(options.min_scale, options.max_scale, last, options.num_layers)
            for ratio in options.aspect_ratios:
                sizes.append((scale * math.sqrt(ratio), scale / math.sqrt(ratio)))
            if options.interpolated_scale_aspect_ratio > 0:
                nxt = 1.0 if last == options.num_layers - 1 else _scale(
                    options.min_scale, options.max_scale, last + 1, options.num_layers)
                s = math.sqrt(scale * nxt)
                r = math.sqrt(options.interpolated_scale_aspect_ratio)
                sizes.append((s * r, s / r))
            last += 1
        stride = options.strides[layer]
        fm = int(math.ceil(options.input_size / stride))
        for y in range(fm):
            for x in range(fm):
                cx = (x + options.anchor_offset) / fm
                cy = (y + options.anchor_offset) / fm
                for w, h in sizes:
                    anchors.append((cx, cy, 1.0, 1.0) if options.fixed_anchor_size else (cx, cy, w, h))
        layer = last
    return np.asarray(anchors, dtype=np.float32)


def anchors_per_cell(options: AnchorOptions = AnchorOptions()) -> list[tuple[int, int]]:
    """(feature-map side, anchors per cell) for each distinct stride, in output order (for model heads)."""
    out: list[tuple[int, int]] = []
    layer = 0
    per_ratio = len(options.aspect_ratios) + (1 if options.interpolated_scale_aspect_ratio > 0 else 0)
    while layer < options.num_layers:
        last = layer
        while last < options.num_layers and options.strides[last] == options.strides[layer]:
            last += 1
        out.append((int(math.ceil(options.input_size / options.strides[layer])), per_ratio * (last - layer)))
        layer = last
    return out


def strides_of(options: AnchorOptions = AnchorOptions()) -> Sequence[int]:
    """Distinct strides in output order."""
    return [s for i, s in enumerate(options.strides) if i == 0 or s != options.strides[i - 1]]
