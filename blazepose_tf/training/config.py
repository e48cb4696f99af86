"""The settings of a training run, each defined once.

:class:`TrainConfig` holds every setting of ``python -m blazepose_tf.train`` with its default, help text and
allowed values; the command's flags are generated from it (:func:`define_flags`) and read back into it
(:meth:`TrainConfig.from_flags`), and a run's ``model_dir/config.json`` is its :func:`dataclasses.asdict`. Loss
weights are the ``--w_<term>`` flags of :data:`LOSS_WEIGHTS` (one table per model kind), stored together as
``TrainConfig.loss_weights``; the training losses take their defaults from the same tables.

Imports nothing heavy (no TensorFlow), so the command's ``--help`` stays instant.
"""
from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any, NamedTuple, Optional, Sequence, get_type_hints

from absl import flags

from blazepose_tf.errors import UserError
from blazepose_tf.topology import TOPOLOGIES

MODELS = ("tracker", "detector")
SCHEDULES = ("cosine", "constant")
OPTIMIZERS = ("adamw", "sgd")
CLASSIFICATION_LOSSES = ("focal", "ohem")
SCORE_TARGETS = ("assigned", "regression")
TRAINABLE = ("all", "regression_branch", "score_head")
# --init_from values that name no file (as built; the official_* presets are built from the official weights).
BUILT_IN_WEIGHTS = ("scratch", "official")
# Prefix of the simulated-int8 view's dev metrics (--simulate_int8; history.jsonl has them as dev_int8sim_*).
SIMULATED_PREFIX = "int8sim_"
BEST_METRICS = ("pck", "pck_refined", SIMULATED_PREFIX + "pck", SIMULATED_PREFIX + "pck_refined")
STRATEGIES = ("default", "mirrored", "multi_worker")
DISTILL_POINTS = ("unannotated", "all")
STEP_SCALES = ("none", "channel")   # blazepose_tf.training.step_scales (kept TensorFlow-free here)


class LossWeight(NamedTuple):
    """A loss term's default weight and the help of its ``--w_<term>`` flag."""

    default: float
    help: str


#: Loss terms per model kind (``--w_<term>`` flags), in the order they are reported.
LOSS_WEIGHTS: dict[str, dict[str, LossWeight]] = {
    "tracker": {
        "heatmap": LossWeight(1.0, "Heatmap loss weight."),
        "offset": LossWeight(1.0, "Offset loss weight."),
        "coords": LossWeight(1.0, "Coordinate regression loss weight."),
        "z": LossWeight(0.1, "Depth (z) regression loss weight."),
        "visibility": LossWeight(0.2, "Visibility BCE weight."),
        "presence": LossWeight(0.1, "Presence BCE weight."),
        "distill": LossWeight(0.5, "Weight of the teacher's coordinates and visibility as extra targets on the "
                              "--distill_points (--distill_from)."),
        "distill_heatmap": LossWeight(0.0, "Weight of the teacher's heatmap (its sigmoid) as the student's heatmap "
                                      "target on the --distill_points (--distill_from; both need a heatmap of "
                                      "the same size)."),
        "distill_presence": LossWeight(0.0, "Weight of the teacher's presence probability as the student's presence "
                                       "target (--distill_from)."),
    },
    "detector": {
        "classification": LossWeight(1.0, "Detector: anchor classification loss weight."),
        "regression": LossWeight(1.0, "Detector: box and keypoint regression loss weight."),
    },
}


def default_loss_weights(model: str) -> dict[str, float]:
    """``{term: default weight}`` of a model kind's loss terms."""
    return {term: w.default for term, w in LOSS_WEIGHTS[model].items()}


def setting(default: Any, help: str, *, choices: Optional[Sequence[str]] = None,
            lower_bound: Optional[float] = None, upper_bound: Optional[float] = None) -> Any:
    """A :class:`TrainConfig` field that is also a flag: its default (:data:`dataclasses.MISSING`: a required
    flag), help, allowed values (an enum flag) and bounds (numbers)."""
    return field(default=default, metadata={"help": help, "choices": choices, "lower_bound": lower_bound,
                                            "upper_bound": upper_bound})


@dataclass
class TrainConfig:
    """Everything a run needs; stored in ``model_dir/config.json`` (a resumed run must match it)."""

    train_data: str = setting(MISSING, "Glob of training TFRecord shards (from data.prepare); several globs "
                                       "separated by commas.")
    model_dir: str = setting(MISSING, "Checkpoints, logs and exports go here; rerun to resume.")
    dev_data: Optional[str] = setting(None, "Glob of dev TFRecord shards (for periodic evaluation); several globs "
                                      "separated by commas.")
    model: str = setting("tracker", "What to train.", choices=MODELS)
    preset: str = setting("lite", "Model preset: a tracker's (blazepose_tf.models.tracker.TRACKER_PRESETS: ours, "
                          "MediaPipe's official_full and official_lite, smoke) or a detector's "
                          "(blazepose_tf.models.detector.DETECTOR_PRESETS); python -m blazepose_tf.models.summary "
                          "lists the ones built here.")
    topology: str = setting("blazepose33", "Keypoint topology name.", choices=tuple(sorted(TOPOLOGIES)))
    batch_size: int = setting(32, "Global batch size.", lower_bound=1)
    steps: int = setting(1000, "Total training steps.", lower_bound=1)
    learning_rate: float = setting(1e-3, "Peak learning rate.", lower_bound=0.0)
    warmup_steps: int = setting(100, "Linear warm-up steps.", lower_bound=0)
    schedule: str = setting("cosine", "Learning-rate schedule after warm-up.", choices=SCHEDULES)
    weight_decay: float = setting(1e-4, "AdamW weight decay.", lower_bound=0.0)
    clipnorm: float = setting(5.0, "Gradient clipping by global norm (0 = off).", lower_bound=0.0)
    ema_momentum: float = setting(0.0, "Exponential moving average of the weights (0 = off; e.g. 0.999): the "
                                  "average is evaluated and exported (best.keras, last.keras), the trained weights "
                                  "are evaluated beside it (dev_raw_* in history.jsonl).",
                                  lower_bound=0.0, upper_bound=0.9999)
    step_scale: str = setting("none", "Per-weight step size: none (the optimizer's own), or channel (each "
                              "weight's step times the RMS its kernel output channel had at the start, biases' "
                              "times their tensor's RMS, all-zero tensors' times 1: the learning rate becomes a "
                              "fraction of each channel's scale, for fine-tuning the folded official weights; "
                              "blazepose_tf.training.step_scales).",
                              choices=STEP_SCALES)
    first_layer_lr: float = setting(1.0, "Layer-wise learning rate: the multiplier of the rate falls geometrically "
                                    "from 1 at the last trainable layer to this at the first (1 = off).",
                                    lower_bound=1e-6, upper_bound=1.0)
    # The --w_<term> flags of LOSS_WEIGHTS[model], not a flag of its own.
    loss_weights: dict = field(default_factory=dict)
    init_from: str = setting("scratch", "scratch | official (with the official_* presets, which are built from the "
                             "converted official weights) | a .keras file | a checkpoint directory.")
    distill_from: Optional[str] = setting(None, "Teacher whose outputs on each augmented crop become extra "
                                          "targets: official, or a .keras tracker.")
    distill_points: str = setting("unannotated", "Points the teacher's outputs supervise: unannotated (those the "
                                  "ground truth does not annotate) or all (the teacher's on every point, beside "
                                  "the ground truth's).", choices=DISTILL_POINTS)
    checkpoint_every: int = setting(200, "Checkpoint period in steps.", lower_bound=1)
    eval_every: int = setting(500, "Dev evaluation period in steps (0 = only at the end).", lower_bound=0)
    eval_batches: int = setting(20, "Dev batches per evaluation (0 = whole dev set).", lower_bound=0)
    log_every: int = setting(20, "Scalar logging period in steps.", lower_bound=1)
    strategy: str = setting("default", "tf.distribute strategy: default (one device), mirrored (every local device), "
                            "multi_worker (one worker of a cluster named by TF_CONFIG; see README.md, Training on "
                            "several machines).", choices=STRATEGIES)
    seed: int = setting(0, "Seed for data order, augmentation and initialization.")
    shuffle_buffer: int = setting(2048, "Records per shuffle window.", lower_bound=1)
    decode_cache_mb: float = setting(6144.0, "Decode the training images once and keep them in memory when they "
                                     "fit in this many MiB (the dev images likewise); larger data is decoded as "
                                     "it is read (the same batches, more CPU per step).", lower_bound=0.0)
    augment: bool = setting(True, "Random scale/shift/rotation/flip/colour/occlusion augmentation.")
    augment_scale: float = setting(0.10, "Tracker augmentation: the person's size in the crop is drawn uniformly "
                                   "in [1 - x, 1 + x].", lower_bound=0.0, upper_bound=0.9)
    augment_shift: float = setting(0.10, "Tracker augmentation: crop shift per axis, uniform within ± this "
                                   "fraction of the crop.", lower_bound=0.0, upper_bound=0.5)
    augment_rotation: float = setting(20.0, "Tracker augmentation: rotation, uniform within ± this many degrees.",
                                      lower_bound=0.0, upper_bound=180.0)
    progress: bool = setting(True, "Show a progress bar.")
    log_batches: bool = setting(False, "Append each step's batch fingerprint to model_dir/batches.jsonl (used by "
                                "the resume test).")
    classification_loss: str = setting("focal", "Detector: focal loss, or BCE with online hard-negative mining "
                                       "(keeps a pretrained detector's score calibration).",
                                       choices=CLASSIFICATION_LOSSES)
    score_targets: str = setting("assigned", "Detector: which anchors the classification loss calls positive: "
                                 "assigned (near the person's box centre, docs/design.md §4) or regression (anchors "
                                 "near the person whose own decoded alignment keypoints lie within --score_tolerance "
                                 "alignment radii of the ground truth's: the score head learns where the regressors "
                                 "give good crops; for --trainable=score_head, docs/design.md §4.6).",
                                 choices=SCORE_TARGETS)
    score_tolerance: float = setting(0.2, "Detector, --score_targets=regression: largest error of an anchor's kp0 "
                                     "and kp1, in alignment radii, for a positive.", lower_bound=0.0)
    optimizer: str = setting("adamw", "adamw (from scratch) or sgd with momentum 0.9 (fine-tuning the official "
                             "weights).", choices=OPTIMIZERS)
    trainable: str = setting("all", "Layers to train: all; regression_branch (tracker): only those feeding the "
                             "landmarks and not the heatmap; score_head (detector): only those feeding the scores "
                             "and not the regressors (backbone and box/keypoint regression stay as initialized).",
                             choices=TRAINABLE)
    best_metric: str = setting("pck", "Tracker dev metric that picks best.keras: PCK of the regressed landmarks, "
                               "or after MediaPipe's heatmap refinement (pck_refined); int8sim_*: the same through "
                               "the simulated-int8 view (--simulate_int8).", choices=BEST_METRICS)
    simulate_int8: bool = setting(False, "Tracker: train through a simulated-int8 view of the model (kernels "
                                  "rounded per channel, activations fake-quantized at ranges calibrated on the "
                                  "initial weights, straight-through gradients, the low-resolution tail float; "
                                  "blazepose_tf.models.fake_quant) beside the float model's own outputs, so that its "
                                  "int8-selective export (export.to_tflite --float_layers auto) loses less; the "
                                  "saved model stays float. Fine-tuning only (needs --init_from; the official_* "
                                  "presets). Dev metrics of the view go to history.jsonl as dev_int8sim_*.")

    # Fields that may change between a run and its resumption without invalidating the checkpoint.
    RESUMABLE_CHANGES = ("steps", "checkpoint_every", "eval_every", "eval_batches", "log_every", "progress",
                         "strategy", "dev_data", "log_batches", "decode_cache_mb")

    @classmethod
    def from_flags(cls, values: flags.FlagValues) -> "TrainConfig":
        """The config of parsed flags (:func:`define_flags`); a one-line :class:`UserError` for a missing
        required flag."""
        for name in required_settings():
            if not getattr(values, name):
                raise UserError(f"--{name} is required (see --help)")
        kwargs = {f.name: getattr(values, f.name) for f in _flag_fields()}
        weights = {term: getattr(values, "w_" + term) for term in LOSS_WEIGHTS[values.model]}
        return cls(**kwargs, loss_weights=weights)


def _flag_fields() -> list:
    return [f for f in fields(TrainConfig) if "help" in f.metadata]


def required_settings() -> list[str]:
    """The settings without a default (required flags)."""
    return [f.name for f in _flag_fields() if f.default is MISSING]


def define_flags(values: Optional[flags.FlagValues] = None) -> None:
    """Defines one flag per :class:`TrainConfig` setting (name, default, help, allowed values, lower bound) and a
    ``--w_<term>`` flag per loss term of :data:`LOSS_WEIGHTS`, in ``values`` (default: absl's global flags)."""
    values = values if values is not None else flags.FLAGS
    types = get_type_hints(TrainConfig)
    for f in _flag_fields():
        meta = f.metadata
        default = None if f.default is MISSING else f.default
        kind = types[f.name]
        if meta["choices"]:
            flags.DEFINE_enum(f.name, default, list(meta["choices"]), meta["help"], flag_values=values)
        elif kind is bool:
            flags.DEFINE_bool(f.name, default, meta["help"], flag_values=values)
        elif kind in (int, float):
            define = flags.DEFINE_integer if kind is int else flags.DEFINE_float
            define(f.name, default, meta["help"], lower_bound=meta["lower_bound"], upper_bound=meta["upper_bound"],
                   flag_values=values)
        else:
            flags.DEFINE_string(f.name, default, meta["help"], flag_values=values)
    for table in LOSS_WEIGHTS.values():
        for term, weight in table.items():
            flags.DEFINE_float("w_" + term, weight.default, weight.help, flag_values=values)
