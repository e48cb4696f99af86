"""What the training loop optimizes and measures: model construction and initialization, target encoding,
the weighted loss, distillation targets, dev evaluation and export. Kept apart from the loop so each piece can
be tested alone."""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from blazepose_tf.codecs.heatmap import encode_heatmaps
from blazepose_tf.codecs.targets import tracker_targets
from blazepose_tf.errors import ModelError, UserError
from blazepose_tf.models.loading import load_keras_model
from blazepose_tf.losses import (coordinate_loss, heatmap_loss, offset_loss, presence_loss, split_landmarks,
                                 visibility_loss)
from blazepose_tf.topology import AUX_ROI_POINTS, Topology

OFFICIAL_PRESET = "official_full"
SMOKE_PRESET = "smoke"
OFFICIAL_POINTS = 39  # 33 body + 2 auxiliary + 4 unused landmarks in the official tracker


@dataclass
class Models:
    """The views of one tracker used in training: ``training`` (outputs landmarks, presence, heatmap and,
    for our presets, offsets) and ``inference`` (what gets exported)."""

    training: object
    inference: object
    num_points: int          # points the model predicts (≥ topology points + 2)
    input_size: int = 256
    feature_layers: tuple = ()  # activations matched to the teacher's (pruned presets)
    preset: str = ""
    simulated_int8: object = None  # the inference view with fake-quantized activations (--quantization_noise)
    fake_quant: object = None      # its blazepose_tf.models.fake_quant.SimulatedInt8 (shared ranges)


def build_models(preset: str, topology: Topology) -> Models:
    """Our presets (``full``, ``lite``, ...), ``smoke`` (a tiny Lite-shaped tracker for quick tests) or
    ``official_full``: the converted official Full tracker, for fine-tuning (its architecture is fixed; the
    topology must be the 33-point one)."""
    import keras
    from blazepose_tf.models.pruned import FEATURE_LAYERS, PRUNED_PRESETS, build_pruned, with_features

    if preset in PRUNED_PRESETS:
        if topology.num_keypoints != 33:
            raise UserError(f"--preset={preset} only supports the 33-point BlazePose topology")
        inference = build_pruned(preset)
        return Models(training=with_features(inference), inference=inference, num_points=OFFICIAL_POINTS,
                      feature_layers=FEATURE_LAYERS, preset=preset)
    if preset == OFFICIAL_PRESET:
        from blazepose_tf.models.convert_official import load_converted
        if topology.num_keypoints != 33:
            raise UserError("--preset=official_full only supports the 33-point BlazePose topology")
        full = load_converted("pose_landmark_full")
        out = dict(zip(full.output_names, full.outputs))
        training = keras.Model(full.inputs, [out["landmarks"], out["presence"], out["heatmap"]],
                               name="official_full_training")
        return Models(training=training, inference=full, num_points=OFFICIAL_POINTS)
    from blazepose_tf.models import build_tracker
    from blazepose_tf.models.tracker import with_config
    if preset == SMOKE_PRESET:  # a tiny tracker that builds and traces fast: for smoke tests only
        preset = with_config("lite", name=SMOKE_PRESET, stem_filters=8, encoder_filters=(8, 16, 16, 16),
                             encoder_blocks=(1, 1, 1, 1), decoder_filters=8, regression_filters=(8, 16, 16, 16, 16),
                             regression_blocks=(1, 1, 1, 1, 1))
    try:
        m = build_tracker(preset, topology)
    except KeyError as e:
        raise UserError(str(e).strip("'\"")) from None
    return Models(training=m.training, inference=m.inference, num_points=m.num_points,
                  input_size=m.config.input_size)


def restrict_trainable(models: Models, part: str) -> int:
    """``all`` (default); ``heatmap_branch``: only the layers that feed the heatmap output and not the
    landmarks (the regressed coordinates then stay exactly as they are); ``regression_branch``: only the layers
    that feed the landmarks and not the heatmap (the heatmap MediaPipe's refinement reads then stays exactly as it
    is). Returns the trainable layer count."""
    parts = ("all", "heatmap_branch", "regression_branch")
    if part not in parts:
        raise UserError(f"--trainable must be one of {', '.join(parts)}, got {part!r}")
    if part == "all":
        for layer in models.training.layers:
            layer.trainable = True
        return sum(1 for layer in models.training.layers if layer.weights)
    from blazepose_tf.models.graph import upstream_layers
    out = dict(zip(models.training.output_names, models.training.outputs))
    if "heatmap" not in out:
        raise UserError(f"--trainable={part} needs a tracker with a heatmap output")
    heatmap, landmarks = upstream_layers(out["heatmap"]), upstream_layers(out["landmarks"])
    branch = heatmap - landmarks if part == "heatmap_branch" else landmarks - heatmap
    count = 0
    for layer in models.training.layers:
        layer.trainable = layer.name in branch
        count += int(layer.trainable and bool(layer.weights))
    return count


def initialize(models: Models, init_from: str, train_data: Optional[str] = None,
               calibration_crops: int = 128) -> None:
    """Initial weights: ``scratch`` (as built), ``official`` (the ``official_full`` and ``pruned_*`` presets
    are built from the official weights), ``linear_fit`` (``pruned_*`` presets: the official weights with
    each skipped run of blocks replaced by its least-squares linear fit on ``calibration_crops`` unaugmented
    crops of ``train_data``), a ``.keras`` file (layers matched by name and shape) or a checkpoint directory."""
    if init_from in ("scratch", "official"):
        return
    if init_from == "linear_fit":
        _linear_fit(models, train_data, calibration_crops)
        return
    path = Path(init_from).expanduser()
    if path.is_dir():
        restore_checkpoint_folder(models.training, path, "--init_from")
        return
    src = load_keras_model(path, "--init_from")
    by_name = {layer.name: layer for layer in src.layers}
    copied = 0
    for layer in models.training.layers:
        other = by_name.get(layer.name)
        if other is None or not layer.weights:
            continue
        if [w.shape for w in layer.weights] == [w.shape for w in other.weights]:
            layer.set_weights(other.get_weights())
            copied += 1
    if copied == 0:
        raise ModelError(f"--init_from {path}: no layer matches the model being trained (by name and shape)")


def restore_checkpoint_folder(model, folder: Path, what: str = "--init_from") -> str:
    """Restores ``model``'s weights from the latest checkpoint of a run folder (its ``checkpoints/``) or of a
    checkpoint folder, as recorded in its ``checkpoint`` state file (so half-written ``ckpt-N_temp`` leftovers are
    never read); returns the checkpoint prefix. One-line :class:`ModelError` when there is none or it does not
    fit ``model``."""
    sub = folder / "checkpoints"
    latest = tf.train.latest_checkpoint(str(sub if sub.is_dir() else folder))
    if latest is None:
        raise ModelError(f"{what} {folder} holds no checkpoint")
    try:
        tf.train.Checkpoint(model=model).restore(latest).expect_partial()
    except (AssertionError, ValueError, tf.errors.OpError) as e:
        first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise ModelError(f"{what} {latest} does not fit the model being trained: {first[:200]}") from None
    return latest


def train_crops(train_data: str, count: int, batch_size: int = 16) -> np.ndarray:
    """The first ``count`` un-augmented aligned crops (N, 256, 256, 3) of the training shards, in file order."""
    from blazepose_tf.topology import BLAZEPOSE_33
    from blazepose_tf.training.augment import AugmentConfig
    from blazepose_tf.training.data import TrackerDataConfig, tracker_dataset

    ds = tracker_dataset(train_data, TrackerDataConfig(batch_size=batch_size, augment=AugmentConfig.none()),
                         training=False, topology=BLAZEPOSE_33)
    return np.concatenate([b[0].numpy() for _, b in zip(range(-(-count // batch_size)), ds)])[:count]


def add_simulated_int8(models: Models) -> None:
    """Routes training through fake-quantized activations (:mod:`blazepose_tf.models.fake_quant`): the
    training view is replaced by its simulated-int8 copy (same weights) and ``simulated_int8`` (the inference
    view with the same fake-quant layers) is added for dev evaluation; the inference view stays float."""
    from blazepose_tf.models.fake_quant import SimulatedInt8
    sim = SimulatedInt8(models.training)
    inference_outputs = [o for o in models.inference.output_names if o in ("landmarks", "presence", "heatmap")]
    models.fake_quant = sim
    models.simulated_int8 = sim.view(models.inference, inference_outputs)
    models.training = sim.view(models.training)


def calibrate_simulated_int8(models: Models, train_data: str, crops: int = 128) -> dict:
    """Sets the fake-quant ranges from ``crops`` un-augmented training crops (min/max, as the converter)."""
    images = train_crops(train_data, crops)
    ranges = models.fake_quant.calibrate((images[i:i + 16] for i in range(0, len(images), 16)))
    print(f"simulated int8: {len(ranges)} activation ranges calibrated on {len(images)} train crops",
          file=sys.stderr)
    return ranges


def _linear_fit(models: Models, train_data: Optional[str], crops: int) -> None:
    from blazepose_tf.models.convert_official import load_converted
    from blazepose_tf.models.pruned import PRUNED_PRESETS, fit_linear_skips

    if models.preset not in PRUNED_PRESETS:
        raise UserError(f"--init_from=linear_fit needs a pruned preset ({', '.join(PRUNED_PRESETS)})")
    images = train_crops(train_data, crops)
    residuals = fit_linear_skips(models.inference, load_converted("pose_landmark_full"),
                                 PRUNED_PRESETS[models.preset].linear_fits, images)
    print("linear fits (residual / variance): " + ", ".join(f"{k} {v:.3f}" for k, v in residuals.items()),
          file=sys.stderr)


def _pad_points(x: tf.Tensor, num_points: int) -> tf.Tensor:
    """Pads the point axis (axis 0) with zeros up to ``num_points`` (unused official landmarks)."""
    extra = num_points - x.shape[0]
    if extra <= 0:
        return x
    pad = [[0, extra]] + [[0, 0]] * (x.shape.rank - 1)
    return tf.pad(x, pad)


def target_encoder(models: Models, topology: Topology, with_offsets: Optional[bool] = None) -> Callable:
    """Per-example map from the data pipeline's targets to the loss's: crop-normalized coordinates with
    weights as masks, visibility, presence, heatmaps and offsets (:mod:`blazepose_tf.codecs`)."""
    p = models.num_points
    size = models.input_size
    if with_offsets is None:
        with_offsets = len(models.training.outputs) >= 4

    def encode(image, t):
        kps = _pad_points(t["keypoints"], p)
        w = _pad_points(t["weight"], p)
        zw = _pad_points(t["z_weight"], p)
        out = tracker_targets(kps, tf.stack([w, w, zw], -1), visibility=_pad_points(t["visible"], p),
                              visibility_available=_pad_points(t["vis_weight"], p), input_size=size)
        hm, off, off_mask = encode_heatmaps(kps, tf.cast(w > 0, tf.float32), heatmap_size=size // 4,
                                            input_size=size)
        out.update(heatmap=hm, heatmap_mask=w, is_gt=_pad_points(t["is_gt"], p), keypoints_px=kps)
        if with_offsets:
            out.update(offsets=off, offset_mask=off_mask)
        return image, out
    return encode


def _as_dict(outputs, names=("landmarks", "presence", "heatmap", "offsets")) -> dict:
    return dict(outputs) if isinstance(outputs, dict) else dict(zip(names, outputs))


def tracker_losses(outputs, targets: dict, weights: dict, input_size: int = 256) -> dict:
    """Weighted loss terms (scalars, batch means over annotated points)."""
    out = _as_dict(outputs)
    xyz, vis_logits, _ = split_landmarks(out["landmarks"], input_size)
    m = targets["coord_mask"]
    terms = {
        "coords": weights.get("coords", 1.0) * coordinate_loss(targets["coords"][..., :2], xyz[..., :2], m[..., :2]),
        "z": weights.get("z", 0.1) * coordinate_loss(targets["coords"][..., 2:], xyz[..., 2:], m[..., 2:]),
        "visibility": weights.get("visibility", 0.2) * visibility_loss(targets["visibility"], vis_logits,
                                                                       targets["visibility_mask"]),
        "presence": weights.get("presence", 0.1) * presence_loss(targets["presence"], out["presence"]),
    }
    if "heatmap" in out and weights.get("heatmap", 1.0) > 0:
        terms["heatmap"] = weights.get("heatmap", 1.0) * heatmap_loss(targets["heatmap"], out["heatmap"],
                                                                      targets["heatmap_mask"])
    if "offsets" in out and "offsets" in targets and weights.get("offset", 1.0) > 0:
        terms["offset"] = weights.get("offset", 1.0) * offset_loss(targets["offsets"], out["offsets"],
                                                                   targets["offset_mask"], targets["heatmap_mask"])
    if "heatmap" in out and weights.get("refined", 0.0) > 0:
        from blazepose_tf.codecs.landmarks import refine_with_heatmap_tf
        p = out["heatmap"].shape[-1]
        refined = refine_with_heatmap_tf(xyz[:, :p, :2], out["heatmap"])
        terms["refined"] = weights["refined"] * coordinate_loss(targets["coords"][:, :p, :2], refined,
                                                                m[:, :p, :2])
    feats = [k for k in out if k.startswith("feature/")]
    if feats and weights.get("features", 0.0) > 0:
        terms["features"] = weights["features"] * tf.add_n(
            [feature_loss(targets["distill_" + k], out[k]) for k in feats]) / len(feats)
    if "distill_coords" in targets and weights.get("distill", 0.0) > 0:
        not_gt = (1.0 - targets["is_gt"])[..., None] * tf.ones_like(xyz[..., :2])
        terms["distill"] = weights["distill"] * (
            coordinate_loss(targets["distill_coords"][..., :2], xyz[..., :2], not_gt)
            + visibility_loss(targets["distill_visibility"], vis_logits, 1.0 - targets["is_gt"]))
    return terms


def feature_loss(teacher: tf.Tensor, student: tf.Tensor) -> tf.Tensor:
    """Mean squared difference of two activations, relative to the teacher's mean square."""
    teacher = tf.cast(teacher, tf.float32)
    student = tf.cast(student, tf.float32)
    return tf.reduce_mean(tf.square(student - teacher)) / (tf.reduce_mean(tf.square(teacher)) + 1e-6)


def load_teacher(spec: str, feature_layers: tuple = ()):
    """The distillation teacher: ``official`` (converted official Full) or a ``.keras`` tracker; with
    ``feature_layers``, a view that also outputs those activations (``feature/<layer>``)."""
    if spec == "official":
        from blazepose_tf.models.convert_official import converted_model_path
        teacher = load_keras_model(converted_model_path("pose_landmark_full"), "--distill_from official")
    else:
        teacher = load_keras_model(spec, "--distill_from")
    teacher.trainable = False
    if feature_layers:
        from blazepose_tf.models.pruned import with_features
        try:
            teacher = with_features(teacher, feature_layers, outputs=("landmarks",))
        except ValueError as e:
            raise UserError(f"--distill_from {spec}: {e}") from None
    return teacher


def teacher_targets(teacher, images: tf.Tensor, num_points: int, input_size: int = 256) -> dict:
    """Teacher predictions on the (augmented) batch as soft targets: coordinates and visibility probability."""
    out = teacher(images, training=False)
    out = dict(out) if isinstance(out, dict) else dict(zip(teacher.output_names, out))
    xyz, vis_logits, _ = split_landmarks(out["landmarks"], input_size)
    p = min(num_points, xyz.shape[1])
    pad = num_points - p
    coords = tf.pad(xyz[:, :p], [[0, 0], [0, pad], [0, 0]])
    vis = tf.pad(tf.sigmoid(vis_logits[:, :p]), [[0, 0], [0, pad]])
    feats = {"distill_" + k: tf.stop_gradient(v) for k, v in out.items() if k.startswith("feature/")}
    return {"distill_coords": tf.stop_gradient(coords), "distill_visibility": tf.stop_gradient(vis), **feats}


def crop_pck(pred_px: np.ndarray, gt_px: np.ndarray, is_gt: np.ndarray, topology: Topology,
             threshold: float = 0.2) -> tuple[int, int]:
    """(correct, total) GT points within ``threshold`` × torso (mid-shoulder↔mid-hip) on aligned crops."""
    ls, rs, lh, rh = (topology.index(n) for n in ("left_shoulder", "right_shoulder", "left_hip", "right_hip"))
    k = topology.num_keypoints
    correct = total = 0
    for b in range(len(gt_px)):
        if not is_gt[b, [ls, rs, lh, rh]].all():
            continue
        torso = np.linalg.norm((gt_px[b, ls, :2] + gt_px[b, rs, :2]) / 2 - (gt_px[b, lh, :2] + gt_px[b, rh, :2]) / 2)
        m = is_gt[b, :k] > 0
        err = np.linalg.norm(pred_px[b, :k, :2][m] - gt_px[b, :k, :2][m], axis=1)
        correct += int((err < threshold * torso).sum())
        total += int(m.sum())
    return correct, total


def evaluate_dev(models: Models, dev_data: str, topology: Topology, data_cfg, max_batches: int, writer,
                 step: int) -> dict:
    """PCK@0.2 of the inference model on aligned dev crops (ground-truth points only), with sample images;
    with ``models.simulated_int8``, the same metrics of that view prefixed ``int8sim_``."""
    from blazepose_tf.training.data import tracker_dataset

    ds = tracker_dataset(dev_data, data_cfg, training=False, topology=topology,
                         encode_targets=target_encoder(models, topology, with_offsets=False))
    views = {"": models.inference}
    if models.simulated_int8 is not None:
        views["int8sim_"] = models.simulated_int8
    scores = {prefix: _CropScore() for prefix in views}
    infer = {prefix: tf.function(lambda x, m=m: _as_dict(m(x, training=False), m.output_names),
                                 reduce_retracing=True) for prefix, m in views.items()}
    first = None
    for i, (images, t) in enumerate(ds):
        if max_batches and i >= max_batches:
            break
        gt = t["keypoints_px"].numpy()
        is_gt = t["is_gt"].numpy()
        for prefix in views:
            pred = scores[prefix].add(infer[prefix](images), gt, is_gt, topology, models.input_size)
            if first is None:
                first = (images.numpy()[:4], pred[:4], gt[:4], is_gt[:4])
    metrics = {}
    for prefix, score in scores.items():
        metrics.update({prefix + k: v for k, v in score.metrics().items()})
    with writer.as_default(step=step):
        tf.summary.scalar("dev/pck@0.2", metrics["pck"])
        tf.summary.scalar("dev/coord_l1_px", metrics["coord_l1_px"])
        if first is not None:
            tf.summary.image("dev/predictions", _draw(*first, topology.num_keypoints), max_outputs=4)
    return metrics


class _CropScore:
    """Running crop PCK (regressed, and after heatmap refinement when the heatmap refines every point, as in
    the runtime) and coordinate L1 of one model view."""

    def __init__(self) -> None:
        self.correct = self.total = 0
        self.correct_refined: Optional[int] = None
        self.coord_err: list[float] = []

    def add(self, out: dict, gt: np.ndarray, is_gt: np.ndarray, topology: Topology, size: int) -> np.ndarray:
        from blazepose_tf.codecs.landmarks import refine_with_heatmap
        xyz, _, _ = split_landmarks(out["landmarks"], size)
        pred = xyz.numpy() * size
        c, n = crop_pck(pred, gt, is_gt, topology)
        self.correct, self.total = self.correct + c, self.total + n
        if "heatmap" in out and out["heatmap"].shape[-1] == pred.shape[1]:
            hm = out["heatmap"].numpy()
            refined = pred.copy()
            for b in range(len(pred)):
                refined[b, :, :2] = refine_with_heatmap(pred[b, :, :2] / size, hm[b]) * size
            self.correct_refined = (self.correct_refined or 0) + crop_pck(refined, gt, is_gt, topology)[0]
        self.coord_err.append(float(np.abs(pred[..., :2] - gt[..., :2])[is_gt > 0].mean()))
        return pred

    def metrics(self) -> dict:
        m = {"pck": 100.0 * self.correct / max(self.total, 1), "points": self.total,
             "coord_l1_px": float(np.mean(self.coord_err)) if self.coord_err else float("nan")}
        if self.correct_refined is not None:
            m["pck_refined"] = 100.0 * self.correct_refined / max(self.total, 1)  # after heatmap refinement
        return m


def _draw(images: np.ndarray, pred: np.ndarray, gt: np.ndarray, is_gt: np.ndarray, k: int) -> np.ndarray:
    import cv2
    out = []
    for img, p, g, m in zip(images, pred, gt, is_gt):
        canvas = np.ascontiguousarray((img * 255).astype(np.uint8))
        for j in range(k):
            if m[j] > 0:
                cv2.circle(canvas, (int(g[j, 0]), int(g[j, 1])), 3, (0, 255, 0), -1)
            cv2.circle(canvas, (int(p[j, 0]), int(p[j, 1])), 2, (255, 0, 0), -1)
        out.append(canvas)
    return np.stack(out).astype(np.float32) / 255.0


def export_inference(models: Models, path: Path, metrics: dict, step: int) -> None:
    """Saves the inference model as ``.keras`` atomically, with a JSON sidecar (step, metrics)."""
    path = Path(path)
    tmp = path.with_name(path.stem + ".part.keras")
    models.inference.save(tmp)
    os.replace(tmp, path)
    side = path.with_suffix(".json")
    side.write_text(json.dumps({"step": step, **metrics}, indent=1))
