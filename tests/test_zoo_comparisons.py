"""The model-zoo table's paired comparisons (benchmarks/zoo_comparisons.py), on stand-in pipeline results."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from benchmarks import zoo_comparisons as zc

ALL = ["official_detector", "official_full", "official_lite", "detector", "full", "lite"]


def _result(per_person):
    total = sum(n for _, n in per_person)
    correct = sum(c for c, _ in per_person)
    return SimpleNamespace(pck=SimpleNamespace(pck=100.0 * correct / total, per_person=per_person))


def _evaluator(scores):
    calls = []

    def evaluate(detector, landmarks):
        calls.append((detector, landmarks))
        return _result(scores[(detector, landmarks)])
    return evaluate, calls


def test_measure_pairs_the_same_people():
    base = [(5, 10), (2, 10), (0, 12)]
    better = [(7, 10), (3, 10), (0, 12)]
    scores = {(d, t): (better if "full" in t and not t.startswith("official") or t == "lite" else base)
              for d in ("official_detector", "detector") for t in ("official_full", "official_lite", "full", "lite")}
    evaluate, calls = _evaluator(scores)
    out = zc.measure(ALL, lambda k: k, evaluate)
    assert [c.what for c in out] == [what for what, _, _ in zc.COMPARISONS]
    full_set = out[0]
    assert full_set.ours == pytest.approx(100 * 10 / 32) and full_set.official == pytest.approx(100 * 7 / 32)
    assert full_set.difference == pytest.approx(100 * 3 / 32) and full_set.people == 3
    assert full_set.difference == pytest.approx(full_set.ours - full_set.official)
    lo, hi = full_set.interval
    assert lo <= full_set.difference <= hi
    assert out[-1].difference == 0.0 and out[-1].interval == [0.0, 0.0]   # the detector row: same scores
    assert ("official_detector", "official_full") in calls and ("detector", "lite") in calls
    # Only comparisons whose four models are in the run: the Lite alone leaves the two Lite rows.
    evaluate, calls = _evaluator(scores)
    lite = zc.measure(["lite", "detector", "official_full", "official_detector", "official_lite"], lambda k: k,
                      evaluate)
    assert [c.what for c in lite] == [zc.COMPARISONS[i][0] for i in (2, 3, 4)]
    assert all("full" not in t or t == "official_full" for _, t in calls)
    assert zc.measure(["lite", "detector", "official_full"], lambda k: k, evaluate) == []


def test_measure_refuses_different_people():
    evaluate, _ = _evaluator({("official_detector", "official_full"): [(1, 4), (2, 4)],
                              ("detector", "full"): [(1, 4)]})
    with pytest.raises(ValueError, match="same non-empty people"):
        zc.measure(["official_detector", "official_full", "detector", "full"], lambda k: k, evaluate)


def test_section_and_table_render():
    c = zc.Comparison("Lite set", 48.5, 43.8, 4.76, [2.63, 6.91], 291)
    lines = zc.section([c], "test")
    text = "\n".join(lines)
    assert "same 291 people of split `test`" in text
    assert "| Lite set | 48.50 | 43.80 | +4.76 | [+2.63, +6.91] |" in lines
    assert zc.section([], "test") == []
    from benchmarks.zoo_table import render

    info = {"machine": {"cpu": "x", "logical_cpus": 2, "load_1min": 0.1, "ai-edge-litert": "1", "tensorflow": "2",
                        "python": "3"}, "command": "python -m benchmarks.model_zoo", "date": "d", "commit": None,
            "runs": 1, "dataset": "d", "num_images": 291, "limit": 0, "split": "test", "int8": False,
            "crop_pck": False, "yoga_images": 0, "zoo": {}, "comparisons": zc.as_json([c])}
    zoo_md = render([], info)
    assert "## Ours against the official models (paired)" in zoo_md and "+4.76" in zoo_md
    assert "paired" not in render([], {**info, "comparisons": []})

