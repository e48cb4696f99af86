"""``python -m blazepose_tf.models.summary``: a table of every model preset.

Columns: parameters of the training and inference models (Keras ``count_params``, BatchNorm statistics
included), parameters after folding BatchNorm into the convolutions (what a .tflite export stores), the
training-only parameters removed at inference (heatmap/offset heads), and multiply-accumulates / FLOPs of the
inference model at its input size for one image.

FLOPs are computed analytically from the layer shapes: a Conv2D costs H_out·W_out·k_h·k_w·C_in·C_out MACs, a
DepthwiseConv2D H_out·W_out·k_h·k_w·C, a Dense C_in·C_out; FLOPs = 2 × MACs. Element-wise work (BatchNorm —
folded at export —, additions, activations, pooling, resizing, padding) is not counted, as in the BlazePose /
MobileNet papers' convention. For the tracker this covers >99% of the arithmetic.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

from blazepose_tf import cli

# Keras and the builders are imported where used, so that ``--help`` answers without importing TensorFlow.


@dataclass
class ModelStats:
    """One row of the summary table."""

    name: str
    input_shape: tuple[int, int, int]
    params_training: int
    params_inference: int
    params_folded: int
    training_only: int
    macs: int

    @property
    def flops(self) -> int:
        return 2 * self.macs


def _prod(shape: Iterable[Optional[int]]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def count_macs(model) -> int:
    """Multiply-accumulates of one forward pass (batch 1) over Conv2D, DepthwiseConv2D and Dense layers."""
    from keras import layers
    total = 0
    for layer in model.layers:
        if isinstance(layer, layers.DepthwiseConv2D):
            out = layer.output.shape  # (B, H, W, C·m)
            kh, kw = layer.kernel_size
            total += _prod(out[1:]) * kh * kw
        elif isinstance(layer, layers.Conv2D):
            out = layer.output.shape
            kh, kw = layer.kernel_size
            c_in = int(layer.input.shape[-1]) // layer.groups
            total += _prod(out[1:]) * kh * kw * c_in
        elif isinstance(layer, layers.Dense):
            c_in = int(layer.input.shape[-1])
            total += _prod(layer.output.shape[1:-1] or [1]) * c_in * layer.units
    return int(total)


def folded_params(model) -> int:
    """Parameters once every BatchNorm is folded into its convolution (conv weights + one bias per channel)."""
    from keras import layers
    total = 0
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            continue
        n = sum(_prod(w.shape) for w in layer.weights)
        if isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D, layers.Dense)) and not layer.use_bias:
            n += int(layer.output.shape[-1])  # the bias BatchNorm folds into
        total += n
    return int(total)


def tracker_stats(preset: str, models=None) -> ModelStats:
    """Statistics of a tracker preset (33-point BlazePose topology); ``models``: already built ones."""
    from blazepose_tf.models.tracker import build_tracker, training_only_weights
    m = models or build_tracker(preset)
    return ModelStats(name=f"tracker/{preset}", input_shape=tuple(m.inference.inputs[0].shape[1:]),
                      params_training=m.training.count_params(), params_inference=m.inference.count_params(),
                      params_folded=folded_params(m.inference), training_only=training_only_weights(m),
                      macs=count_macs(m.inference))


def detector_stats(preset: str, model=None) -> ModelStats:
    """Statistics of a detector preset (the same model trains and infers); ``model``: an already built one."""
    from blazepose_tf.models.detector import build_detector
    m = model or build_detector(preset)
    n = m.count_params()
    return ModelStats(name=f"detector/{preset}", input_shape=tuple(m.inputs[0].shape[1:]), params_training=n,
                      params_inference=n, params_folded=folded_params(m), training_only=0, macs=count_macs(m))


def all_stats(models: Optional[dict] = None) -> list[ModelStats]:
    """Rows for every tracker and detector preset this project builds (not MediaPipe's converted ones;
    ``models``: already built ones by row name, reused)."""
    from blazepose_tf.models.detector import BUILT_DETECTOR_PRESETS
    from blazepose_tf.models.tracker import BUILT_TRACKER_PRESETS
    models = models or {}
    return ([tracker_stats(p, models.get(f"tracker/{p}")) for p in BUILT_TRACKER_PRESETS]
            + [detector_stats(p, models.get(f"detector/{p}")) for p in BUILT_DETECTOR_PRESETS])


def format_table(rows: list[ModelStats]) -> str:
    """Plain-text table of :func:`all_stats` rows."""
    head = ("model", "input", "params (train)", "params (infer)", "folded (infer)", "train-only", "MMAC",
            "GFLOPs")
    body = [(r.name, "x".join(str(v) for v in r.input_shape), f"{r.params_training:,}", f"{r.params_inference:,}",
             f"{r.params_folded:,}", f"{r.training_only:,}", f"{r.macs / 1e6:.1f}", f"{r.flops / 1e9:.3f}")
            for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]

    def line(cells) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = [line(head), line(["-" * w for w in widths])] + [line(b) for b in body]
    out.append("")
    out.append("params: Keras count_params (BatchNorm statistics included); folded: BatchNorm folded into the "
               "convolutions, as exported; train-only: heatmap/offset heads dropped at inference.")
    out.append("MMAC/GFLOPs: inference model, one image, analytic over Conv2D/DepthwiseConv2D/Dense "
               "(FLOPs = 2 x MACs; element-wise ops not counted).")
    return "\n".join(out)


def main(argv: list[str]) -> int:
    """CLI entry point (no flags of its own)."""
    print(format_table(all_stats()))
    return 0


if __name__ == "__main__":
    cli.run(main)
