"""Benchmarks a .tflite model on an Android phone over adb with TFLite's ``benchmark_model`` (or on this host
with ai-edge-litert) and appends the timings to a results table.

    python -m android_harness.bench --model MODEL.tflite --benchmark_binary PATH [--serial S]
        [--num_threads 1,2,4] [--use_xnnpack=true] [--benchmark_args "--num_runs=100"]
        [--results benchmark_results.csv|.json|.jsonl]
    python -m android_harness.bench --model MODEL.tflite --host [--num_threads 1,2]

Device flow: check adb and pick the device (``--serial``, default ``$ANDROID_SERIAL``, else the only one
connected; none, several, unauthorized or offline devices stop with a clear message), read its ABI
(``ro.product.cpu.abi`` / ``abilist``) and model name, check that the benchmark binary's ELF machine suits the
device ABI *before* pushing, push the model and the binary to ``--remote_dir`` (``/data/local/tmp``), make the
binary executable, run ``benchmark_model --graph=... --use_xnnpack=true --num_threads=N [...]`` once per thread
count, parse init / first-inference / warm-up / steady-state timings from its output (nothing is pulled from
the device), delete what was pushed, and append one row per thread count to ``--results``.

``benchmark_model`` is not in any wheel: download the Android build from TensorFlow's nightly artifacts
(``android_aarch64_benchmark_model``) or build it (``bazel build -c opt --config=android_arm64
//tensorflow/lite/tools/benchmark:benchmark_model``).

``--host`` runs the same protocol locally through ai-edge-litert (no adb, no binary), so the table gets host
rows to compare with. Rows: timestamp, mode, serial, device, abi, model, model_sha256, model_size_mb,
quantization (from the model's metadata, else guessed from its tensors), num_threads, use_xnnpack, the
timings in ms, and the extra benchmark arguments.

Exit codes: 0 ok; 2 bad flags (or missing benchmark binary, bad results file); 4 model missing or not a
.tflite; 6 adb missing or failing, no / several / unauthorized / offline device, push failed; 7 benchmark
binary for the wrong ABI or not executable on the device, benchmark crashed, or output not parseable.
"""
from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import json
import os
import posixpath
import shlex
from pathlib import Path
from typing import Any, Optional, Sequence

from absl import flags

from android_harness.adb import Adb, BenchmarkError, DeviceError, excerpt
from android_harness.benchmark_output import BenchmarkParseError, BenchmarkTimings, parse_benchmark_output
from android_harness.elf import abi_compatible, read_elf
from blazepose_tf.errors import ModelError, UserError
from blazepose_tf.io.video import write_bytes_atomic
from blazepose_tf import cli

RESULT_FIELDS = ("timestamp", "mode", "serial", "device", "abi", "model", "model_sha256", "model_size_mb",
                 "quantization", "num_threads", "use_xnnpack", "init_ms", "first_inference_ms", "warmup_avg_ms",
                 "inference_avg_ms", "inference_std_ms", "inference_min_ms", "inference_max_ms",
                 "inference_count", "benchmark_args", "label")
RESULT_SUFFIXES = (".csv", ".json", ".jsonl")
REMOTE_BINARY = "benchmark_model"

CRASH_MARKERS = ("Segmentation fault", "Aborted", "Fatal signal", "Bus error", "Illegal instruction", "SIGSEGV",
                 "SIGABRT", "Killed")
EXEC_MARKERS = ("not executable", "Exec format error", "cannot execute", "syntax error: unexpected",
                "No such file or directory", "Permission denied", "inaccessible or not found", "not found")


# ---------------------------------------------------------------------------------------------------------
# Inputs and results


def check_model(path: str | os.PathLike) -> Path:
    """The model path, checked to be an existing .tflite flatbuffer."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"model file not found: {p}")
    with open(p, "rb") as f:
        head = f.read(8)
    if len(head) < 8 or head[4:8] != b"TFL3":
        raise ModelError(f"{p} is not a TFLite model (no 'TFL3' identifier)")
    return p


def model_quantization(path: Path) -> str:
    """From the blazepose_tf metadata, else guessed from tensor types; 'unknown' if unreadable."""
    try:
        from export.bench import quantization_of
        return quantization_of(path)
    except Exception:  # noqa: BLE001 - a label for the table; never fail the benchmark over it
        return "unknown"


def sha256_short(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


def check_results_path(path: str | os.PathLike) -> Path:
    """Validates the results file's type and folder (before any benchmark runs)."""
    p = Path(path)
    if p.suffix.lower() not in RESULT_SUFFIXES:
        raise UserError(f"--results must end in {', '.join(RESULT_SUFFIXES)}, got {p.name!r}")
    if not p.parent.exists():
        raise UserError(f"results folder does not exist: {p.parent}")
    if p.is_file() and p.suffix.lower() != ".json":  # appended to in place: the file must be writable
        if not os.access(p, os.W_OK):
            raise UserError(f"cannot write --results {p}: the file is read-only")
    else:  # a new file, or .json rewritten through a temporary file beside it: the folder must take a file
        cli.check_outputs([("--results", p)])
    existing_rows(p)
    return p


def existing_rows(p: Path) -> list:
    """The rows already in a results file (``.json``; ``[]`` for the appended formats), after checking that it
    is one this harness can add to: a one-line :class:`UserError` for a ``.csv`` with other columns, a ``.json``
    that is not a list, or something that is not a regular file. Checked before any benchmark and again before
    each row is added (the file may have appeared or changed while a benchmark ran)."""
    if not p.exists():
        return []
    if not p.is_file():
        raise UserError(f"--results {p} is not a regular file; use a new --results file")
    if p.suffix.lower() == ".csv" and p.stat().st_size:
        with open(p, newline="") as f:
            header = next(csv.reader(f), [])
        if tuple(header) != RESULT_FIELDS:
            raise UserError(f"{p} has other columns than this harness writes; use a new --results file")
    if p.suffix.lower() == ".json" and p.stat().st_size:
        try:
            doc = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            doc = None
        if not isinstance(doc, list):
            raise UserError(f"{p} is not a JSON list of result rows; use a new --results file")
        return doc
    return []


def append_result(path: Path, row: dict[str, Any]) -> None:
    """Appends one row to a .csv (header written once), .json (a list, rewritten atomically) or .jsonl file, after
    checking the file again (:func:`existing_rows`: one-line errors)."""
    row = {k: row.get(k) for k in RESULT_FIELDS}
    rows = existing_rows(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        new = not path.is_file() or path.stat().st_size == 0
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=RESULT_FIELDS)
            if new:
                writer.writeheader()
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    elif suffix == ".jsonl":
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")
    else:
        write_bytes_atomic(path, json.dumps(rows + [row], indent=1).encode())


def make_row(*, mode: str, serial: str, device: str, abi: str, model: Path, quantization: str, threads: int,
             use_xnnpack: bool, timings: BenchmarkTimings, benchmark_args: str, label: str) -> dict[str, Any]:
    """One results row."""
    r3 = (lambda v: None if v is None else round(float(v), 3))
    return {
        "timestamp": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(), "mode": mode,
        "serial": serial, "device": device, "abi": abi, "model": model.name, "model_sha256": sha256_short(model),
        "model_size_mb": round(model.stat().st_size / 1e6, 3), "quantization": quantization,
        "num_threads": threads, "use_xnnpack": use_xnnpack, "init_ms": r3(timings.init_ms),
        "first_inference_ms": r3(timings.first_inference_ms), "warmup_avg_ms": r3(timings.warmup_avg_ms),
        "inference_avg_ms": r3(timings.inference_avg_ms), "inference_std_ms": r3(timings.inference_std_ms),
        "inference_min_ms": r3(timings.inference_min_ms), "inference_max_ms": r3(timings.inference_max_ms),
        "inference_count": timings.inference_count, "benchmark_args": benchmark_args, "label": label,
    }


# ---------------------------------------------------------------------------------------------------------
# Running on the device


def _interesting_line(text: str, markers: Sequence[str]) -> Optional[str]:
    for line in text.splitlines():
        if any(m in line for m in markers):
            return line.strip()
    return None


def check_run(returncode: int, output: str, binary: str, abi: str) -> BenchmarkTimings:
    """Classifies a finished benchmark run: wrong ABI / not executable, crash, failure, or parsed timings.

    Messages quote the device's ``output`` only as an :func:`~android_harness.adb.excerpt`."""
    exec_line = _interesting_line(output, EXEC_MARKERS)
    if returncode in (126, 127) or (exec_line and "Inference timings" not in output and returncode != 0):
        if exec_line and any(m in exec_line for m in ("not executable", "Exec format error", "syntax error",
                                                      "cannot execute")):
            raise BenchmarkError(f"the device ({abi}) cannot execute {binary}: wrong ABI? ({excerpt(exec_line)})")
        raise BenchmarkError(f"could not start {binary} on the device (exit code {returncode}): "
                             f"{excerpt(exec_line) if exec_line else _last(output)}")
    crash = _interesting_line(output, CRASH_MARKERS)
    if returncode >= 128 or returncode < 0 or (crash and "Inference timings" not in output):
        sig = f", signal {returncode - 128}" if returncode > 128 else ""
        raise BenchmarkError(f"benchmark_model crashed on the device (exit code {returncode}{sig}): "
                             f"{excerpt(crash) if crash else _last(output)}")
    if returncode != 0:
        err = _interesting_line(output, ("ERROR", "Error", "error:", "Failed", "failed"))
        raise BenchmarkError(f"benchmark_model failed (exit code {returncode}): "
                             f"{excerpt(err) if err else _last(output)}")
    try:
        return parse_benchmark_output(output)
    except BenchmarkParseError as e:
        # The parser's message quotes the output's first lines: escaped, and ~120 characters of them at most.
        raise BenchmarkError(f"could not parse benchmark_model output: {excerpt(str(e), 200)}") from None


def _last(text: str) -> str:
    """An :func:`~android_harness.adb.excerpt` of the last non-empty line of ``text``."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return excerpt(lines[-1]) if lines else "no output"


def device_abis(adb: Adb) -> tuple[str, list[str]]:
    """(primary ABI, every ABI the device runs)."""
    abi = adb.getprop("ro.product.cpu.abi")
    abilist = [a.strip() for a in adb.getprop("ro.product.cpu.abilist").split(",") if a.strip()]
    if not abi and not abilist:
        raise DeviceError(f"device {adb.serial} reports no CPU ABI (ro.product.cpu.abi is empty)")
    return abi or abilist[0], abilist or [abi]


def run_on_device(*, model: Path, binary: Path, adb: Adb, serial: Optional[str], threads: Sequence[int],
                  use_xnnpack: bool, extra_args: Sequence[str], remote_dir: str, run_timeout: float,
                  cleanup: bool = True, on_result=None) -> tuple[dict[str, str], list[tuple[int, BenchmarkTimings]]]:
    """The device flow of the module docstring. Returns device info and (threads, timings) per run."""
    elf = read_elf(binary)                   # not an ELF: fail before touching the device
    adb.select(serial)
    abi, abis = device_abis(adb)
    name = adb.getprop("ro.product.model") or "unknown"
    maker = adb.getprop("ro.product.manufacturer")
    info = {"serial": adb.serial or "", "abi": abi, "device": f"{maker} {name}".strip() if maker else name}
    if not abi_compatible(elf.abi, abis):
        raise BenchmarkError(f"{binary.name} is built for {elf.describe()}, but device {adb.serial} "
                             f"({info['device']}) runs {', '.join(abis)}: use the {abi} build of benchmark_model")
    remote_model = posixpath.join(remote_dir, model.name)
    remote_binary = posixpath.join(remote_dir, REMOTE_BINARY)
    pushed: list[str] = []
    runs: list[tuple[int, BenchmarkTimings]] = []
    try:
        for local, remote in ((model, remote_model), (binary, remote_binary)):
            adb.push(local, remote)
            pushed.append(remote)
        proc = adb.shell(["chmod", "755", remote_binary])
        if proc.returncode != 0:
            raise DeviceError(f"cannot make {remote_binary} executable: {_last(proc.stderr + proc.stdout)}")
        for n in threads:
            cmd = [remote_binary, f"--graph={remote_model}", f"--use_xnnpack={str(use_xnnpack).lower()}",
                   f"--num_threads={n}", *extra_args]
            proc = adb.shell(cmd, timeout=run_timeout, what=f"benchmark_model --num_threads={n}")
            timings = check_run(proc.returncode, proc.stdout + "\n" + proc.stderr, binary.name, abi)
            runs.append((n, timings))
            if on_result:  # e.g. append the row now, so that a later failing thread count keeps it
                on_result(info, n, timings)
    finally:
        if cleanup:
            adb.remove(pushed)
    return info, runs


# ---------------------------------------------------------------------------------------------------------
# Command line


def parse_threads(text: str) -> list[int]:
    """``"1,2,4"`` → [1, 2, 4]."""
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--num_threads must be a comma-separated list of integers, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise UserError(f"--num_threads must list integers >= 1, got {text!r}")
    return vals


def format_rows(rows: Sequence[dict[str, Any]]) -> str:
    """A short table of the rows written by this call."""
    head = (f"{'device':<28} {'abi':<12} {'thr':>3} {'init ms':>8} {'first ms':>9} {'warm-up ms':>10} "
            f"{'avg ms':>8} {'std ms':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        std = r["inference_std_ms"]
        lines.append(f"{str(r['device'])[:28]:<28} {r['abi']:<12} {r['num_threads']:>3} {r['init_ms']:>8.1f} "
                     f"{r['first_inference_ms']:>9.2f} {r['warmup_avg_ms']:>10.2f} {r['inference_avg_ms']:>8.2f} "
                     f"{(std if std is not None else float('nan')):>7.2f}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Command-line entry point."""
    FLAGS = flags.FLAGS
    if not FLAGS.model:
        raise UserError("--model is required (see --help)")
    model = check_model(FLAGS.model)
    threads = parse_threads(FLAGS.num_threads)
    results = check_results_path(FLAGS.results)
    try:
        extra = shlex.split(FLAGS.benchmark_args or "")
    except ValueError as e:
        raise UserError(f"--benchmark_args is not a valid argument string: {e}") from None
    if FLAGS.num_runs is not None:
        extra.append(f"--num_runs={FLAGS.num_runs}")
    if FLAGS.warmup_runs is not None:
        extra.append(f"--warmup_runs={FLAGS.warmup_runs}")
    if any(a.startswith(("--graph", "--num_threads", "--use_xnnpack")) for a in extra):
        raise UserError("--benchmark_args must not set --graph, --num_threads or --use_xnnpack (use the flags)")
    quantization = FLAGS.quantization or model_quantization(model)
    rows: list[dict[str, Any]] = []

    def record(mode: str, info: dict[str, str], n: int, timings: BenchmarkTimings) -> None:
        row = make_row(mode=mode, serial=info["serial"], device=info["device"], abi=info["abi"], model=model,
                       quantization=quantization, threads=n, use_xnnpack=FLAGS.use_xnnpack, timings=timings,
                       benchmark_args=" ".join(extra), label=FLAGS.label or "")
        append_result(results, row)
        rows.append(row)

    if FLAGS.host:
        from android_harness.host import host_benchmark, host_description

        device, abi = host_description()
        info = {"serial": "host", "device": device, "abi": abi}
        for n in threads:
            kwargs = {}
            if FLAGS.num_runs is not None:
                kwargs.update(num_runs=FLAGS.num_runs, min_secs=0.0)
            if FLAGS.warmup_runs is not None:
                kwargs.update(warmup_runs=FLAGS.warmup_runs, warmup_min_secs=0.0)
            record("host", info, n, host_benchmark(model, n, FLAGS.use_xnnpack, **kwargs))
    else:
        if not FLAGS.benchmark_binary:
            raise UserError("--benchmark_binary is required (TFLite's benchmark_model for the phone), or use --host")
        binary = Path(FLAGS.benchmark_binary)
        if not binary.is_file():
            raise UserError(f"benchmark binary not found: {binary}")
        adb = Adb(FLAGS.adb, timeout=FLAGS.adb_timeout)
        run_on_device(model=model, binary=binary, adb=adb, serial=FLAGS.serial, threads=threads,
                      use_xnnpack=FLAGS.use_xnnpack, extra_args=extra, remote_dir=FLAGS.remote_dir,
                      run_timeout=FLAGS.run_timeout, cleanup=FLAGS.cleanup,
                      on_result=lambda info, n, timings: record("device", info, n, timings))
    print(f"model {model.name} ({quantization}), {len(rows)} run(s) appended to {results}")
    print(format_rows(rows))
    return 0


def define_flags() -> None:
    """The command's absl flags."""
    flags.DEFINE_string("model", None, "The .tflite model to benchmark.")
    flags.DEFINE_string("benchmark_binary", None, "TFLite's benchmark_model built for the phone's ABI.")
    flags.DEFINE_string("serial", os.environ.get("ANDROID_SERIAL") or None,
                        "Device serial (default $ANDROID_SERIAL; needed when several devices are connected).")
    flags.DEFINE_string("adb", "adb", "adb executable (name on PATH or path).")
    flags.DEFINE_string("num_threads", "1", "Comma-separated thread counts, one benchmark run each.")
    flags.DEFINE_bool("use_xnnpack", True, "Run with the XNNPACK delegate.")
    flags.DEFINE_string("benchmark_args", "", "Extra benchmark_model arguments, e.g. '--num_runs=100 --min_secs=2'.")
    flags.DEFINE_integer("num_runs", None, "Steady-state runs (benchmark_model --num_runs; host mode too).",
                         lower_bound=1)
    flags.DEFINE_integer("warmup_runs", None, "Warm-up runs (benchmark_model --warmup_runs; host mode too).",
                         lower_bound=0)
    flags.DEFINE_string("remote_dir", "/data/local/tmp", "Device folder the model and binary are pushed to.")
    flags.DEFINE_string("results", "benchmark_results.csv", "Results table to append to (.csv, .json or .jsonl).")
    flags.DEFINE_bool("host", False, "Benchmark on this machine with ai-edge-litert instead of a phone.")
    flags.DEFINE_string("quantization", None, "Quantization label for the table (default: from the model).")
    flags.DEFINE_string("label", None, "Free-text label stored with the rows.")
    flags.DEFINE_float("adb_timeout", 60.0, "Seconds any adb call (devices, push, getprop) may take.", lower_bound=0.1)
    flags.DEFINE_float("run_timeout", 900.0, "Seconds one benchmark run may take.", lower_bound=0.1)
    flags.DEFINE_bool("cleanup", True, "Delete the pushed model and binary from the device afterwards.")


def entry_point() -> None:
    """Console-script entry point (``[project.scripts]`` in pyproject.toml)."""
    define_flags()
    cli.run(main)


if __name__ == "__main__":
    entry_point()
