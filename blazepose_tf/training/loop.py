"""The resumable training loop behind ``python -m blazepose_tf.train``."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Optional

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from blazepose_tf.errors import UserError
from blazepose_tf.topology import get_topology
from blazepose_tf.training.config import TrainConfig
from blazepose_tf.training.data import count_records, replica_batch_size
from blazepose_tf.training.ema import WeightAverage
from blazepose_tf.training.initialize import initialize
from blazepose_tf.training.preflight import (BATCHES_FILE, BEST_MODEL, CHECKPOINTS, CONFIG_FILE, HISTORY_FILE,
                                             LAST_MODEL, SUMMARIES, check_run, latest_checkpoint, resolved)
from blazepose_tf.training.registry import Models
from blazepose_tf.training.schedule import make_schedule
from blazepose_tf.training.step_scales import StepScales, scaled_optimizer
from blazepose_tf.training.tasks import TASKS, Task


def make_optimizer(cfg: TrainConfig, schedule=None, step_scales: Optional[StepScales] = None):
    """AdamW (training from scratch) or SGD with momentum 0.9 (its steps scale with each weight's gradient, where
    Adam moves every weight by about the learning rate, which perturbs the small folded-BatchNorm weights of the
    converted official models), at ``schedule`` (default :func:`make_schedule`'s); with ``step_scales``, each
    variable's step is multiplied by its entry (``--step_scale``, ``--first_layer_lr``)."""
    schedule = make_schedule(cfg) if schedule is None else schedule
    clip = {"clipnorm": cfg.clipnorm or None}
    if cfg.optimizer == "sgd":
        base, kwargs = keras.optimizers.SGD, dict(learning_rate=schedule, momentum=0.9, **clip)
    else:
        base, kwargs = keras.optimizers.AdamW, dict(learning_rate=schedule, weight_decay=cfg.weight_decay, **clip)
    return scaled_optimizer(base, step_scales, **kwargs) if step_scales is not None else base(**kwargs)


def uses_step_scales(cfg: TrainConfig) -> bool:
    """Whether the run scales its steps per weight (``--step_scale`` or ``--first_layer_lr``)."""
    return cfg.step_scale != "none" or cfg.first_layer_lr != 1.0


class ClusterError(UserError):
    """A multi-worker run lost a worker (or the chief): every worker must be restarted."""

    exit_code = 1


# What a collective op raises on the surviving workers when a peer dies (after TF's health check notices).
LOST_PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.CancelledError, tf.errors.AbortedError,
                    tf.errors.DeadlineExceededError)


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The tf.distribute strategy of ``--strategy``. Create it before any other TensorFlow work:
    MultiWorkerMirroredStrategy configures the collective ops of this process (``TF_CONFIG`` names the cluster
    and this worker's place in it)."""
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":   # TF_CONFIG: checked by preflight.check_run
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run: always, except under a multi-worker cluster, where the ``chief`` task
    does (or worker 0 when the cluster has no chief)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    cluster = resolver.cluster_spec().as_dict() if resolver is not None else {}
    if not cluster:
        return True
    if "chief" in cluster:
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0


def check_same_start(strategy: tf.distribute.Strategy, start: int) -> None:
    """Under a multi-worker strategy, refuses (one-line :class:`UserError`, on every worker) to go on when the
    workers restored different steps: their ``--model_dir`` is not one shared folder."""
    if strategy.num_replicas_in_sync == 1:
        return
    mean = tf.function(lambda: strategy.reduce(tf.distribute.ReduceOp.MEAN, strategy.run(
        lambda: tf.constant([start, start * start], tf.float64)), axis=None))().numpy()
    if mean[1] - mean[0] ** 2 > 0.25:
        raise UserError(f"the workers resume from different steps (this one from {start}, their mean "
                        f"{mean[0]:g}): every worker must see the same --model_dir (one shared folder)")


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(text)
    os.replace(tmp, path)


# What an interrupted checkpoint write leaves behind: TF writes ckpt-N's shards into ckpt-N_temp/ before
# merging them, and the `checkpoint` state file through checkpoint.tmp<uuid>.
STALE_CHECKPOINT_FILES = re.compile(r"^(ckpt-\d+_temp.*|checkpoint\.tmp.*)$")


def remove_stale_checkpoint_files(checkpoint_dir: Path) -> list[str]:
    """Deletes the leftovers of interrupted checkpoint writes in ``checkpoint_dir``; returns their names."""
    removed = []
    if checkpoint_dir.is_dir():
        for p in sorted(checkpoint_dir.iterdir()):
            if STALE_CHECKPOINT_FILES.match(p.name):
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
                removed.append(p.name)
    return removed


def trim_jsonl(path: Path, keep: Callable[[int], bool]) -> int:
    """Rewrites a JSON-lines log atomically with only the rows whose ``step`` passes ``keep`` (a torn last line
    from a kill is dropped too); returns the rows dropped. No file, nothing done."""
    if not path.is_file():
        return 0
    lines = path.read_text().splitlines()
    kept = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and keep(row["step"]):
            kept.append(line)
    if len(kept) < len(lines):
        _write_atomically(path, "".join(line + "\n" for line in kept))
    return len(lines) - len(kept)


def _training_records(cfg: TrainConfig) -> int:
    """Checks the data flags (each glob matches readable shards holding records) and returns the number of
    training records."""
    counts = {}
    for flag in ("train_data", "dev_data"):
        pattern = getattr(cfg, flag)
        if pattern is not None:   # the globs: checked by preflight.check_run
            try:
                counts[flag] = count_records(pattern)
            except FileNotFoundError as e:
                raise UserError(str(e)) from None
            if counts[flag] == 0:
                raise UserError(f"--{flag} {pattern}: the shards hold no records")
    return counts["train_data"]


def export_inference(models: Models, path: Path, metrics: dict, step: int) -> None:
    """Saves the inference model as ``.keras`` atomically, with a JSON sidecar (step, metrics)."""
    path = Path(path)
    tmp = path.with_name(path.stem + ".part.keras")
    models.inference.save(tmp)
    os.replace(tmp, path)
    side = path.with_suffix(".json")
    side.write_text(json.dumps({"step": step, **metrics}, indent=1))


def make_train_step(task: Task, model, optimizer, strategy: tf.distribute.Strategy) -> Callable:
    """The compiled training step: per replica, (distillation targets,) forward, weighted losses, backward;
    gradients summed over replicas (each replica's loss is divided by their number, so this is the global batch's
    mean) and applied. Returns the loss terms averaged over replicas."""
    replicas = strategy.num_replicas_in_sync
    forward = task.forward if task.forward is not None else model

    def step_fn(images, targets):
        if task.extra_targets is not None:
            targets = task.extra_targets(images, targets)
        with tf.GradientTape() as tape:
            outputs = forward(images, training=True)
            terms = task.losses(outputs, targets)
            loss = tf.add_n(list(terms.values())) / replicas
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return terms

    @tf.function(autograph=False)
    def train_step(batch):
        images, targets = batch
        per_replica = strategy.run(step_fn, args=(images, targets))
        return {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None) for k, v in per_replica.items()}
    return train_step


def train(cfg: TrainConfig, on_step: Optional[Callable[[int], None]] = None) -> dict:
    """Trains (or resumes) and returns the final step and metrics; ``on_step(step)`` is called after each step
    (timing, profiling).

    Everything is checked first — flags, data, the checkpoint or ``init_from``/``distill_from`` weights, the
    model — and only then is anything written to ``model_dir``, so a failed start leaves it as it was. A
    ``model_dir`` without a checkpoint starts afresh when it is empty or holds an earlier run of this package
    (its ``config.json`` and logs are replaced; anything else there is refused:
    :func:`~blazepose_tf.training.preflight.check_fresh_model_dir`); on resume the
    logs' rows past the restored step are dropped and leftovers of interrupted checkpoint writes removed.

    Under ``--strategy multi_worker`` every worker runs this with the same flags and a ``model_dir`` they all
    reach (shared storage): all of them resume from its latest checkpoint, only the chief writes into it (logs,
    dev evaluation, checkpoints, exports); the others save their share of each checkpoint into a temporary
    folder of their own."""
    check_run(cfg)   # also refuses to resume with changed settings
    run = resolved(cfg)
    cfg.train_data, cfg.dev_data, cfg.model_dir = run.train_data, run.dev_data, run.model_dir
    model_dir = Path(cfg.model_dir)
    topology = get_topology(cfg.topology)   # one of the flag's choices
    strategy = make_strategy(cfg.strategy)   # before any other TensorFlow op (multi_worker)
    chief = is_chief(strategy)
    num_train = _training_records(cfg)
    checkpoint_dir = model_dir / CHECKPOINTS
    latest = latest_checkpoint(checkpoint_dir)
    print(f"strategy {type(strategy).__name__}, replicas: {strategy.num_replicas_in_sync}"
          + ("" if chief else " (not the chief: writes nothing into --model_dir)"), file=sys.stderr)
    replica_batch_size(cfg.batch_size, strategy.num_replicas_in_sync)   # checked before anything is written
    keras.utils.set_random_seed(cfg.seed)

    steps_per_epoch = max(num_train // cfg.batch_size, 1)
    task = TASKS[cfg.model](cfg, topology, strategy)
    models = task.models
    model = models.training
    schedule = make_schedule(cfg)   # also logged from here: the optimizer's copy of a rate is per replica
    with strategy.scope():
        scales = (StepScales(model, model.trainable_variables, cfg.step_scale, cfg.first_layer_lr)
                  if uses_step_scales(cfg) else None)
        optimizer = make_optimizer(cfg, schedule, scales)
        optimizer.build(model.trainable_variables)
        step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        best_var = tf.Variable(-1.0, dtype=tf.float64, trainable=False, name="best_dev_pck")
        average = WeightAverage(model, cfg.ema_momentum) if cfg.ema_momentum else None
    ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step_var, best=best_var,
                               **({"average": average} if average else {}),
                               **({"step_scales": scales} if scales else {}), **task.state)
    if latest:
        try:
            ckpt.restore(latest).assert_consumed()
        except (AssertionError, ValueError, tf.errors.OpError):
            raise UserError(f"{latest} does not match the model being trained (was the "
                            "architecture changed?); use a new --model_dir") from None
        print(f"resumed from {latest} at step {int(step_var.numpy())}", file=sys.stderr)
    else:
        initialize(models, cfg.init_from)
        if average:
            average.reset()
        if scales:
            scales.reset()
        if task.prepare is not None:
            task.prepare()
        print(f"starting from {cfg.init_from} at step 0", file=sys.stderr)
    start = int(step_var.numpy())
    check_same_start(strategy, start)
    if start >= cfg.steps:
        print(f"already trained {start} >= --steps {cfg.steps} steps", file=sys.stderr)

    # Everything checked: from here on model_dir is written (by the chief).
    history_path = model_dir / HISTORY_FILE
    if chief:
        try:
            model_dir.mkdir(parents=True, exist_ok=True)
            _write_atomically(model_dir / CONFIG_FILE, json.dumps(asdict(cfg), indent=1))
        except OSError as e:
            raise UserError(f"cannot write --model_dir {model_dir}: {e.strerror or e}") from None
        stale = remove_stale_checkpoint_files(checkpoint_dir)
        if stale:
            print(f"removed leftovers of interrupted checkpoint writes: {', '.join(stale)}", file=sys.stderr)
        # Log rows of steps about to be redone go (all of them on a fresh start): history rows are numbered by the
        # steps done, batch rows by the (0-based) step they feed.
        done = start if latest else -1
        trim_jsonl(history_path, lambda step: step <= done)
        trim_jsonl(model_dir / BATCHES_FILE, lambda step: step < start)
    scratch = None if chief else tempfile.mkdtemp(prefix="blazepose_worker_checkpoints_")
    manager = tf.train.CheckpointManager(ckpt, str(checkpoint_dir) if chief else scratch,
                                         max_to_keep=3 if chief else 1)

    epoch, skip = divmod(start, steps_per_epoch)
    dist_ds = strategy.distribute_datasets_from_function(lambda context: task.dataset(context, epoch, skip))
    train_step = make_train_step(task, model, optimizer, strategy)
    writer = tf.summary.create_file_writer(str(model_dir / SUMMARIES)) if chief else tf.summary.create_noop_writer()
    batches_log = open(model_dir / BATCHES_FILE, "a") if cfg.log_batches and chief else None
    last_losses: dict = {}
    t0 = time.time()
    it = iter(dist_ds)
    bar = tqdm(total=cfg.steps, initial=start, desc="train", unit="step", disable=not (cfg.progress and chief),
               file=sys.stderr)
    step = start

    evaluated: dict = {}   # the latest evaluation's step and metrics (last.keras' sidecar when it is the last step)

    def run_eval() -> None:
        t = time.time()
        raw = task.evaluate(tf.summary.create_noop_writer(), step) if average else {}
        with average.swapped() if average else contextlib.nullcontext():
            metrics = task.evaluate(writer, step)
            evaluated.update(step=step, metrics=metrics)
            if metrics[task.metric] > float(best_var.numpy()):
                best_var.assign(metrics[task.metric])
                export_inference(models, model_dir / BEST_MODEL, metrics, step)
        with open(history_path, "a") as h:
            h.write(json.dumps({"step": step, **{f"dev_{k}": v for k, v in metrics.items()},
                                **{f"dev_raw_{k}": v for k, v in raw.items()},
                                "dev_eval_s": round(time.time() - t, 1)}) + "\n")
        print(f"step {step}: dev " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
              + (f" (weight average; trained weights {task.metric} {raw[task.metric]:.4g})" if average else "")
              + f" ({time.time() - t:.1f} s)", file=sys.stderr)

    evaluate = chief and task.evaluate is not None
    if start == 0 and evaluate and cfg.eval_every:
        run_eval()  # where the run starts from (untrained, or the weights it was initialized with)
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    try:
        while step < cfg.steps:
            batch = next(it)
            if batches_log is not None:
                local = strategy.experimental_local_results(batch[0])
                digest = hashlib.sha1(b"".join(np.asarray(x).tobytes()[:4096] for x in local)).hexdigest()[:16]
                batches_log.write(json.dumps({"step": step, "batch": digest}) + "\n")
                batches_log.flush()
            losses = train_step(batch)
            if average:
                average.update(step)
            step += 1
            step_var.assign(step)
            bar.update(1)
            if on_step is not None:
                on_step(step)
            if (step % cfg.log_every == 0 or step == cfg.steps) and chief:
                last_losses = {k: float(v) for k, v in losses.items()}
                lr = float(schedule(step) if callable(schedule) else schedule)
                with writer.as_default(step=step):
                    for k, v in last_losses.items():
                        tf.summary.scalar(f"loss/{k}", v)
                    tf.summary.scalar("learning_rate", lr)
                bar.set_postfix(loss=f"{sum(last_losses.values()):.3f}")
                with open(history_path, "a") as h:
                    h.write(json.dumps({"step": step, "lr": lr, "time_s": round(time.time() - t0, 1),
                                        **last_losses}) + "\n")
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                manager.save(checkpoint_number=step)
            if evaluate and ((cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps):
                run_eval()
                manager.save(checkpoint_number=step)
    except LOST_PEER_ERRORS as e:
        if not multi_worker:
            raise
        raise ClusterError(f"lost contact with a worker at step {step} ({type(e).__name__}); restart every worker "
                           "with the same command: they resume from the latest checkpoint") from None
    finally:
        bar.close()
        if batches_log is not None:
            batches_log.close()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    if chief and not (step == start and (model_dir / LAST_MODEL).is_file()):   # a finished run's files stay
        if evaluate and evaluated.get("step") != step:
            run_eval()   # a run killed between its last checkpoint and its final evaluation
        with average.swapped() if average else contextlib.nullcontext():
            export_inference(models, model_dir / LAST_MODEL,
                             evaluated["metrics"] if evaluated.get("step") == step else {}, step)
    return {"step": step, "steps_per_epoch": steps_per_epoch, "losses": last_losses,
            f"best_dev_{task.metric}": float(best_var.numpy())}
