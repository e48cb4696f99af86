"""The float-layer search of int8 exports (export.float_search): tail candidates by resolution, and the greedy
rounds (gain per float MAC, re-measured each round, within the MAC budget). Synthetic error functions and a tiny
tracker only."""
from __future__ import annotations

import numpy as np
import pytest

from export.conversion import calibrate, prepare_model
from export.float_search import Candidate, float_candidates, greedy_float_sets, positions
from export.int8_graph import CalibratedGraph, Node, float_groups
from export_fixtures import tiny_tracker

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")


def _node(index: int, macs: int, hw: int = 4) -> Node:
    return Node(index=index, kind="CONV_2D", name=f"n{index}", layer=f"l{index}", output=100 + index, inputs=[],
                shape=(1, hw, hw, 8), macs=macs)


def _cand(label: str, *nodes: Node) -> Candidate:
    return Candidate(label, {n.index: n for n in nodes})


def test_tails_hold_every_tensor_at_or_below_their_resolution():
    prepared = prepare_model(tiny_tracker(), keep_heatmap=True)
    rng = np.random.default_rng(0)
    graph = CalibratedGraph(calibrate(prepared.model, [rng.uniform(0, 1, (1, 64, 64, 3)).astype(np.float32)]))
    cands = float_candidates(graph)
    groups = float_groups(graph)
    assert [c.label for c in cands[:len(groups)]] == [g.layer for g in groups]
    tails = cands[len(groups):]
    assert tails and all(c.label.startswith("tail<=") for c in tails)
    sizes = [int(c.label.split("<=")[1]) for c in tails]
    assert sizes == sorted(sizes) and sizes[0] == 1                  # the dense outputs: one position
    for size, tail in zip(sizes, tails):
        want = {n.index for g in groups if positions(g.nodes[0]) <= size for n in g.nodes}
        assert set(tail.nodes) == want
    biggest = max(positions(g.nodes[0]) for g in groups)
    assert sizes[-1] < biggest                                        # the whole model is never a candidate
    for small, big in zip(tails, tails[1:]):
        assert set(small.nodes) < set(big.nodes)


def test_greedy_takes_a_tail_whose_parts_help_only_together():
    a, b, c = _node(0, 10), _node(1, 10), _node(2, 10)               # the tail: float only as a whole helps
    cheap, dear = _node(3, 5), _node(4, 500)

    def error_of(names):
        s = set(names)
        e = 10.0
        if {"n0", "n1", "n2"} <= s:
            e -= 7.5
        if "n3" in s:
            e -= 1.0
        if "n4" in s:
            e -= 3.0
        return e

    cands = [_cand("a", a), _cand("b", b), _cand("c", c), _cand("cheap", cheap), _cand("dear", dear),
             _cand("tail<=16", a, b, c)]
    search = greedy_float_sets(cands, error_of, total_macs=1000, budget_macs=100, log=lambda *_: None)
    start, steps = search.start, search.steps
    assert start == 10.0 and search.stopped == "budget"              # only "dear" left, past the budget
    assert [s.added for s in steps] == ["tail<=16", "cheap"]          # "dear" is past the budget; a, b, c add nothing
    assert [s.error for s in steps] == [2.5, 1.5]
    assert {n.index for n in steps[-1].nodes} == {0, 1, 2, 3} and steps[-1].float_macs == 35


def test_greedy_ranks_by_gain_per_mac_and_measures_gains_again():
    x, y, z = _node(0, 100), _node(1, 10), _node(2, 10)

    def error_of(names):
        s = set(names)
        e = 10.0 - (4.0 if "n0" in s else 0.0) - (1.0 if "n1" in s else 0.0)
        if "n2" in s and "n1" not in s:                              # z's gain disappears once y is float
            e -= 1.0
        return e

    cands = [_cand("x", x), _cand("y", y), _cand("z", z)]
    calls = []
    steps = greedy_float_sets(cands, lambda n: calls.append(1) or error_of(n), total_macs=1000,
                              budget_macs=1000, log=lambda *_: None).steps
    assert steps[0].added in ("y", "z")                               # 1 per 10 MACs beats 4 per 100
    assert [s.added for s in steps][1:] == ["x"]                      # the other of y, z no longer helps
    assert steps[-1].error == 5.0 and len(calls) > len(cands) + 1     # measured again after each round


def test_zero_budget_keeps_only_free_ops_and_max_rounds_stops():
    free, paid = _node(0, 0), _node(1, 10)

    def error_of(names):
        return 5.0 - len(names)

    search = greedy_float_sets([_cand("free", free), _cand("paid", paid)], error_of, total_macs=100,
                               budget_macs=0, log=lambda *_: None)
    assert [s.added for s in search.steps] == ["free"] and search.steps[0].float_macs == 0
    assert search.stopped == "budget"
    many = [_cand(f"f{k}", _node(k, 0)) for k in range(5)]
    search = greedy_float_sets(many, error_of, total_macs=100, budget_macs=0, log=lambda *_: None, max_rounds=2)
    assert len(search.steps) == 2 and search.stopped == "max rounds"


def test_only_the_new_macs_of_an_overlapping_candidate_count_against_the_budget():
    shared, extra = _node(0, 60), _node(1, 30)

    def error_of(names):
        return 10.0 - (2.0 if "n0" in names else 0.0) - (0.5 if "n1" in names else 0.0)

    # "one" first (2 per 60 MACs against 2.5 per 90); then "both" holds the chosen op: it costs 30 more MACs (90 in
    # all), within a budget of 95, where counting all its 90 would have been past it.
    search = greedy_float_sets([_cand("one", shared), _cand("both", shared, extra)], error_of, total_macs=100,
                               budget_macs=95, log=lambda *_: None)
    assert [s.added for s in search.steps] == ["one", "both"]
    assert search.steps[-1].float_macs == 90 and search.stopped == "budget"


def test_recheck_bounds_the_candidates_measured_again():
    nodes = [_node(k, 10) for k in range(6)]
    measured = []

    def error_of(names):
        measured.append(frozenset(names))
        return 10.0 - sum(1.0 / (1 + int(n[1:])) for n in names)   # n0 helps most, n5 least; gains add up

    search = greedy_float_sets([_cand(f"c{k}", n) for k, n in enumerate(nodes)], error_of, total_macs=1000,
                               budget_macs=1000, log=lambda *_: None, recheck=2)
    # Round 1 measures all six; later rounds only the two best of the rest: the order stays by gain, and the
    # search ends on "budget" (every candidate taken), never on an unmeasured one.
    assert [s.added for s in search.steps] == [f"c{k}" for k in range(6)] and search.stopped == "budget"
    assert len(measured) == 1 + 6 + 2 + 2 + 2 + 2 + 1


def test_a_non_finite_int8_error_is_a_conversion_error():
    from export.conversion import ConversionError

    with pytest.raises(ConversionError, match="not finite"):
        greedy_float_sets([_cand("a", _node(0, 1))], lambda names: float("nan"), total_macs=10, budget_macs=10,
                          log=lambda *_: None)


def test_a_helpful_candidate_beyond_the_recheck_window_is_still_found():
    a, b, c = _node(0, 10), _node(1, 10), _node(2, 10)

    def error_of(names):
        s = set(names)
        if "n0" in s:                          # after a: b no longer helps, c still does (its first gain was least)
            return 5.0 - (1.0 if "n2" in s else 0.0) + (0.5 if "n1" in s else 0.0)
        return 10.0 - (5.0 if "n0" in s else 0.0) - (3.0 if "n1" in s else 0.0) - (1.0 if "n2" in s else 0.0)

    search = greedy_float_sets([_cand("a", a), _cand("b", b), _cand("c", c)], error_of, total_macs=1000,
                               budget_macs=1000, log=lambda *_: None, recheck=1)
    assert [s.added for s in search.steps] == ["a", "c"] and search.steps[-1].error == 4.0
    assert search.stopped == "no gain"                 # b, measured again last, only adds error


def test_stale_candidates_are_measured_again_in_order_of_error_removed_per_mac():
    cheap, dear, first = _node(0, 10), _node(1, 100), _node(2, 1)
    order = []

    def error_of(names):
        s = set(names)
        if "n2" in s and len(s) >= 2:           # measured after round 1 chose "first"
            order.append(tuple(sorted(s - {"n2"})))
        return 10.0 - (5.0 if "n2" in s else 0.0) - (1.0 if "n0" in s else 0.0) - (3.0 if "n1" in s else 0.0)

    greedy_float_sets([_cand("cheap", cheap), _cand("dear", dear), _cand("first", first)], error_of,
                      total_macs=1000, budget_macs=1000, log=lambda *_: None, recheck=1)
    # Round 1 measures all; "first" wins (5 per 2 MACs, the floor). Round 2 re-measures "cheap" (1 per 10) before
    # "dear" (3 per 100), though "dear" removed more.
    assert order == [("n0",), ("n0", "n1")]            # "dear" only in round 3, after "cheap" was taken
