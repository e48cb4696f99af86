"""Host latency of .tflite models with ai-edge-litert + XNNPACK, side by side with the official models.

    python -m export.bench MODEL.tflite [MODEL.tflite ...] [--threads 1,2] [--runs 100] [--warmup 10]
        [--rounds 5] [--official pose_detection,pose_landmark_full] [--reference pose_landmark_full]
        [--output bench.json]

For every thread count, all models (ours and the official ones, fetched if needed) are loaded, warmed up
(``--warmup`` invocations each), then timed in ``--rounds`` interleaved rounds of ``--runs / --rounds``
invocations, the model order rotating every round, so that every model sees the same machine load. Each
invocation is timed on its own; the table shows median and p90 per model and thread count, and the median's
ratio to the reference model (official ``pose_landmark_full``) at the same thread count, measured in the same
run (< 1 means faster). Inputs are random values in the model's input range (from its metadata).

Exit codes: 0 ok; 2 bad flags; 4 a model file is missing or not loadable (official models unavailable
offline are skipped with a warning).
"""
from __future__ import annotations

import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from blazepose_tf import cli
from blazepose_tf.contract import INPUT_RANGES, OFFICIAL_MODEL_ROLES
from blazepose_tf.errors import ModelError, UserError, model_file
from blazepose_tf.official import OFFICIAL_SHA256, official_model_path
from blazepose_tf.tflite_file import inspect_model, load_interpreter
from export.metadata import read_metadata


@dataclass
class Latency:
    """Latency statistics of one model at one thread count (milliseconds)."""

    model: str
    path: str
    threads: int
    runs: int
    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    init_ms: float
    size_mb: float
    quantization: str
    ratio: Optional[float] = None   # median / reference median at the same thread count


def input_range(path: str | os.PathLike) -> tuple[float, float]:
    """The model's input range from its blazepose_tf metadata, the official models' known ranges, else [0, 1]."""
    stem = Path(path).stem
    if stem in OFFICIAL_MODEL_ROLES:
        return INPUT_RANGES[OFFICIAL_MODEL_ROLES[stem]]
    try:
        meta = read_metadata(path)
    except ModelError:
        meta = None
    if meta and isinstance(meta.get("input", {}).get("range"), list):
        lo, hi = meta["input"]["range"]
        return float(lo), float(hi)
    return 0.0, 1.0


def feed_random_input(interpreter, value_range: tuple[float, float], seed: int = 0) -> None:
    """Sets every input tensor to random values (floats in ``value_range``, integers over their dtype)."""
    rng = np.random.default_rng(seed)
    for d in interpreter.get_input_details():
        shape, dtype = tuple(d["shape"]), np.dtype(d["dtype"])
        if np.issubdtype(dtype, np.floating):
            x = rng.uniform(value_range[0], value_range[1], shape).astype(dtype)
        else:
            info = np.iinfo(dtype)
            x = rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype)
        interpreter.set_tensor(d["index"], x)


def quantization_of(path: str | os.PathLike) -> str:
    """The model's quantization: from its metadata, else guessed from its tensors."""
    try:
        meta = read_metadata(path)
        if meta and meta.get("quantization"):
            return str(meta["quantization"])
        return inspect_model(path).guess_quantization()
    except ModelError:
        return "unknown"


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, np.float64), q))


def measure(models: Sequence[tuple[str, str]], threads: Sequence[int] = (1, 2), runs: int = 100, warmup: int = 10,
            rounds: int = 5, use_xnnpack: bool = True, progress=None) -> list[Latency]:
    """Interleaved latency measurement (see the module docstring) of ``(label, path)`` pairs."""
    if runs < 1 or warmup < 0 or rounds < 1:
        raise UserError("--runs and --rounds must be >= 1 and --warmup >= 0")
    rounds = min(rounds, runs)
    results: list[Latency] = []
    for n in threads:
        its, init = [], []
        for label, path in models:
            t0 = time.perf_counter()
            it = load_interpreter(path, n, use_xnnpack)
            init.append((time.perf_counter() - t0) * 1e3)
            feed_random_input(it, input_range(path))
            for _ in range(warmup):
                it.invoke()
            its.append(it)
        times: list[list[float]] = [[] for _ in models]
        per_round = [runs // rounds + (1 if r < runs % rounds else 0) for r in range(rounds)]
        for r, count in enumerate(per_round):
            order = [(r + k) % len(models) for k in range(len(models))]
            for k in order:
                it = its[k]
                for _ in range(count):
                    t0 = time.perf_counter_ns()
                    it.invoke()
                    times[k].append((time.perf_counter_ns() - t0) / 1e6)
        for k, (label, path) in enumerate(models):
            t = times[k]
            results.append(Latency(model=label, path=str(path), threads=n, runs=len(t),
                                   median_ms=float(statistics.median(t)), p90_ms=_percentile(t, 90),
                                   mean_ms=float(np.mean(t)), min_ms=float(np.min(t)), init_ms=init[k],
                                   size_mb=os.path.getsize(path) / 1e6, quantization=quantization_of(path)))
            if progress:
                progress(results[-1])
        del its
    return results


def add_ratios(results: list[Latency], reference: str) -> bool:
    """Sets ``ratio`` = median / the reference model's median at the same thread count; False if absent."""
    refs = {r.threads: r.median_ms for r in results if r.model == reference}
    for r in results:
        r.ratio = r.median_ms / refs[r.threads] if r.threads in refs and refs[r.threads] > 0 else None
    return bool(refs)


def format_table(results: Sequence[Latency], reference: Optional[str]) -> str:
    """The printed table."""
    width = max([len(r.model) for r in results] + [5])
    head = (f"{'model':<{width}}  {'quant':<8} {'size MB':>8} {'threads':>7} {'median ms':>10} {'p90 ms':>8}"
            + (f"  vs {reference}" if reference else ""))
    lines = [head, "-" * len(head)]
    for r in sorted(results, key=lambda r: (r.threads,)):
        ratio = f"  {r.ratio:.2f}x" if r.ratio is not None else ""
        lines.append(f"{r.model:<{width}}  {r.quantization:<8} {r.size_mb:>8.2f} {r.threads:>7d} {r.median_ms:>10.2f} "
                     f"{r.p90_ms:>8.2f}{ratio}")
    return "\n".join(lines)


def _int_list(text: str, what: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{what} must be a comma-separated list of integers, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise UserError(f"{what} must list integers >= 1, got {text!r}")
    return vals


def official_models(names: Sequence[str]) -> list[tuple[str, str]]:
    """(label, path) of the requested official models; unavailable ones are skipped with a warning."""
    out = []
    for name in names:
        if name not in OFFICIAL_SHA256:
            raise UserError(f"unknown official model {name!r}; known: {', '.join(sorted(OFFICIAL_SHA256))}")
        try:
            out.append((f"official:{name}", str(official_model_path(name))))
        except ModelError as e:
            print(f"warning: skipping official {name}: {e}", file=sys.stderr)
    return out


def main(argv: list[str]) -> int:
    """Command-line entry point."""
    from absl import flags

    FLAGS = flags.FLAGS
    paths = list(argv[1:]) + list(FLAGS.model or [])
    if not paths:
        raise UserError("give at least one MODEL.tflite (see --help)")
    cli.check_outputs([("--output", FLAGS.output)], [("--model", p) for p in paths], overwrite=FLAGS.overwrite)
    ours = []
    for p in paths:
        path = model_file(p)
        if path.suffix != ".tflite":
            raise ModelError(f"expected a .tflite file, got {path.name!r}")
        ours.append((path.name, str(path)))
    threads = _int_list(FLAGS.threads, "--threads")
    names = [n for n in (FLAGS.official or "").split(",") if n.strip() and n.strip() != "none"]
    models = ours + official_models([n.strip() for n in names])
    reference = f"official:{FLAGS.reference}" if FLAGS.reference else None
    rounds = min(FLAGS.rounds, FLAGS.runs)   # a round holds at least one timed run (measure clamps it too)
    print(f"ai-edge-litert, XNNPACK {'on' if FLAGS.use_xnnpack else 'off'}: {FLAGS.warmup} warm-up runs, then "
          f"{FLAGS.runs} timed runs per model in {rounds} interleaved rounds", file=sys.stderr)
    results = measure(models, threads, FLAGS.runs, FLAGS.warmup, rounds, FLAGS.use_xnnpack)
    if reference and not add_ratios(results, reference):
        print(f"warning: reference {reference} was not measured; no ratios", file=sys.stderr)
        reference = None
    print(format_table(results, reference))
    if FLAGS.output:
        out = Path(FLAGS.output)
        doc = {"runtime": "ai-edge-litert", "xnnpack": FLAGS.use_xnnpack, "warmup": FLAGS.warmup,
               "runs": FLAGS.runs, "rounds": rounds, "reference": reference,
               "results": [asdict(r) for r in results]}
        cli.write_marked(out, doc, overwrite=FLAGS.overwrite)
        print(f"results -> {out}")
    return 0


def define_flags() -> None:
    """The command's absl flags."""
    from absl import flags

    flags.DEFINE_multi_string("model", None, "A .tflite model to time (also accepted as positional arguments).")
    flags.DEFINE_string("threads", "1,2", "Comma-separated thread counts.")
    flags.DEFINE_integer("runs", 100, "Timed invocations per model and thread count.", lower_bound=1)
    flags.DEFINE_integer("warmup", 10, "Untimed invocations first.", lower_bound=0)
    flags.DEFINE_integer("rounds", 5, "Interleaved rounds the timed runs are split into.", lower_bound=1)
    flags.DEFINE_string("official", "pose_detection,pose_landmark_full",
                        "Official models to time in the same run ('none' for none).")
    flags.DEFINE_string("reference", "pose_landmark_full", "Official model the ratios are relative to ('' for none).")
    flags.DEFINE_bool("use_xnnpack", True, "Apply the XNNPACK delegate (ai-edge-litert's default).")
    flags.DEFINE_string("output", None, "Also write the results as JSON here.")
    cli.define_overwrite_flag()


def entry_point() -> None:
    """Console-script entry point (``[project.scripts]`` in pyproject.toml)."""
    define_flags()
    cli.run(main, positional=True)


if __name__ == "__main__":
    entry_point()
