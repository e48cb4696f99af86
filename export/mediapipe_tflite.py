"""Flatbuffer edits that make a converted (or given) ``.tflite`` model loadable by MediaPipe Tasks: the main
subgraph's outputs rewritten into the official order (items 3 of :mod:`export.to_mediapipe`), and the TFLite
Metadata with the input normalization MediaPipe requires, next to the project's own ``blazepose_tf`` JSON
(item 2).
"""
from __future__ import annotations

import json
from typing import Sequence

import numpy as np

from blazepose_tf.contract import DETECTOR, INPUT_RANGES, LANDMARKS, ROLE_KINDS
from blazepose_tf.errors import ModelError
from blazepose_tf.runtime.runners import assign_roles
from blazepose_tf.topology import AUX_ROI_POINTS, BLAZEPOSE_33
from export import mediapipe_metadata as mpm
from export import metadata as md
from export.mediapipe_contract import OUTPUT_DESCRIPTIONS, ExportedModel
from export.task_bundle import BUNDLE_FILES
from export.tflite_model import inspect_model, pack, unpack


def _main_output_roles(flat: bytes) -> tuple[list[str], list[tuple[int, ...]]]:
    """Role and shape of each output of the main subgraph, in the file's current order."""
    info = inspect_model(flat)
    shapes = [tuple(int(d) for d in t.shape) for t in info.outputs]
    tree_names = [t.name for t in info.outputs]
    # Prefer signature names (the converter's keys), by tensor index.
    sig_names: dict[int, str] = {}
    tree = unpack(flat)
    sg = tree.subgraphs[0]
    for sd in tree.signatureDefs or []:
        if (sd.subgraphIndex or 0) != 0:
            continue
        for t in sd.outputs or []:
            name = t.name.decode() if isinstance(t.name, bytes) else t.name
            sig_names[int(t.tensorIndex)] = name
    names = [sig_names.get(int(i), n) for i, n in zip(sg.outputs, tree_names)]
    hw = tuple(int(d) for d in info.inputs[0].shape[1:3]) if info.inputs else None
    return assign_roles(shapes, names, hw), shapes


def reorder_outputs(flat: bytes, order: Sequence[str], kind: str) -> tuple[bytes, dict[str, tuple[int, ...]]]:
    """Rewrites the main subgraph's output list into ``order`` (by role) and names the I/O tensors by role.

    ``kind`` is the model role (``detector`` or ``landmarks``), for messages. Returns the new bytes and
    ``{role: shape}``. Raises ModelError when a role is missing or ambiguous.
    """
    roles, shapes = _main_output_roles(flat)
    by_role: dict[str, int] = {}
    for pos, r in enumerate(roles):
        if r in by_role:
            raise ModelError(f"cannot tell the {kind} model's outputs apart (two outputs look like {r!r}: "
                             f"{shapes[by_role[r]]} and {shapes[pos]})")
        by_role[r] = pos
    missing = [r for r in order if r not in by_role]
    if missing:
        have = ", ".join(f"{r} {s}" for r, s in zip(roles, shapes))
        hint = ("; MediaPipe needs all five: pass the tracker's .keras model instead, so the missing outputs "
                "become documented placeholders" if kind == LANDMARKS else "")
        raise ModelError(f"the {kind} .tflite has no {', '.join(missing)} output(s) (has: {have}){hint}")
    tree = unpack(flat)
    sg = tree.subgraphs[0]
    old = [int(i) for i in sg.outputs]
    sg.outputs = np.array([old[by_role[r]] for r in order], dtype=np.int32)
    for r in order:
        sg.tensors[old[by_role[r]]].name = r
    if len(sg.inputs) == 1:
        sg.tensors[int(sg.inputs[0])].name = "image"
    for sd in tree.signatureDefs or []:  # keep the signature's output list in the same order
        if (sd.subgraphIndex or 0) == 0 and sd.outputs:
            pos = {int(i): k for k, i in enumerate(sg.outputs)}
            sd.outputs = sorted(sd.outputs, key=lambda t: pos.get(int(t.tensorIndex), len(pos)))
    return pack(tree), {r: shapes[by_role[r]] for r in order}


def input_normalization(flat: bytes, role: str) -> tuple[float, float, str]:
    """(mean, std, where it came from) for a .tflite: its blazepose_tf JSON, its TFLite Metadata, or the
    contract's input range of ``role``."""
    doc = None
    try:
        doc = md.read_metadata(flat)
    except ModelError:
        doc = None
    if doc and isinstance(doc.get("input"), dict) and doc["input"].get("range"):
        mean, std = mpm.normalization_for_range(doc["input"]["range"])
        return mean, std, "blazepose_tf metadata"
    try:
        meta = mpm.read_tflite_metadata(flat)
    except ModelError:
        meta = None
    if meta and meta["inputs"] and meta["inputs"][0].get("std"):
        return float(meta["inputs"][0]["mean"][0]), float(meta["inputs"][0]["std"][0]), "existing TFLite metadata"
    mean, std = mpm.normalization_for_range(INPUT_RANGES[role])
    return mean, std, "default for the official contract"


def previous_placeholders(flat: bytes) -> dict[str, dict]:
    """{role: {"status", "note"}} a blazepose_tf export recorded for its outputs (empty for other models)."""
    try:
        return (md.read_metadata(flat) or {}).get("mediapipe", {}).get("outputs", {})
    except ModelError:
        return {}


def _description(role: str, name: str, exported: ExportedModel) -> str:
    what = ("person detector (BlazePose)" if role == DETECTOR
            else f"pose landmark model (BlazePose, {BLAZEPOSE_33.num_keypoints} points)")
    lines = [f"{name}: {what}, exported by blazepose_tf for MediaPipe Tasks PoseLandmarker. "
             f"Source {exported.source} ({exported.source_kind}), quantization {exported.quantization}."]
    for o in exported.outputs:
        if o.status != "model":
            lines.append(f"{o.name}: {o.note}.")
    return " ".join(lines)


def finalize_tflite(flat: bytes, exported: ExportedModel, name: str, version: str) -> bytes:
    """Writes TFLite Metadata (MediaPipe) and the blazepose_tf JSON into an already-reordered model."""
    order = [o.name for o in exported.outputs]
    image = mpm.ImageInputDoc("image", "RGB image, normalized as (pixel - mean) / std", exported.mean, exported.std)
    outs = [mpm.TensorDoc(o.name, OUTPUT_DESCRIPTIONS[o.name] + (f" [{o.note}]" if o.note else ""))
            for o in exported.outputs]
    description = _description(exported.role, name, exported)
    blob = mpm.build_model_metadata(name=name, description=description, version=version, image=image, outputs=outs)
    detector = exported.role == DETECTOR
    doc = md.build_metadata(
        name=name, kind=ROLE_KINDS[exported.role], input_shape=exported.input_shape,
        outputs={o.name: o.shape for o in exported.outputs},
        quantization=exported.quantization, value_range=image.value_range,
        topology_name="detector" if detector else BLAZEPOSE_33.name,
        keypoints=md.DETECTOR_KEYPOINTS if detector else BLAZEPOSE_33.keypoints,
        auxiliary=() if detector else AUX_ROI_POINTS, version=version, source=exported.source,
        extra={"mediapipe": {"bundle_file": BUNDLE_FILES[exported.role],
                             "output_order": order,
                             "outputs": {o.name: {"status": o.status, "note": o.note} for o in exported.outputs}}})
    entries = {mpm.TFLITE_METADATA_NAME: blob,
               md.METADATA_NAME: json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")}
    return md.set_metadata_buffers(flat, entries, description=f"blazepose_tf {exported.role} {name} for MediaPipe",
                                   name_io_tensors=False)
