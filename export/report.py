"""What an export reports: the exported model run next to the Keras one on the same inputs (parity per output),
a tracker's PCK@0.2 on ground-truth-aligned crops, and the report's human-readable summary."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from blazepose_tf.codecs.landmarks import decode_landmarks
from blazepose_tf.codecs.roi import project_to_image
from blazepose_tf.errors import ModelError
from blazepose_tf.metrics import pck
from blazepose_tf.runtime.runners import TFLiteRunner
from blazepose_tf.topology import BLAZEPOSE_33, Topology
from export.conversion import named_outputs
from export.representative import Sample


def keras_outputs(model, batch: np.ndarray, chunk: int = 16) -> dict[str, np.ndarray]:
    """Runs a (prepared or original) Keras model on a (N, H, W, 3) batch; {name: (N, ...)}."""
    import tensorflow as tf  # not at import time: the command reports a bad flag or path before TF starts

    fn = tf.function(lambda t: model(t, training=False), reduce_retracing=True, autograph=False)
    parts: list[dict[str, np.ndarray]] = []
    x = np.asarray(batch, np.float32)
    for i in range(0, len(x), chunk):
        piece = x[i:i + chunk]
        if model.inputs[0].shape[0] == 1:  # the prepared model has a fixed batch of one
            outs = [named_outputs(model, fn(piece[j:j + 1])) for j in range(len(piece))]
            parts.extend({k: np.asarray(v) for k, v in o.items()} for o in outs)
        else:
            parts.append({k: np.asarray(v) for k, v in named_outputs(model, fn(piece)).items()})
    return {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}


def tflite_outputs(model: str | os.PathLike | bytes, batch: np.ndarray) -> dict[str, np.ndarray]:
    """Runs a .tflite model (a path, or the flatbuffer's bytes) with :class:`TFLiteRunner` on a (N, H, W, 3)
    batch; {role: (N, ...)}."""
    if isinstance(model, (bytes, bytearray)):
        with tempfile.TemporaryDirectory(prefix="blazepose_tf_") as tmp:
            path = Path(tmp) / "model.tflite"
            path.write_bytes(model)
            return TFLiteRunner(path)(np.asarray(batch, np.float32))
    return TFLiteRunner(model)(np.asarray(batch, np.float32))


def parity(reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Per output: max and mean absolute error, and max error relative to the reference's largest magnitude."""
    out = {}
    for name, ref in reference.items():
        if name not in candidate:
            raise ModelError(f"exported model has no {name!r} output (has {', '.join(candidate)})")
        ref = np.asarray(ref, np.float64)
        got = np.asarray(candidate[name], np.float64).reshape(ref.shape)
        diff = np.abs(got - ref)
        scale = float(np.abs(ref).max()) if ref.size else 0.0
        out[name] = {"max_abs": float(diff.max()), "mean_abs": float(diff.mean()),
                     "max_rel": float(diff.max() / max(scale, 1e-12)), "ref_max_abs": scale}
    return out


def tracker_pck(landmarks: np.ndarray, samples: Sequence[Sample], topology: Topology = BLAZEPOSE_33,
                input_size: int = 256) -> Optional[dict[str, Any]]:
    """PCK@0.2 (mid-torso and diagonal) of tracker outputs on GT-aligned crops; None without annotations.

    The crops are :mod:`export.representative`'s: the one scored person per image, cropped from the original
    image on its ground truth alone (:func:`blazepose_tf.codecs.targets.gt_alignment_roi`); the landmarks are
    projected back into the image and scored there by :func:`blazepose_tf.metrics.pck`, the same PCK as the
    training log's crop PCK (:mod:`blazepose_tf.training.evaluation`), which scores other crops (every person of
    the prepared dev shards, aligned on ground truth merged with teacher labels). MODEL_ZOO.md's crop PCK is this
    one.
    """
    people = [s.person for s in samples]
    if not samples or any(p is None for p in people):
        return None
    n = topology.num_keypoints
    preds = []
    for raw, s in zip(landmarks, samples):
        lm = decode_landmarks(raw, input_size=input_size)
        if lm.xyz.shape[0] < n:
            return None
        preds.append(project_to_image(lm.xyz[:n], s.roi)[:, :2])
    mid = pck(people, preds, topology=topology)
    diag = pck(people, preds, topology=topology, diagonal=True)
    return {"pck": mid.pck, "pck_diagonal": diag.pck, "num_people": mid.num_people, "num_points": mid.num_points,
            "per_keypoint": mid.per_keypoint}


def format_report(report: Mapping[str, Any]) -> str:
    """A few human-readable lines summarizing a report."""
    ops = ", ".join(f"{k}×{v}" for k, v in report["op_histogram"].items())
    lines = [f"{report['model']}: {report['kind']} {report['name']}, {report['quantization']}, "
             f"{report['size_mb']:.3f} MB, no Flex ops",
             f"ops: {ops}",
             f"parity vs Keras on {report['parity']['num_inputs']} inputs ({report['parity']['dataset']}):"]
    for name, e in report["parity"]["outputs"].items():
        lines.append(f"  {name:<12} max abs {e['max_abs']:.3g}  mean abs {e['mean_abs']:.3g}  "
                     f"max rel {e['max_rel']:.3g}")
    if report.get("pck"):
        p = report["pck"]
        lines.append(f"PCK@0.2 on {p['keras']['num_people']} GT-aligned crops: Keras {p['keras']['pck']:.2f}%  "
                     f"TFLite {p['tflite']['pck']:.2f}%  (delta {p['delta_points']:+.2f} points)")
    if report.get("int8"):
        lines += int8_lines(report["int8"])
    return "\n".join(lines)


def int8_lines(int8: Mapping[str, Any], worst: int = 8) -> list[str]:
    """The int8 part of :func:`format_report`: ranges, float layers, MAC share, the worst layers."""
    macs, ranges, floats = int8["macs"], int8["activation_ranges"], int8["float_layers"]
    names = [f["layer"] for f in floats["layers"]]
    lines = [f"int8: {100 * macs['int8_share']:.1f}% of {macs['total'] / 1e6:.1f}M MACs in int8; activation ranges "
             f"{ranges['method']}" + (f" (chosen by {ranges['chosen_by']})" if ranges.get("pck") else "")
             + (f"; float layers ({floats['mode']}): {', '.join(names)}" if names else "; no float layer")]
    layers = int8.get("layer_bias_correction")
    if layers:
        lines.append(f"  layer bias correction {'kept' if layers.get('kept') else 'dropped'}: keypoint error on "
                     f"{layers.get('check_inputs')} calibration crops {layers.get('check_error_without', 0):.2f} px "
                     f"without, {layers.get('check_error_with', 0):.2f} px with")
    if floats.get("mode") == "auto":
        stop = (floats.get("greedy") or {}).get("stopped", "")
        lines.append(f"  float layers chosen by {floats['scored_by']}: float {floats['float_pck']:.2f}, int8 with the "
                     f"float set of round {floats['chosen']} ({len(floats.get('layers') or [])} ops) "
                     f"{floats['steps'][str(floats['chosen'])]:.2f} (target {floats['target_pck']:.2f}: "
                     + ("met" if floats["met"] else f"not met; the greedy search stopped: {stop}") + ")")
    errors = int8["layer_errors"]
    lines.append(f"worst layers (error added, relative RMSE vs float, on {errors['inputs']} inputs; all in the "
                 "report's int8.layer_errors):")
    for row in errors["layers"][:worst]:
        lines.append(f"  #{row['op']:<4} {row['kind']:<18} {row['layer']:<28} added {row['added']:.3f}  "
                     f"rel RMSE {row['rel_rmse']:.3f}" + ("" if row["int8"] else "  (float)"))
    return lines
