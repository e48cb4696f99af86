"""Shared command-line plumbing: absl flag parsing without tracebacks, one-line errors with documented exit
codes, ``--help`` / ``--helpfull``, and the model-selection flags every runtime command shares."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Literal, Optional

from absl import flags

from blazepose_tf import zoo
from blazepose_tf.errors import EXIT_USAGE, ModelError, UserError

MODEL_SETS: tuple[str, ...] = tuple(zoo.MODEL_SETS)
DEFAULT_MODEL_SET = zoo.DEFAULT_SET

HELP_ARGS: tuple[str, ...] = ("-h", "-help", "--help", "-helpshort", "--helpshort")
HELPFULL_ARGS: tuple[str, ...] = ("-helpfull", "--helpfull")
_REPO = Path(__file__).resolve().parents[1]
# Flags absl itself handles for every command (not in any module's flag list).
_COMMON_FLAGS_HELP = """every command:
  --flagfile: Read more flags from this file (one --flag=value per line).
  --help: This help.
  --helpfull: Every flag, absl's and TensorFlow's internal ones included."""


def define_model_flags() -> None:
    """Flags choosing the detector and tracker: a named set, or explicit .tflite/.keras files."""
    sets = "; ".join(f"{name}: {det} + {lmk}" for name, (det, lmk) in zoo.MODEL_SETS.items())
    flags.DEFINE_enum("models", DEFAULT_MODEL_SET, list(MODEL_SETS),
                      f"Model set ({sets}); zoo models are the shipped files in blazepose_tf/zoo/weights.")
    flags.DEFINE_string("detector", None, "Detector model file (.tflite or .keras); overrides --models.")
    flags.DEFINE_string("landmarks", None, "Landmark (tracker) model file (.tflite or .keras); overrides --models.")
    flags.DEFINE_integer("num_threads", 1, "CPU threads for TFLite inference (XNNPACK).", lower_bound=1)


def resolve_models(FLAGS) -> tuple[Path, Path]:
    """(detector, landmarks) files from the model flags: ``--detector`` / ``--landmarks`` when given, else the
    ``--models`` set's files, resolved (and checked) through :mod:`blazepose_tf.zoo`; only the roles not
    overridden are looked up."""
    if FLAGS.models not in MODEL_SETS:
        raise UserError(f"--models must be one of {', '.join(MODEL_SETS)}, got {FLAGS.models!r}")
    det = Path(FLAGS.detector) if FLAGS.detector else zoo.set_member_path(FLAGS.models, "detector")
    lmk = Path(FLAGS.landmarks) if FLAGS.landmarks else zoo.set_member_path(FLAGS.models, "landmarks")
    return det, lmk


def model_labels(FLAGS) -> dict[str, str]:
    """{"detector", "landmarks"}: the file given by flag, else the set member (``zoo:full``, ``official:...``)."""
    return {role: str(getattr(FLAGS, role) or zoo.set_member(FLAGS.models, role)) for role in zoo.ROLES}


def build_tracker(FLAGS, mode: str, **kwargs):
    """Builds a :class:`PoseTracker` from the model flags (see :func:`resolve_models`)."""
    from blazepose_tf.runtime.pipeline import PoseTracker
    from blazepose_tf.runtime.runners import load_runner

    det, lmk = resolve_models(FLAGS)
    return PoseTracker(load_runner(det, FLAGS.num_threads), load_runner(lmk, FLAGS.num_threads), mode=mode,
                       **kwargs)


def help_request(argv: list[str]) -> Optional[Literal["help", "helpfull"]]:
    """``"helpfull"`` / ``"help"`` if ``argv`` (argv[0] excluded, up to a ``--``) asks for it (the full help
    wins when both are asked for), else None."""
    args = argv[1:argv.index("--")] if "--" in argv[1:] else argv[1:]
    if any(a in HELPFULL_ARGS for a in args):
        return "helpfull"
    return "help" if any(a in HELP_ARGS for a in args) else None


def _is_project_module(name: str) -> bool:
    """Whether the imported module ``name`` is a file of this repository (not of an installed package)."""
    path = getattr(sys.modules.get(name), "__file__", None)
    if not path:
        return False
    resolved = Path(path).resolve()
    return resolved.is_relative_to(_REPO) and "site-packages" not in resolved.parts


def command_help(main_module: str, label: str, full: bool = False) -> str:
    """The help of a command whose ``main`` is defined in ``main_module`` (shown as ``label``): its docstring,
    then its flags grouped by defining module.

    ``full=False`` (``--help``) lists the flags of ``main_module`` and of this repository's modules it defined
    flags through (e.g. ``--models`` from :func:`define_model_flags`): every flag the command accepts except
    absl's and TensorFlow's internal ones. ``full=True`` (``--helpfull``) lists every defined flag.
    """
    module = sys.modules.get(main_module)
    doc = ((module.__doc__ if module else None) or "").strip()
    FLAGS = flags.FLAGS
    if full:
        body = FLAGS.get_help().strip("\n")
    else:
        names = [main_module] + sorted(n for n in FLAGS.flags_by_module_dict()
                                       if n != main_module and _is_project_module(n))
        sections = [FLAGS.module_help(name).strip("\n") for name in names]
        if sections[0]:  # absl heads __main__'s flags "__main__:"; show the command's name
            sections[0] = label + sections[0][len(main_module):]
        body = "\n\n".join([s for s in sections if s] + [_COMMON_FLAGS_HELP])
    return f"{doc}\n\n{body}\n" if doc else f"{body}\n"


def run(main: Callable[[list[str]], int], argv: Optional[list[str]] = None, positional: bool = False) -> None:
    """Parses flags and runs ``main``; user errors become ``error: ...`` on stderr and their exit code.

    ``--help`` / ``--helpfull`` print :func:`command_help` and exit 0. With ``positional`` the command also
    takes non-flag arguments (passed to ``main`` after argv[0]).
    """
    argv = list(sys.argv if argv is None else argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    wanted = help_request(argv)
    if wanted:
        print(command_help(main.__module__, _module_name(argv[0]), full=wanted == "helpfull"), end="")
        sys.exit(0)
    try:
        rest = flags.FLAGS(argv)
    except flags.Error as e:
        print(f"error: {e}", file=sys.stderr)
        print(f"run `python -m {_module_name(argv[0])} --help` for the flags", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    if len(rest) > 1 and not positional:
        print(f"error: unexpected arguments {rest[1:]} (every option is a --flag)", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    try:
        code = main(rest)
    except (UserError, ModelError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)


def _module_name(argv0: str) -> str:
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name:
        return spec.name
    return os.path.splitext(os.path.basename(argv0))[0]
