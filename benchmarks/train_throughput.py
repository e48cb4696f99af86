"""End-to-end training throughput of the real training loop next to the bare training step, in one run.

    python -m benchmarks.train_throughput [--models lite,full,detector] [--batch_size 32] [--steps 16]
        [--warmup 4] [--chunk 2] [--stage_batches 8] [--nostages] [--noeval] [--profile_steps 0]
        [--profile_dir DIR] [--output out.json] [--lspet ../shared/data/lspet] [--images 320]

With no arguments it prepares what it needs from ``../shared/data/lspet`` (``python -m data.prepare`` on the first
``--images`` images of its train and dev splits, tracker crops and detector images, the official teacher filling
unannotated points; cached in ``~/.cache/blazepose_tf/throughput``) and measures, for each model (``lite`` and
``full`` trackers, our ``detector``), at ``--batch_size``:

* **end to end**: images/s of ``blazepose_tf.training.loop.train`` itself — the code path of
  ``python -m blazepose_tf.train`` — on those TFRecords, augmentation on, dev evaluation off, over ``--steps``
  steps after ``--warmup`` (tracing, XLA compilation and the pipeline's fill-up happen there);
* **bare**: the bare training step of :mod:`benchmarks.model_speed` (forward, losses, backward, Adam on one batch
  already in memory) at the same batch size, ``--steps`` steps run in turns with the end-to-end ones, ``--chunk``
  at a time, from the training loop's step hook (:func:`interleaved`), so both see the same machine load (the
  machine may be shared: ``uptime`` is printed at start and end). The ratio end-to-end / bare is printed for
  wall-clock images/s and, as a cross-check, for images per second of the process's CPU time (all threads; on an
  idle machine the wall-clock ratio can be the higher one, the pipeline's work filling cores the step leaves
  idle);
* a **per-stage breakdown**, each stage alone with all cores (:func:`stages`): decode once (the one-time JPEG
  decoding into memory), read (the seeded order, per-example augmentation draws and the batch gathered from
  memory), augment (warp, colour, occlusion; XLA), target encoding (heatmaps/offsets or anchor targets; XLA) and
  the loop's own training step on a fixed batch; wall and CPU milliseconds per batch;
* the **dev evaluation** cost: seconds per evaluation of the prepared dev split, and per 1000 examples.

For each model it prints ``MODEL end_to_end/bare: R``. ``--profile_steps N`` also records a TensorBoard profiler
trace of N end-to-end steps after the timed ones (``--profile_dir``, default ``out/train_throughput_profile``;
``tensorboard --logdir DIR``, Profile tab).
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:  # allow `python benchmarks/train_throughput.py`
    sys.path.insert(0, str(_REPO))

from absl import flags  # noqa: E402

from blazepose_tf import cli  # noqa: E402
from blazepose_tf.errors import UserError  # noqa: E402

DEFAULT_LSPET = Path(os.environ.get("BLAZEPOSE_TF_LSPET") or _REPO.parent / "shared" / "data" / "lspet")
# model name → (what --model trains, its --preset)
MODELS = {"lite": ("tracker", "lite"), "full": ("tracker", "full"), "detector": ("detector", "detector")}
TARGET_RATIO = 0.8


def cache_root() -> Path:
    """``~/.cache/blazepose_tf/throughput`` (``$BLAZEPOSE_TF_CACHE`` moves it)."""
    from blazepose_tf.official import cache_dir

    return cache_dir().parent / "throughput"


def ensure_data(kind: str, lspet: Path, images: int) -> Path:
    """The cached ``data.prepare`` output of one kind (tracker crops or detector images) for the first ``images``
    images of LSPET's train and dev splits; prepared on first use (the official teacher labels the unannotated
    points; without the official models, no teacher)."""
    out = cache_root() / f"{kind}_{images}"
    if (out / "manifest.json").is_file():
        return out
    if not (lspet / "annotations.json").is_file():
        raise SystemExit(f"error: no LSPET at {lspet} (pass --lspet or set BLAZEPOSE_TF_LSPET)")
    cmd = [sys.executable, "-m", "data.prepare", f"--annotations={lspet / 'annotations.json'}",
           f"--images={lspet / 'images'}", f"--output_dir={out}", f"--kind={kind}", "--split_names=train,dev",
           f"--limit={images}", "--noprogress", "--overwrite"]
    print(f"preparing {out} ...", flush=True)
    if subprocess.run(cmd + ["--teacher=official"], cwd=_REPO).returncode != 0:
        subprocess.run(cmd + ["--teacher=none"], cwd=_REPO, check=True)
    return out


def _rate(batch: int, seconds: float) -> float:
    return batch / seconds if seconds > 0 else float("inf")


def _cost(fn: Callable[[], object], batches: int, warmup: int = 3) -> tuple[float, float]:
    """(wall, CPU) seconds per call of ``fn`` over ``batches`` calls after ``warmup`` (CPU: all threads of this
    process)."""
    for _ in range(warmup):
        fn()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        fn()
    return (time.perf_counter() - wall) / batches, (time.process_time() - cpu) / batches


def _next_of(ds) -> Callable[[], object]:
    """A function fetching the next batch of an endless dataset."""
    it = iter(ds)
    return lambda: next(it)


def interleaved(kind: str, preset: str, data: Path, batch: int, steps: int, warmup: int, chunk: int,
                profile_steps: int = 0, profile_dir: Optional[Path] = None) -> dict:
    """End-to-end and bare steps measured in turns, in this process: ``loop.train`` runs (dev evaluation off, no
    checkpoint before the end) and, after its first ``warmup`` steps, every ``chunk`` of its steps is followed by
    ``chunk`` steps of :func:`benchmarks.model_speed.bare_step`, until each has run ``steps`` timed steps; an
    end-to-end step is timed from the end of the previous one (or of the bare steps after it) to its own end. The
    pipeline is faster than the step, so its prefetch buffer is full whenever the bare steps run: none of its work
    moves between the two. Optionally a profiler trace of the ``profile_steps`` end-to-end steps that follow."""
    import tensorflow as tf

    from benchmarks.model_speed import bare_step
    from blazepose_tf.training.config import TrainConfig
    from blazepose_tf.training.loop import train

    run_bare, _ = bare_step(kind, preset, batch)
    wall: dict[str, list[float]] = {"end_to_end": [], "bare": []}
    cpu: dict[str, list[float]] = {"end_to_end": [], "bare": []}
    mark = {"wall": 0.0, "cpu": 0.0}
    profile_from = warmup + steps

    def on_step(step: int) -> None:
        if step == warmup:
            for _ in range(2):
                run_bare()   # traced, and warm in the training run's state (its first call retraces)
        if warmup < step <= warmup + steps:
            wall["end_to_end"].append(time.perf_counter() - mark["wall"])
            cpu["end_to_end"].append(time.process_time() - mark["cpu"])
            if (step - warmup) % chunk == 0 or step == warmup + steps:
                for _ in range(min(chunk, steps - len(wall["bare"]))):
                    t, c = time.perf_counter(), time.process_time()
                    run_bare()
                    wall["bare"].append(time.perf_counter() - t)
                    cpu["bare"].append(time.process_time() - c)
        if profile_steps and step == profile_from:
            tf.profiler.experimental.start(str(profile_dir))
        if profile_steps and step == profile_from + profile_steps:
            tf.profiler.experimental.stop()
        mark["wall"], mark["cpu"] = time.perf_counter(), time.process_time()

    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(train_data=str(data / "train-*.tfrecord"), model_dir=tmp, model=kind, preset=preset,
                          batch_size=batch, steps=profile_from + profile_steps, warmup_steps=1,
                          checkpoint_every=10 ** 9, eval_every=0, log_every=10 ** 9, progress=False)
        train(cfg, on_step=on_step)
    out = {}
    for what in ("end_to_end", "bare"):
        out[f"{what}_img_s"] = batch * len(wall[what]) / sum(wall[what])
        out[f"{what}_img_s_median_step"] = batch / statistics.median(wall[what])
        out[f"{what}_img_per_cpu_s"] = batch * len(cpu[what]) / sum(cpu[what])
    out["ratio"] = out["end_to_end_img_s"] / out["bare_img_s"]
    out["ratio_median_step"] = out["end_to_end_img_s_median_step"] / out["bare_img_s_median_step"]
    out["ratio_cpu"] = out["end_to_end_img_per_cpu_s"] / out["bare_img_per_cpu_s"]
    return out


def stages(kind: str, preset: str, data: Path, batch: int, batches: int) -> dict:
    """Per-stage cost, each stage alone with all cores, as (wall, CPU) seconds per batch: the training pipeline
    cut after reading (order, per-example draws, the batch gathered from memory), after augmentation and after
    target encoding — a stage costs the difference — and the loop's training step on a fixed batch. Also
    ``decode_once``: seconds per example of the one-time decoding into memory."""
    import keras
    import tensorflow as tf

    from blazepose_tf.topology import BLAZEPOSE_33
    from blazepose_tf.training import data as tracker_data
    from blazepose_tf.training import detector_data
    from blazepose_tf.training.config import TrainConfig
    from blazepose_tf.training.loop import make_optimizer, make_train_step
    from blazepose_tf.training.tasks import TASKS
    from blazepose_tf.training.tracker_targets import target_encoder

    pattern = str(data / "train-*.tfrecord")
    cfg = TrainConfig(train_data=pattern, model_dir="unused", model=kind, preset=preset, batch_size=batch)
    strategy = tf.distribute.get_strategy()
    task = TASKS[kind](cfg, BLAZEPOSE_33, strategy)
    models = task.models
    t = time.perf_counter()
    if kind == "tracker":
        examples = tracker_data.tracker_examples(pattern, BLAZEPOSE_33, cfg.decode_cache_mb)
        data_cfg = tracker_data.TrackerDataConfig(batch_size=batch)
        example_fn = tracker_data.tracker_example_fn(data_cfg, True)
        augment = tracker_data.tracker_batch_fn(data_cfg, BLAZEPOSE_33, True)
        encode = target_encoder(models.num_points, models.input_size, with_offsets=models.has_offsets)
    else:
        examples = detector_data.detector_examples(pattern, BLAZEPOSE_33, cfg.decode_cache_mb)
        data_cfg = detector_data.DetectorDataConfig(batch_size=batch)
        example_fn = detector_data.detector_example_fn(data_cfg, True)
        augment = detector_data.detector_batch_fn(data_cfg, BLAZEPOSE_33, True)
        encode = detector_data.detector_target_encoder(data_cfg, BLAZEPOSE_33)
    decode_once = (time.perf_counter() - t) / max(examples.num_examples, 1)

    def cut_after(per_batch):
        return _cost(_next_of(tracker_data.build_pipeline(examples, batch, 0, 2048, True, example_fn, per_batch,
                                                          repeat=True)), batches)

    read = cut_after(lambda images, ex: (images, ex))
    augmented = cut_after(augment)
    encoded = cut_after(lambda images, ex: encode(*augment(images, ex)))
    optimizer = make_optimizer(cfg)
    optimizer.build(models.training.trainable_variables)
    train_step = make_train_step(task, models.training, optimizer, strategy)
    fixed = next(iter(task.dataset(None, 0, 0)))
    step = _cost(lambda: float(sum(train_step(fixed).values())), batches)
    keras.backend.clear_session()

    def minus(a, b):
        return tuple(max(x - y, 0.0) for x, y in zip(a, b))
    return {"decode_once": decode_once, "read": read, "augment": minus(augmented, read),
            "target_encoding": minus(encoded, augmented), "pipeline": encoded, "step": step}


def dev_evaluation(kind: str, preset: str, data: Path, batch: int) -> dict:
    """Seconds of one dev evaluation (as during training: the whole prepared dev split) after a first one."""
    import tensorflow as tf

    from blazepose_tf.topology import BLAZEPOSE_33
    from blazepose_tf.training.config import TrainConfig
    from blazepose_tf.training.data import count_records
    from blazepose_tf.training.tasks import TASKS

    cfg = TrainConfig(train_data=str(data / "train-*.tfrecord"), dev_data=str(data / "dev-*.tfrecord"),
                      model_dir="unused", model=kind, preset=preset, batch_size=batch, eval_batches=0)
    task = TASKS[kind](cfg, BLAZEPOSE_33, tf.distribute.get_strategy())
    writer = tf.summary.create_noop_writer()
    task.evaluate(writer, 0)   # traces and compiles
    t = time.perf_counter()
    task.evaluate(writer, 0)
    seconds = time.perf_counter() - t
    count = count_records(cfg.dev_data)
    return {"seconds": seconds, "examples": count, "s_per_1000": 1000 * seconds / max(count, 1)}


def load() -> str:
    """The machine's ``uptime`` line (load averages)."""
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def define_flags() -> None:
    """The command's flags (defined by ``__main__`` only: importing the module defines none)."""
    flags.DEFINE_list("models", ["lite", "full", "detector"], f"Models, of {', '.join(MODELS)}.")
    flags.DEFINE_integer("batch_size", 32, "Batch size of both measurements.", lower_bound=1)
    flags.DEFINE_integer("steps", 16, "Timed end-to-end steps (and bare steps).", lower_bound=1)
    flags.DEFINE_integer("warmup", 4, "End-to-end steps before timing.", lower_bound=0)
    flags.DEFINE_integer("chunk", 2, "End-to-end and bare steps run in turns of this many.", lower_bound=1)
    flags.DEFINE_integer("stage_batches", 8, "Timed batches per stage.", lower_bound=1)
    flags.DEFINE_bool("stages", True, "Measure the per-stage breakdown.")
    flags.DEFINE_bool("eval", True, "Measure the dev-evaluation cost.")
    flags.DEFINE_integer("profile_steps", 0, "Profiler trace of this many end-to-end steps.", lower_bound=0)
    flags.DEFINE_string("profile_dir", str(_REPO / "out" / "train_throughput_profile"), "Where the trace goes.")
    flags.DEFINE_string("lspet", str(DEFAULT_LSPET), "LSPET folder (COCO-keypoints layout).")
    flags.DEFINE_integer("images", 320, "LSPET images per split to prepare.", lower_bound=1)
    flags.DEFINE_string("output", None, "Write the results as JSON here.")
    cli.define_overwrite_flag()


def main(argv: list[str]) -> int:
    """Prepares the data if needed, measures each model, prints the table and the ratio lines."""
    args = flags.FLAGS
    names = [m for m in args.models if m]
    unknown = sorted(set(names) - set(MODELS))
    if unknown or not names:
        raise UserError(f"unknown model(s) {unknown}; known: {sorted(MODELS)}")
    cli.check_outputs([("--output", args.output)], [("--lspet", args.lspet)], overwrite=args.overwrite)

    start = load()
    print(f"start: {start}", flush=True)
    t0 = time.time()
    results = {}
    for name in names:
        kind, preset = MODELS[name]
        data = ensure_data(kind, Path(args.lspet), args.images)
        row = interleaved(kind, preset, data, args.batch_size, args.steps, args.warmup, args.chunk,
                          args.profile_steps, Path(args.profile_dir) / name)
        if args.stages:
            row["stages_s"] = stages(kind, preset, data, args.batch_size, args.stage_batches)
        if args.eval:
            row["dev_evaluation"] = dev_evaluation(kind, preset, data, args.batch_size)
        results[name] = row
        print(f"{name}: end to end {row['end_to_end_img_s']:.1f} img/s, bare {row['bare_img_s']:.1f} img/s; per "
              f"CPU-second {row['end_to_end_img_per_cpu_s']:.1f} / {row['bare_img_per_cpu_s']:.1f}; "
              f"load {os.getloadavg()[0]:.1f}", flush=True)
        print(f"{name} end_to_end/bare: {row['ratio']:.2f}", flush=True)

    b = args.batch_size
    print(f"\nbatch {b}, {os.cpu_count()} CPUs; {time.time() - t0:.0f} s")
    print(f"{'model':9s} {'end-to-end':>11s} {'bare':>8s} {'ratio':>6s} {'CPU ratio':>10s}   img/s; target ratio "
          f">= {TARGET_RATIO}")
    for name, row in results.items():
        verdict = "PASS" if row["ratio"] >= TARGET_RATIO else "FAIL"
        print(f"{name:9s} {row['end_to_end_img_s']:11.1f} {row['bare_img_s']:8.1f} {row['ratio']:6.2f} "
              f"{row['ratio_cpu']:10.2f}   {verdict}")
    if args.stages:
        print("\nper stage, alone: ms per batch, wall / CPU (images/s of the wall time); decode once: ms per example, "
              "once per run")
        for name, row in results.items():
            st = row["stages_s"]
            parts = [f"decode once {1000 * st['decode_once']:.2f}"] + [
                f"{k.replace('_', ' ')} {1000 * st[k][0]:.0f} / {1000 * st[k][1]:.0f} ({_rate(b, st[k][0]):.0f})"
                for k in ("read", "augment", "target_encoding", "pipeline", "step")]
            print(f"{name:9s} " + ", ".join(parts))
    if args.eval:
        print("\ndev evaluation (whole prepared dev split, as in training)")
        for name, row in results.items():
            ev = row["dev_evaluation"]
            print(f"{name:9s} {ev['seconds']:.1f} s for {ev['examples']} examples ({ev['s_per_1000']:.1f} s per 1000)")
    end = load()
    print(f"\nstart: {start}\nend:   {end}")
    if args.output:
        cli.write_marked(args.output, {"batch_size": b, "load_start": start, "load_end": end, "results": results},
                         overwrite=args.overwrite)
    return 0


if __name__ == "__main__":
    define_flags()
    cli.run(main)
