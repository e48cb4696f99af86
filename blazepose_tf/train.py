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

Nothing is written into ``--model_dir`` before the flags, the data (every glob matches readable shards), the
checkpoint to resume or the ``--init_from`` / ``--distill_from`` weights, and the model have all been checked,
so a failed start leaves it as it was (a folder without a checkpoint starts afresh). On resume the rows of
``history.jsonl`` / ``batches.jsonl`` past the restored step are dropped and leftovers of an interrupted
checkpoint write (``ckpt-N_temp``) removed. Exit codes: 2 bad flag or data, 4 unusable model file.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from absl import flags

from blazepose_tf import cli
from blazepose_tf.errors import UserError

flags.DEFINE_enum("model", "tracker", ["tracker", "detector"], "What to train.")
flags.DEFINE_string("preset", "lite", "Model preset: a tracker's (full, lite, official_full, pruned_lite, "
                    "pruned_lite_min, smoke) or a detector's (detector, detector_lite, official_detector).")
flags.DEFINE_string("topology", "blazepose33", "Keypoint topology name.")
flags.DEFINE_string("train_data", None, "Glob of training TFRecord shards (from data.prepare).")
flags.DEFINE_string("dev_data", None, "Glob of dev TFRecord shards (for periodic evaluation).")
flags.DEFINE_string("model_dir", None, "Checkpoints, logs and exports go here; rerun to resume.")
flags.DEFINE_integer("batch_size", 32, "Global batch size.", lower_bound=1)
flags.DEFINE_integer("steps", 1000, "Total training steps.", lower_bound=1)
flags.DEFINE_float("learning_rate", 1e-3, "Peak learning rate.", lower_bound=0.0)
flags.DEFINE_integer("warmup_steps", 100, "Linear warm-up steps.", lower_bound=0)
flags.DEFINE_enum("schedule", "cosine", ["cosine", "constant"], "Learning-rate schedule after warm-up.")
flags.DEFINE_enum("optimizer", "adamw", ["adamw", "sgd", "lamb"], "adamw (from scratch), sgd with momentum 0.9 "
                  "(fine-tuning the official weights) or lamb (layer-wise relative steps: pruned official weights).")
flags.DEFINE_float("weight_decay", 1e-4, "AdamW weight decay.", lower_bound=0.0)
flags.DEFINE_float("clipnorm", 5.0, "Gradient clipping by global norm (0 = off).", lower_bound=0.0)
flags.DEFINE_float("w_heatmap", 1.0, "Heatmap loss weight.")
flags.DEFINE_float("w_offset", 1.0, "Offset loss weight.")
flags.DEFINE_float("w_coords", 1.0, "Coordinate regression loss weight.")
flags.DEFINE_float("w_z", 0.1, "Depth (z) regression loss weight.")
flags.DEFINE_float("w_visibility", 0.2, "Visibility BCE weight.")
flags.DEFINE_float("w_presence", 0.1, "Presence BCE weight.")
flags.DEFINE_float("w_classification", 1.0, "Detector: anchor classification loss weight.")
flags.DEFINE_float("w_regression", 1.0, "Detector: box and keypoint regression loss weight.")
flags.DEFINE_enum("classification_loss", "focal", ["focal", "ohem"], "Detector: focal loss, or BCE with online "
                  "hard-negative mining (keeps a pretrained detector's score calibration).")
flags.DEFINE_float("w_distill", 0.5, "Weight of the teacher's outputs as extra targets (--distill_from).")
flags.DEFINE_float("w_features", 0.0, "Weight of matching the teacher's intermediate activations (pruned_* "
                   "presets with --distill_from official).")
flags.DEFINE_float("w_refined", 0.0, "Weight of the coordinate loss after MediaPipe's heatmap refinement "
                   "(differentiable; trains the heatmap the runtime refines with).")
flags.DEFINE_enum("trainable", "all", ["all", "heatmap_branch", "regression_branch"], "Layers to train: all; "
                  "heatmap_branch: only those feeding the heatmap and not the regressed landmarks; "
                  "regression_branch: only those feeding the landmarks and not the heatmap.")
flags.DEFINE_enum("best_metric", "pck", ["pck", "pck_refined", "int8sim_pck", "int8sim_pck_refined"],
                  "Tracker dev metric that picks best.keras: PCK of the regressed landmarks, after MediaPipe's "
                  "heatmap refinement (pck_refined), or either with simulated int8 activations (int8sim_*, needs "
                  "--quantization_noise).")
flags.DEFINE_bool("quantization_noise", False, "Tracker: train through simulated int8 activations (fake "
                  "quantization at the ranges a min/max calibration on train crops gives, as the TFLite "
                  "converter's), so the full-integer export loses less; the saved model stays float.")
flags.DEFINE_string("init_from", "scratch", "scratch | official (with the official_* and pruned_* presets, which "
                    "are built from the converted official weights) | linear_fit (pruned_* presets: skipped blocks "
                    "replaced by least-squares linear fits) | a .keras file | a checkpoint directory.")
flags.DEFINE_string("distill_from", None, "Teacher whose outputs on each augmented crop become extra targets: "
                    "official, or a .keras tracker.")
flags.DEFINE_integer("checkpoint_every", 200, "Checkpoint period in steps.", lower_bound=1)
flags.DEFINE_integer("eval_every", 500, "Dev evaluation period in steps (0 = only at the end).", lower_bound=0)
flags.DEFINE_integer("eval_batches", 20, "Dev batches per evaluation (0 = whole dev set).", lower_bound=0)
flags.DEFINE_integer("log_every", 20, "Scalar logging period in steps.", lower_bound=1)
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker"], "tf.distribute strategy.")
flags.DEFINE_integer("seed", 0, "Seed for data order, augmentation and initialization.")
flags.DEFINE_integer("shuffle_buffer", 2048, "Records per shuffle window.", lower_bound=1)
flags.DEFINE_bool("augment", True, "Random scale/shift/rotation/flip/colour/occlusion augmentation.")
flags.DEFINE_bool("progress", True, "Show a progress bar.")
flags.DEFINE_bool("log_batches", False, "Append each step's batch fingerprint to model_dir/batches.jsonl "
                  "(used by the resume test).")
FLAGS = flags.FLAGS


def main(argv: list[str]) -> int:
    for name in ("train_data", "model_dir"):
        if not getattr(FLAGS, name):
            raise UserError(f"--{name} is required (see --help)")
    from blazepose_tf.training.loop import TrainConfig, train
    cfg = TrainConfig.from_flags(FLAGS)
    result = train(cfg)
    print(json.dumps(result))
    return 0


def entry_point() -> None:
    """Console-script entry point (``[project.scripts]`` in pyproject.toml)."""
    cli.run(main)


if __name__ == "__main__":
    entry_point()
