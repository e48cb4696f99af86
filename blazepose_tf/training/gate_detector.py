"""Gates a score-head-tuned detector by the detector it was tuned from (:mod:`blazepose_tf.models.detector_gate`).

    python -m blazepose_tf.training.gate_detector --model RUN/best.keras --output RUN/gated.keras
        [--base official|BASE.keras] [--threshold 0.5] [--tuned_offset 0] [--flagfile=configs/detector_gated.flags]

``--model`` must be a ``--trainable=score_head`` tune of ``--base`` (``official``: MediaPipe's detector, converted):
every layer outside the score head identical. The written detector emits the base's scores on the images where the
base fires at ``--threshold`` (so its ROIs there are exactly the base's) and the tuned scores elsewhere, raised by
``--tuned_offset`` (a logit: the tuned head then fires below the threshold it was trained at). Its
``.json`` sidecar carries the tuned model's training step and its dev metrics as ``tuned_*`` (read by
``python -m blazepose_tf.zoo.publish``). An
existing ``--output`` is never replaced. Exit codes: 0 ok; 2 bad flags; 4 unusable model.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from absl import flags

from blazepose_tf import cli, contract
from blazepose_tf.errors import ModelError, UserError
from blazepose_tf.models.loading import check_keras_file

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "The tuned detector (.keras, trained with --trainable=score_head).")
flags.DEFINE_string("base", "official", "The detector it was tuned from: 'official' (MediaPipe's, converted) or a "
                    ".keras file.")
flags.DEFINE_string("output", None, "Where to write the gated detector (.keras; must not exist).")
flags.DEFINE_float("threshold", contract.MIN_DETECTION_CONFIDENCE, "Score (probability) at which the base counts as "
                   "firing on an image; the runtime's default detection threshold.", lower_bound=1e-6,
                   upper_bound=1 - 1e-6)
flags.DEFINE_float("tuned_offset", 0.0, "Logit added to the tuned scores (used only where the base does not fire): "
                   "> 0 lets the tuned head find people it scores below the detection threshold.")


def _check_flags() -> tuple[Path, Path]:
    if not FLAGS.model or not FLAGS.output:
        raise UserError("give --model (the tuned detector) and --output (the gated .keras to write)")
    model, output = Path(FLAGS.model).expanduser(), Path(FLAGS.output).expanduser()
    if not math.isfinite(FLAGS.threshold):
        raise UserError(f"--threshold must be a probability in (0, 1), got {FLAGS.threshold}")
    if not math.isfinite(FLAGS.tuned_offset):
        raise UserError(f"--tuned_offset must be a finite logit, got {FLAGS.tuned_offset}")
    if output.suffix != ".keras":
        raise UserError(f"--output must end in .keras, got {output.name!r}")
    if output.exists() or output.with_suffix(".json").exists():
        raise UserError(f"--output {output} (or its .json sidecar) exists; choose another path")
    cli.check_output_folder(output)
    check_keras_file(model, "--model")   # a missing or corrupt file: one line before TensorFlow's start-up
    if FLAGS.base != "official":
        check_keras_file(Path(FLAGS.base).expanduser(), "--base")
    return model, output


def gated_sidecar(model: Path) -> dict:
    """The gated model's sidecar from the tuned model's (``best.json`` beside ``best.keras``): its training ``step``,
    and its dev metrics renamed ``tuned_*`` (they were measured without the gate); ``{"step": None}`` if unknown."""
    try:
        doc = json.loads(model.with_suffix(".json").read_text())
    except (OSError, ValueError):
        doc = {}
    doc = doc if isinstance(doc, dict) else {}
    return {"step": doc.get("step"), **{f"tuned_{k}": v for k, v in doc.items() if k != "step"}}


def main(argv: list[str]) -> int:
    """Writes the gated detector (module docstring)."""
    model_path, output = _check_flags()
    # TensorFlow and the models: after the flags are checked (and not for --help)
    from blazepose_tf.io.video import write_bytes_atomic
    from blazepose_tf.models.detector_gate import gate_detector
    from blazepose_tf.models.loading import load_keras_model
    from blazepose_tf.models.official_cache import load_converted, save_model

    tuned = load_keras_model(model_path, "--model")
    base = load_converted("pose_detection") if FLAGS.base == "official" else load_keras_model(FLAGS.base, "--base")
    try:
        gated = gate_detector(tuned, base, threshold=FLAGS.threshold, tuned_offset=FLAGS.tuned_offset)
    except ModelError as e:   # it names the models by their internal names: say which files they are
        raise ModelError(f"{e} (--model {model_path}, --base {FLAGS.base})") from None
    sidecar = gated_sidecar(model_path)
    if output.exists() or output.with_suffix(".json").exists():  # appeared while the models loaded
        raise UserError(f"--output {output} (or its .json sidecar) exists; choose another path")
    try:
        save_model(gated, output)
        write_bytes_atomic(output.with_suffix(".json"), json.dumps(sidecar).encode())
    except OSError as e:
        raise UserError(f"cannot write {output}: {e.strerror or e}") from None
    print(json.dumps({"model": str(output), "tuned": str(model_path), "base": FLAGS.base,
                      "threshold": FLAGS.threshold, "tuned_offset": FLAGS.tuned_offset, **sidecar}))
    return 0


if __name__ == "__main__":
    cli.run(main)
