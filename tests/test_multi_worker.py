"""Real multi-worker training: two worker processes on 127.0.0.1 (``TF_CONFIG``, ``--strategy multi_worker``) train
the smoke preset with the global batch split between them. One worker is killed, both are restarted, and the run
resumes from its last checkpoint; its final weights equal those of a single worker that trained the same global
batch on two replicas without interruption, and stay close to a one-replica run (BatchNorm statistics are per
replica, as always under tf.distribute, so only the two-replica run can match exactly). Workers whose
``--model_dir`` differ refuse to start.

The first cluster trains with a constant learning rate and far more steps than it gets to run, so the kill never
races the end of training (a dozen smoke steps take half a second); the restart, and the references started after
it, stop a fixed number of steps after the checkpoint the kill left, whichever step that is."""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from blazepose_tf.models.loading import load_keras_model  # noqa: E402
from blazepose_tf.topology import BLAZEPOSE_33  # noqa: E402
from blazepose_tf.training.registry import build_models  # noqa: E402
from test_train import _cmd, _env, _records  # noqa: E402  synthetic tracker TFRecords, the smoke command

ROOT = Path(__file__).resolve().parents[1]
MORE = 8                 # steps trained after the resume
NEVER = 100_000          # the first cluster's --steps: killed long before it gets there
# SGD: its updates follow the gradients, so the one-replica comparison measures the BatchNorm effect and not
# Adam's sign flips of near-zero gradients. A constant rate does not depend on --steps.
FLAGS = ("--optimizer=sgd", "--learning_rate=0.01", "--schedule=constant", "--warmup_steps=0", "--dev_data=",
         "--log_batches")
TWO_DEVICES = ("import sys, tensorflow as tf\n"
               "cpu = tf.config.list_physical_devices('CPU')[0]\n"
               "tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)\n"
               "from blazepose_tf import cli, train\n"
               "sys.argv = ['blazepose_tf.train'] + sys.argv[1:]\n"
               "cli.run(train.main)\n")


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _start(cmd: list[str], log: Path, **env) -> subprocess.Popen:
    with open(log, "w") as stderr:   # the child keeps its own copy of the file
        return subprocess.Popen(cmd, cwd=ROOT, env=_env(**env), stdout=subprocess.PIPE, stderr=stderr, text=True)


def _start_cluster(data_dir: Path, model_dirs: list[Path], logs: Path, attempt: str,
                   *extra: str) -> list[subprocess.Popen]:
    """Two workers on free local ports, each with its ``--model_dir`` (the same one, unless testing a mistake)."""
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    return [_start(_cmd(data_dir, model_dir, "--strategy=multi_worker", "--checkpoint_every=2", *FLAGS, *extra),
                   logs / f"{attempt}-worker{i}.log",
                   TF_CONFIG=json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}))
            for i, model_dir in enumerate(model_dirs)]


def _finish(proc: subprocess.Popen, log: Path) -> dict:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, log.read_text()[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def _weights(path: Path) -> dict:
    model = load_keras_model(path, "test")
    return {w.path: (np.asarray(w), w.trainable) for w in model.weights}


def _checkpoint_step(checkpoint_dir: Path) -> int:
    latest = tf.train.latest_checkpoint(str(checkpoint_dir)) if checkpoint_dir.is_dir() else None
    return int(latest.rsplit("-", 1)[1]) if latest else 0


@pytest.mark.heavy
def test_two_workers_train_like_one_and_resume_after_a_worker_is_killed(tmp_path):
    data_dir, logs = tmp_path / "data", tmp_path / "logs"
    data_dir.mkdir()
    logs.mkdir()
    _records(data_dir / "train-00000.tfrecord", 24, 0)
    run = tmp_path / "two_workers"
    cluster = _start_cluster(data_dir, [run, run], logs, "first", f"--steps={NEVER}")
    deadline = time.time() + 240
    while time.time() < deadline and all(p.poll() is None for p in cluster):
        if _checkpoint_step(run / "checkpoints") >= 4:
            break
        time.sleep(0.05)
    alive = [p.poll() is None for p in cluster]
    cluster[1].send_signal(signal.SIGKILL)        # a worker dies...
    cluster[0].send_signal(signal.SIGKILL)        # ...and the cluster is restarted as a whole
    for p in cluster:
        p.wait()
    assert all(alive), "a worker ended before it was killed:\n" + "\n".join(
        (logs / f"first-worker{i}.log").read_text()[-1500:] for i in range(2))
    before = [json.loads(line) for line in (run / "batches.jsonl").read_text().splitlines() if line.endswith("}")]
    resumed_at = _checkpoint_step(run / "checkpoints")
    assert resumed_at >= 4 and max(b["step"] for b in before) >= resumed_at - 1
    steps = resumed_at + MORE

    cluster = _start_cluster(data_dir, [run, run], logs, "restart", f"--steps={steps}")
    # References with the same global batch (4) and steps: one worker with two replicas, and one replica.
    two = _start([sys.executable, "-c", TWO_DEVICES] + _cmd(data_dir, tmp_path / "two_replicas", "--strategy=mirrored",
                                                            f"--steps={steps}", *FLAGS)[3:], logs / "two_replicas.log")
    one = _start(_cmd(data_dir, tmp_path / "one_replica", f"--steps={steps}", *FLAGS), logs / "one_replica.log")
    results = [_finish(p, logs / f"restart-worker{i}.log") for i, p in enumerate(cluster)]
    assert [r["step"] for r in results] == [steps, steps]
    for i in range(2):
        log = (logs / f"restart-worker{i}.log").read_text()
        assert f"ckpt-{resumed_at} at step {resumed_at}" in log and "replicas: 2" in log
    assert "not the chief" in (logs / "restart-worker1.log").read_text()
    after = [json.loads(line) for line in (run / "batches.jsonl").read_text().splitlines()]
    assert [b["step"] for b in after] == list(range(steps))    # the chief's half-batches: none lost or repeated
    seen = {b["step"]: b["batch"] for b in before}
    assert all(seen[b["step"]] == b["batch"] for b in after if b["step"] in seen)

    for proc, name in ((two, "two_replicas"), (one, "one_replica")):
        assert _finish(proc, logs / f"{name}.log")["step"] == steps
    got = _weights(run / "last.keras")
    exact = _weights(tmp_path / "two_replicas" / "last.keras")
    for name, (value, _) in got.items():
        np.testing.assert_allclose(value, exact[name][0], atol=1e-5, err_msg=name)
    # One replica normalizes each batch of 4 at once, the workers their halves: the trained weights differ by a
    # fraction of how far training moved them (measured: 0.16 of it).
    single = _weights(tmp_path / "one_replica" / "last.keras")
    keras.utils.set_random_seed(0)   # the runs' initial weights (seed 0)
    start = {w.path: np.asarray(w) for w in build_models("smoke", BLAZEPOSE_33).inference.weights}
    trained = [name for name, (_, trainable) in got.items() if trainable]
    apart = np.sqrt(sum(np.sum((got[n][0] - single[n][0]) ** 2) for n in trained))
    moved = np.sqrt(sum(np.sum((single[n][0] - start[n]) ** 2) for n in trained))
    assert moved > 0 and apart < 0.5 * moved, (apart, moved)

    # Workers that do not share --model_dir would restore different steps: both refuse to go on.
    cluster = _start_cluster(data_dir, [run, tmp_path / "elsewhere"], logs, "unshared", f"--steps={steps + 2}")
    for i, proc in enumerate(cluster):
        proc.communicate(timeout=300)
        log = (logs / f"unshared-worker{i}.log").read_text()
        assert proc.returncode == 2 and "error: the workers resume from different steps" in log, log[-2000:]
