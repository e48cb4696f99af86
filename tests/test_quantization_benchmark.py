"""benchmarks/quantization.py's verdicts: the int8 drop against fp32 with its paired interval."""
from __future__ import annotations

from benchmarks import quantization as q


def _row(variant, pck, share=1.0, latency=1.0, vs=None):
    return q.Row(model="zoo_lite", variant=variant, pck={"test": pck}, detection_rate={"test": 90.0},
                 int8_mac_share=share, latency_ms=latency, vs_fp32={"test": vs} if vs else {})


def test_verdict_reports_the_interval():
    rows = [_row("fp32", 48.1), _row("fp16", 48.1, 0.0, 3.2),
            _row("int8-selective", 46.9, 0.986, 1.8, vs=[-1.25, -2.16, -0.30])]
    [(model, met, text)] = q.verdicts(rows, "test")
    assert model == "zoo_lite" and not met
    assert "test PCK -1.20 [-2.16, -0.30] vs fp32 (target >= -1) FAIL" in text
    rows[2] = _row("int8-selective", 47.6, 0.986, 1.8)   # no interval measured (an older table): none shown
    [(_, met, text)] = q.verdicts(rows, "test")
    assert met and "test PCK -0.50 vs fp32" in text
