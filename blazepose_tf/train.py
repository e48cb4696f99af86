"""Trains a BlazePose tracker (Full, Lite, or a custom topology) or the person detector with a resumable
custom loop.

    python -m blazepose_tf.train --flagfile=configs/lite.flags [--flag=value ...]
    python -m blazepose_tf.train --flagfile=configs/detector.flags

Data: TFRecords from ``python -m data.prepare`` (``--kind detector`` for the detector). Every
``--checkpoint_every`` steps the model, optimizer and step
are checkpointed in ``--model_dir``; rerunning the same command resumes from the latest checkpoint, with the
input pipeline positioned on the exact batch that follows it (seeded per epoch), so no batch is lost or
repeated. TensorBoard logs (losses, learning rate, dev PCK@0.2, sample predictions) go to
``--model_dir/logs``; the best dev checkpoint (PCK@0.2 on aligned crops for a tracker, detection rate for the
detector) is exported as ``--model_dir/best.keras`` (inference model).
``--strategy`` picks a tf.distribute strategy: default, mirrored (all local devices), multi_worker (TF_CONFIG).

Every setting, its default and its help are defined once, in
:class:`blazepose_tf.training.config.TrainConfig` (loss weights: ``LOSS_WEIGHTS`` there); the flags are generated
from it.

Nothing is written into ``--model_dir`` before the flags, the data (every glob matches readable shards), the
checkpoint to resume or the ``--init_from`` / ``--distill_from`` weights, and the model have all been checked,
so a failed start leaves it as it was. A fresh start writes only into a new or empty folder, or over an earlier run
of this package that never reached a checkpoint; any other folder (a user's files, another command's outputs, a
data folder) is refused. On resume the rows of
``history.jsonl`` / ``batches.jsonl`` past the restored step are dropped and leftovers of an interrupted
checkpoint write (``ckpt-N_temp``) removed. Exit codes: 2 bad flag or data, 4 unusable model file.
"""
from __future__ import annotations

import json

from absl import flags

from blazepose_tf import cli
from blazepose_tf.training.config import TrainConfig, define_flags
from blazepose_tf.training.preflight import check_run

define_flags()  # one flag per TrainConfig setting (defaults and help defined there) and per loss weight
FLAGS = flags.FLAGS


def main(argv: list[str]) -> int:
    """Trains (or resumes) the run the flags describe and prints its result as JSON."""
    cfg = TrainConfig.from_flags(FLAGS)
    check_run(cfg)   # flags, weight files, --model_dir and TF_CONFIG: one line before TensorFlow starts
    from blazepose_tf.training.loop import train  # TensorFlow: after the flags are checked (and not for --help)
    result = train(cfg)
    print(json.dumps(result))
    return 0


def entry_point() -> None:
    """Console-script entry point (``[project.scripts]`` in pyproject.toml)."""
    cli.run(main)


if __name__ == "__main__":
    entry_point()
