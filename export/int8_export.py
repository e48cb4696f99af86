"""Full-integer (int8) export with its accuracy under control (:func:`build_int8`, used by
:func:`export.to_tflite.export_model`).

1. **Calibrate once** (:func:`export.conversion.calibrate`): the float model with each activation's min/max over
   the calibration inputs.
2. **Activation ranges** (``--activation_ranges``, :mod:`export.ranges`): ``minmax`` (the converter's),
   ``percentile`` or ``mse``; ``auto`` builds the int8 model with each and keeps the best pipeline PCK on ``--eval``.
3. **Layer bias correction** (``--layer_bias_correction``, :func:`export.bias_correction.correct_layer_biases`):
   every convolution's bias shifted, in graph order, by the mean int8 error of its output channels on
   :data:`LAYER_CORRECTION_INPUTS` calibration crops (for the int8 model with the float layers of step 4); kept
   only when it lowers the keypoint error on :data:`CHECK_INPUTS` other calibration crops.
4. **Float layers** (``--float_layers``): none; ``name,...`` (layer labels or tensor names from the report's
   ``layer_errors``, or ``#K`` for op K); ``N``, the float set after N rounds of the greedy search of
   :mod:`export.float_search` (each round adds the activation tensor, or the low-resolution tail of the network,
   that removes the most keypoint error per float MAC, within ``--float_mac_budget``; the error, after bias
   correction's mean shift and before the layer correction, on :data:`SEARCH_INPUTS` calibration crops);
   ``auto``, the first of those rounds whose pipeline PCK on ``--eval`` is within ``--max_pck_drop`` points of the
   float model's (binary search over the rounds; each step an int8 model built as the final one, layer correction
   included, and a pipeline evaluation). The quantizer keeps the chosen ops float (``denylisted_nodes``) with
   QUANTIZE/DEQUANTIZE around them, and the layer correction is made for that model.
5. **Output bias correction** (``--bias_correction``, :func:`export.bias_correction.correct_int8_biases`).
6. **Report**: the share of MACs in int8, the ranges, the float layers and how they were chosen, and the
   per-tensor error of the int8 model against the float one (:func:`export.layer_errors.tensor_errors`), worst
   first.

Every candidate the ``auto`` choices score is the int8 model a final export with those settings writes (same
calibration, same corrections), measured with the same pipeline as ``python -m blazepose_tf.evaluate``.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from blazepose_tf.errors import UserError
from blazepose_tf.int8_ranges import RANGE_PERCENTILE
from export.bias_correction import correct_int8_biases, correct_layer_biases, find_correctable
from export.conversion import PreparedModel, calibrate, convert, quantize_calibrated
from export.float_search import MAX_ROUNDS, float_candidates, greedy_float_sets
from export.int8_graph import CalibratedGraph, Node, mac_split
from export.layer_errors import task_error, tensor_errors
from export.pipeline_score import PipelineScorer
from export.ranges import RANGE_METHODS, range_variants
from export.report import tflite_outputs

AUTO = "auto"
# Session 18: at 0.2 the zoo Lite's search (IMAGE mode, two tracker passes) ended below its dev target (48.52 vs
# 48.57, 80.2% of the MACs in int8; test -1.93 vs fp32); at 0.3 its greedy path differs and the smallest float set
# that meets the target keeps 88.7% in int8 (dev 48.67; test -1.22 [-2.34, -0.15]).
# Session 22, the same search on that Lite after its teacher refit (rows of the 21 unannotated points only, every
# float LSPET output bit-identical): 93.0% in int8, dev 48.67, test -2.29 [-3.60, -1.04].
# Session 23, after its heatmap channels of those points were refit too: 97.6% in int8, dev 49.08 (fp32 49.57), test
# -1.31 [-2.49, -0.21].
DEFAULT_MAC_BUDGET = 0.3
DEFAULT_MAX_PCK_DROP = 1.0
SEARCH_INPUTS = 64
ERROR_INPUTS = 32
LAYER_CORRECTION_INPUTS = 32
# Layer bias correction is kept only when it lowers the keypoint error on up to this many other calibration crops:
# it lifts the official Full's int8 (LSPET dev pipeline PCK, percentile ranges) from 50.7 to 53.6, but takes the
# official Lite's from 20.6 to 14.6 (and from 18.3 to 0.9 with min/max ranges), fp32 44.4.
CHECK_INPUTS = 64


@dataclass
class Int8Settings:
    """The int8 choices (flags of :mod:`export.to_tflite`)."""

    # The default ranges: blazepose_tf.int8_ranges.RANGE_PERCENTILE (measured there).
    activation_ranges: str = "percentile"  # one of export.ranges.RANGE_METHODS, or "auto"
    range_percentile: float = RANGE_PERCENTILE
    bias_correction: bool = True           # the outputs' (export.bias_correction.correct_int8_biases)
    layer_bias_correction: bool = True     # every layer's (export.bias_correction.correct_layer_biases)
    float_layers: str = ""                 # "", "auto", "N" or "name,name,..."
    float_mac_budget: float = DEFAULT_MAC_BUDGET
    max_pck_drop: float = DEFAULT_MAX_PCK_DROP

    def check(self) -> None:
        """Raises :class:`UserError` on a bad setting."""
        if self.activation_ranges not in RANGE_METHODS + (AUTO,):
            raise UserError(f"--activation_ranges must be one of {', '.join(RANGE_METHODS + (AUTO,))}, "
                            f"got {self.activation_ranges!r}")
        if not 0.0 <= self.float_mac_budget <= 1.0:
            raise UserError(f"--float_mac_budget must be in [0, 1], got {self.float_mac_budget}")
        if self.max_pck_drop < 0:
            raise UserError(f"--max_pck_drop must be >= 0, got {self.max_pck_drop}")
        if not 50.0 < self.range_percentile <= 100.0:
            raise UserError(f"--range_percentile must be in (50, 100], got {self.range_percentile}")

    @property
    def needs_scorer(self) -> bool:
        """Whether a choice is made by pipeline PCK (``auto`` ranges or float layers)."""
        return AUTO in (self.activation_ranges, self.float_layers.strip())


@dataclass
class Int8Result:
    """The int8 flatbuffer and what the report says about it."""

    flat: bytes
    bias_correction: Optional[dict]
    report: dict[str, Any]


def keras_layer_names(model) -> set[str]:
    """The names of a Keras model's layers, nested models' layers included."""
    names: set[str] = set()
    for layer in getattr(model, "layers", []):
        names.add(layer.name)
        names |= keras_layer_names(layer)
    return names


class _Builder:
    """The state shared by the steps: calibrated model, float reference outputs, scorer."""

    def __init__(self, prepared: PreparedModel, inputs: Sequence[np.ndarray], settings: Int8Settings,
                 scorer: Optional[PipelineScorer], log):
        self.prepared, self.settings, self.scorer, self.log = prepared, settings, scorer, log
        self.inputs = list(inputs)
        self.batch = np.concatenate(self.inputs, axis=0)
        log(f"int8: calibrating on {len(self.inputs)} inputs ...")
        self.calibrated = calibrate(prepared.model, self.inputs)
        self.layer_names = keras_layer_names(prepared.model)
        self.graph = CalibratedGraph(self.calibrated, self.layer_names)
        self.reference = tflite_outputs(self.calibrated, self.batch)    # the float model's outputs
        self.correctable = list(find_correctable(self.graph))
        self._float_pck: Optional[float] = None
        self._finished: dict[tuple[str, tuple[str, ...]], tuple[bytes, dict]] = {}

    def finish(self, calibrated: bytes, nodes: Sequence[Node] = ()) -> tuple[bytes, dict]:
        """The int8 model of ``calibrated`` (ranges chosen) with ``nodes`` kept in float: every layer's bias
        corrected for that model, quantized, the output biases corrected (each when enabled); and what the
        corrections did ({"layers": ..., "outputs": ...}). Cached per (model, float nodes)."""
        names = [n.name for n in nodes]
        key = (hashlib.sha1(calibrated).hexdigest(), tuple(names))
        if key in self._finished:
            return self._finished[key]
        corrected, layers = calibrated, None
        flat = quantize_calibrated(calibrated, names)
        if self.settings.layer_bias_correction:
            corrected, layers = correct_layer_biases(calibrated, self.inputs[:LAYER_CORRECTION_INPUTS], names,
                                                     log=lambda *a: None)
            if layers is not None:   # kept only when it lowers the error on crops it was not measured on
                with_layers = quantize_calibrated(corrected, names)
                before, after = self.check_error(flat), self.check_error(with_layers)
                layers.update(kept=after < before, check_inputs=len(self.check_slice()[0]),
                              check_error_without=before, check_error_with=after)
                corrected, flat = (corrected, with_layers) if after < before else (calibrated, flat)
        outputs = None
        if self.settings.bias_correction:
            flat, outputs = correct_int8_biases(corrected, flat, self.batch, self.reference, names,
                                                log=lambda *a: None)
        self._finished[key] = (flat, {"layers": layers, "outputs": outputs})
        return self._finished[key]

    def check_slice(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The calibration inputs the layer correction is checked on (those after the ones it is measured on, up to
        :data:`CHECK_INPUTS`; all of them when there are too few), and the float outputs on them."""
        start = LAYER_CORRECTION_INPUTS if len(self.batch) >= LAYER_CORRECTION_INPUTS + 16 else 0
        part = slice(start, start + CHECK_INPUTS)
        return self.batch[part], {k: v[part] for k, v in self.reference.items()}

    def check_error(self, flat: bytes) -> float:
        """:func:`export.layer_errors.task_error` of an int8 model on :meth:`check_slice` (after the mean shift the
        output bias correction removes, when it is on)."""
        batch, ref = self.check_slice()
        correctable = self.correctable if self.settings.bias_correction else ()
        return task_error(ref, tflite_outputs(flat, batch), correctable, self.prepared.input_hw[1])

    def float_pck(self) -> float:
        """Pipeline PCK of the float (fp32) export: the reference of ``--max_pck_drop``."""
        if self._float_pck is None:
            assert self.scorer is not None
            self._float_pck = self.scorer(convert(self.prepared.model, "none"))
            self.log(f"int8: float model {self._float_pck:.2f} ({self.scorer.describe()})")
        return self._float_pck

    # -- step 2 -------------------------------------------------------------------------------------------
    def choose_ranges(self) -> tuple[bytes, dict]:
        """The calibrated model with the chosen activation ranges, and the ranges' report."""
        s = self.settings
        methods = RANGE_METHODS if s.activation_ranges == AUTO else (s.activation_ranges,)
        variants = range_variants(self.calibrated, methods, self.inputs, s.range_percentile, log=self.log)
        if s.activation_ranges != AUTO:
            flat, summary = variants[s.activation_ranges]
            return flat, {"method": s.activation_ranges, "chosen_by": "flag", **(summary or {})}
        assert self.scorer is not None
        scores = {}
        for method, (flat, _) in variants.items():
            scores[method] = self.scorer(self.finish(flat)[0])
            self.log(f"int8: activation ranges {method}: pipeline PCK {scores[method]:.2f}")
        best = max(methods, key=lambda m: (scores[m], m == "minmax"))
        flat, summary = variants[best]
        return flat, {"method": best, "chosen_by": self.scorer.describe(), "pck": scores, **(summary or {})}

    # -- step 4 -------------------------------------------------------------------------------------------
    def greedy(self, calibrated: bytes, max_rounds: int = MAX_ROUNDS) -> tuple[list[list[Node]], dict]:
        """The growing float op sets of :func:`export.float_search.greedy_float_sets` (task error on
        :data:`SEARCH_INPUTS` calibration crops, before the layer correction; at most ``max_rounds``) and what the
        search did."""
        batch = self.batch[:SEARCH_INPUTS]
        ref = {k: v[:SEARCH_INPUTS] for k, v in self.reference.items()}
        size = self.prepared.input_hw[1]

        correctable = self.correctable if self.settings.bias_correction else ()

        def error_of(names: Sequence[str]) -> float:
            return task_error(ref, tflite_outputs(quantize_calibrated(calibrated, names), batch), correctable, size)

        total = self.graph.total_macs
        search = greedy_float_sets(float_candidates(self.graph), error_of, total,
                                   self.settings.float_mac_budget * total, log=self.log, max_rounds=max_rounds)
        base, steps = search.start, search.steps
        info = {"greedy": {"inputs": len(batch), "stopped": search.stopped,
                           "error": "mean keypoint error, px" if "landmarks" in self.reference
                           else "mean relative error",
                           "all_int8": base,
                           "rounds": [{"added": s.added, "error": s.error,
                                       "float_mac_share": s.float_macs / max(total, 1)} for s in steps]}}
        return [s.nodes for s in steps], info

    def choose_float_layers(self, calibrated: bytes) -> tuple[list[Node], dict]:
        text = self.settings.float_layers.strip()
        if not text:
            return [], {"mode": "none"}
        if text != AUTO and not text.isdigit():
            return self.graph.resolve(text.split(",")), {"mode": "names"}
        if text.isdigit():
            if int(text) == 0:
                return [], {"mode": "count", "rounds": 0}
            sets, info = self.greedy(calibrated, max_rounds=int(text))
            n = min(int(text), len(sets))
            return (sets[n - 1] if n else []), {"mode": "count", "rounds": n, **info}
        sets, info = self.greedy(calibrated)
        return self.search(calibrated, sets, info)

    def search(self, calibrated: bytes, sets: list[list[Node]], info: dict) -> tuple[list[Node], dict]:
        """The first of ``sets`` (growing float op sets) whose pipeline PCK is within ``--max_pck_drop`` of the float
        model's (binary search; the best measured one when even the last is not)."""
        target = self.float_pck() - self.settings.max_pck_drop
        steps: dict[int, float] = {}

        def score(k: int) -> float:
            if k not in steps:
                steps[k] = self.scorer(self.finish(calibrated, sets[k - 1] if k else [])[0])  # type: ignore[misc]
                self.log(f"int8: float set of round {k} ({len(sets[k - 1]) if k else 0} ops): pipeline PCK "
                         f"{steps[k]:.2f} (target {target:.2f})")
            return steps[k]

        if score(0) >= target:
            k = 0
        elif not sets or score(len(sets)) < target:
            k = max(steps, key=lambda j: (steps[j], -j))   # even the last round misses: the best measured
        else:
            lo, hi = 0, len(sets)
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if score(mid) >= target else (mid, hi)
            k = hi
        info.update(mode=AUTO, target_pck=target, float_pck=self.float_pck(),
                    max_pck_drop=self.settings.max_pck_drop, float_mac_budget=self.settings.float_mac_budget,
                    met=steps[k] >= target, chosen=k, rounds=len(sets), scored_by=self.scorer.describe(),
                    steps={str(j): steps[j] for j in sorted(steps)})
        return (sets[k - 1] if k else []), info


def build_int8(prepared: PreparedModel, inputs: Sequence[np.ndarray], settings: Optional[Int8Settings] = None,
               scorer: Optional[PipelineScorer] = None, log=print) -> Int8Result:
    """The int8 model of ``prepared``, calibrated on ``inputs`` (see the module docstring).

    Raises:
        UserError: bad settings, or an ``auto`` choice without a ``scorer`` (an annotated ``--eval``) or for a
            detector. ConversionError: the converter or quantizer failed.
    """
    settings = settings or Int8Settings()
    settings.check()
    if settings.needs_scorer and (scorer is None or prepared.kind != "tracker"):
        raise UserError("--activation_ranges auto and --float_layers auto choose by pipeline PCK: they need a "
                        "tracker and an annotated --eval split (e.g. ../shared/data/lspet:dev)")
    b = _Builder(prepared, inputs, settings, scorer, log)
    calibrated, ranges = b.choose_ranges()
    nodes, selection = b.choose_float_layers(calibrated)
    flat, corrections = b.finish(calibrated, nodes)
    split = mac_split(flat)
    n_err = min(len(b.inputs), ERROR_INPUTS)
    errors = tensor_errors(b.graph, b.calibrated, flat, b.inputs[:n_err])   # against the float model
    kept = [{"op": n.index, "kind": n.kind, "layer": n.layer, "macs": n.macs, "tensor": n.name} for n in nodes]
    report = {
        "activation_ranges": ranges,
        "layer_bias_correction": corrections["layers"],
        "float_layers": {**selection, "layers": kept},
        "macs": {"int8": split.int8, "total": split.total, "int8_share": split.int8_share},
        "layer_errors": {"inputs": n_err, "sorted_by": "added",
                         "metric": "per op output, int8 (dequantized) vs float on the same calibration inputs: "
                                   "rel_rmse = RMSE / RMS(float) (accumulated), added = rel_rmse minus its "
                                   "inputs' largest, rmse_steps = RMSE in int8 steps",
                         "layers": errors},
    }
    if corrections["layers"]:
        c = corrections["layers"]
        log(f"int8: layer bias correction of {c['layers']} layers (mean |shift| {c['mean_abs_shift']:.3g}) "
            f"{'kept' if c['kept'] else 'dropped'}: keypoint error on {c['check_inputs']} other crops "
            f"{c['check_error_without']:.2f} px without, {c['check_error_with']:.2f} px with")
    if corrections["outputs"]:
        log("int8: output bias correction: " + ", ".join(f"{r} (mean |shift| {v['mean_abs_shift']:.3g})"
                                                       for r, v in corrections["outputs"].items()))
    log(f"int8: {100 * split.int8_share:.1f}% of {split.total / 1e6:.1f}M MACs in int8"
        + (f", {len(nodes)} float layers ({', '.join(n.layer for n in nodes[:8])}"
           f"{', ...' if len(nodes) > 8 else ''})" if nodes else ""))
    return Int8Result(flat=flat, bias_correction=corrections["outputs"], report=report)
