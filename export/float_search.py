"""Which ops an int8 model keeps in float (``--float_layers auto|N``, :mod:`export.int8_export` step 4).

* **Candidates** (:func:`float_candidates`): one per activation tensor (:class:`export.int8_graph.FloatGroup`: its
  producer and consumers), and one per *tail* of the network: the tensor candidates whose producer's output has at
  most S positions (H×W ≤ S, a vector counting as one), for each S the graph has but the largest. int8 error
  compounds through the last, low-resolution layers, where no single tensor removes much of it on its own: on the
  zoo's Lite, keeping its 2×2 and 1×1 ops float (0.55% of its MACs) takes the keypoint error on 64 calibration crops
  from 16.0 to 4.9 px and the LSPET dev pipeline PCK from 15.8 to 46.7 (fp32 48.0), as much as the 23 single tensors
  ranked alone had reached at the 20% MAC budget.
* **Greedy search** (:func:`greedy_float_sets`): start with every op in int8; each round, measure the task error
  with a candidate added to the float set, and add the one that removes the most error per float MAC it adds (the
  MACs floored at :data:`MIN_MAC_SHARE` of the model's, so that ops without MACs do not win by dividing by zero).
  A round measures the tails, the candidates never measured yet (all of them in the first round) and the
  :data:`RECHECK` others that scored best (error removed per MAC) when last measured, since a tensor's gain depends
  on what is already float; when none of those lowers the error, it measures the next :data:`RECHECK`, and so on
  through every candidate that fits the budget. It stops when no candidate that fits lowers the error, when none
  fits the MAC budget, or after :data:`MAX_ROUNDS`.

The search returns the growing float sets, one per round; :mod:`export.int8_export` then picks among them by
pipeline PCK.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from export.conversion import ConversionError
from export.int8_graph import CalibratedGraph, Node, float_groups

MIN_MAC_SHARE = 0.002
RECHECK = 40
MAX_ROUNDS = 64

ErrorOf = Callable[[Sequence[str]], float]   # task error of the int8 model with these node names in float


@dataclass
class Candidate:
    """Ops that may be kept float together."""

    label: str
    nodes: dict[int, Node]     # by op index


@dataclass
class FloatStep:
    """One round of the greedy search: the candidate it added, the float ops after it, and the task error."""

    added: str
    nodes: list[Node]
    error: float

    @property
    def float_macs(self) -> int:
        return sum(n.macs for n in self.nodes)


def positions(node: Node) -> int:
    """Spatial positions of an op's output: H×W of an NHWC tensor, 1 for anything else (a vector, or a detector's
    rows of anchors: for a detector the smallest tail is its outputs' ops)."""
    return int(np.prod(node.shape[1:3])) if len(node.shape) == 4 else 1


def float_candidates(graph: CalibratedGraph) -> list[Candidate]:
    """One candidate per activation tensor (label: its producer's layer), then one per tail (label ``tail<=S``:
    every tensor candidate whose producer's output has at most S positions, for every S but the largest), smallest
    tail first."""
    groups = float_groups(graph)    # a group's first node is its producer: TFLite orders ops producers first
    out = [Candidate(g.layer, {n.index: n for n in g.nodes}) for g in groups]
    for size in sorted({positions(g.nodes[0]) for g in groups})[:-1]:   # the largest would be the whole model
        tail: dict[int, Node] = {}
        for g in groups:
            if positions(g.nodes[0]) <= size:
                tail.update({n.index: n for n in g.nodes})
        out.append(Candidate(f"tail<={size}", tail))
    return out


@dataclass
class FloatSearch:
    """What :func:`greedy_float_sets` found: the all-int8 task error, the rounds, and why it stopped (``budget``:
    no candidate left within the MAC budget; ``no gain``: no candidate within it lowers the error; ``max rounds``)."""

    start: float
    steps: list[FloatStep]
    stopped: str


def greedy_float_sets(candidates: Sequence[Candidate], error_of: ErrorOf, total_macs: int, budget_macs: float,
                      log: Callable[[str], None] = print, recheck: int = RECHECK,
                      max_rounds: int = MAX_ROUNDS) -> FloatSearch:
    """The greedy search (see the module docstring): the float set grows by one candidate per round, always within
    ``budget_macs`` float MACs.

    Raises:
        ConversionError: the all-int8 model's task error is not finite (its outputs hold NaN or infinity).
    """
    chosen: dict[int, Node] = {}
    base = start = error_of([])
    if not math.isfinite(start):
        raise ConversionError(f"the int8 model's outputs are not finite (task error {start}): cannot choose float "
                              "layers")
    last_score: list[Optional[float]] = [None] * len(candidates)   # error removed per MAC when last measured
    floor = max(MIN_MAC_SHARE * total_macs, 1.0)
    steps: list[FloatStep] = []
    stopped = "max rounds"
    log(f"int8: float layers: greedy search over {len(candidates)} candidates (all-int8 error {base:.3g}) ...")
    for _ in range(max_rounds):
        used = sum(n.macs for n in chosen.values())
        added = {k: sum(n.macs for i, n in c.nodes.items() if i not in chosen) for k, c in enumerate(candidates)
                 if not c.nodes.keys() <= chosen.keys()}           # float MACs each would add
        pool = [k for k, macs in added.items() if used + macs <= budget_macs]
        if not pool:
            stopped = "budget"
            break
        fresh = [k for k in pool if last_score[k] is None or candidates[k].label.startswith("tail<=")]
        known = sorted((k for k in pool if k not in fresh), key=lambda k: -(last_score[k] or 0.0))
        best, best_score, best_error = None, 0.0, base
        batches = [fresh + known[:recheck]] + [known[i:i + recheck] for i in range(recheck, len(known), recheck)]
        for batch in batches:
            for k in batch:
                union = {**chosen, **candidates[k].nodes}
                error = error_of([n.name for n in union.values()])
                gain = base - error if math.isfinite(error) else -math.inf
                score = last_score[k] = gain / max(added[k], floor)
                if gain > 0 and score > best_score:
                    best, best_score, best_error = k, score, error
            if best is not None:
                break
        if best is None:
            stopped = "no gain"
            break
        chosen.update(candidates[best].nodes)
        base = best_error
        steps.append(FloatStep(candidates[best].label, [chosen[i] for i in sorted(chosen)], base))
        log(f"  round {len(steps)}: + {candidates[best].label}: error {base:.3g}, "
            f"{100 * steps[-1].float_macs / max(total_macs, 1):.2f}% of the MACs float")
    return FloatSearch(start, steps, stopped)
