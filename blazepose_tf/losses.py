"""Training losses of the tracker and the detector (TensorFlow).

Every loss takes an availability mask and is a masked mean: unannotated points (mask 0) contribute nothing,
neither to the sum nor to the normalizer, and a batch with nothing annotated costs exactly 0. Each loss is 0
for a perfect prediction and positive otherwise.

Tracker targets come from :func:`blazepose_tf.codecs.targets.tracker_targets` and
:func:`blazepose_tf.codecs.heatmap.encode_heatmaps`; detector targets from
:func:`blazepose_tf.codecs.detector_targets.detector_targets`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import tensorflow as tf

from blazepose_tf.contract import VALUES_PER_LANDMARK

_EPS = 1e-7


def _f32(x) -> tf.Tensor:
    return tf.cast(tf.convert_to_tensor(x), tf.float32)


def masked_mean(values, mask=None) -> tf.Tensor:
    """Σ values·mask / Σ mask (broadcasting ``mask``); 0 when the mask is empty."""
    values = _f32(values)
    if mask is None:
        return tf.reduce_mean(values)
    mask = tf.broadcast_to(_f32(mask), tf.shape(values))
    return tf.math.divide_no_nan(tf.reduce_sum(values * mask), tf.reduce_sum(mask))


def split_landmarks(landmarks, input_size: int = 256) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Model ``landmarks`` (B, P·5) → xyz normalized to the crop (B, P, 3), visibility logits (B, P) and
    per-point presence logits (B, P)."""
    lm = tf.reshape(_f32(landmarks), [tf.shape(landmarks)[0], -1, VALUES_PER_LANDMARK])
    return lm[..., :3] / float(input_size), lm[..., 3], lm[..., 4]


# --------------------------------------------------------------------------------------------------- tracker
def _binary_entropy(t: tf.Tensor) -> tf.Tensor:
    """H(t) = -t·log t - (1-t)·log(1-t), 0 at t ∈ {0, 1}."""
    return -(tf.math.xlogy(t, t) + tf.math.xlog1py(1.0 - t, -t))


def heatmap_loss(target, logits, mask=None) -> tf.Tensor:
    """Binary KL divergence between Gaussian targets and sigmoid(logits), per point normalized by the
    target's mass (≈ the peak's area), averaged over annotated points.

    Per cell: BCE(t, σ(z)) − H(t) = softplus(z) − t·z − H(t): the gradient is BCE's (σ(z) − t) but the value
    is 0 at σ(z) = t. Written with few element-wise passes over the (B, 64, 64, P) maps: on CPU this loss
    costs about as much as a convolution layer at that resolution.

    Args:
        target: (B, H, W, P) in [0, 1].
        logits: (B, H, W, P).
        mask: (B, P) point availability (default: all).
    """
    t = _f32(target)
    z = _f32(logits)
    bce = tf.reduce_sum(tf.nn.softplus(z) - t * z, axis=[1, 2])  # (B, P)
    entropy = tf.reduce_sum(_binary_entropy(t), axis=[1, 2])
    per_point = tf.nn.relu(bce - entropy) / tf.maximum(tf.reduce_sum(t, axis=[1, 2]), 1.0)
    return masked_mean(per_point, mask)


def offset_loss(target, pred, weight, mask=None, delta: float = 1.0) -> tf.Tensor:
    """Huber loss on offset maps, only at cells near each keypoint's peak.

    Only the supervised cells (``weight > 0``, about 13 per point) are gathered, so the cost does not grow
    with the map size.

    Args:
        target, pred: (B, H, W, 2P) dx, dy interleaved, in heatmap cells.
        weight: (B, H, W, P) cells where offsets are supervised (the encoder's offset mask).
        mask: optional (B, P) point availability.
        delta: Huber threshold, in cells.
    """
    w = _f32(weight)
    if mask is not None:
        w = w * _f32(mask)[:, None, None, :]
    idx = tf.where(w > 0)  # (N, 4): b, i, j, p
    shape = tf.concat([tf.shape(w), [2]], axis=0)
    p = tf.gather_nd(tf.reshape(_f32(pred), shape), idx)  # (N, 2)
    t = tf.gather_nd(tf.reshape(_f32(target), shape), idx)
    wn = tf.gather_nd(w, idx)[:, None]
    diff = tf.abs(p - t)
    huber = tf.where(diff <= delta, 0.5 * diff * diff, delta * (diff - 0.5 * delta))
    return tf.math.divide_no_nan(tf.reduce_sum(huber * wn), 2.0 * tf.reduce_sum(wn))


def coordinate_loss(target, pred, mask=None, kind: str = "l1", delta: float = 0.01) -> tf.Tensor:
    """Keypoint coordinate regression loss, coordinates normalized to the crop.

    Args:
        target, pred: (B, P, 3) (or (B, P, 2)).
        mask: (B, P, 3) or (B, P) availability.
        kind: ``"l1"``, ``"l2"`` or ``"huber"`` (threshold ``delta``, in crop units).
    """
    t, p = _f32(target), _f32(pred)
    d = p - t
    if kind == "l1":
        err = tf.abs(d)
    elif kind == "l2":
        err = d * d
    elif kind == "huber":
        a = tf.abs(d)
        err = tf.where(a <= delta, 0.5 * a * a / delta, a - 0.5 * delta)
    else:
        raise ValueError(f"unknown coordinate loss {kind!r}; use 'l1', 'l2' or 'huber'")
    if mask is not None:
        mask = _f32(mask)
        if mask.shape.rank == t.shape.rank - 1:
            mask = mask[..., None]
    return masked_mean(err, mask)


def binary_logit_loss(target, logits, mask=None) -> tf.Tensor:
    """Masked binary cross-entropy from logits minus the target's entropy (0 when σ(logits) = target, so
    hard and soft labels are both 0 at a perfect prediction)."""
    t = _f32(target)
    bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=t, logits=_f32(logits))
    return masked_mean(tf.nn.relu(bce - _binary_entropy(t)), mask)


def visibility_loss(target, logits, mask=None) -> tf.Tensor:
    """Per-point visibility (occluded or not): binary cross-entropy on logits, (B, P)."""
    return binary_logit_loss(target, logits, mask)


def presence_loss(target, probability, mask=None) -> tf.Tensor:
    """Person presence: binary cross-entropy on the model's probability (it applies the sigmoid), (B, 1)."""
    p = tf.clip_by_value(_f32(probability), _EPS, 1.0 - _EPS)
    t = _f32(target)
    bce = -(t * tf.math.log(p) + (1.0 - t) * tf.math.log(1.0 - p))
    tc = tf.clip_by_value(t, _EPS, 1.0 - _EPS)  # the same clipping, so a perfect prediction costs exactly 0
    entropy = -(t * tf.math.log(tc) + (1.0 - t) * tf.math.log(1.0 - tc))
    return masked_mean(tf.nn.relu(bce - entropy), mask)


@dataclass(frozen=True)
class TrackerLossWeights:
    """Weights of the tracker's loss terms. The heatmap branch only sees the heatmap/offset terms and the
    regression encoder only the others (stop-gradient), so the two groups' relative weight barely matters."""

    heatmap: float = 1.0
    offsets: float = 1.0
    coordinates: float = 10.0
    visibility: float = 0.5
    point_presence: float = 0.5
    presence: float = 0.5


def tracker_loss(targets: Mapping[str, tf.Tensor], outputs, input_size: int = 256,
                 weights: TrackerLossWeights = TrackerLossWeights(),
                 coordinate_kind: str = "l1") -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """Total tracker loss and its terms.

    Args:
        targets: :func:`~blazepose_tf.codecs.targets.tracker_targets` keys, plus ``heatmap``, ``offsets``,
            ``offset_mask`` (from :func:`~blazepose_tf.codecs.heatmap.encode_heatmaps`) and optionally
            ``presence_mask`` (B, 1). Missing heatmap keys skip the heatmap terms.
        outputs: the training model's outputs, as a dict by name or a list in ``landmarks, presence,
            heatmap, offsets`` order (an inference model's 2 outputs work too).
    Returns:
        (total, {term: value}).
    """
    if not isinstance(outputs, Mapping):
        names = ("landmarks", "presence", "heatmap", "offsets")
        outputs = dict(zip(names, outputs))
    xyz, vis_logits, pres_logits = split_landmarks(outputs["landmarks"], input_size)
    point_mask = targets["coord_mask"]
    terms = {
        "coordinates": coordinate_loss(targets["coords"], xyz, point_mask, kind=coordinate_kind),
        "visibility": visibility_loss(targets["visibility"], vis_logits, targets["visibility_mask"]),
        "point_presence": binary_logit_loss(targets["point_presence"], pres_logits,
                                            targets["point_presence_mask"]),
        "presence": presence_loss(targets["presence"], outputs["presence"], targets.get("presence_mask")),
    }
    if "heatmap" in targets and "heatmap" in outputs:
        hm_mask = targets.get("heatmap_mask", targets["point_presence_mask"])
        terms["heatmap"] = heatmap_loss(targets["heatmap"], outputs["heatmap"], hm_mask)
        if "offsets" in targets and "offsets" in outputs:
            terms["offsets"] = offset_loss(targets["offsets"], outputs["offsets"], targets["offset_mask"], hm_mask)
    total = tf.add_n([getattr(weights, k) * v for k, v in terms.items()])
    return total, terms


# -------------------------------------------------------------------------------------------------- detector
def focal_loss(labels, logits, alpha: float = 0.25, gamma: float = 2.0) -> tf.Tensor:
    """Sigmoid focal loss (Lin et al.) summed over anchors and normalized by the number of positives.

    Args:
        labels: (B, A) 1 positive, 0 negative, -1 ignored.
        logits: (B, A, 1) or (B, A).
    """
    y = _f32(labels)
    z = tf.reshape(_f32(logits), tf.shape(y))
    valid = tf.cast(y >= 0, tf.float32)
    t = tf.cast(y > 0, tf.float32)
    ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=t, logits=z)
    p = tf.sigmoid(z)
    p_t = t * p + (1 - t) * (1 - p)
    a_t = t * alpha + (1 - t) * (1 - alpha)
    loss = a_t * tf.pow(1.0 - p_t, gamma) * ce * valid
    return tf.reduce_sum(loss) / tf.maximum(tf.reduce_sum(t), 1.0)


def hard_negative_loss(labels, logits, neg_pos_ratio: float = 3.0, min_negatives: int = 16) -> tf.Tensor:
    """Binary cross-entropy over all positives and the hardest negatives (SSD's online hard-negative mining):
    per image, the ``neg_pos_ratio`` × #positives (at least ``min_negatives``) highest-loss negatives;
    normalized by the number of positives."""
    y = _f32(labels)
    z = tf.reshape(_f32(logits), tf.shape(y))
    t = tf.cast(y > 0, tf.float32)
    neg = tf.cast(tf.equal(y, 0.0), tf.float32)
    ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=t, logits=z)
    num_pos = tf.reduce_sum(t, axis=1)  # (B,)
    k = tf.minimum(tf.maximum(neg_pos_ratio * num_pos, float(min_negatives)), tf.reduce_sum(neg, axis=1))
    k = tf.cast(k, tf.int32)
    neg_ce = tf.where(neg > 0, ce, -1.0)  # negatives only (ce >= 0)
    order = tf.argsort(neg_ce, axis=1, direction="DESCENDING")
    rank = tf.argsort(order, axis=1)
    hard = tf.cast(rank < k[:, None], tf.float32) * neg
    loss = tf.reduce_sum(ce * (t + hard))
    return loss / tf.maximum(tf.reduce_sum(num_pos), 1.0)


def detector_classification_loss(labels, logits, kind: str = "focal", **kwargs) -> tf.Tensor:
    """``kind="focal"`` (:func:`focal_loss`) or ``"ohem"`` (:func:`hard_negative_loss`)."""
    if kind == "focal":
        return focal_loss(labels, logits, **kwargs)
    if kind == "ohem":
        return hard_negative_loss(labels, logits, **kwargs)
    raise ValueError(f"unknown classification loss {kind!r}; use 'focal' or 'ohem'")


def detector_regression_loss(target, pred, mask, unit: float = 22.4, delta: float = 1.0) -> tf.Tensor:
    """Huber loss on box and keypoint regressors at positive anchors.

    Args:
        target, pred: (B, A, 12) in input pixels relative to the anchor (``decode_boxes`` layout).
        mask: (B, A, 12) regression mask from the target assignment (positives' box and available
            keypoints).
        unit: errors are measured in units of ``unit`` pixels (default 10% of a 224 input).
        delta: Huber threshold in those units.
    Returns: mean over supervised coordinates.
    """
    d = tf.abs(_f32(pred) - _f32(target)) / unit
    huber = tf.where(d <= delta, 0.5 * d * d, delta * (d - 0.5 * delta))
    return masked_mean(huber, mask)


@dataclass(frozen=True)
class DetectorLossWeights:
    """Weights of the detector's loss terms."""

    classification: float = 1.0
    regression: float = 1.0


def detector_loss(labels, regressor_targets, regressor_mask, outputs,
                  weights: DetectorLossWeights = DetectorLossWeights(), classification: str = "focal",
                  **cls_kwargs) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """Total detector loss and its terms; ``outputs`` is ``[regressors, scores]`` or a dict by name."""
    if not isinstance(outputs, Mapping):
        outputs = dict(zip(("regressors", "scores"), outputs))
    terms = {
        "classification": detector_classification_loss(labels, outputs["scores"], classification, **cls_kwargs),
        "regression": detector_regression_loss(regressor_targets, outputs["regressors"], regressor_mask),
    }
    total = weights.classification * terms["classification"] + weights.regression * terms["regression"]
    return total, terms


__all__: Sequence[str] = (
    "masked_mean", "split_landmarks", "heatmap_loss", "offset_loss", "coordinate_loss", "binary_logit_loss",
    "visibility_loss", "presence_loss", "TrackerLossWeights", "tracker_loss", "focal_loss",
    "hard_negative_loss", "detector_classification_loss", "detector_regression_loss", "DetectorLossWeights",
    "detector_loss",
)
