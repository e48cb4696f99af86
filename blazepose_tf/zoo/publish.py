"""Publishes a trained model into the model zoo (``blazepose_tf/zoo/weights/``) and records it in MANIFEST.json.

    python -m blazepose_tf.zoo.publish --name lite --model RUN/best.keras --flagfile configs/lite.flags \\
        [--command "python -m blazepose_tf.train --flagfile=configs/lite.flags"] [--eval ../shared/data/lspet:dev]
        [--weights_dir DIR] [--nokeep_heatmap]

Steps: the model is loaded and its kind checked against the name (``detector`` → detector; ``full``, ``lite`` →
tracker); the ``.keras`` file is stored as ``<name>.keras`` with its float32 weights kept as float16 and the
archive deflated (:func:`compact_keras`: about a third of the size; Keras casts them back to float32 on load,
and the fp16 TFLite export rounds the same way, so nothing else changes); an fp16-weight TFLite export is made with
:func:`export.to_tflite.export_model` (builtin ops only, training heads dropped, metadata embedded, parity
checked) and saved as ``<name>.tflite``; sha256 and size of both files, the training flagfile (path and
contents) and command, the training step and dev metrics from the sidecar JSON training writes beside the model
(``best.json`` beside ``best.keras``), the export's parity (and, with ``--eval``, its PCK on ground-truth-aligned
crops), the date and the repository's commit go into the manifest, which is replaced atomically. The other
entries are kept.

``--flagfile`` names the training flagfile to record; it is not read as flags of this command.
Without ``--command`` the command recorded is ``python -m blazepose_tf.train --flagfile=FLAGFILE``.

Weight files are not committed by this command: commit them together with MANIFEST.json.

Exit codes: 0 ok; 2 bad flags; 3 ``--eval`` dataset without usable images; 4 model unloadable, of the wrong
kind, or not convertible.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

from absl import flags

from blazepose_tf import cli, zoo
from blazepose_tf.errors import ModelError, UserError, model_file

TFLITE_QUANTIZATION = "fp16"



def read_sidecar(model: Path) -> dict[str, Any]:
    """The metrics JSON training writes beside the model (``best.json`` beside ``best.keras``); {} if absent."""
    side = model.with_suffix(".json")
    if not side.is_file():
        return {}
    try:
        doc = json.loads(side.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"metrics sidecar {side} is not readable JSON: {e}") from None
    return doc if isinstance(doc, dict) else {}


def flagfile_lines(path: Path) -> list[str]:
    """The flags a flagfile sets (comments and blank lines dropped)."""
    try:
        text = path.read_text()
    except OSError as e:
        raise UserError(f"cannot read --flagfile {path}: {e.strerror or e}") from None
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def _copy_h5(src, dst) -> None:
    """Copies an HDF5 group recursively, float32 datasets as float16, attributes as they are."""
    import h5py
    import numpy as np

    for key, value in src.attrs.items():
        dst.attrs[key] = value
    for name, item in src.items():
        if isinstance(item, h5py.Group):
            _copy_h5(item, dst.create_group(name))
        else:
            data = item[()]
            if getattr(data, "dtype", None) == np.float32:
                data = data.astype(np.float16)
            ds = dst.create_dataset(name, data=data)
            for key, value in item.attrs.items():
                ds.attrs[key] = value


def compact_keras(src: Path, dst: Path) -> None:
    """Writes ``src`` (.keras) to ``dst`` atomically with float16 weights and a deflated archive."""
    import zipfile

    import h5py

    part = dst.with_name(dst.name + ".part")
    with tempfile.TemporaryDirectory(prefix=".compact_", dir=dst.parent) as tmp:
        with zipfile.ZipFile(src) as zin, zipfile.ZipFile(part, "w", zipfile.ZIP_DEFLATED) as zout:
            for info in zin.infolist():
                data = zin.read(info.filename)
                if info.filename.endswith(".h5"):
                    a, b = Path(tmp) / "in.h5", Path(tmp) / "out.h5"
                    a.write_bytes(data)
                    with h5py.File(a, "r") as fin, h5py.File(b, "w") as fout:
                        _copy_h5(fin, fout)
                    data = b.read_bytes()
                zout.writestr(info.filename, data, compress_type=zipfile.ZIP_DEFLATED)
    os.replace(part, dst)


def write_manifest(doc: dict[str, Any], directory: Path) -> Path:
    """Writes the manifest atomically (temporary file + rename)."""
    path = zoo.manifest_path(directory)
    part = path.with_name(path.name + ".part")
    part.write_text(json.dumps(doc, indent=1, sort_keys=False, allow_nan=False) + "\n")
    os.replace(part, path)
    return path


def _file_info(path: Path) -> dict[str, Any]:
    return {"file": path.name, "sha256": zoo.file_sha256(path), "bytes": path.stat().st_size}


def _finite(value: Any) -> Any:
    """JSON-safe copy: NaN/inf become None, numpy numbers Python numbers."""
    import math

    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if getattr(getattr(value, "dtype", None), "kind", "") in ("i", "u"):
        return int(value)
    try:
        f = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f if math.isfinite(f) else None


def publish(name: str, model: str | os.PathLike, *, flagfile: Optional[str] = None, command: Optional[str] = None,
            weights_dir: Optional[str | os.PathLike] = None, eval_spec: Optional[str] = None, num_eval: int = 100,
            keep_heatmap: bool = True, log=print) -> dict[str, Any]:
    """Copies ``model`` into the zoo as ``name``, exports its fp16 .tflite and records both in the manifest.

    Args:
        name: one of :data:`blazepose_tf.zoo.MODEL_NAMES`.
        model: the trained ``.keras`` file.
        flagfile: training flagfile (path recorded as given, contents recorded too).
        command: exact training command (default derived from ``flagfile``).
        weights_dir: zoo weights folder (default :func:`blazepose_tf.zoo.weights_dir`).
        eval_spec / num_eval: annotated dataset for the export's PCK on GT-aligned crops.
        keep_heatmap: keep a tracker's heatmap output in the .tflite (the runtime refines landmarks with it).
        log: where progress lines go.
    Returns:
        The new manifest entry.
    Raises:
        UserError: bad arguments. ModelError: model unloadable, of the wrong kind, or not convertible.
    """
    from export.to_tflite import export_model, load_keras_model, prepare_model

    if name not in zoo.MODEL_KINDS:
        raise UserError(f"--name must be one of {', '.join(zoo.MODEL_NAMES)}, got {name!r}")
    src = model_file(model, "--model file")
    if src.suffix != ".keras":
        raise UserError(f"--model must be a .keras file, got {src.name!r}")
    if not command and not flagfile:
        raise UserError("give --flagfile and/or --command: how the model was trained is recorded in the manifest")
    flags_recorded = flagfile_lines(Path(flagfile).expanduser()) if flagfile else None
    command = command or f"python -m blazepose_tf.train --flagfile={flagfile}"
    directory = Path(weights_dir).expanduser() if weights_dir else zoo.weights_dir()
    if directory == zoo.DEFAULT_WEIGHTS_DIR:
        directory.mkdir(exist_ok=True)  # the repository's folder: created by the first publish
    if not directory.is_dir():
        raise UserError(f"weights folder does not exist: {directory}")
    zoo.read_manifest(directory)  # a broken manifest stops here, before anything is written
    sidecar = read_sidecar(src)

    kind = zoo.MODEL_KINDS[name]
    keras_model = load_keras_model(src)
    found = prepare_model(keras_model, kind="auto").kind
    if found != kind:
        raise ModelError(f"{src} is a {found} model but zoo model {name!r} must be a {kind}")

    if keep_heatmap and (kind != "tracker" or "heatmap" not in keras_model.output_names):
        keep_heatmap = False  # nothing to keep: the runtime then uses the regressed coordinates as they are
    keras_out = directory / f"{name}.keras"
    tflite_out = directory / f"{name}.tflite"
    with tempfile.TemporaryDirectory(prefix=f".publish_{name}_", dir=directory) as tmp:
        log(f"exporting {name} ({kind}) to TFLite ({TFLITE_QUANTIZATION}) ...")
        result = export_model(keras_model, Path(tmp) / tflite_out.name, TFLITE_QUANTIZATION, eval_spec=eval_spec,
                              num_eval=num_eval, keep_heatmap=keep_heatmap, kind=kind, name=f"blazepose_tf_{name}",
                              source=src.name, log=log)
        compact_keras(src, keras_out)
        os.replace(result.path, tflite_out)
    report = result.report
    export_info: dict[str, Any] = {
        "tool": "export.to_tflite.export_model", "quantization": TFLITE_QUANTIZATION,
        "outputs": report["kept_outputs"], "dropped_outputs": report["dropped_outputs"],
        "parity": {"dataset": report["parity"]["dataset"], "num_inputs": report["parity"]["num_inputs"],
                   "max_rel": {k: v["max_rel"] for k, v in report["parity"]["outputs"].items()}},
    }
    if report.get("pck"):
        p = report["pck"]
        export_info["crop_pck"] = {"dataset": p["dataset"], "num_people": p["tflite"]["num_people"],
                                   "keras": p["keras"]["pck"], "tflite": p["tflite"]["pck"]}
    entry: dict[str, Any] = {
        "kind": kind,
        "files": {"keras": _file_info(keras_out),
                  "tflite": {**_file_info(tflite_out), "quantization": TFLITE_QUANTIZATION,
                             "outputs": report["kept_outputs"]}},
        "source": portable_path(model),
        "flagfile": flagfile,
        "flags": flags_recorded,
        "command": command,
        "step": sidecar.get("step"),
        "dev_metrics": {k: v for k, v in sidecar.items() if k != "step"} or None,
        "export": export_info,
        "published_at": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "git_commit": zoo.git_commit(),
        "publish_command": _rebuild_command(name, portable_path(model), flagfile, command, eval_spec, keep_heatmap),
    }
    entry = _finite(entry)
    manifest = zoo.read_manifest(directory)  # re-read: keep entries published meanwhile
    manifest["models"][name] = entry
    order = {n: i for i, n in enumerate(zoo.MODEL_NAMES)}
    manifest["models"] = dict(sorted(manifest["models"].items(), key=lambda kv: order.get(kv[0], len(order))))
    write_manifest(manifest, directory)
    return entry


def portable_path(path: str | os.PathLike) -> str:
    """``path`` as the manifest records it: under the home folder as ``~/...`` (the training runs' default place,
    ``~/.cache/blazepose_tf/runs``), so that the manifest names no user's home; otherwise as given."""
    home = os.path.expanduser("~")
    full = os.path.abspath(os.path.expanduser(path))
    if home not in ("", "~", os.sep) and full.startswith(home.rstrip(os.sep) + os.sep):
        return "~" + full[len(home.rstrip(os.sep)):]
    return str(path)


def _rebuild_command(name: str, model: str, flagfile: Optional[str], command: str, eval_spec: Optional[str],
                     keep_heatmap: bool) -> str:
    args = ["python", "-m", "blazepose_tf.zoo.publish", "--name", name, "--model", model]
    if flagfile:
        args += ["--flagfile", flagfile]
    args += ["--command", command]
    if eval_spec:
        args += ["--eval", eval_spec]
    if not keep_heatmap:
        args.append("--nokeep_heatmap")
    return shlex.join(args)


def define_flags() -> None:
    """The command's absl flags (defined by ``__main__`` only, so that importing :func:`publish` defines none)."""
    flags.DEFINE_enum("name", None, list(zoo.MODEL_NAMES), "Zoo model to publish.")
    flags.DEFINE_string("model", None, "The trained Keras model (.keras), e.g. RUN/best.keras.")
    flags.DEFINE_string("train_flagfile", None, "Training flagfile recorded in the manifest (also accepted as "
                        "--flagfile; it is not read as flags of this command).")
    flags.DEFINE_string("command", None, "Exact command that trained the model (default: python -m "
                        "blazepose_tf.train --flagfile=FLAGFILE).")
    flags.DEFINE_string("weights_dir", None,
                        f"Zoo weights folder (default ${zoo.WEIGHTS_ENV} or blazepose_tf/zoo/weights).")
    flags.DEFINE_string("eval", None, "Annotated dataset spec for the export's PCK on GT-aligned crops "
                        "(e.g. ../shared/data/lspet:dev); default: parity on random inputs only.")
    flags.DEFINE_integer("num_eval", 100, "Inputs the export is compared (and scored) on.", lower_bound=1)
    flags.DEFINE_bool("keep_heatmap", True, "Keep a tracker's heatmap output in the .tflite (the runtime refines "
                      "landmarks with it, as MediaPipe does).")


def main(argv: list[str]) -> int:
    """Command-line entry point."""
    FLAGS = flags.FLAGS
    if not FLAGS.name or not FLAGS.model:
        raise UserError("--name and --model are required (see --help)")
    entry = publish(FLAGS.name, FLAGS.model, flagfile=FLAGS.train_flagfile, command=FLAGS.command,
                    weights_dir=FLAGS.weights_dir, eval_spec=FLAGS.eval, num_eval=FLAGS.num_eval,
                    keep_heatmap=FLAGS.keep_heatmap)
    directory = Path(FLAGS.weights_dir).expanduser() if FLAGS.weights_dir else zoo.weights_dir()
    for fmt in ("keras", "tflite"):
        info = entry["files"][fmt]
        print(f"{fmt:<6} -> {zoo.display_path(directory / info['file'])}  {info['bytes']:,} bytes  "
              f"sha256 {info['sha256']}")
    metrics = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in (entry["dev_metrics"] or {}).items())
    print(f"step {entry['step']}" + (f"; dev metrics: {metrics}" if metrics else "; no metrics sidecar found"))
    print(f"manifest -> {zoo.display_path(zoo.manifest_path(directory))} (commit the weights with it)")
    return 0


def rename_flagfile(argv: Sequence[str]) -> list[str]:
    """``--flagfile X`` / ``--flagfile=X`` → ``--train_flagfile=X`` (absl would read it as flags otherwise)."""
    out: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("--flagfile", "-flagfile") and i + 1 < len(args):
            out.append(f"--train_flagfile={args[i + 1]}")
            i += 2
            continue
        if a.startswith(("--flagfile=", "-flagfile=")):
            a = "--train_flagfile=" + a.split("=", 1)[1]
        out.append(a)
        i += 1
    return out


def entry_point() -> None:
    """Console-script entry point (``[project.scripts]`` in pyproject.toml)."""
    define_flags()
    cli.run(main, rename_flagfile(sys.argv))


if __name__ == "__main__":
    entry_point()
