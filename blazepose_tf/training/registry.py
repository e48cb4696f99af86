"""The models a training run optimizes: a preset name (:data:`blazepose_tf.models.tracker.TRACKER_PRESETS`,
:data:`blazepose_tf.models.detector.DETECTOR_PRESETS`) → its training and inference views (:class:`Models`),
built here or, for MediaPipe's presets, converted from the official weights; and which of its layers train."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import keras

from blazepose_tf.contract import OFFICIAL_LANDMARK_POINTS
from blazepose_tf.errors import UserError
from blazepose_tf.models.convert_official import load_converted
from blazepose_tf.models.detector import build_detector, resolve_detector_config
from blazepose_tf.models.graph import upstream_layers
from blazepose_tf.models.tracker import OUTPUT_NAMES_TRAINING, build_tracker, resolve_tracker_config
from blazepose_tf.topology import BLAZEPOSE_33, Topology
from blazepose_tf.training.config import TRAINABLE


@dataclass
class Models:
    """The views of one model used in training: ``training`` (a tracker's outputs landmarks, presence, heatmap
    and, for our presets, offsets; a detector's regressors and scores) and ``inference`` (what gets exported)."""

    training: Any
    inference: Any
    num_points: int          # points a tracker predicts (≥ topology points + 2); 0 for a detector
    input_size: int = 256

    @property
    def has_offsets(self) -> bool:
        """Whether the training view has a tracker's ``offsets`` head (our tracker presets)."""
        return "offsets" in self.training.output_names


def outputs_by_name(outputs: Any, names: Sequence[str] = OUTPUT_NAMES_TRAINING) -> dict:
    """A model's outputs as ``{name: tensor}``: a mapping as it is, a list matched with ``names`` in order."""
    return dict(outputs) if isinstance(outputs, Mapping) else dict(zip(names, outputs))


def build_models(preset: str, topology: Topology) -> Models:
    """A tracker preset's views: ours (``full``, ``lite``, ``smoke`` — a tiny Lite-shaped tracker for quick
    tests) or ``official_full``, the converted official Full tracker for fine-tuning (its architecture is fixed;
    the topology must be the 33-point one). An unknown preset is a :class:`UserError` listing the known ones."""
    cfg = _resolve(resolve_tracker_config, preset)
    if cfg.official:
        if topology.num_keypoints != BLAZEPOSE_33.num_keypoints:
            raise UserError(f"--preset={preset} only supports the 33-point BlazePose topology")
        full = load_converted(cfg.official)
        out = dict(zip(full.output_names, full.outputs))
        training = keras.Model(full.inputs, [out["landmarks"], out["presence"], out["heatmap"]],
                               name=f"{cfg.name}_training")
        return Models(training=training, inference=full, num_points=OFFICIAL_LANDMARK_POINTS,
                      input_size=cfg.input_size)
    m = build_tracker(cfg, topology)
    return Models(training=m.training, inference=m.inference, num_points=m.num_points,
                  input_size=m.config.input_size)


def build_detector_models(preset: str) -> Models:
    """A detector preset's views: ours (``detector``, ``detector_lite``; ``detector_smoke`` for tests) or
    ``official_detector``, the converted official detector for fine-tuning. The same model is trained and
    exported (no training-only heads)."""
    cfg = _resolve(resolve_detector_config, preset)
    model = load_converted(cfg.official) if cfg.official else build_detector(cfg)
    return Models(training=model, inference=model, num_points=0, input_size=int(model.inputs[0].shape[1]))


def _resolve(resolve, preset: str):
    try:
        return resolve(preset)
    except KeyError as e:
        raise UserError(str(e).strip("'\"")) from None


#: ``--trainable`` part -> (the output whose own layers train, the output that must not change, what has both).
BRANCHES: dict[str, tuple[str, str, str]] = {
    "regression_branch": ("landmarks", "heatmap", "a tracker with a heatmap output"),
    "score_head": ("scores", "regressors", "a detector (scores and regressors outputs)"),
}


def restrict_trainable(models: Models, part: str) -> int:
    """``all`` (default); ``regression_branch`` (tracker): only the layers that feed the landmarks and not the
    heatmap (the heatmap MediaPipe's refinement reads then stays exactly as it is); ``score_head`` (detector): only
    the layers that feed the scores and not the regressors (the classification convolutions: backbone, boxes and
    alignment keypoints stay exactly as initialized). Returns the trainable layer count."""
    if part not in TRAINABLE:
        raise UserError(f"--trainable must be one of {', '.join(TRAINABLE)}, got {part!r}")
    if part == "all":
        for layer in models.training.layers:
            layer.trainable = True
        return sum(1 for layer in models.training.layers if layer.weights)
    moved, frozen, needs = BRANCHES[part]
    out = dict(zip(models.training.output_names, models.training.outputs))
    if moved not in out or frozen not in out:
        raise UserError(f"--trainable={part} needs {needs}")
    branch = upstream_layers(out[moved]) - upstream_layers(out[frozen])
    count = 0
    for layer in models.training.layers:
        layer.trainable = layer.name in branch
        count += int(layer.trainable and bool(layer.weights))
    return count
