"""The model-selection flags every runtime command shares (``--models``, ``--detector``, ``--landmarks``,
``--num_threads``, ``--roi_passes``) and the tracker they build."""
from __future__ import annotations

from pathlib import Path

from absl import flags

from blazepose_tf import contract, zoo
from blazepose_tf.errors import UserError
from blazepose_tf.runtime.pipeline import PoseTracker
from blazepose_tf.runtime.runners import load_runner

MODEL_SETS: tuple[str, ...] = tuple(zoo.MODEL_SETS)
DEFAULT_MODEL_SET = zoo.DEFAULT_SET


def define_model_flags() -> None:
    """Flags choosing the detector and tracker: a named set, or explicit .tflite/.keras files."""
    sets = "; ".join(f"{name}: {det} + {lmk}" for name, (det, lmk) in zoo.MODEL_SETS.items())
    flags.DEFINE_enum("models", DEFAULT_MODEL_SET, list(MODEL_SETS),
                      f"Model set ({sets}); zoo models are the shipped files in blazepose_tf/zoo/weights, official "
                      "models MediaPipe's (detector and Full fetched from the mediapipe wheel into the cache, Lite "
                      "carried in blazepose_tf/official_models).")
    flags.DEFINE_string("detector", None, "Detector model file (.tflite or .keras); overrides --models.")
    flags.DEFINE_string("landmarks", None, "Landmark (tracker) model file (.tflite or .keras); overrides --models.")
    flags.DEFINE_integer("num_threads", 1, "CPU threads for TFLite inference (XNNPACK).", lower_bound=1)
    flags.DEFINE_integer("roi_passes", contract.IMAGE_ROI_PASSES,
                         "IMAGE mode: tracker passes per person; each after the first re-crops the ROI the previous "
                         "pass's own ROI points give (kept while its presence passes --min_presence). 1 is "
                         "MediaPipe's graph; 2 scores 1.1-1.7 PCK@0.2 higher on LSPET test at twice the tracker's "
                         "time. VIDEO mode carries the ROI to the next frame instead.", lower_bound=1)


def resolve_models(FLAGS) -> tuple[Path, Path]:
    """(detector, landmarks) files from the model flags: ``--detector`` / ``--landmarks`` when given, else the
    ``--models`` set's files, resolved (and checked) through :mod:`blazepose_tf.zoo`; only the roles not
    overridden are looked up."""
    if FLAGS.models not in MODEL_SETS:
        raise UserError(f"--models must be one of {', '.join(MODEL_SETS)}, got {FLAGS.models!r}")
    det = Path(FLAGS.detector) if FLAGS.detector else zoo.set_member_path(FLAGS.models, "detector")
    lmk = Path(FLAGS.landmarks) if FLAGS.landmarks else zoo.set_member_path(FLAGS.models, "landmarks")
    return det, lmk


def model_inputs(FLAGS) -> list[tuple[str, Path]]:
    """The model files a run will read, as ``(flag, path)`` inputs for :func:`blazepose_tf.cli.check_outputs`:
    ``--detector`` / ``--landmarks`` when given (a folder is left to the model loader's own message), else where
    the ``--models`` set's member lives (not verified or fetched here)."""
    out = []
    for role in zoo.ROLES:
        given = getattr(FLAGS, role)
        if given:
            if not Path(given).expanduser().is_dir():
                out.append((f"--{role}", Path(given)))
        elif FLAGS.models in MODEL_SETS and (where := zoo.member_location(zoo.set_member(FLAGS.models, role))):
            out.append((f"--models {FLAGS.models}", where))
    return out


def model_labels(FLAGS) -> dict[str, str]:
    """{"detector", "landmarks"}: the file given by flag, else the set member (``zoo:full``, ``official:...``)."""
    return {role: str(getattr(FLAGS, role) or zoo.set_member(FLAGS.models, role)) for role in zoo.ROLES}


def build_tracker(FLAGS, mode: str, **kwargs):
    """Builds a :class:`PoseTracker` from the model flags (see :func:`resolve_models`)."""
    det, lmk = resolve_models(FLAGS)
    return PoseTracker(load_runner(det, FLAGS.num_threads), load_runner(lmk, FLAGS.num_threads), mode=mode,
                       roi_passes=FLAGS.roi_passes, **kwargs)
