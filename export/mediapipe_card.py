"""The report (``<name>.task.report.json``) and model card (``<name>.task.model_card.md``) written beside a ``.task``
bundle by :mod:`export.to_mediapipe`: what each model is, which outputs are real and which are placeholders,
input normalization, quantization, validation.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

import blazepose_tf
from blazepose_tf.errors import UserError
from blazepose_tf.io.provenance import mark_text, marked_json
from blazepose_tf.io.video import write_bytes_atomic
from blazepose_tf.contract import DETECTOR_ROLES, LANDMARK_ROLES, NUM_KEYPOINTS
from export.mediapipe_contract import UNSUPPORTED_IF_PLACEHOLDER, ExportedModel
from export.task_bundle import BUNDLE_FILES


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def bundle_report(output: Path, name: str, version: str, models: tuple[ExportedModel, ExportedModel]) -> dict:
    """The report of a bundle just written to ``output`` from its (detector, landmark model); ``validation`` and
    ``seconds`` are filled in by the caller."""
    data = output.read_bytes()
    lmk = models[1]
    report: dict[str, Any] = {
        "bundle": str(output), "name": name, "version": str(version),
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "blazepose_tf_version": blazepose_tf.__version__, "size_bytes": len(data), "sha256": _sha256(data),
        "models": [], "validation": None,
        "unsupported": sorted({o.name for o in lmk.outputs if o.status == "placeholder"
                               and o.name in UNSUPPORTED_IF_PLACEHOLDER}),
    }
    for m in models:
        entry = {k: v for k, v in asdict(m).items() if k != "data"}
        entry.update(file=BUNDLE_FILES[m.role], size_bytes=len(m.data), sha256=_sha256(m.data))
        report["models"].append(entry)
    return report


def write_card_and_report(report: Mapping[str, Any], output: Path) -> tuple[Path, Path]:
    """Writes ``<name>.task.model_card.md`` and ``<name>.task.report.json`` beside the bundle ``output``
    (atomically, with blazepose_tf's mark: the report, which records the bundle's sha256, vouches for it); returns
    them. A failed write (disk full) is a one-line :class:`UserError`."""
    card, rpath = card_and_report_paths(output)
    for path, data in ((card, mark_text(model_card(report))),
                       (rpath, marked_json(dict(report), indent=1,
                                           default=lambda o: list(o) if isinstance(o, tuple) else str(o)))):
        try:
            write_bytes_atomic(path, data)
        except OSError as e:
            raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    return card, rpath


def card_and_report_paths(output: Path) -> tuple[Path, Path]:
    """Where :func:`write_card_and_report` writes beside the bundle ``output``: (model card, report)."""
    return output.with_name(output.name + ".model_card.md"), output.with_name(output.name + ".report.json")


def model_card(report: Mapping[str, Any]) -> str:
    """Markdown model card of a bundle (from its report)."""
    lines = [f"# {report['name']} — MediaPipe Tasks PoseLandmarker bundle", "",
             f"`{Path(report['bundle']).name}` ({report['size_bytes'] / 1e6:.2f} MB, sha256 "
             f"`{report['sha256'][:16]}…`), version {report['version']}, created {report['created']} by "
             f"blazepose_tf {report['blazepose_tf_version']}.", "",
             "Load it with `PoseLandmarker.create_from_options(PoseLandmarkerOptions(base_options="
             "BaseOptions(model_asset_path=...)))` (mediapipe 0.10.21).", ""]
    unsupported = []
    for m in report["models"]:
        for o in m["outputs"]:
            if o["status"] == "placeholder" and o["name"] in UNSUPPORTED_IF_PLACEHOLDER:
                unsupported.append(o["name"])
    if unsupported:
        lines += ["## Unsupported features", ""]
        if "segmentation" in unsupported:
            lines.append("* **Segmentation masks are unsupported.** The landmark model has no segmentation head: "
                         "its `segmentation` output is a placeholder (constant logits −10), so "
                         "`output_segmentation_masks=True` returns an empty (all ≈0) mask. Leave it False.")
        if "world" in unsupported:
            lines.append("* **World landmarks are unsupported.** The landmark model does not predict metric 3D "
                         f"coordinates: its `world` output is all zeros, so `pose_world_landmarks` are "
                         f"{NUM_KEYPOINTS} points at the origin.")
        lines.append("")
    for m in report["models"]:
        lines += [f"## {m['file']} ({m['role']})", "",
                  f"* source: `{m['source']}` ({m['source_kind']}), quantization: {m['quantization']}, "
                  f"{m['size_bytes'] / 1e6:.2f} MB",
                  f"* input: {tuple(m['input_shape'])} float32 RGB, normalization (pixel − {m['mean']:g}) / "
                  f"{m['std']:g} → [{(0 - m['mean']) / m['std']:g}, {(255 - m['mean']) / m['std']:g}]", "",
                  "| # | output | shape | content |", "|---|---|---|---|"]
        for i, o in enumerate(m["outputs"]):
            what = "model output" if o["status"] == "model" else o["note"]
            lines.append(f"| {i} | {o['name']} | {tuple(o['shape'])} | {what} |")
        if m.get("parity"):
            worst = ", ".join(f"{k} {v['max_abs']:.3g}" for k, v in m["parity"].items())
            lines += ["", f"Converted vs Keras source (max abs error per output): {worst}"]
        if m.get("notes"):
            lines.append("")
        for note in m.get("notes", []):
            lines.append(f"* {note}")
        lines.append("")
    v = report.get("validation") or {}
    lines += ["## Validation", ""]
    if v.get("mediapipe") == "ok":
        t = v["tasks"]
        lines.append(f"Loaded and run by MediaPipe Tasks {t['mediapipe_version']} PoseLandmarker (IMAGE mode) on "
                     f"`{Path(v['image']).name}`: {t['poses']} pose(s); our pipeline on the same .tflite files: "
                     f"{v['ours']['poses']} pose(s)" + (f", median landmark distance {v['median_distance_px']:.2f} px"
                                                         if "median_distance_px" in v else "") + ".")
    elif v.get("mediapipe") == "skipped":
        lines.append(f"Not checked in MediaPipe Tasks: {v.get('reason')}")
    else:
        lines.append("Not validated (--validate off).")
    lines += ["", "Output order matters: MediaPipe maps the landmark model's outputs by position "
              f"({', '.join(LANDMARK_ROLES)}) and the detector's as ({', '.join(DETECTOR_ROLES)})."]
    return "\n".join(lines) + "\n"
