"""Fetches the official BlazePose .tflite models from the ``mediapipe==0.10.21`` wheel, pinned by sha256.

    python -m data.fetch_official [--cache_dir DIR] [--force] [--wheel WHEEL]

The wheel is downloaded with ``pip download --no-deps`` (mediapipe is never installed), the models are
extracted, their sha256 sums checked, and the wheel deleted. A second run with the files already in place
does nothing. Offline or on a checksum mismatch it stops with one clear line and exit code 4. The Lite landmark
model is in no wheel: the package carries it, and its sha256 is checked too. The library side is
:mod:`blazepose_tf.official`.
"""
from __future__ import annotations

from pathlib import Path

from absl import flags

from blazepose_tf import cli
from blazepose_tf.official import OFFICIAL_MODELS, PACKAGED_MODELS, fetch, official_model_path


def define_flags() -> None:
    """The command's absl flags (defined by ``__main__`` only: importing the module defines none)."""
    flags.DEFINE_string("cache_dir", None, "Target folder (default $BLAZEPOSE_TF_CACHE/official or "
                        "~/.cache/blazepose_tf/official).")
    flags.DEFINE_bool("force", False, "Download again even if valid files are present.")
    flags.DEFINE_string("wheel", None, "Use this already-downloaded mediapipe wheel instead of pip download.")


def main(argv: list[str]) -> int:
    """Command-line entry point (flags from :func:`define_flags`, run through :func:`blazepose_tf.cli.run`)."""
    FLAGS = flags.FLAGS
    out = fetch(Path(FLAGS.cache_dir) if FLAGS.cache_dir else None, FLAGS.force,
                Path(FLAGS.wheel) if FLAGS.wheel else None)
    for name in OFFICIAL_MODELS:
        print(f"{name}: {out / (name + '.tflite')}")
    for name in PACKAGED_MODELS:
        print(f"{name}: {official_model_path(name)} (packaged)")
    return 0


def entry_point() -> None:
    """Console-script entry point (``[project.scripts]`` in pyproject.toml)."""
    define_flags()
    cli.run(main)


if __name__ == "__main__":
    entry_point()
