"""The ``--host`` mode of the harness: the same timings as ``benchmark_model`` (init, first inference, warm-up,
steady state), measured locally with ai-edge-litert, so that the results table also has host rows."""
from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path

from android_harness.benchmark_output import BenchmarkTimings
from blazepose_tf.tflite_file import load_interpreter
from export.bench import feed_random_input, input_range

HOST_ABI = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64-v8a", "arm64": "arm64-v8a",
            "i686": "x86", "i386": "x86", "armv7l": "armeabi-v7a"}


def host_description() -> tuple[str, str]:
    """(device name, ABI) of this machine: the CPU model from /proc/cpuinfo when available."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    machine = platform.machine().lower()
    return f"host: {name} ({os.cpu_count()} CPUs)", HOST_ABI.get(machine, machine)


def _run_phase(interpreter, min_runs: int, min_secs: float, max_secs: float) -> list[float]:
    times: list[float] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter_ns()
        interpreter.invoke()
        times.append((time.perf_counter_ns() - t0) / 1e6)
        elapsed = time.perf_counter() - start
        if (len(times) >= min_runs and elapsed >= min_secs) or elapsed >= max_secs:
            return times


def host_benchmark(model: str | os.PathLike, num_threads: int = 1, use_xnnpack: bool = True,
                   warmup_runs: int = 1, warmup_min_secs: float = 0.5, num_runs: int = 50, min_secs: float = 1.0,
                   max_secs: float = 150.0) -> BenchmarkTimings:
    """benchmark_model's protocol on the host (its defaults: warm-up >= 1 run and 0.5 s; >= 50 runs and 1 s)."""
    t0 = time.perf_counter()
    it = load_interpreter(model, num_threads, use_xnnpack)
    init_ms = (time.perf_counter() - t0) * 1e3
    feed_random_input(it, input_range(model))
    warm = _run_phase(it, max(1, warmup_runs), warmup_min_secs, max_secs)
    steady = _run_phase(it, max(1, num_runs), min_secs, max_secs)
    return BenchmarkTimings(
        init_ms=init_ms, first_inference_ms=warm[0], warmup_avg_ms=statistics.fmean(warm),
        inference_avg_ms=statistics.fmean(steady),
        inference_std_ms=statistics.pstdev(steady) if len(steady) > 1 else 0.0,
        inference_min_ms=min(steady), inference_max_ms=max(steady), inference_count=len(steady),
        warmup_count=len(warm), model_size_mb=os.path.getsize(model) / 1e6, num_threads=num_threads)
