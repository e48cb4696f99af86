"""Is the model or the data the bottleneck? Input-pipeline samples/s next to training samples/s, same machine.

    python -m benchmarks.input_pipeline [--data GLOB] [--preset lite] [--batch_size 32] [--batches 30]

The input pipeline is measured alone as training runs it (images decoded once into memory unless
``--decode_cache_mb`` is too small for them; then per-example draws, batched alignment warp and augmentation,
heatmap/offset encoding); training alone on a fixed batch already in memory (forward, losses, backward, AdamW).
Target: the pipeline delivers at least 2× the samples/s that training consumes. Both compete for the same cores
when training for real, so both are measured with all cores available, one after the other; for the two together
see :mod:`benchmarks.train_throughput`.
"""
from __future__ import annotations

import os
import time

from absl import flags

from blazepose_tf import cli
from blazepose_tf.training.config import TrainConfig

flags.DEFINE_string("data", "~/.cache/blazepose_tf/data/lspet_tracker/train-*.tfrecord",
                    "Training shards from data.prepare.")
flags.DEFINE_string("preset", "lite", "Tracker preset.")
flags.DEFINE_integer("batch_size", 32, "Batch size.", lower_bound=1)
flags.DEFINE_integer("batches", 30, "Measured batches (after warm-up).", lower_bound=2)
flags.DEFINE_float("decode_cache_mb", TrainConfig.decode_cache_mb, "Decoded images kept in memory up to this many "
                   "MiB (as in training; 0: decoded as read).", lower_bound=0.0)
FLAGS = flags.FLAGS


def main(argv: list[str]) -> int:
    import tensorflow as tf

    from blazepose_tf.topology import BLAZEPOSE_33
    from blazepose_tf.training.config import default_loss_weights
    from blazepose_tf.training.data import TrackerDataConfig, tracker_dataset, tracker_examples
    from blazepose_tf.training.registry import build_models
    from blazepose_tf.training.tracker_targets import target_encoder
    from blazepose_tf.training.weighted_losses import tracker_losses

    pattern = os.path.expanduser(FLAGS.data)
    models = build_models(FLAGS.preset, BLAZEPOSE_33)
    encode = target_encoder(models.num_points, models.input_size, with_offsets=models.has_offsets)
    cfg = TrackerDataConfig(batch_size=FLAGS.batch_size)
    t0 = time.perf_counter()
    examples = tracker_examples(pattern, BLAZEPOSE_33, FLAGS.decode_cache_mb)
    decode_s = time.perf_counter() - t0
    ds = tracker_dataset(examples, cfg, training=True, encode_targets=encode, repeat=True)
    it = iter(ds)
    for _ in range(3):
        batch = next(it)
    t0 = time.perf_counter()
    for _ in range(FLAGS.batches):
        batch = next(it)
    data_rate = FLAGS.batches * FLAGS.batch_size / (time.perf_counter() - t0)

    import keras
    model = models.training
    opt = keras.optimizers.AdamW(1e-3)
    weights = default_loss_weights("tracker")  # the training defaults (no teacher: no distillation term)

    @tf.function(autograph=False)   # as the training loop's step
    def step(images, targets):
        with tf.GradientTape() as tape:
            terms = tracker_losses(model(images, training=True), targets, weights)
            loss = tf.add_n(list(terms.values()))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    images, targets = batch
    for _ in range(3):
        step(images, targets).numpy()
    n = max(FLAGS.batches // 3, 5)
    t0 = time.perf_counter()
    for _ in range(n):
        step(images, targets).numpy()
    train_rate = n * FLAGS.batch_size / (time.perf_counter() - t0)
    ratio = data_rate / train_rate
    print(f"preset {FLAGS.preset}, batch {FLAGS.batch_size}, {os.cpu_count()} CPU cores")
    print(f"{examples.num_examples} examples " + (f"decoded into memory in {decode_s:.1f} s" if examples.cached
                                                  else "decoded as read"))
    print(f"input pipeline   {data_rate:8.1f} samples/s")
    print(f"training         {train_rate:8.1f} samples/s   ({train_rate / FLAGS.batch_size:.2f} steps/s)")
    print(f"pipeline / training = {ratio:.2f}x   [{'PASS' if ratio >= 2 else 'FAIL'}: >= 2x]")
    return 0 if ratio >= 2 else 1


if __name__ == "__main__":
    cli.run(main)
