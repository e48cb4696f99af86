"""Where an int8 model loses accuracy: per-tensor error against the float model, and the task error the float-layer
search (:mod:`export.float_search`) minimises.

* :func:`tensor_errors` (the report's ``int8.layer_errors``): the float (calibrated) model and the int8 model run
  on the same inputs with every tensor kept (:func:`blazepose_tf.tflite_file.load_interpreter` with
  ``experimental_preserve_all_tensors``, without XNNPACK, which would fuse them away); for each op, its output in
  the int8 model (dequantized) against the float one: relative RMSE (RMSE / RMS of the float values; the error
  accumulated up to this op), the RMSE in int8 steps of the tensor's scale, and ``added``: its relative RMSE minus
  the largest of its inputs' (the error this op adds). Sorted worst ``added`` first.
* :func:`task_error`: how far an int8 model's outputs are from the float ones, as the runtime reads them.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from blazepose_tf.codecs.landmarks import decode_landmarks, refine_with_heatmap
from blazepose_tf.tflite_file import load_interpreter
from export.int8_graph import CalibratedGraph, quantized_outputs


def _dequantized(it, detail: dict) -> np.ndarray:
    v = it.get_tensor(detail["index"])
    scale, zero = detail["quantization"]
    if v.dtype in (np.int8, np.uint8, np.int16) and scale:
        return (v.astype(np.float64) - zero) * scale
    return v.astype(np.float64)


def tensor_errors(graph: CalibratedGraph, calibrated: bytes, quantized: bytes,
                  inputs: Sequence[np.ndarray]) -> list[dict]:
    """Per-op error of the int8 model ``quantized`` against the float ``calibrated`` model on ``inputs`` (see the
    module docstring), worst first. Ops whose output the int8 model does not keep under the same name are left
    out."""
    f_it = load_interpreter(calibrated, use_xnnpack=False, experimental_preserve_all_tensors=True)
    q_it = load_interpreter(quantized, use_xnnpack=False, experimental_preserve_all_tensors=True)
    by_index = {d["index"]: d for d in q_it.get_tensor_details()}
    q_details = {name: by_index[i] for name, i in quantized_outputs(quantized).items() if i in by_index}
    nodes = [n for n in graph.nodes if n.name in q_details]   # exact ops too: their error feeds ``added``
    sq_err = np.zeros(len(nodes))
    sq_ref = np.zeros(len(nodes))
    max_abs = np.zeros(len(nodes))
    f_in, q_in = f_it.get_input_details()[0], q_it.get_input_details()[0]
    for x in inputs:
        x = np.asarray(x, np.float32).reshape(f_in["shape"])
        f_it.set_tensor(f_in["index"], x)
        q_it.set_tensor(q_in["index"], x)
        f_it.invoke()
        q_it.invoke()
        for k, n in enumerate(nodes):
            ref = f_it.get_tensor(n.output).astype(np.float64)
            diff = _dequantized(q_it, q_details[n.name]) - ref
            sq_err[k] += float(np.sum(diff * diff))
            sq_ref[k] += float(np.sum(ref * ref))
            max_abs[k] = max(max_abs[k], float(np.abs(diff).max()))
    count = max(len(inputs), 1)
    rel = {n.output: float(np.sqrt(sq_err[k] / max(sq_ref[k], 1e-30))) for k, n in enumerate(nodes)}
    rows = []
    for k, n in enumerate(nodes):
        if not n.candidate:
            continue
        size = int(np.prod(n.shape)) * count
        rmse = float(np.sqrt(sq_err[k] / max(size, 1)))
        scale = q_details[n.name]["quantization"][0]
        upstream = max([rel.get(i, 0.0) for i in n.inputs if i >= 0] or [0.0])
        rows.append({"op": n.index, "kind": n.kind, "layer": n.layer, "shape": list(n.shape), "macs": n.macs,
                     "int8": q_details[n.name]["dtype"] == np.int8, "rel_rmse": rel[n.output],
                     "added": rel[n.output] - upstream, "rmse": rmse, "max_abs": float(max_abs[k]),
                     "rmse_steps": rmse / scale if scale else None, "tensor": n.name})
    rows.sort(key=lambda r: -r["added"])
    return rows


def task_error(reference: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray],
               correctable: Sequence[str] = (), input_size: int = 256) -> float:
    """How far ``got`` (int8 outputs, {role: (N, ...)}) is from ``reference`` once the per-channel mean difference
    of the ``correctable`` outputs is removed (what bias correction removes). Trackers: mean keypoint distance in
    input pixels, keypoints decoded as the runtime decodes them (heatmap refinement when there is a heatmap);
    other models: mean over outputs of RMSE / RMS of the reference."""
    got = {k: np.asarray(v, np.float64) for k, v in got.items()}
    for role in correctable:
        if role in got and role in reference:
            got[role] = got[role] + (np.asarray(reference[role], np.float64) - got[role]).mean(axis=0)
    if "landmarks" in reference:
        errors = []
        for i in range(len(reference["landmarks"])):
            pts = []
            for out in (reference, got):
                xyz = decode_landmarks(np.asarray(out["landmarks"][i]), input_size=input_size).xyz
                if "heatmap" in out and out["heatmap"].shape[-1] == xyz.shape[0]:
                    xyz = refine_with_heatmap(xyz, np.asarray(out["heatmap"][i], np.float32))
                pts.append(xyz[:, :2])
            errors.append(float(np.linalg.norm(pts[0] - pts[1], axis=1).mean()) * input_size)
        return float(np.mean(errors))
    parts = [np.sqrt(np.mean((got[k] - np.asarray(v, np.float64)) ** 2)) / max(np.sqrt(np.mean(np.square(v))), 1e-12)
             for k, v in reference.items() if k in got]
    return float(np.mean(parts))
