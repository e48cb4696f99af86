"""The model-zoo table's paired comparisons: each of our models against the official one it replaces, on the same
people, with the uncertainty the ~300 scored images leave (:func:`blazepose_tf.metrics.paired_pck_delta`).

A difference of PCK@0.2 between two pipelines on a few hundred images moves by about a point from one sample of
images to another; the paired interval (people resampled, both pipelines' points kept together) says how far a
comparison can be trusted, e.g. whether an issue's "+5 points" target is met with room or at the edge of noise.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional, Sequence

from blazepose_tf.metrics import PAIRED_RESAMPLES, paired_pck_delta

#: (what is compared, our pipeline, the official pipeline); pipelines are (detector key, tracker key) of the
#: model-zoo table's models (:data:`benchmarks.model_zoo.MODELS`).
COMPARISONS: tuple[tuple[str, tuple[str, str], tuple[str, str]], ...] = (
    ("default set: our detector + our Full vs MediaPipe's detector + Full", ("detector", "full"),
     ("official_detector", "official_full")),
    ("our Full vs MediaPipe's Full, both behind MediaPipe's detector", ("official_detector", "full"),
     ("official_detector", "official_full")),
    ("Lite set: our detector + our Lite vs MediaPipe's detector + Lite", ("detector", "lite"),
     ("official_detector", "official_lite")),
    ("our Lite vs MediaPipe's Lite, both behind MediaPipe's detector", ("official_detector", "lite"),
     ("official_detector", "official_lite")),
    ("our detector vs MediaPipe's detector, both with MediaPipe's Full", ("detector", "official_full"),
     ("official_detector", "official_full")),
)


@dataclass
class Comparison:
    """One paired comparison: both pipelines' PCK@0.2 and ours − official with its 95 % interval."""

    what: str
    ours: float
    official: float
    difference: float
    interval: list[float]
    people: int


def measure(models: Sequence[str], shipped: Callable[[str], str], evaluate: Callable[[str, str], Any],
            log: Callable[[str], None] = lambda message: None) -> list[Comparison]:
    """The comparisons of :data:`COMPARISONS` whose four models are all in ``models`` (the run's models and their
    partners), each pipeline run by ``evaluate(detector path, landmarks path)`` (an
    :class:`~blazepose_tf.evaluation.EvaluationResult`) on the shipped files ``shipped(key)``. The model-zoo
    table passes its evaluator: pipelines its rows already ran (the fp16 rows are the shipped files) are reused,
    the others run here."""
    out = []
    for what, ours, official in COMPARISONS:
        if not set(ours + official) <= set(models):
            continue
        log(f"paired comparison: {what} ...")
        a = evaluate(*(shipped(k) for k in official))
        b = evaluate(*(shipped(k) for k in ours))
        delta, interval = paired_pck_delta(a.pck.per_person, b.pck.per_person)
        out.append(Comparison(what, float(b.pck.pck), float(a.pck.pck), delta, interval, len(a.pck.per_person)))
    return out


def section(comparisons: Sequence[Comparison], split: Optional[str]) -> list[str]:
    """The MODEL_ZOO.md lines of the comparisons (none without comparisons)."""
    if not comparisons:
        return []
    lines = ["## Ours against the official models (paired)", "",
             f"PCK@0.2 of the shipped (fp16) files in the pipeline, on the same {comparisons[0].people} people of "
             f"split `{split}`; difference = ours − official in points, with its 95 % paired bootstrap interval "
             f"(people resampled {PAIRED_RESAMPLES:,} times with both pipelines' points kept together): an interval "
             "that contains a target leaves the target's verdict to chance on this many images.", "",
             "| comparison | ours | official | difference | 95 % interval |", "|---|---:|---:|---:|---|"]
    for c in comparisons:
        lines.append(f"| {c.what} | {c.ours:.2f} | {c.official:.2f} | {c.difference:+.2f} | "
                     f"[{c.interval[0]:+.2f}, {c.interval[1]:+.2f}] |")
    return lines


def as_json(comparisons: Sequence[Comparison]) -> list[dict]:
    """JSON-friendly comparisons (the table's ``--json``)."""
    return [asdict(c) for c in comparisons]
