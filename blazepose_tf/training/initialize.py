"""Initial weights of a fresh run (``--init_from``): as built, a ``.keras`` file, or a run's checkpoint."""
from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from blazepose_tf.errors import ModelError
from blazepose_tf.training.preflight import CHECKPOINTS
from blazepose_tf.models.loading import load_keras_model
from blazepose_tf.training.config import BUILT_IN_WEIGHTS
from blazepose_tf.training.registry import Models


def initialize(models: Models, init_from: str) -> None:
    """Initial weights: ``scratch`` (as built), ``official`` (the ``official_*`` presets are built from the
    official weights), a ``.keras`` file (layers matched by name and shape) or a checkpoint directory."""
    if init_from in BUILT_IN_WEIGHTS:
        return
    path = Path(init_from).expanduser()
    if path.is_dir():
        restore_checkpoint_folder(models.training, path, "--init_from")
        return
    src = load_keras_model(path, "--init_from")
    by_name = {layer.name: layer for layer in src.layers}
    copied = 0
    for layer in models.training.layers:
        other = by_name.get(layer.name)
        if other is None or not layer.weights:
            continue
        if [w.shape for w in layer.weights] == [w.shape for w in other.weights]:
            layer.set_weights(other.get_weights())
            copied += 1
    if copied == 0:
        raise ModelError(f"--init_from {path}: no layer matches the model being trained (by name and shape)")


def restore_checkpoint_folder(model, folder: Path, what: str = "--init_from") -> str:
    """Restores ``model``'s weights from the latest checkpoint of a run folder (its ``checkpoints/``) or of a
    checkpoint folder, as recorded in its ``checkpoint`` state file (so half-written ``ckpt-N_temp`` leftovers are
    never read); returns the checkpoint prefix. One-line :class:`ModelError` when there is none or it does not
    fit ``model``."""
    sub = folder / CHECKPOINTS
    latest = tf.train.latest_checkpoint(str(sub if sub.is_dir() else folder))
    if latest is None:
        raise ModelError(f"{what} {folder} holds no checkpoint")
    try:
        tf.train.Checkpoint(model=model).restore(latest).expect_partial()
    except (AssertionError, ValueError, tf.errors.OpError) as e:
        first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise ModelError(f"{what} {latest} does not fit the model being trained: {first[:200]}") from None
    return latest
