"""Official-weight conversion: MediaPipe's BlazePose .tflite graphs → fine-tunable Keras models.

    python -m blazepose_tf.models.convert_official [--output_dir DIR]
        [--models pose_detection,pose_landmark_full,pose_landmark_lite] [--check_export]

Reads ``pose_detection.tflite`` and ``pose_landmark_full.tflite`` (fetched by :mod:`blazepose_tf.official`,
the command is ``python -m data.fetch_official``) and ``pose_landmark_lite.tflite`` (carried by the package),
translates each graph op for op into a Keras 3 functional model with the official weights loaded, saves it as
``.keras`` and prints its parameter count and its parity with the .tflite on the offline sample photo (exit code 1
when a model misses the acceptance criteria). Parity on real LSPET crops: ``python -m benchmarks.converted_parity``.

The work is split by job; this module is the command and the one import path for all of it:

* :mod:`blazepose_tf.tflite_file` — reading the flatbuffer (:class:`TFLiteGraph`);
* :mod:`blazepose_tf.models.official_translation` — the translation to Keras (:func:`convert`,
  :func:`pose_landmark_full`, :func:`pose_landmark_lite`, :func:`pose_detection`, :func:`translate`) and back
  (:func:`to_tflite`);
* :mod:`blazepose_tf.models.official_cache` — saving, caching and loading the converted models
  (:func:`converted_model_path`, :func:`load_converted`, :func:`save_model`);
* :mod:`blazepose_tf.models.official_stamp` — where they are kept and their conversion stamps, without TensorFlow
  (:func:`converted_dir`, :func:`stamp_path`, :func:`changed_since_converted`);
* :mod:`blazepose_tf.models.official_parity` — parity metrics, acceptance criteria and sample inputs.

The paper-style architectures this project trains itself are the presets beside their builders
(:mod:`blazepose_tf.models.tracker`, :mod:`blazepose_tf.models.detector`).
"""
from __future__ import annotations

from pathlib import Path

from absl import flags

from blazepose_tf import cli
from blazepose_tf.contract import OFFICIAL_NAMES
from blazepose_tf.errors import UserError
from blazepose_tf.io.images import load_image
from blazepose_tf.io.samples import sample_image_path
from blazepose_tf.models.lazy_exports import lazy_getattr
from blazepose_tf.models.official_stamp import changed_since_converted, converted_dir, stamp_path
from blazepose_tf.official import official_model_path
from blazepose_tf.tflite_file import OpInfo, TensorInfo, TFLiteGraph  # noqa: F401  (re-exported)

# The names this module re-exports from the modules that need TensorFlow, imported on first use (PEP 562) so that
# ``--help`` and a bad flag answer without TensorFlow's start-up.
_SOURCES = {
    "blazepose_tf.models.official_cache": ("CONVERTER_VERSION", "converted_model_path", "load_converted",
                                           "save_converted", "save_model"),
    "blazepose_tf.models.official_parity": ("LANDMARK_PX_TOL", "NMS_TOL", "PROBABILITY_TOL", "REGRESSOR_PX_TOL",
                                            "check_parity", "detector_parity", "detector_parity_ok", "format_stats",
                                            "landmark_parity", "landmark_parity_ok", "sample_inputs"),
    "blazepose_tf.models.official_translation": ("convert", "count_params", "official_role", "pose_detection",
                                                 "pose_landmark_full", "pose_landmark_lite", "to_tflite",
                                                 "translate"),
}
__getattr__ = lazy_getattr(__name__, _SOURCES)

__all__ = sorted([*(name for names in _SOURCES.values() for name in names), "OFFICIAL_NAMES", "OpInfo", "TFLiteGraph", "TensorInfo", "changed_since_converted",
                  "converted_dir", "main", "stamp_path"])


def define_flags() -> None:
    """The command's absl flags."""
    flags.DEFINE_string("output_dir", None, "Where to write <name>.keras (default: the converted-model cache, "
                        "$BLAZEPOSE_TF_CACHE/converted or ~/.cache/blazepose_tf/converted).")
    flags.DEFINE_list("models", list(OFFICIAL_NAMES), f"Models to convert, from {', '.join(OFFICIAL_NAMES)}.")
    flags.DEFINE_bool("check_export", False, "Also convert each Keras model back to .tflite (builtin ops only).")
    cli.define_overwrite_flag("Replace a <name>.keras in --output_dir that this converter did not write (no "
                              "conversion stamp <name>.keras.json beside it) or that has been changed since (its "
                              "sha256 is not the stamp's).")


def _op_list(counts) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.most_common())


def main(argv: list[str]) -> int:
    """Converts, saves and checks the models of ``--models``; 0 when all pass parity, else 1."""
    FLAGS = flags.FLAGS
    unknown = [m for m in FLAGS.models if m not in OFFICIAL_NAMES]
    if unknown or not FLAGS.models:
        raise UserError(f"--models must list names from {', '.join(OFFICIAL_NAMES)}, got {FLAGS.models}")
    out_dir = Path(FLAGS.output_dir) if FLAGS.output_dir else converted_dir()
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--output_dir is not a folder: {out_dir}")
    for name in FLAGS.models:   # a converted model has its stamp beside it, recording its sha256
        path = out_dir / f"{name}.keras"
        if not path.exists() or FLAGS.overwrite:
            continue
        if not stamp_path(path).is_file():
            raise UserError(f"{path} exists and was not written by this converter (no {stamp_path(path).name} stamp "
                            "beside it); pass --overwrite to replace it, or choose another --output_dir")
        if changed_since_converted(path):
            raise UserError(f"{path} has been changed since this converter wrote it ({stamp_path(path).name} records "
                            "another sha256); pass --overwrite to replace it, or choose another --output_dir")
    from blazepose_tf.models.official_cache import save_converted  # TensorFlow: only once the flags are checked
    from blazepose_tf.models.official_parity import check_parity, format_stats, sample_inputs
    from blazepose_tf.models.official_translation import convert, count_params, to_tflite

    inputs = sample_inputs(load_image(sample_image_path()))
    all_ok = True
    for name in FLAGS.models:
        model = convert(name)
        path = save_converted(model, name, out_dir)
        total, trainable = count_params(model)
        print(f"{name}: {len(model.layers)} layers, {total:,} parameters ({trainable:,} trainable) -> {path}")
        print(f"  official graph ops: {_op_list(TFLiteGraph(official_model_path(name)).op_counts())}")
        ok, stats = check_parity(name, model, inputs[name])
        all_ok &= ok
        print(f"  parity vs .tflite on the sample photo: {'PASS' if ok else 'FAIL'}  {format_stats(stats)}")
        if FLAGS.check_export:
            blob = to_tflite(model)
            print(f"  re-export to .tflite with builtin ops only: ok ({len(blob) / 1e6:.2f} MB fp32; "
                  f"{_op_list(TFLiteGraph(blob).op_counts())})")
    return 0 if all_ok else 1


if __name__ == "__main__":
    define_flags()
    cli.run(main)
