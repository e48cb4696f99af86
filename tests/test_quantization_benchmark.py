"""benchmarks/quantization.py: each file's paired difference to its model's fp32 file, and the verdicts."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from benchmarks import quantization as q
from blazepose_tf.errors import UserError


def _row(variant, pck, share=1.0, latency=1.0, vs=None):
    return q.Row(model="zoo_lite", variant=variant, path=variant, pck={"test": pck}, detection_rate={"test": 90.0},
                 int8_mac_share=share, latency_ms=latency, vs_fp32={"test": vs} if vs else {})


def test_evaluate_rows_pairs_each_file_with_fp32(monkeypatch):
    people = {"fp32": [(6, 10), (4, 10), (8, 12)], "int8-selective": [(5, 10), (4, 10), (6, 12)],
              "fp16": [(6, 10), (4, 10), (8, 12)]}

    class Scorer:   # stands in for export.pipeline_score.PipelineScorer: per-person points per file
        def __init__(self, spec, detector):
            assert spec == "lspet:test" and detector == "official"

        def evaluate(self, path):
            rows = people[path]
            counts = SimpleNamespace(pck=100.0 * sum(c for c, _ in rows) / sum(n for _, n in rows),
                                     detection_rate=100.0, per_person=rows)
            return SimpleNamespace(pck=counts)

    import export.pipeline_score

    monkeypatch.setattr(export.pipeline_score, "PipelineScorer", Scorer)
    monkeypatch.setattr(q, "FLAGS", SimpleNamespace(dataset="lspet", detector="official"))
    rows = [q.Row(model="zoo_lite", variant=v, path=v) for v in ("fp32", "fp16", "int8-selective")]
    q.evaluate_rows(rows, ["test"])
    fp32, fp16, sel = rows
    assert fp32.vs_fp32 == {} and fp16.vs_fp32["test"] == [0.0, 0.0, 0.0]
    delta, lo, hi = sel.vs_fp32["test"]
    assert delta == pytest.approx(sel.pck["test"] - fp32.pck["test"]) == pytest.approx(-100 * 3 / 32)
    assert lo <= delta <= hi <= 0.0   # int8 never better than fp32 on any person here


def test_verdict_reports_the_interval():
    rows = [_row("fp32", 48.13), _row("fp16", 48.13, 0.0, 3.2),
            _row("int8-selective", 46.88, 0.986, 1.8, vs=[-1.25, -2.16, -0.30])]
    [(model, met, text)] = q.verdicts(rows, "test")
    assert model == "zoo_lite" and not met
    assert "test PCK -1.25 [-2.16, -0.30] vs fp32 (target >= -1) FAIL" in text
    rows[2] = _row("int8-selective", 47.63, 0.986, 1.8)   # no interval measured (an older table): none shown
    [(_, met, text)] = q.verdicts(rows, "test")
    assert met and "test PCK -0.50 vs fp32" in text


def test_splits_are_checked_before_any_export(tmp_path):
    (tmp_path / "splits.json").write_text(json.dumps({"train": [1], "dev": [2], "test": [3]}))
    q.check_splits(str(tmp_path), "dev", "test")
    with pytest.raises(UserError, match="unknown split 'nope'.*known splits: dev, test, train"):
        q.check_splits(str(tmp_path), "dev", "nope")
    for choose, report in (("test", "dev"), ("dev", "dev")):   # choices never made on the reported split or test
        with pytest.raises(UserError, match="choices are made on one split"):
            q.check_splits(str(tmp_path), choose, report)
    with pytest.raises(UserError, match="splits file not found"):
        q.check_splits(str(tmp_path / "absent"), "dev", "test")
