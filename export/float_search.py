"""Which ops an int8 model keeps in float (``--float_layers auto|N``, :mod:`export.int8_export` step 4).

* **Candidates** (:func:`float_candidates`): one per activation tensor (:class:`export.int8_graph.FloatGroup`: its
  producer and consumers), and one per *tail* of the network: every op whose output has at most S positions
  (H×W ≤ S, a vector counting as one), for each S the graph has but the largest. int8 error compounds through the
  last, low-resolution layers, where no single tensor removes much of it on its own: on the zoo's Lite, keeping its 2×2
  and 1×1 ops float (0.55% of its MACs) takes the keypoint error on 64 calibration crops from 16.0 to 4.9 px and the
  LSPET dev pipeline PCK from 15.8 to 46.7 (fp32 48.0), as much as the 23 single tensors ranked alone had reached at
  the 20% MAC budget.
* **Greedy search** (:func:`greedy_float_sets`): start with every op in int8; each round, measure the task error
  with each candidate added to the float set and add the one that removes the most error per float MAC it adds
  (the MACs floored at :data:`MIN_MAC_SHARE` of the model's, so that ops without MACs do not win by dividing by
  zero); stop when no candidate lowers the error within the MAC budget, or after :data:`MAX_ROUNDS`. Gains are
  measured again every round (a tensor's gain depends on what is already float): the tails and the
  :data:`RECHECK` candidates that helped most when last measured (all of them in the first round).

The search returns the growing float sets, one per round; :mod:`export.int8_export` then picks among them by
pipeline PCK.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

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
    """Spatial positions of an op's output: H×W of an NHWC tensor, 1 for anything else (a vector)."""
    return int(np.prod(node.shape[1:3])) if len(node.shape) == 4 else 1


def float_candidates(graph: CalibratedGraph) -> list[Candidate]:
    """One candidate per activation tensor (label: its producer's layer), then one per tail (label ``tail<=S``:
    every tensor candidate whose producer's output has at most S positions, for every S but the largest), smallest
    tail first."""
    groups = float_groups(graph)
    out = [Candidate(g.layer, {n.index: n for n in g.nodes}) for g in groups]
    for size in sorted({positions(g.nodes[0]) for g in groups})[:-1]:   # the largest would be the whole model
        tail: dict[int, Node] = {}
        for g in groups:
            if positions(g.nodes[0]) <= size:
                tail.update({n.index: n for n in g.nodes})
        out.append(Candidate(f"tail<={size}", tail))
    return out


def greedy_float_sets(candidates: Sequence[Candidate], error_of: ErrorOf, total_macs: int, budget_macs: float,
                      log: Callable[[str], None] = print, recheck: int = RECHECK,
                      max_rounds: int = MAX_ROUNDS) -> tuple[float, list[FloatStep]]:
    """The all-int8 task error and the greedy search's rounds (see the module docstring): the float set grows by
    one candidate per round, always within ``budget_macs`` float MACs."""
    chosen: dict[int, Node] = {}
    base = error_of([])
    start = base
    last_gain: list[Optional[float]] = [None] * len(candidates)
    floor = max(MIN_MAC_SHARE * total_macs, 1.0)
    steps: list[FloatStep] = []
    log(f"int8: float layers: greedy search over {len(candidates)} candidates (all-int8 error {base:.3g}) ...")
    for _ in range(max_rounds):
        used = sum(n.macs for n in chosen.values())
        pool = [k for k, c in enumerate(candidates)
                if not c.nodes.keys() <= chosen.keys()
                and used + sum(n.macs for i, n in c.nodes.items() if i not in chosen) <= budget_macs]
        fresh = [k for k in pool if last_gain[k] is None or candidates[k].label.startswith("tail<=")]
        known = sorted((k for k in pool if k not in fresh), key=lambda k: -(last_gain[k] or 0.0))
        best, best_score = None, 0.0
        for k in fresh + known[:recheck]:
            union = {**chosen, **candidates[k].nodes}
            gain = base - error_of([n.name for n in union.values()])
            last_gain[k] = gain
            score = gain / max(sum(n.macs for n in union.values()) - used, floor)
            if gain > 0 and score > best_score:
                best, best_score = k, score
        if best is None:
            break
        chosen.update(candidates[best].nodes)
        base -= last_gain[best] or 0.0
        steps.append(FloatStep(candidates[best].label, [chosen[i] for i in sorted(chosen)], base))
        log(f"  round {len(steps)}: + {candidates[best].label}: error {base:.3g}, "
            f"{100 * steps[-1].float_macs / max(total_macs, 1):.2f}% of the MACs float")
    return start, steps
