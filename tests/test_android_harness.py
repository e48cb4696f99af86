"""The adb device-benchmark harness end-to-end through its CLI: a fake adb emulating a phone (success, no
device, two devices, unauthorized, offline, wrong ABI, binary not executable, crash, garbage output, push
failure), Debian's real adb client for the no-device and server paths, the --host mode, the output parser
and the ELF check."""
from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from android_harness.adb import EXCERPT_CHARS, EXIT_BENCHMARK, EXIT_DEVICE, BenchmarkError, excerpt
from android_harness.benchmark_output import BenchmarkParseError, parse_benchmark_output
from android_harness.elf import abi_compatible, read_elf

REPO = Path(__file__).resolve().parents[1]
FAKE_ADB = REPO / "tests" / "fake_adb" / "adb"

OUTPUT = """INFO: Num threads: [2]
INFO: The input model file size (MB): 6.4
INFO: Initialized session in 40.2ms.
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=26 first=45129 curr=18432 min=18101 max=45129 avg=19537.2 std=5251
INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=54 first=18570 curr=18352 min=17953 max=19620 avg=18471.3 std=329
INFO: Inference timings in us: Init: 40211, First inference: 45129, Warmup (avg): 19537.2, Inference (avg): 18471.3
"""


def make_elf(path: Path, machine: int, bits: int = 64) -> Path:
    """A tiny file with a valid ELF header for ``machine`` (183 aarch64, 40 ARM, 62 x86-64, 3 x86)."""
    head = bytearray(64)
    head[:4] = b"\x7fELF"
    head[4] = 2 if bits == 64 else 1
    head[5] = 1  # little endian
    head[6] = 1
    head[16:18] = struct.pack("<H", 2)  # ET_EXEC
    head[18:20] = struct.pack("<H", machine)
    path.write_bytes(bytes(head) + b"\0" * 64)
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A small full-int8 model with blazepose_tf metadata (calibrated on random inputs: enough here)."""
    import numpy as np
    from export_fixtures import tiny_tracker

    from export import metadata as md
    from export.to_tflite import convert, prepare_model

    prepared = prepare_model(tiny_tracker())
    rng = np.random.default_rng(0)
    flat = convert(prepared.model, "int8", [rng.uniform(0, 1, (1, 64, 64, 3)).astype(np.float32) for _ in range(4)])
    doc = md.build_metadata(name="tiny", kind="tracker", input_shape=(1, 64, 64, 3),
                            outputs=prepared.output_shapes, quantization="int8", value_range=(0, 1))
    out = tmp_path_factory.mktemp("model") / "tracker_int8.tflite"
    out.write_bytes(md.write_metadata(flat, doc))
    return out


@pytest.fixture
def arm64_binary(tmp_path) -> Path:
    return make_elf(tmp_path / "benchmark_model", 183)


def harness(*args: str, scenario: str = "ok", state: Path, env: dict | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess:
    # The fake adb's `#!/usr/bin/env python3` finds this interpreter first (no slow version-manager shims).
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    e = dict(os.environ, PYTHONPATH=str(REPO), FAKE_ADB_SCENARIO=scenario, FAKE_ADB_STATE=str(state), PATH=path)
    e.pop("ANDROID_SERIAL", None)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "android_harness.bench", *args], cwd=REPO, env=e,
                          capture_output=True, text=True, timeout=timeout)


def device_run(model: Path, binary: Path, tmp_path: Path, scenario: str = "ok", *extra: str,
               results: str = "results.csv") -> subprocess.CompletedProcess:
    return harness("--adb", str(FAKE_ADB), "--model", str(model), "--benchmark_binary", str(binary),
                   "--results", str(tmp_path / results), *extra, scenario=scenario, state=tmp_path / "state")


def calls(tmp_path: Path) -> list[list[str]]:
    log = tmp_path / "state" / "calls.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []


def device_files(tmp_path: Path) -> list[str]:
    root = tmp_path / "state" / "device"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.is_dir() else []


def test_success_two_thread_counts_csv_and_json(model, arm64_binary, tmp_path):
    proc = device_run(model, arm64_binary, tmp_path, "ok", "--num_threads", "1,2", "--label", "ci")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert [r["num_threads"] for r in rows] == ["1", "2"]
    r1, r2 = rows
    assert r1["mode"] == "device" and r1["serial"] == "FAKE0001" and r1["abi"] == "arm64-v8a"
    assert r1["device"] == "Google Pixel 7 (fake)" and r1["model"] == "tracker_int8.tflite"
    assert r1["quantization"] == "int8" and r1["use_xnnpack"] == "True" and r1["label"] == "ci"
    assert float(r1["init_ms"]) == pytest.approx(40.211)
    assert float(r1["first_inference_ms"]) == pytest.approx(45.129)
    assert float(r1["warmup_avg_ms"]) == pytest.approx(19.537, abs=1e-3)
    assert float(r1["inference_avg_ms"]) == pytest.approx(18.471, abs=1e-3)
    assert float(r1["inference_std_ms"]) == pytest.approx(0.329)
    assert int(r1["inference_count"]) == 54
    assert float(r2["inference_avg_ms"]) == pytest.approx(18471.3 / 2 / 1000, abs=1e-3)  # fake scales with 1/N
    assert "tracker_int8.tflite (int8), 2 run(s) appended" in proc.stdout
    # Pushed model and binary, made it executable, ran with XNNPACK and 1 then 2 threads, cleaned up, no pull.
    log = calls(tmp_path)
    pushes = [c for c in log if "push" in c]
    assert [c[-1] for c in pushes] == ["/data/local/tmp/tracker_int8.tflite", "/data/local/tmp/benchmark_model"]
    runs = [c[-1] for c in log if "shell" in c and "benchmark_model" in c[-1] and "chmod" not in c[-1]
            and "rm" not in c[-1].split()[0]]
    assert len(runs) == 2 and "--use_xnnpack=true" in runs[0] and "--num_threads=1" in runs[0]
    assert "--num_threads=2" in runs[1] and "--graph=/data/local/tmp/tracker_int8.tflite" in runs[0]
    assert any("chmod 755 /data/local/tmp/benchmark_model" in c[-1] for c in log if "shell" in c)
    assert not any("pull" in c for c in log)
    assert device_files(tmp_path) == []
    # JSON results file: rows appended across calls.
    for _ in range(2):
        proc = device_run(model, arm64_binary, tmp_path, "ok", "--benchmark_args", "--num_runs=20",
                          results="results.json")
        assert proc.returncode == 0, proc.stderr
    rows = json.loads((tmp_path / "results.json").read_text())
    assert len(rows) == 2 and rows[0]["inference_avg_ms"] == pytest.approx(18.471, abs=1e-3)
    assert rows[0]["benchmark_args"] == "--num_runs=20"


@pytest.mark.parametrize("scenario, extra, message", [
    ("no_device", (), "no Android device found"),
    ("two_devices", (), "several devices connected: FAKE0001 (device), FAKE0002 (device); choose one with --serial"),
    ("two_devices", ("--serial", "NOPE"), "device 'NOPE' not found"),
    ("unauthorized", (), "FAKE0001 is unauthorized"),
    ("offline", (), "FAKE0001 is offline"),
    ("push_fail", (), "adb push"),
])
def test_device_problems(model, arm64_binary, tmp_path, scenario, extra, message):
    proc = device_run(model, arm64_binary, tmp_path, scenario, *extra)
    assert proc.returncode == EXIT_DEVICE, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert not (tmp_path / "results.csv").exists()
    assert device_files(tmp_path) == []  # nothing left behind (push_fail: the model push failed)


def test_two_devices_with_serial(model, arm64_binary, tmp_path):
    proc = device_run(model, arm64_binary, tmp_path, "two_devices", "--serial", "FAKE0002")
    assert proc.returncode == 0, proc.stderr
    assert list(csv.DictReader(open(tmp_path / "results.csv")))[0]["serial"] == "FAKE0002"
    assert all(c[:2] == ["-s", "FAKE0002"] for c in calls(tmp_path) if "devices" not in c)


def test_wrong_abi_is_caught_before_pushing(model, arm64_binary, tmp_path):
    proc = device_run(model, arm64_binary, tmp_path, "wrong_abi")
    assert proc.returncode == EXIT_BENCHMARK
    assert "built for arm64-v8a (64-bit ELF)" in proc.stderr and "armeabi-v7a" in proc.stderr
    assert not any("push" in c for c in calls(tmp_path))
    # An x86 binary for an ARM phone, and a file that is no ELF at all.
    proc = device_run(model, make_elf(tmp_path / "bm_x86", 62), tmp_path, "ok")
    assert proc.returncode == EXIT_BENCHMARK and "built for x86_64" in proc.stderr
    script = tmp_path / "bm.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    proc = device_run(model, script, tmp_path, "ok")
    assert proc.returncode == EXIT_BENCHMARK and "not an ELF executable" in proc.stderr


@pytest.mark.parametrize("scenario, message", [
    ("noexec", "cannot execute benchmark_model: wrong ABI? (/system/bin/sh: /data/local/tmp/benchmark_model: "
               "not executable: 64-bit ELF file)"),
    ("crash", "benchmark_model crashed on the device (exit code 139, signal 11): Segmentation fault"),
    ("garbage", "could not parse benchmark_model output"),
])
def test_benchmark_failures(model, arm64_binary, tmp_path, scenario, message):
    proc = device_run(model, arm64_binary, tmp_path, scenario, "--num_threads", "1,2")
    assert proc.returncode == EXIT_BENCHMARK, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
    assert device_files(tmp_path) == []  # cleaned up after the failure
    assert any("rm" in c[-1] for c in calls(tmp_path) if "shell" in c)


def test_usage_and_model_errors(model, arm64_binary, tmp_path):
    proc = harness("--adb", str(tmp_path / "no" / "adb"), "--model", str(model), "--benchmark_binary",
                   str(arm64_binary), "--results", str(tmp_path / "r.csv"), state=tmp_path / "state")
    assert proc.returncode == EXIT_DEVICE and "adb not found" in proc.stderr
    proc = device_run(tmp_path / "missing.tflite", arm64_binary, tmp_path)
    assert proc.returncode == 4 and "model file not found" in proc.stderr
    proc = device_run(model, tmp_path / "missing_binary", tmp_path)
    assert proc.returncode == 2 and "benchmark binary not found" in proc.stderr
    proc = device_run(model, arm64_binary, tmp_path, "ok", results="r.txt")
    assert proc.returncode == 2 and "--results must end in" in proc.stderr
    (tmp_path / "rdir.csv").mkdir()
    proc = device_run(model, arm64_binary, tmp_path, "ok", results="rdir.csv")
    assert proc.returncode == 2 and "is not a regular file (a folder)" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "state" / "calls.jsonl").exists()  # before adb


def test_host_mode_rows_join_the_device_table(model, arm64_binary, tmp_path):
    assert device_run(model, arm64_binary, tmp_path).returncode == 0
    proc = harness("--host", "--model", str(model), "--num_threads", "1,2", "--num_runs", "5", "--warmup_runs", "1",
                   "--results", str(tmp_path / "results.csv"), state=tmp_path / "state")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert [r["mode"] for r in rows] == ["device", "host", "host"]
    host = rows[1]
    assert host["serial"] == "host" and host["device"].startswith("host: ") and host["abi"]
    assert int(host["inference_count"]) == 5 and float(host["inference_avg_ms"]) > 0
    assert float(host["first_inference_ms"]) > 0 and float(host["init_ms"]) > 0
    assert [r["num_threads"] for r in rows[1:]] == ["1", "2"]


# ---------------------------------------------------------------------------------------------------------
# Debian's real adb client: no device, and a broken server


@pytest.fixture
def real_adb(tmp_path):
    adb = shutil.which("adb")
    if adb is None:
        pytest.skip("adb is not installed (apt-get install adb)")
    with socket.socket() as s:  # a free port for a private adb server
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    home = tmp_path / "home"
    home.mkdir()
    env = {"ANDROID_ADB_SERVER_PORT": str(port), "HOME": str(home)}
    yield adb, env
    subprocess.run([adb, "-P", str(port), "kill-server"], env=dict(os.environ, **env), capture_output=True,
                   timeout=30)


def test_real_adb_no_device(model, arm64_binary, tmp_path, real_adb):
    adb, env = real_adb
    proc = harness("--adb", adb, "--model", str(model), "--benchmark_binary", str(arm64_binary),
                   "--results", str(tmp_path / "r.csv"), state=tmp_path / "state", env=env)
    assert proc.returncode == EXIT_DEVICE
    assert proc.stderr.strip().splitlines()[-1].startswith("error: no Android device found")


def test_real_adb_server_problems(model, arm64_binary, tmp_path, real_adb):
    adb, env = real_adb
    args = ("--adb", adb, "--model", str(model), "--benchmark_binary", str(arm64_binary),
            "--results", str(tmp_path / "r.csv"))
    proc = harness(*args, state=tmp_path / "state", env=dict(env, ANDROID_ADB_SERVER_PORT="not-a-port"))
    assert proc.returncode == EXIT_DEVICE
    assert "`adb devices` failed" in proc.stderr and "ANDROID_ADB_SERVER_PORT" in proc.stderr
    # Something that accepts connections on the server port but never answers: adb hangs, we time out.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(4)
        proc = harness(*args, "--adb_timeout", "2", state=tmp_path / "state",
                       env=dict(env, ANDROID_ADB_SERVER_PORT=str(s.getsockname()[1])))
    assert proc.returncode == EXIT_DEVICE and "did not finish within 2 s" in proc.stderr


# ---------------------------------------------------------------------------------------------------------
# Units


def test_parse_benchmark_output():
    t = parse_benchmark_output(OUTPUT)
    assert (t.init_ms, t.first_inference_ms, t.warmup_avg_ms, t.inference_avg_ms) == pytest.approx(
        (40.211, 45.129, 19.5372, 18.4713))
    assert (t.inference_count, t.warmup_count, t.inference_std_ms) == (54, 26, pytest.approx(0.329))
    assert (t.inference_min_ms, t.inference_max_ms) == pytest.approx((17.953, 19.620))
    assert t.model_size_mb == 6.4 and t.num_threads == 2
    with pytest.raises(BenchmarkParseError, match="no 'Inference timings"):
        parse_benchmark_output("INFO: STARTING!\ncount=3 first=1 curr=1 min=1 max=1 avg=1 std=0\n")


def test_elf_abi(tmp_path):
    assert read_elf(make_elf(tmp_path / "a", 183)).abi == "arm64-v8a"
    arm = read_elf(make_elf(tmp_path / "b", 40, bits=32))
    assert (arm.abi, arm.bits) == ("armeabi-v7a", 32)
    assert read_elf(make_elf(tmp_path / "c", 3, bits=32)).abi == "x86"
    assert abi_compatible("armeabi-v7a", ["arm64-v8a", "armeabi-v7a", "armeabi"])
    assert abi_compatible("armeabi-v7a", ["armeabi"])
    assert not abi_compatible("arm64-v8a", ["armeabi-v7a", "armeabi"])
    assert not abi_compatible(None, ["x86_64"])


def test_excerpt_is_short_printable_and_one_line():
    assert excerpt("adb: device offline") == "adb: device offline"
    assert excerpt("a\n\tb\r\n  c") == "a b c"
    assert excerpt("\x1b[31mred\x00\x07\u200b") == "\\x1b[31mred\\x00\\x07\\u200b"
    long = excerpt("x" * 1000)
    assert len(long) == EXCERPT_CHARS and long.endswith("…")
    assert excerpt("\x00" * 100, limit=10) == "\\x00\\x00\\…"
    garbage = bytes(range(256)).decode("utf-8", errors="backslashreplace") * 20
    out = excerpt(garbage)
    assert out.isprintable() and len(out) <= EXCERPT_CHARS


@pytest.mark.parametrize("code, output, start", [
    (0, "\x1b[2J\x00" + "\x7f garbage " * 200, "could not parse benchmark_model output: "),
    (1, "ERROR: \x1b[31m" + "\x01" * 500, "benchmark_model failed (exit code 1): ERROR: \\x1b[31m\\x01"),
    (139, "Segmentation fault \x00" * 100, "benchmark_model crashed on the device (exit code 139, signal 11): "),
    (127, "/system/bin/sh: x: not found\x1b" * 50, "could not start benchmark_model on the device (exit code 127)"),
])
def test_benchmark_output_is_quoted_as_an_excerpt(code, output, start):
    from android_harness.bench import check_run

    with pytest.raises(BenchmarkError) as info:
        check_run(code, output, "benchmark_model", "arm64-v8a")
    message = str(info.value)
    assert message.startswith(start) and message.isprintable()
    assert len(message) <= len(start) + 200, message
    assert "\\x" in message   # escaped, not echoed


@pytest.mark.parametrize("name, content", [("r.csv", "name,score\nalice,3\n"), ("r.json", '{"mine": 1}'),
                                           ("r.jsonl", None)])
def test_results_file_that_appeared_during_a_benchmark_is_checked_again(tmp_path, name, content):
    """The results file is checked before the benchmark and again before its row is added: a user's CSV with other
    columns or a JSON that is not a list, made while the benchmark ran, is kept with one line; a folder is
    refused; a file of our rows takes the new one."""
    from android_harness.bench import append_result, check_results_path
    from blazepose_tf.errors import UserError

    path = check_results_path(tmp_path / name)          # nothing there yet
    row = {"mode": "host", "label": "x"}
    if content is None:
        path.mkdir()
        with pytest.raises(UserError, match="is not a regular file"):
            append_result(path, row)
        return
    path.write_text(content)
    with pytest.raises(UserError, match="use a new --results file"):
        append_result(path, row)
    assert path.read_text() == content
    path.unlink()
    append_result(path, row)
    append_result(path, row)
    rows = (list(csv.DictReader(open(path))) if name.endswith(".csv") else json.loads(path.read_text()))
    assert [r["label"] for r in rows] == ["x", "x"]
