"""Tests for keypoint topologies: names, flip permutation, edges, name mappings and torso size."""
from __future__ import annotations

import math

import numpy as np
import pytest

from blazepose_tf.topology import BLAZEPOSE_33, COCO_17, Topology, get_topology, torso_size

LSPET_NAMES = ("right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "right_wrist",
               "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist", "neck", "head_top")


def test_blazepose33_has_33_unique_names_in_model_order():
    names = BLAZEPOSE_33.keypoints
    assert BLAZEPOSE_33.num_keypoints == 33
    assert len(set(names)) == 33
    # Anchors of the official output order (MediaPipe's PoseLandmark enum).
    assert names[0] == "nose"
    assert names[11:13] == ("left_shoulder", "right_shoulder")
    assert names[23:25] == ("left_hip", "right_hip")
    assert names[31:33] == ("left_foot_index", "right_foot_index")
    assert BLAZEPOSE_33.index("right_hip") == 24
    with pytest.raises(KeyError, match="neck"):
        BLAZEPOSE_33.index("neck")


@pytest.mark.parametrize("topology", [BLAZEPOSE_33, COCO_17], ids=lambda t: t.name)
def test_flip_permutation_swaps_left_and_right(topology):
    perm = topology.flip_indices
    names = topology.keypoints
    assert sorted(perm.tolist()) == list(range(topology.num_keypoints))  # a permutation
    assert np.array_equal(perm[perm], np.arange(topology.num_keypoints))  # an involution
    for i, name in enumerate(names):
        if "left" in name:
            assert names[perm[i]] == name.replace("left", "right"), name
        elif "right" in name:
            assert names[perm[i]] == name.replace("right", "left"), name
        else:
            assert perm[i] == i, name
    pairs = topology.flip_pairs
    n_left = sum("left" in n for n in names)
    assert len(pairs) == n_left
    for a, b in pairs:
        assert a < b and perm[a] == b and perm[b] == a


def test_flip_of_blazepose_has_unpaired_nose_only():
    perm = BLAZEPOSE_33.flip_indices
    fixed = [BLAZEPOSE_33.keypoints[i] for i in range(33) if perm[i] == i]
    assert fixed == ["nose"]
    # mouth_left / mouth_right use the suffix form.
    assert perm[BLAZEPOSE_33.index("mouth_left")] == BLAZEPOSE_33.index("mouth_right")


def test_flipping_keeps_skeleton_edges():
    # Mirroring the names of an edge's ends must give another edge of the skeleton.
    for topology in (BLAZEPOSE_33, COCO_17):
        perm = topology.flip_indices
        edges = {frozenset(e) for e in topology.edges}
        for a, b in topology.edges:
            assert frozenset((int(perm[a]), int(perm[b]))) in edges, (topology.name, a, b)


@pytest.mark.parametrize("topology", [BLAZEPOSE_33, COCO_17], ids=lambda t: t.name)
def test_edges_in_range_and_not_degenerate(topology):
    assert len(topology.edges) > 0
    for a, b in topology.edges:
        assert 0 <= a < topology.num_keypoints and 0 <= b < topology.num_keypoints
        assert a != b
    # Every body point of the skeleton is connected to something.
    touched = {i for e in topology.edges for i in e}
    assert touched == set(range(topology.num_keypoints))


def test_out_of_range_edge_rejected():
    with pytest.raises(ValueError, match="out of range"):
        Topology("bad", ("a", "b"), edges=((0, 2),))
    with pytest.raises(ValueError, match="out of range"):
        Topology("bad", ("a", "b"), edges=((-1, 1),))


def test_duplicate_names_rejected():
    with pytest.raises(ValueError, match="duplicate"):
        Topology("dup", ("nose", "left_eye", "nose"))


def test_coco17_maps_fully_by_name():
    # For each COCO keypoint, the BlazePose index with the same name.
    idx = BLAZEPOSE_33.mapping_to(COCO_17)
    assert idx.shape == (17,)
    assert (idx >= 0).all()
    for j, name in enumerate(COCO_17.keypoints):
        assert BLAZEPOSE_33.keypoints[idx[j]] == name
    # Reverse direction: 17 of the 33 BlazePose points come from COCO.
    back = BLAZEPOSE_33.mapping_from(COCO_17.keypoints)
    assert back.shape == (33,)
    assert int((back >= 0).sum()) == 17
    for i in np.nonzero(back >= 0)[0]:
        assert COCO_17.keypoints[back[i]] == BLAZEPOSE_33.keypoints[i]


def test_lspet_like_mapping_finds_12_of_14():
    lspet = Topology("lspet14", LSPET_NAMES)
    # Each LSPET point's BlazePose index.
    to_lspet = BLAZEPOSE_33.mapping_to(lspet)
    assert to_lspet.shape == (14,)
    assert int((to_lspet >= 0).sum()) == 12
    assert to_lspet[LSPET_NAMES.index("neck")] == -1
    assert to_lspet[LSPET_NAMES.index("head_top")] == -1
    for j, name in enumerate(LSPET_NAMES):
        if to_lspet[j] >= 0:
            assert BLAZEPOSE_33.keypoints[to_lspet[j]] == name
    # Each BlazePose point's LSPET index: 12 found, the others -1.
    from_lspet = BLAZEPOSE_33.mapping_from(LSPET_NAMES)
    assert int((from_lspet >= 0).sum()) == 12
    assert from_lspet[BLAZEPOSE_33.index("left_wrist")] == LSPET_NAMES.index("left_wrist")
    assert from_lspet[BLAZEPOSE_33.index("nose")] == -1


def test_get_topology():
    assert get_topology("blazepose33") is BLAZEPOSE_33
    assert get_topology("coco17") is COCO_17
    with pytest.raises(KeyError, match="unknown topology"):
        get_topology("nope")


def _skeleton() -> np.ndarray:
    pts = np.zeros((33, 3))
    pts[BLAZEPOSE_33.index("left_shoulder")] = (70, 40, 0)
    pts[BLAZEPOSE_33.index("right_shoulder")] = (30, 44, 0)
    pts[BLAZEPOSE_33.index("left_hip")] = (62, 110, 0)
    pts[BLAZEPOSE_33.index("right_hip")] = (40, 106, 0)
    return pts


def test_torso_size_mid_torso():
    pts = _skeleton()
    mid_sh = np.array([(70 + 30) / 2, (40 + 44) / 2])
    mid_hip = np.array([(62 + 40) / 2, (110 + 106) / 2])
    expected = math.hypot(*(mid_sh - mid_hip))
    assert torso_size(pts) == pytest.approx(expected)
    # Translation invariant, scales linearly.
    assert torso_size(pts * 3 + 5) == pytest.approx(3 * expected)


def test_torso_size_diagonal():
    pts = _skeleton()
    ls_rh = math.hypot(70 - 40, 40 - 106)
    rs_lh = math.hypot(30 - 62, 44 - 110)
    assert ls_rh != pytest.approx(rs_lh)  # the max matters
    assert torso_size(pts, diagonal=True) == pytest.approx(max(ls_rh, rs_lh))
    # Swap so that the other diagonal is the longer one.
    pts2 = pts.copy()
    pts2[[11, 12, 23, 24]] = pts[[12, 11, 24, 23]]
    assert torso_size(pts2, diagonal=True) == pytest.approx(max(ls_rh, rs_lh))


def test_torso_size_on_coco17_topology():
    pts = np.zeros((17, 2))
    pts[COCO_17.index("left_shoulder")] = (60, 50)
    pts[COCO_17.index("right_shoulder")] = (40, 50)
    pts[COCO_17.index("left_hip")] = (58, 100)
    pts[COCO_17.index("right_hip")] = (42, 100)
    assert torso_size(pts, COCO_17) == pytest.approx(50.0)
    assert torso_size(pts, COCO_17, diagonal=True) == pytest.approx(math.hypot(18, 50))
