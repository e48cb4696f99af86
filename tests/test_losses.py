"""Losses: zero on perfect predictions, positive otherwise, and masks remove unannotated points."""
from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from blazepose_tf import losses as L  # noqa: E402
from blazepose_tf.codecs.heatmap import encode_heatmaps  # noqa: E402
from blazepose_tf.codecs.detector_targets import detector_targets  # noqa: E402
from blazepose_tf.codecs.targets import tracker_targets  # noqa: E402

B, P = 2, 6
RNG = np.random.default_rng(0)
ZERO = 1e-6


def _logit(p, big: float = 40.0) -> np.ndarray:
    p = np.asarray(p, np.float64)
    inner = np.log(np.clip(p, 1e-30, 1)) - np.log1p(-np.clip(p, 0, 1 - 1e-16))
    out = np.where(p <= 0, -big, np.where(p >= 1, big, inner))
    return out.astype(np.float32)


def _val(x) -> float:
    return float(np.asarray(x))


# ------------------------------------------------------------------------------------------------ tracker
@pytest.fixture(scope="module")
def maps():
    kp = RNG.uniform(10, 246, (B, P, 2)).astype(np.float32)
    hm, off, mask = (np.asarray(t) for t in encode_heatmaps(kp, heatmap_size=32, input_size=128))
    return kp, hm, off, mask


def test_heatmap_loss(maps):
    _, hm, _, _ = maps
    perfect = _logit(hm)
    assert _val(L.heatmap_loss(hm, perfect)) < ZERO
    assert _val(L.heatmap_loss(hm, perfect + 0.5)) > 1e-3
    assert _val(L.heatmap_loss(hm, np.zeros_like(hm))) > 0.1
    # masked points cost nothing, whatever is predicted there
    mask = np.ones((B, P), np.float32)
    mask[:, 0] = 0
    wrong = perfect.copy()
    wrong[..., 0] = 5.0
    assert _val(L.heatmap_loss(hm, wrong, mask)) < ZERO
    assert _val(L.heatmap_loss(hm, wrong)) > 0.1
    assert _val(L.heatmap_loss(hm, wrong, np.zeros((B, P)))) == 0.0


def test_offset_loss_only_near_the_peak(maps):
    _, _, off, omask = maps
    assert _val(L.offset_loss(off, off, omask)) == 0.0
    assert _val(L.offset_loss(off, off + 0.3, omask)) == pytest.approx(0.5 * 0.3 ** 2, rel=1e-4)
    far = off.copy()
    far[np.repeat(omask, 2, axis=-1) == 0] += 7.0  # errors away from every peak are ignored
    assert _val(L.offset_loss(off, far, omask)) < ZERO
    mask = np.ones((B, P), np.float32)
    mask[:, 1] = 0
    bad = off.copy()
    bad[..., 2:4] += 3.0  # point 1's channels
    assert _val(L.offset_loss(off, bad, omask, mask)) < ZERO
    assert _val(L.offset_loss(off, bad, omask)) > 0.1


@pytest.mark.parametrize("kind", ["l1", "l2", "huber"])
def test_coordinate_loss(kind):
    t = RNG.uniform(0, 1, (B, P, 3)).astype(np.float32)
    assert _val(L.coordinate_loss(t, t, kind=kind)) == 0.0
    assert _val(L.coordinate_loss(t, t + 0.05, kind=kind)) > 0
    mask = np.ones((B, P), np.float32)
    mask[0, 2] = 0
    bad = t.copy()
    bad[0, 2] += 10.0
    assert _val(L.coordinate_loss(t, bad, mask, kind=kind)) == 0.0
    mask3 = np.ones((B, P, 3), np.float32)
    mask3[..., 2] = 0  # z not annotated
    badz = t.copy()
    badz[..., 2] += 1.0
    assert _val(L.coordinate_loss(t, badz, mask3, kind=kind)) == 0.0
    with pytest.raises(ValueError):
        L.coordinate_loss(t, t, kind="l3")


def test_visibility_and_presence_losses():
    vis = (RNG.uniform(size=(B, P)) > 0.5).astype(np.float32)
    assert _val(L.visibility_loss(vis, _logit(vis))) < ZERO
    assert _val(L.visibility_loss(vis, _logit(1 - vis))) > 1.0
    soft = RNG.uniform(0.1, 0.9, (B, P)).astype(np.float32)  # teacher probabilities
    assert _val(L.binary_logit_loss(soft, _logit(soft))) < 1e-5
    assert _val(L.binary_logit_loss(soft, _logit(soft) + 1.0)) > 1e-3
    mask = np.zeros((B, P), np.float32)
    mask[0, 0] = 1
    flipped = vis.copy()
    flipped[:, 1:] = 1 - flipped[:, 1:]
    assert _val(L.visibility_loss(vis, _logit(flipped), mask)) < ZERO
    pres = np.array([[1.0], [0.0]], np.float32)
    assert _val(L.presence_loss(pres, pres)) < ZERO
    assert _val(L.presence_loss(pres, 1 - pres)) > 1.0
    assert _val(L.presence_loss(pres, np.full_like(pres, 0.5))) > 0.1
    assert _val(L.presence_loss(pres, 1 - pres, np.array([[0.0], [0.0]]))) == 0.0


def _perfect_outputs(targets: dict, input_size: int) -> dict:
    xyz = np.asarray(targets["coords"]) * input_size
    vis = _logit(np.asarray(targets["visibility"]))
    pres = _logit(np.asarray(targets["point_presence"]))
    landmarks = np.concatenate([xyz, vis[..., None], pres[..., None]], axis=-1).reshape(xyz.shape[0], -1)
    return {"landmarks": landmarks, "presence": np.asarray(targets["presence"]),
            "heatmap": _logit(np.asarray(targets["heatmap"])), "offsets": np.asarray(targets["offsets"])}


def test_tracker_loss_end_to_end_and_masks():
    size = 128
    kp = RNG.uniform(0, size, (B, P, 3)).astype(np.float32)
    avail = np.ones((B, P), np.float32)
    avail[1, 3] = 0
    targets = dict(tracker_targets(kp, avail, input_size=size))
    hm, off, omask = encode_heatmaps(kp, avail, heatmap_size=32, input_size=size)
    targets.update(heatmap=hm, offsets=off, offset_mask=omask)
    out = _perfect_outputs(targets, size)
    total, terms = L.tracker_loss(targets, out, input_size=size)
    assert set(terms) == {"coordinates", "visibility", "point_presence", "presence", "heatmap", "offsets"}
    for name, value in terms.items():
        assert _val(value) < 1e-5, name
    # an unannotated point may be predicted anywhere
    moved = dict(out)
    lm = out["landmarks"].reshape(B, P, 5).copy()
    lm[1, 3, :3] += 50.0
    lm[1, 3, 3:] = -7.0
    moved["landmarks"] = lm.reshape(B, -1)
    hmw = out["heatmap"].copy()
    hmw[1, ..., 3] = 3.0
    moved["heatmap"] = hmw
    assert _val(L.tracker_loss(targets, moved, input_size=size)[0]) < 1e-4
    # ... but an annotated one may not; list outputs work too
    lm[0, 3, 0] += 20.0
    moved["landmarks"] = lm.reshape(B, -1)
    order = [moved[k] for k in ("landmarks", "presence", "heatmap", "offsets")]
    total, terms = L.tracker_loss(targets, order, input_size=size)
    assert _val(terms["coordinates"]) > 0 and _val(total) > 0
    # inference outputs (no heatmap) and targets without heatmaps: regression terms only
    _, terms2 = L.tracker_loss({k: v for k, v in targets.items() if k not in ("heatmap", "offsets")},
                               order[:2], input_size=size)
    assert "heatmap" not in terms2 and "offsets" not in terms2


# ----------------------------------------------------------------------------------------------- detector
def _labels():
    labels = np.zeros((B, 50), np.int32)
    labels[0, :3] = 1
    labels[0, 3:6] = -1
    labels[1, 10] = 1
    return labels


@pytest.mark.parametrize("kind", ["focal", "ohem"])
def test_detector_classification(kind):
    labels = _labels()
    perfect = np.where(labels > 0, 40.0, -40.0).astype(np.float32)[..., None]
    assert _val(L.detector_classification_loss(labels, perfect, kind)) < ZERO
    wrong = -perfect
    assert _val(L.detector_classification_loss(labels, wrong, kind)) > 1.0
    # ignored anchors cost nothing
    ign = perfect.copy()
    ign[0, 3:6] = 40.0
    assert _val(L.detector_classification_loss(labels, ign, kind)) < ZERO
    # one confident false positive costs something
    fp = perfect.copy()
    fp[1, 30] = 40.0
    assert _val(L.detector_classification_loss(labels, fp, kind)) > 1.0
    with pytest.raises(ValueError):
        L.detector_classification_loss(labels, perfect, "softmax")


def test_hard_negative_mining_keeps_the_hardest():
    labels = np.zeros((1, 100), np.int32)
    labels[0, 0] = 1
    logits = np.full((1, 100, 1), -40.0, np.float32)
    logits[0, 0] = 40.0
    logits[0, 50:60] = 3.0  # 10 hard negatives; only max(3·1, 4) = 4 are kept
    loss = _val(L.hard_negative_loss(labels, logits, neg_pos_ratio=3.0, min_negatives=4))
    ce = float(np.log1p(np.exp(3.0)))
    assert loss == pytest.approx(4 * ce, rel=1e-4)


def test_detector_regression_and_total():
    t = RNG.normal(0, 30, (B, 50, 12)).astype(np.float32)
    mask = np.zeros((B, 50, 12), np.float32)
    mask[0, :3] = 1
    mask[0, :3, 8:] = 0  # kp2, kp3 not available
    assert _val(L.detector_regression_loss(t, t, mask)) == 0.0
    bad = t.copy()
    bad[0, :3, 8:] += 100.0  # only unavailable keypoints wrong
    bad[1] += 100.0  # and negatives
    assert _val(L.detector_regression_loss(t, bad, mask)) == 0.0
    bad[0, 0, 0] += 22.4
    assert _val(L.detector_regression_loss(t, bad, mask)) > 0
    assert _val(L.detector_regression_loss(t, bad, np.zeros_like(mask))) == 0.0


def test_detector_loss_with_assigned_targets():
    kp = np.zeros((1, 33, 2), np.float32)
    kp[0, :, 0] = np.linspace(0.4, 0.6, 33)
    kp[0, :, 1] = np.linspace(0.2, 0.8, 33)
    kp[0, 23:25] = [[0.45, 0.6], [0.55, 0.6]]
    kp[0, 11:13] = [[0.43, 0.4], [0.57, 0.4]]
    reg, labels, mask = detector_targets(kp, np.ones((1, 33)))
    scores = np.where(labels > 0, 40.0, -40.0).astype(np.float32)[None, :, None]
    total, terms = L.detector_loss(labels[None], reg[None], mask[None], [reg[None], scores])
    assert _val(total) < ZERO and set(terms) == {"classification", "regression"}
    total2, _ = L.detector_loss(labels[None], reg[None], mask[None], {"regressors": reg[None] + 5.0,
                                                                        "scores": scores}, classification="ohem")
    assert _val(total2) > 0
