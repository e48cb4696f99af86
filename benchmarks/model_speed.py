"""Training throughput and inference latency of every model preset on this machine.

    python -m benchmarks.model_speed [--presets full,lite,detector,detector_lite] [--batch 32] [--steps 10]
                                     [--warmup 2] [--runs 30] [--threads 1,2] [--no_tflite] [--output out.json]

Train: images/s of one optimizer step (forward, the project's losses on realistic targets, backward, Adam)
of the training model at ``--batch`` (256² for trackers, 224² for detectors), graph mode (``tf.function``),
median and best over ``--steps`` steps after ``--warmup``. Targets are encoded once beforehand (the input
pipeline is not timed). ``train_img_per_cpu_s`` divides by the process's CPU time instead of wall time: on a
machine shared with other jobs it stays comparable between runs (an idle 2-core machine reaches up to ~2× it
in wall-clock images/s).

Inference: median latency of one image through the inference model, with Keras (``tf.function``, TF's own
threads) and, unless ``--no_tflite``, as fp32 TFLite (``TFLiteConverter.from_keras_model``) on ai-edge-litert
with XNNPACK at each ``--threads`` count (``--no_tflite``: Keras only).

The machine's load average is printed with the results: on a shared machine, numbers drop with it.
"""
from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:  # allow `python benchmarks/model_speed.py`
    sys.path.insert(0, str(_REPO))

from absl import flags  # noqa: E402

from blazepose_tf import cli  # noqa: E402
from blazepose_tf.errors import UserError  # noqa: E402


def _tracker_batch(models, batch: int):
    import numpy as np

    from blazepose_tf.codecs.heatmap import encode_heatmaps
    from blazepose_tf.codecs.targets import tracker_targets

    size = models.config.input_size
    rng = np.random.default_rng(0)
    p = models.num_points
    kp = rng.uniform(0.1 * size, 0.9 * size, (batch, p, 3)).astype(np.float32)
    avail = (rng.uniform(size=(batch, p)) > 0.2).astype(np.float32)
    targets = dict(tracker_targets(kp, avail, input_size=size))
    hm, off, mask = encode_heatmaps(kp, avail, heatmap_size=models.config.heatmap_size, input_size=size)
    targets.update(heatmap=hm, offsets=off, offset_mask=mask)
    images = rng.uniform(0, 1, (batch, size, size, 3)).astype(np.float32)
    return images, targets


def _detector_batch(model, batch: int):
    import numpy as np

    from blazepose_tf.codecs.detector_targets import detector_targets

    rng = np.random.default_rng(0)
    size = int(model.inputs[0].shape[1])
    regs, labels, masks = [], [], []
    for _ in range(batch):
        kp = np.zeros((1, 33, 2), np.float32)
        cx, cy, s = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.1, 0.3)
        kp[0, :, 0] = cx + rng.uniform(-0.3, 0.3, 33) * s
        kp[0, :, 1] = cy + rng.uniform(-0.8, 0.8, 33) * s
        kp[0, 11:13, 1] = cy - 0.4 * s
        kp[0, 23:25, 1] = cy + 0.1 * s
        kp[0, [11, 23], 0] -= 0.1 * s
        kp[0, [12, 24], 0] += 0.1 * s
        r, lab, m = detector_targets(kp, np.ones((1, 33)))
        regs.append(r)
        labels.append(lab)
        masks.append(m)
    images = rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
    return images, (np.stack(regs), np.stack(labels), np.stack(masks))


def bare_step(kind: str, preset: str, batch: int) -> tuple[Callable[[], float], int]:
    """The bare training step of one preset — forward, the project's losses on realistic targets encoded once
    beforehand, backward, Adam, on one batch already in memory, graph mode — as a function running one step
    (and waiting for it), with the model's parameter count. Not yet traced."""
    import keras
    import tensorflow as tf

    from blazepose_tf import losses as L
    from blazepose_tf.models import build_detector, build_tracker

    if kind == "tracker":
        models = build_tracker(preset)
        model = models.training
        images, targets = _tracker_batch(models, batch)
        size = models.config.input_size

        def loss_fn(outs):
            return L.tracker_loss(targets, outs, input_size=size)[0]
    else:
        model = build_detector(preset)
        images, (regs, labels, masks) = _detector_batch(model, batch)

        def loss_fn(outs):
            return L.detector_loss(labels, regs, masks, outs)[0]

    opt = keras.optimizers.Adam(1e-3)
    variables = model.trainable_variables

    @tf.function(autograph=False)   # as the training loop's step
    def step(x):
        with tf.GradientTape() as tape:
            loss = loss_fn(model(x, training=True))
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    x = tf.constant(images)
    return lambda: float(step(x)), model.count_params()


def train_speed(kind: str, preset: str, batch: int, steps: int, warmup: int) -> dict:
    """Images/s of a full training step for one preset (:func:`bare_step`)."""
    run, params = bare_step(kind, preset, batch)
    for _ in range(warmup):
        run()
    times, cpu = [], []
    for _ in range(steps):
        t, c = time.perf_counter(), time.process_time()
        run()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return {"train_img_s_median": batch / statistics.median(times), "train_img_s_best": batch / min(times),
            "train_img_per_cpu_s": batch / statistics.median(cpu), "params": params}


def inference_speed(kind: str, preset: str, runs: int, threads: list[int], tflite: bool) -> dict:
    """Median single-image latency with Keras and (optionally) TFLite/XNNPACK."""
    import numpy as np
    import tensorflow as tf

    from blazepose_tf.models import build_detector, build_tracker

    model = build_tracker(preset).inference if kind == "tracker" else build_detector(preset)
    shape = (1, *model.inputs[0].shape[1:])
    x = np.random.default_rng(0).uniform(0, 1, shape).astype(np.float32)
    fn = tf.function(lambda t: model(t, training=False), autograph=False)   # as the runtime's
    xt = tf.constant(x)
    for _ in range(3):
        [np.asarray(o) for o in fn(xt)]
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        [np.asarray(o) for o in fn(xt)]
        times.append(time.perf_counter() - t)
    out = {"keras_ms": 1000 * statistics.median(times)}
    if tflite:
        from blazepose_tf.tflite_file import load_interpreter

        content = tf.lite.TFLiteConverter.from_keras_model(model).convert()
        out["tflite_mb"] = len(content) / 1e6
        for n in threads:
            it = load_interpreter(content, n)
            idx = it.get_input_details()[0]["index"]
            for _ in range(3):
                it.set_tensor(idx, x)
                it.invoke()
            times = []
            for _ in range(runs):
                t = time.perf_counter()
                it.set_tensor(idx, x)
                it.invoke()
                times.append(time.perf_counter() - t)
            out[f"tflite_{n}t_ms"] = 1000 * statistics.median(times)
    return out


def define_flags() -> None:
    """The command's absl flags."""
    flags.DEFINE_list("presets", ["full", "lite", "detector", "detector_lite"], "Tracker and/or detector presets.")
    flags.DEFINE_integer("batch", 32, "Training batch size.", lower_bound=1)
    flags.DEFINE_integer("steps", 10, "Timed training steps.", lower_bound=1)
    flags.DEFINE_integer("warmup", 2, "Untimed training steps first.", lower_bound=0)
    flags.DEFINE_integer("runs", 30, "Timed inference runs.", lower_bound=1)
    flags.DEFINE_list("threads", ["1", "2"], "TFLite thread counts.")
    flags.DEFINE_bool("no_tflite", False, "Skip the fp32 TFLite conversion and timing (Keras only).")
    flags.DEFINE_string("output", None, "Write the results as JSON.")
    cli.define_overwrite_flag()


def main(argv: list[str]) -> int:
    """Measures each preset, prints a table, optionally writes JSON."""
    FLAGS = flags.FLAGS
    try:
        threads = [int(t) for t in FLAGS.threads]
    except ValueError:
        raise UserError(f"--threads must list whole numbers, got {','.join(FLAGS.threads)}") from None
    if not threads or min(threads) < 1 or not FLAGS.presets:
        raise UserError("--threads and --presets must each list at least one value (threads >= 1)")
    cli.check_outputs([("--output", FLAGS.output)], overwrite=FLAGS.overwrite)

    from blazepose_tf.models import DETECTOR_PRESETS, TRACKER_PRESETS

    known = sorted(TRACKER_PRESETS) + sorted(DETECTOR_PRESETS)
    unknown = [p for p in FLAGS.presets if p not in known]
    if unknown:
        raise UserError(f"unknown preset {unknown[0]!r}; known: {', '.join(known)}")
    results = {}
    for preset in FLAGS.presets:
        if preset in TRACKER_PRESETS:
            kind = "tracker"
        else:
            kind = "detector"
        load_before = os.getloadavg()[0]
        row = {"kind": kind, **train_speed(kind, preset, FLAGS.batch, FLAGS.steps, FLAGS.warmup),
               **inference_speed(kind, preset, FLAGS.runs, threads, not FLAGS.no_tflite),
               "load_avg_1min": (load_before + os.getloadavg()[0]) / 2}
        results[preset] = row
        print(f"{preset}: " + ", ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}"
                                        for k, v in row.items()), flush=True)
    cols = ["train_img_s_median", "train_img_s_best", "train_img_per_cpu_s", "keras_ms"] + \
        ([f"tflite_{n}t_ms" for n in threads] if not FLAGS.no_tflite else [])
    print()
    print(f"{'preset':14s} {'params':>10s} " + " ".join(f"{c:>18s}" for c in cols) + "   load")
    for preset, row in results.items():
        print(f"{preset:14s} {row['params']:>10,d} " + " ".join(f"{row[c]:>18.1f}" for c in cols)
              + f"   {row['load_avg_1min']:.1f}")
    print(f"\nbatch {FLAGS.batch}, {os.cpu_count()} CPUs; train = one Adam step incl. losses (graph mode); "
          "inference = one image, median.")
    if FLAGS.output:
        cli.write_marked(FLAGS.output, {"batch": FLAGS.batch, "results": results}, overwrite=FLAGS.overwrite)
    return 0


if __name__ == "__main__":
    define_flags()
    cli.run(main)
