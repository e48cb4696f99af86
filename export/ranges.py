"""Activation ranges for int8: narrower than the calibration's min/max where a few outliers would waste the 256
int8 levels on values that almost never occur.

The converter quantizes each activation tensor over its calibrated [min, max] (:func:`export.conversion.calibrate`
records them). Here every activation of the calibrated model is run on the calibration inputs (an interpreter that
keeps all tensors), its values are histogrammed over that [min, max] (:data:`BINS` bins), and the range written
back into the model (where the quantizer reads it) is one of:

* ``minmax``: the calibrated range as it is (the converter's default);
* ``percentile``: the ``p`` and ``100 - p`` percentiles of the values (one side only when the other is 0, e.g.
  after a ReLU); values beyond are clipped;
* ``mse``: the range [a·min, a·max] (0 < a ≤ 1) that minimizes the expected squared int8 error, clipping plus
  rounding (step²/12 per value inside).

Left at min/max: the model input (its range is the contract's), outputs of ops with fixed output ranges
(LOGISTIC, TANH, SOFTMAX), the tensors that lead to the model outputs through shape-only ops, a sigmoid or a
constant affine map (clipping a landmark coordinate or a heatmap peak moves a keypoint), the features a dense head
reads, and every tensor with at most :data:`~blazepose_tf.int8_ranges.MIN_POSITIONS` spatial positions (a
per-image feature vector: its rare large values are signal, not outliers).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from blazepose_tf.errors import UserError
from blazepose_tf.int8_ranges import MIN_POSITIONS, RANGE_PERCENTILE
from blazepose_tf.tflite_file import load_interpreter
from export.int8_graph import MAC_KINDS, SHAPE_KINDS, CalibratedGraph

RANGE_METHODS = ("minmax", "percentile", "mse")
BINS = 2048
FIXED_RANGE_KINDS = ("LOGISTIC", "TANH", "SOFTMAX")
HEAD_KINDS = SHAPE_KINDS + ("LOGISTIC", "MUL", "ADD")
MSE_SCALES = np.linspace(0.05, 1.0, 96)


@dataclass
class Histogram:
    """Values of one activation tensor over the calibration inputs, in :data:`BINS` bins over [lo, hi]."""

    lo: float
    hi: float
    counts: np.ndarray

    @property
    def centers(self) -> np.ndarray:
        return self.lo + (np.arange(BINS) + 0.5) * (self.hi - self.lo) / BINS

    def quantile(self, q: float) -> float:
        """The value below which a share ``q`` of the values fall (bin resolution)."""
        cdf = np.cumsum(self.counts) / max(self.counts.sum(), 1)
        k = int(np.searchsorted(cdf, q, side="left"))
        return float(self.lo + min(k + 1, BINS) * (self.hi - self.lo) / BINS)


def head_tensors(graph: CalibratedGraph) -> set[int]:
    """The model outputs and the tensors that lead to them through :data:`HEAD_KINDS` ops, down to (and
    including) the output of the op that computes them, and that op's input when it is a dense head (a
    fully-connected op or a convolution to a 1×1 output: the features every output channel reads)."""
    keep: set[int] = set()
    for t in graph.outputs.values():
        while True:
            keep.add(t)
            node = graph.producer.get(t)
            if node is None:
                break
            data = [i for i in node.inputs if i >= 0 and not graph.is_constant(i)]
            if node.kind not in HEAD_KINDS:
                if node.kind in MAC_KINDS and data and all(d == 1 for d in node.shape[1:-1]):
                    keep.add(data[0])
                break
            if len(data) != 1:
                break
            t = data[0]
    return keep


def adjustable_tensors(graph: CalibratedGraph) -> list[int]:
    """The activation tensors whose range a method other than ``minmax`` may narrow (see the module docstring)."""
    skip = head_tensors(graph) | {int(i) for i in graph.subgraph.inputs}
    skip |= {n.output for n in graph.nodes if n.kind in FIXED_RANGE_KINDS}
    out = []
    for t in graph.activation_tensors():
        r = graph.range(t)
        positions = int(np.prod(graph.shape(t)[1:-1])) if len(graph.shape(t)) > 2 else 1
        if t not in skip and r is not None and r[1] > r[0] and positions > MIN_POSITIONS:
            out.append(t)
    return out


def histograms(calibrated: bytes, graph: CalibratedGraph, tensors: Sequence[int],
               inputs: Sequence[np.ndarray]) -> dict[int, Histogram]:
    """Histograms of ``tensors`` of the calibrated model (run in float, every tensor kept) over ``inputs``."""
    it = load_interpreter(calibrated, use_xnnpack=False, experimental_preserve_all_tensors=True)
    index = it.get_input_details()[0]["index"]
    hists = {t: Histogram(*graph.range(t), np.zeros(BINS, np.int64)) for t in tensors}  # type: ignore[misc]
    for x in inputs:
        it.set_tensor(index, np.asarray(x, np.float32).reshape(it.get_input_details()[0]["shape"]))
        it.invoke()
        for t, h in hists.items():
            v = it.get_tensor(t).ravel()
            k = np.clip(((v - h.lo) * (BINS / (h.hi - h.lo))).astype(np.int64), 0, BINS - 1)
            h.counts += np.bincount(k, minlength=BINS)
    return hists


def percentile_range(h: Histogram, percentile: float) -> tuple[float, float]:
    """[lo, hi] at the ``100 - percentile`` and ``percentile`` percentiles (a side at or past 0 stays)."""
    q = percentile / 100.0
    lo = min(h.quantile(1.0 - q), 0.0) if h.lo < 0 else h.lo
    hi = max(h.quantile(q), 0.0) if h.hi > 0 else h.hi
    return lo, hi


def mse_range(h: Histogram) -> tuple[float, float]:
    """[a·lo, a·hi] minimizing the expected squared int8 error (clipping + rounding) over :data:`MSE_SCALES`."""
    c, n = h.centers, h.counts.astype(np.float64)
    best, best_err = (h.lo, h.hi), np.inf
    for a in MSE_SCALES:
        lo, hi = a * h.lo, a * h.hi
        step = (hi - lo) / 255.0
        clipped = np.clip(c, lo, hi)
        inside = (c >= lo) & (c <= hi)
        err = float(np.sum(n * ((c - clipped) ** 2 + np.where(inside, step * step / 12.0, 0.0))))
        if err < best_err:
            best, best_err = (lo, hi), err
    return best


def choose_ranges(hists: dict[int, Histogram], method: str, percentile: float = RANGE_PERCENTILE
                  ) -> dict[int, tuple[float, float]]:
    """The range ``method`` gives each histogrammed tensor."""
    if method not in RANGE_METHODS:
        raise UserError(f"--activation_ranges must be one of {', '.join(RANGE_METHODS)}, got {method!r}")
    if method == "minmax":
        return {t: (h.lo, h.hi) for t, h in hists.items()}
    if method == "percentile":
        if not 50.0 < percentile <= 100.0:
            raise UserError(f"--range_percentile must be in (50, 100], got {percentile}")
        return {t: percentile_range(h, percentile) for t, h in hists.items()}
    return {t: mse_range(h) for t, h in hists.items()}


def apply_ranges(calibrated: bytes, ranges: dict[int, tuple[float, float]]) -> tuple[bytes, dict]:
    """The calibrated model with ``ranges`` written in, and a summary (tensors changed, how much narrower)."""
    graph = CalibratedGraph(calibrated)
    ratios = []
    for t, (lo, hi) in ranges.items():
        old = graph.range(t)
        if old is None or (lo, hi) == old:
            continue
        graph.set_range(t, lo, hi)
        ratios.append((hi - lo) / (old[1] - old[0]))
    summary = {"tensors_narrowed": len(ratios), "tensors_considered": len(ranges),
               "median_width_ratio": float(np.median(ratios)) if ratios else 1.0,
               "min_width_ratio": float(np.min(ratios)) if ratios else 1.0}
    return (graph.to_bytes() if ratios else calibrated), summary


def range_variants(calibrated: bytes, methods: Sequence[str], inputs: Sequence[np.ndarray],
                   percentile: float = RANGE_PERCENTILE, log=print) -> dict[str, tuple[bytes, Optional[dict]]]:
    """{method: (calibrated model with that method's ranges, summary)} for each of ``methods`` (histograms are
    gathered once, and only when a method needs them)."""
    out: dict[str, tuple[bytes, Optional[dict]]] = {}
    hists: Optional[dict[int, Histogram]] = None
    for method in methods:
        if method == "minmax":
            out[method] = (calibrated, None)
            continue
        if hists is None:
            graph = CalibratedGraph(calibrated)
            tensors = adjustable_tensors(graph)
            log(f"activation ranges: histogramming {len(tensors)} tensors on {len(inputs)} inputs ...")
            hists = histograms(calibrated, graph, tensors, inputs)
        flat, summary = apply_ranges(calibrated, choose_ranges(hists, method, percentile))
        summary = {"method": method, **({"percentile": percentile} if method == "percentile" else {}), **summary}
        out[method] = (flat, summary)
    return out
