"""Parses the output of TFLite's ``benchmark_model`` tool into timings (milliseconds).

The lines it relies on::

    The input model file size (MB): 6.4
    Initialized session in 40.2ms.
    Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
    count=26 first=45129 curr=18432 min=18101 max=45129 avg=19537.2 std=5251          <- warm-up
    Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
    count=54 first=18570 curr=18352 min=17953 max=19620 avg=18471.3 std=329           <- steady state
    Inference timings in us: Init: 40211, First inference: 45129, Warmup (avg): 19537.2, Inference (avg): 18471.3

The summary line is required; the rest is optional.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Optional

_NUM = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
SUMMARY = re.compile(r"Inference timings in us:\s*Init:\s*" + _NUM + r"\s*,\s*First inference:\s*" + _NUM +
                     r"\s*,\s*Warmup \(avg\):\s*" + _NUM + r"\s*,\s*Inference \(avg\):\s*" + _NUM)
COUNT = re.compile(r"count=(\d+)\s+first=" + _NUM + r"\s+curr=" + _NUM + r"\s+min=" + _NUM + r"\s+max=" + _NUM +
                   r"\s+avg=" + _NUM + r"\s+std=" + _NUM)
MODEL_SIZE = re.compile(r"The input model file size \(MB\):\s*" + _NUM)
INIT_SESSION = re.compile(r"Initialized session in\s*" + _NUM + r"\s*ms")
NUM_THREADS = re.compile(r"Num threads:\s*\[?\s*(\d+)")
PEAK_MEMORY = re.compile(r"Overall peak memory footprint \(MB\) via periodic monitoring:\s*" + _NUM)


class BenchmarkParseError(ValueError):
    """The output has no recognisable timing summary."""


@dataclass
class BenchmarkTimings:
    """Timings of one benchmark run, in milliseconds (counts are iterations)."""

    init_ms: float
    first_inference_ms: float
    warmup_avg_ms: float
    inference_avg_ms: float
    inference_std_ms: Optional[float] = None
    inference_min_ms: Optional[float] = None
    inference_max_ms: Optional[float] = None
    inference_count: Optional[int] = None
    warmup_count: Optional[int] = None
    model_size_mb: Optional[float] = None
    num_threads: Optional[int] = None
    peak_memory_mb: Optional[float] = None

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def parse_benchmark_output(text: str) -> BenchmarkTimings:
    """Timings from ``benchmark_model``'s output (stdout and stderr together)."""
    summary = list(SUMMARY.finditer(text))
    if not summary:
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        start = " | ".join(lines[:3])[:200] if lines else "no output at all"
        raise BenchmarkParseError(f"no 'Inference timings in us: ...' line in the benchmark output "
                                  f"(it starts: {start})")
    init, first, warm, avg = (float(v) / 1e3 for v in summary[-1].groups())
    timings = BenchmarkTimings(init_ms=init, first_inference_ms=first, warmup_avg_ms=warm, inference_avg_ms=avg)
    counts = list(COUNT.finditer(text))
    if counts:
        steady = counts[-1]
        timings.inference_count = int(steady.group(1))
        timings.inference_min_ms = float(steady.group(4)) / 1e3
        timings.inference_max_ms = float(steady.group(5)) / 1e3
        timings.inference_std_ms = float(steady.group(7)) / 1e3
        if len(counts) >= 2:
            timings.warmup_count = int(counts[0].group(1))
    for pattern, attr, cast in ((MODEL_SIZE, "model_size_mb", float), (NUM_THREADS, "num_threads", int),
                                (PEAK_MEMORY, "peak_memory_mb", float)):
        m = pattern.search(text)
        if m:
            setattr(timings, attr, cast(m.group(1)))
    return timings
