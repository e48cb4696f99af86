"""Person detector targets: per person a face-centred box and the four alignment keypoints, matched to anchors and
encoded as the detector's regressors (docs/design.md §4.5, §4.6).

Targets are computed from body keypoints normalized to the detector's (letterboxed) input square and encoded with
:func:`blazepose_tf.codecs.detection.encode_boxes`, the inverse of the runtime's
:func:`~blazepose_tf.codecs.detection.decode_boxes`: in NumPy, person by person (:func:`detector_targets`, the
reference), and the same in TensorFlow ops on whole batches for the training pipeline (:func:`tf_detector_targets`).
The alignment keypoints are those of :mod:`blazepose_tf.codecs.targets` (its docstring gives the rule).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from blazepose_tf.codecs.anchors import AnchorOptions, anchors_per_cell, generate_anchors
from blazepose_tf.codecs.detection import encode_boxes
from blazepose_tf.codecs.targets import alignment_keypoints, upper_body_indices
from blazepose_tf.contract import DETECTOR_NUM_KEYPOINTS, REGRESSOR_VALUES
from blazepose_tf.topology import BLAZEPOSE_33, Topology

FACE_KEYPOINTS = ("nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
                  "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right")
# Face centre ≈ mid-shoulder + 0.32 · torso · u (median over 184 LSPET people, official models as reference).
HEAD_FROM_SHOULDERS = 0.32
# The official detector's box is a constant 0.2 × 0.2 of its input, centred near the face (measured).
DEFAULT_BOX_SIZE = 0.2


def _named(topology: Topology, names: Sequence[str]) -> list[int]:
    return [topology.keypoints.index(n) for n in names if n in topology.keypoints]


@dataclass(frozen=True)
class AssignmentOptions:
    """How detector targets are matched to anchors.

    The official detector fires 2–3 neighbouring cells of the 28×28 map and 1 cell of the 14×14 map around
    the box centre, never the 7×7 map (measured on LSPET): a positive anchor is one whose centre lies within
    ``positive_radius`` cells of the box centre on a ``levels`` feature map (and the nearest cell there always
    is); anchors up to ``ignore_radius`` cells away are ignored; all others are negatives.

    Attributes:
        box_size: side of the (square) box, normalized to the input; the official detector's is constant 0.2.
        positive_radius / ignore_radius: in cells of each feature map.
        levels: indices into ``anchors_per_cell`` of the feature maps that may hold positives.
    """

    box_size: float = DEFAULT_BOX_SIZE
    positive_radius: float = 0.75
    ignore_radius: float = 1.5
    levels: tuple[int, ...] = (0, 1)


@dataclass
class DetectorPerson:
    """One person's detector target, normalized to the detector input.

    Attributes:
        box: (4,) xmin, ymin, xmax, ymax.
        keypoints: (4, 2) alignment keypoints.
        keypoint_mask: (4,) availability of each alignment keypoint.
    """

    box: np.ndarray
    keypoints: np.ndarray
    keypoint_mask: np.ndarray

    @property
    def center(self) -> np.ndarray:
        return np.array([(self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2], np.float32)


def face_center(keypoints: np.ndarray, valid: np.ndarray, topology: Topology = BLAZEPOSE_33) -> Optional[np.ndarray]:
    """Mean of the available face keypoints, or None if there are none."""
    idx = [i for i in _named(topology, FACE_KEYPOINTS) if valid[i] and np.isfinite(keypoints[i, :2]).all()]
    if not idx:
        return None
    return np.asarray(keypoints, np.float64)[idx, :2].mean(axis=0)


def person_target(keypoints: np.ndarray, valid: np.ndarray, topology: Topology = BLAZEPOSE_33,
                  box_size: float = DEFAULT_BOX_SIZE) -> Optional[DetectorPerson]:
    """A person's detector target from body keypoints normalized to the detector input.

    Box: a ``box_size`` square centred on the face (mean of the available face keypoints). Fallback without
    face keypoints (e.g. LSPET's 12 limb points): centred at mid-shoulder + 0.32 · torso · u, the median face
    position relative to the torso (measured). Returns None when neither is possible.
    """
    pts = np.asarray(keypoints, dtype=np.float64)
    ok = np.asarray(valid, bool)
    kps, kmask = alignment_keypoints(pts, ok, topology)
    centre = face_center(pts, ok, topology)
    if centre is None and kmask.all():
        centre = kps[2] + HEAD_FROM_SHOULDERS * (kps[2] - kps[0])
    if centre is None:
        return None
    h = box_size / 2
    box = np.array([centre[0] - h, centre[1] - h, centre[0] + h, centre[1] + h], np.float32)
    return DetectorPerson(box=box, keypoints=kps, keypoint_mask=kmask)


def _anchor_cells(options: AnchorOptions) -> tuple[np.ndarray, np.ndarray]:
    """Per anchor: feature-map level index and cell size (normalized)."""
    level, cell = [], []
    for i, (side, per_cell) in enumerate(anchors_per_cell(options)):
        n = side * side * per_cell
        level.append(np.full(n, i))
        cell.append(np.full(n, 1.0 / side))
    return np.concatenate(level), np.concatenate(cell).astype(np.float32)


def assign_detector_targets(persons: Sequence[DetectorPerson], anchors: Optional[np.ndarray] = None,
                            anchor_options: AnchorOptions = AnchorOptions(),
                            options: AssignmentOptions = AssignmentOptions()
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Matches persons to anchors and encodes their regression targets.

    Returns:
        regressors (A, 12) float32 (non-zero only at positives), labels (A,) int32 (1 positive, 0 negative,
        -1 ignored) and a regression mask (A, 12) float32 (box coordinates and available keypoints of
        positives).
    """
    if anchors is None:
        anchors = generate_anchors(anchor_options)
    n = len(anchors)
    level, cell = _anchor_cells(anchor_options)
    if len(level) != n:
        raise ValueError(f"{n} anchors do not match the anchor options ({len(level)})")
    eligible = np.isin(level, options.levels)
    labels = np.zeros(n, np.int32)
    best = np.full(n, np.inf, np.float32)  # distance (cells) of the closest person claiming the anchor
    owner = np.full(n, -1, np.int64)
    ignore = np.zeros(n, bool)
    for p, person in enumerate(persons):
        c = person.center
        if not np.isfinite(c).all():
            continue
        d = np.hypot(anchors[:, 0] - c[0], anchors[:, 1] - c[1]) / cell
        pos = eligible & (d <= options.positive_radius)
        if 0.0 <= c[0] <= 1.0 and 0.0 <= c[1] <= 1.0:
            for lv in options.levels:  # the nearest cell of each eligible map is always positive
                on = np.nonzero(level == lv)[0]
                if len(on):
                    nearest = d[on].min()
                    pos[on[d[on] <= nearest + 1e-6]] = True
        ignore |= eligible & (d <= options.ignore_radius) & ~pos
        take = pos & (d < best)
        best[take] = d[take]
        owner[take] = p
    positive = owner >= 0
    labels[ignore] = -1
    labels[positive] = 1
    regressors = np.zeros((n, REGRESSOR_VALUES), np.float32)
    mask = np.zeros_like(regressors)
    idx = np.nonzero(positive)[0]
    if len(idx):
        boxes = np.stack([persons[o].box for o in owner[idx]])
        kps = np.stack([persons[o].keypoints for o in owner[idx]])
        kmask = np.stack([persons[o].keypoint_mask for o in owner[idx]]).astype(np.float32)
        regressors[idx] = encode_boxes(boxes, kps, anchors[idx], float(anchor_options.input_size))
        mask[idx, :4] = 1.0
        mask[idx, 4:] = np.repeat(kmask, 2, axis=1)
    return regressors, labels, mask


def detector_targets(keypoints: np.ndarray, valid: np.ndarray, topology: Topology = BLAZEPOSE_33,
                     anchor_options: AnchorOptions = AnchorOptions(),
                     options: AssignmentOptions = AssignmentOptions(),
                     anchors: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Detector targets of one image from its people's keypoints.

    Args:
        keypoints: (N, K, 2+) people × keypoints, normalized to the detector input (N may be 0).
        valid: (N, K) availability.
    Returns:
        See :func:`assign_detector_targets`. People whose box cannot be placed (no face points and no hips
        or shoulders) are skipped, but anchors near the centre of their annotated points are ignored rather
        than taught as background.
    """
    kp = np.asarray(keypoints, dtype=np.float32)
    ok = np.asarray(valid).astype(bool)
    persons, unplaced = [], []
    for i in range(kp.shape[0]):
        person = person_target(kp[i], ok[i], topology, options.box_size)
        if person is not None:
            persons.append(person)
        elif ok[i].any():
            unplaced.append(kp[i][ok[i], :2].mean(axis=0))
    reg, labels, mask = assign_detector_targets(persons, anchors, anchor_options, options)
    if unplaced:
        if anchors is None:
            anchors = generate_anchors(anchor_options)
        _, cell = _anchor_cells(anchor_options)
        for c in unplaced:
            d = np.hypot(anchors[:, 0] - c[0], anchors[:, 1] - c[1]) / cell
            labels[(d <= options.ignore_radius * 2) & (labels == 0)] = -1
    return reg, labels, mask


def _tf_alignment(kp, ok, topology: Topology):
    """The alignment keypoints (:mod:`blazepose_tf.codecs.targets` docstring) in TensorFlow ops: float64
    (..., M, K, 2) keypoints and their (..., M, K) availability → (..., M, 4, 2) kp0..kp3 (zeros where not aligned)
    and the (..., M) aligned mask."""
    import tensorflow as tf

    def midpoint(a: str, b: str):
        if a not in topology.keypoints or b not in topology.keypoints:
            return tf.zeros_like(kp[..., 0, :]), tf.zeros_like(ok[..., 0])
        i, j = topology.index(a), topology.index(b)
        return (kp[..., i, :] + kp[..., j, :]) / 2, ok[..., i] & ok[..., j]

    def reach(centre, mask):  # max distance of the masked points from centre (B, M)
        d = tf.norm(kp - centre[..., None, :], axis=-1)
        return tf.reduce_max(tf.where(mask, d, tf.zeros_like(d)), axis=-1)

    hip, hip_ok = midpoint("left_hip", "right_hip")
    sho, sho_ok = midpoint("left_shoulder", "right_shoulder")
    length = tf.norm(sho - hip, axis=-1)
    aligned = hip_ok & sho_ok & (length > 1e-9)
    u = (sho - hip) / tf.maximum(length, 1e-9)[..., None]
    upper = np.zeros(topology.num_keypoints, bool)
    upper[upper_body_indices(topology)] = True
    kps = tf.stack([hip, hip + u * reach(hip, ok)[..., None], sho, sho + u * reach(sho, ok & upper)[..., None]],
                   axis=-2)
    return tf.where(aligned[..., None, None], kps, tf.zeros_like(kps)), aligned


def tf_detector_targets(keypoints, valid, topology: Topology = BLAZEPOSE_33,
                        anchor_options: AnchorOptions = AnchorOptions(),
                        options: AssignmentOptions = AssignmentOptions()):
    """:func:`detector_targets` in TensorFlow ops (no Python when it runs, XLA-compatible), for one image or a
    batch: the same boxes, assignment, ignored anchors and encoding (float64 geometry, as the NumPy version).

    Args:
        keypoints: (M, K, 2+) or (B, M, K, 2+) people × keypoints normalized to the detector input (padding people
            have no valid point).
        valid: (M, K) or (B, M, K) availability.
    Returns:
        regressors (..., A, 12) float32, labels (..., A) int32 and mask (..., A, 12) float32, static shapes.
    """
    import tensorflow as tf

    f64 = tf.float64
    kp = tf.cast(tf.convert_to_tensor(keypoints)[..., :2], f64)
    valid = tf.convert_to_tensor(valid)
    single = kp.shape.rank == 3
    if single:
        kp, valid = kp[None], valid[None]
    ok = (tf.cast(valid, f64) > 0) & tf.reduce_all(tf.math.is_finite(kp), axis=-1)   # (B, M, K)
    okf = tf.cast(ok, f64)
    kps, aligned = _tf_alignment(kp, ok, topology)                                     # (B, M, 4, 2), (B, M)
    face = np.zeros(topology.num_keypoints, np.float64)
    face[_named(topology, FACE_KEYPOINTS)] = 1.0
    face_w = okf * face
    has_face = tf.reduce_sum(face_w, axis=-1) > 0
    face_centre = tf.reduce_sum(kp * face_w[..., None], axis=-2) / tf.maximum(
        tf.reduce_sum(face_w, axis=-1), 1.0)[..., None]
    centre = tf.where(has_face[..., None], face_centre, kps[..., 2, :] + HEAD_FROM_SHOULDERS * (
        kps[..., 2, :] - kps[..., 0, :]))
    placed = has_face | aligned
    half = options.box_size / 2
    box = tf.cast(tf.concat([centre - half, centre + half], axis=-1), tf.float32)      # float32, as NumPy's
    box_centre = (box[..., :2] + box[..., 2:]) / 2
    # A person without a box: anchors near the mean of its annotated points are ignored, not background.
    annotated = tf.cast(valid, f64) > 0
    unplaced = ~placed & tf.reduce_any(annotated, axis=-1)
    loose_centre = tf.cast(tf.reduce_sum(tf.where(annotated[..., None], kp, 0.0), axis=-2) / tf.maximum(
        tf.reduce_sum(tf.cast(annotated, f64), axis=-1), 1.0)[..., None], tf.float32)

    anchors_np = generate_anchors(anchor_options)
    level_np, cell_np = _anchor_cells(anchor_options)
    anchors = tf.constant(anchors_np)
    cell = tf.constant(cell_np)
    eligible = tf.constant(np.isin(level_np, options.levels))

    def cells_away(c):  # (B, M, 2) → (B, M, A) distance in cells of each map
        return tf.norm(anchors[:, :2] - c[..., None, :], axis=-1) / cell

    d = cells_away(box_centre)
    usable = placed & tf.reduce_all(tf.math.is_finite(box_centre), axis=-1)
    pos = eligible & (d <= options.positive_radius) & usable[..., None]
    inside = tf.reduce_all((box_centre >= 0.0) & (box_centre <= 1.0), axis=-1) & usable
    for lv in options.levels:   # the nearest cell of each eligible map is always positive
        on = tf.constant(level_np == lv)
        nearest = tf.reduce_min(tf.where(on, d, np.inf), axis=-1, keepdims=True)
        pos |= on & (d <= nearest + 1e-6) & inside[..., None]
    ignore = tf.reduce_any(eligible & (d <= options.ignore_radius) & ~pos & usable[..., None], axis=-2)
    positive = tf.reduce_any(pos, axis=-2)                                            # (B, A)
    owner = tf.argmin(tf.where(pos, d, np.inf), axis=-2, output_type=tf.int32)         # first on ties
    labels = tf.where(positive, 1, tf.where(ignore, -1, 0))
    near_unplaced = tf.reduce_any((cells_away(loose_centre) <= options.ignore_radius * 2) & unplaced[..., None],
                                  axis=-2)
    labels = tf.where(near_unplaced & (labels == 0), -1, labels)

    own_box = tf.gather(box, owner, batch_dims=1)                                      # (B, A, 4)
    own_kps = tf.gather(tf.cast(kps, tf.float32), owner, batch_dims=1)                 # (B, A, 4, 2)
    own_mask = tf.gather(tf.cast(aligned, tf.float32), owner, batch_dims=1)            # (B, A)
    size = float(anchor_options.input_size)
    origin, extent = anchors[:, None, :2], anchors[:, None, 2:]
    corners = tf.reshape(own_box, tf.concat([tf.shape(own_box)[:-1], [2, 2]], 0))
    box_reg = tf.concat([(tf.reduce_mean(corners, axis=-2) - origin[:, 0]) / extent[:, 0],
                         (corners[..., 1, :] - corners[..., 0, :]) / extent[:, 0]], axis=-1) * size
    kps_reg = (own_kps - origin) / extent * size
    positive_f = tf.cast(positive, tf.float32)[..., None]
    regressors = tf.concat([box_reg, tf.reshape(kps_reg, tf.concat([tf.shape(kps_reg)[:-2], [-1]], 0))],
                           axis=-1) * positive_f
    num_kps = DETECTOR_NUM_KEYPOINTS
    mask = tf.concat([tf.ones_like(box_reg), tf.repeat(own_mask[..., None], 2 * num_kps, axis=-1)],
                     axis=-1) * positive_f
    out = (regressors, tf.cast(labels, tf.int32), mask)
    return tuple(x[0] for x in out) if single else out


# People per detector example: data.prepare stores at most this many, the detector pipeline pads to it.
MAX_PEOPLE = 8

# How far (in alignment radii r = |kp1 − kp0|) an anchor's own decoded kp0 may lie from every person's before the
# anchor is background for --score_targets=regression. A training setting of its own (a run's targets must not move
# when an evaluation rule does); it equals the training log's matching radius, metrics.MATCH_RADIUS.
QUALITY_NEGATIVE_ERROR = 0.5


def tf_regression_quality_labels(regressors, keypoints, valid, tolerance: float = 0.2,
                                 negative_error: float = QUALITY_NEGATIVE_ERROR, topology: Topology = BLAZEPOSE_33,
                                 anchor_options: AnchorOptions = AnchorOptions()):
    """Anchor labels from where a detector's *own* regressors put the person (TensorFlow ops, batched): an anchor is
    positive (1) when its decoded alignment keypoints kp0 and kp1 both lie within ``tolerance`` · r of some person's
    ground-truth ones (r = that person's alignment radius |kp1 − kp0|), i.e. the ROI it would give the tracker
    (:func:`blazepose_tf.codecs.roi.alignment_roi` of kp0, kp1) is nearly the ground-truth ROI; background (0) when
    its kp0 is farther than ``negative_error`` · r from every person's; ignored (−1) in between. With frozen
    regressors (``--trainable=score_head``) this teaches the score head to fire where the fixed regression gives
    good crops, instead of at anchors chosen by position alone.

    Args:
        regressors: (B, A, 4 + 2·4) the detector's regressors (:func:`~blazepose_tf.codecs.detection.decode_boxes`
            layout; treated as constants).
        keypoints: (B, M, K, 2+) people × keypoints normalized to the detector input (padding people: no valid point).
        valid: (B, M, K) availability.
    Returns:
        (B, A) int32 labels.
    """
    import tensorflow as tf

    f32 = tf.float32
    kp = tf.cast(tf.convert_to_tensor(keypoints)[..., :2], tf.float64)
    ok = (tf.cast(valid, tf.float64) > 0) & tf.reduce_all(tf.math.is_finite(kp), axis=-1)
    kps, aligned = _tf_alignment(kp, ok, topology)
    gt = tf.cast(kps[..., :2, :], f32)                                                 # (B, M, 2, 2): kp0, kp1
    radius = tf.norm(gt[..., 1, :] - gt[..., 0, :], axis=-1)                           # (B, M)
    usable = aligned & (radius > 1e-6)
    anchors = tf.constant(generate_anchors(anchor_options), f32)                        # (A, 4)
    reg = tf.stop_gradient(tf.cast(regressors, f32))
    size = float(anchor_options.input_size)
    pred = [reg[..., 4 + 2 * i:6 + 2 * i] / size * anchors[:, 2:] + anchors[:, :2] for i in range(2)]  # (B, A, 2)
    safe_r = tf.where(usable, radius, 1.0)[..., None]                                   # (B, M, 1)

    def error(i):  # (B, M, A): |pred kp_i − person's kp_i| / r
        d = tf.norm(pred[i][:, None, :, :] - gt[:, :, None, i, :], axis=-1) / safe_r
        return tf.where(usable[..., None], d, np.inf)

    e0, e1 = error(0), error(1)
    best = tf.reduce_min(tf.maximum(e0, e1), axis=1)                                    # (B, A)
    nearest = tf.reduce_min(e0, axis=1)
    labels = tf.where(best <= tolerance, 1, tf.where(nearest > negative_error, 0, -1))
    return tf.cast(labels, tf.int32)
