"""The checks of a training run that need no TensorFlow: the flags that contradict each other, the data globs, the
weight files the flags name, ``--model_dir`` and ``TF_CONFIG``.

``python -m blazepose_tf.train`` runs them before it imports TensorFlow, so such a mistake is one line within a
second instead of after TensorFlow's start-up; :func:`blazepose_tf.training.loop.train` runs them first too (it is
also called from Python), and the tasks it builds rely on them. Each check lives here only.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any, Optional

from blazepose_tf.errors import UserError, require_utf8
from blazepose_tf.io.shards import expand_patterns, list_shards
from blazepose_tf.models.loading import check_keras_file
from blazepose_tf.training.config import BUILT_IN_WEIGHTS, MODELS, SIMULATED_PREFIX, TrainConfig

# Settings only the tracker task supports (a detector run refuses them rather than ignore them).
TRACKER_ONLY = ("distill_from", "simulate_int8")

# What a training run writes into --model_dir (blazepose_tf.training.loop names its files from here): its settings,
# logs, checkpoints, TensorBoard summaries and exports (each .keras with a .json sidecar of its step and metrics).
CONFIG_FILE, HISTORY_FILE, BATCHES_FILE = "config.json", "history.jsonl", "batches.jsonl"
CHECKPOINTS, SUMMARIES, BEST_MODEL, LAST_MODEL = "checkpoints", "logs", "best.keras", "last.keras"
RUN_ENTRIES = frozenset({CONFIG_FILE, HISTORY_FILE, BATCHES_FILE, CHECKPOINTS, SUMMARIES, BEST_MODEL, LAST_MODEL,
                         *(str(Path(m).with_suffix(".json")) for m in (BEST_MODEL, LAST_MODEL))})
# Files being written (``x.part``, ``x.part.keras``) and what the system puts in any folder.
_PART = re.compile(r"\.part(\.|$)")
_SYSTEM_ENTRIES = ("lost+found",)


def expanded_model_dir(cfg: TrainConfig) -> str:
    """``--model_dir`` with ``~`` and ``$VAR`` expanded."""
    return os.path.expanduser(os.path.expandvars(cfg.model_dir))


# The state file's line naming the newest checkpoint (tf.train.CheckpointManager writes it as a text proto).
_NEWEST = re.compile(r'^model_checkpoint_path:\s*"(.*)"\s*$', re.MULTILINE)


def latest_checkpoint(checkpoint_dir: str | os.PathLike) -> Optional[str]:
    """The checkpoint a run in ``checkpoint_dir`` resumes from, as ``tf.train.latest_checkpoint`` finds it
    without TensorFlow: the prefix the ``checkpoint`` state file names (relative to the folder unless absolute),
    if its ``.index`` file exists; else None."""
    state = Path(checkpoint_dir) / "checkpoint"
    try:
        found = _NEWEST.search(state.read_text())
    except (OSError, UnicodeDecodeError):
        return None
    if not found:
        return None
    prefix = Path(checkpoint_dir) / found.group(1)
    return str(prefix) if Path(f"{prefix}.index").is_file() else None


def resumes(cfg: TrainConfig) -> bool:
    """Whether ``--model_dir`` holds a checkpoint to resume from (:func:`latest_checkpoint`)."""
    return latest_checkpoint(Path(expanded_model_dir(cfg)) / CHECKPOINTS) is not None


def resolved(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` as a run records and uses it: the data globs and ``--model_dir`` with ``~`` and ``$VAR``
    expanded."""
    return dataclasses.replace(cfg, train_data=expand_patterns(cfg.train_data),
                               dev_data=expand_patterns(cfg.dev_data) if cfg.dev_data else None,
                               model_dir=expanded_model_dir(cfg))


def _comparable(name: str, value: Any) -> Any:
    """A setting as resuming compares it: loss weights without the zero ones (a zero weight is no term, so a run
    saved with the weight of a since-removed term at 0 still resumes)."""
    if name == "loss_weights" and isinstance(value, dict):
        return {k: v for k, v in value.items() if v}
    return value


def check_resumed_settings(cfg: TrainConfig) -> None:
    """Refuses to resume a checkpointed run whose ``config.json`` differs from ``cfg`` in a field that is not in
    ``TrainConfig.RESUMABLE_CHANGES`` (a field added since the run started counts as its default). Reads only;
    nothing to check on a fresh start."""
    if not resumes(cfg):
        return
    model_dir = Path(expanded_model_dir(cfg))
    path = model_dir / CONFIG_FILE
    if not path.is_file():
        return
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        raise UserError(f"{path} is unreadable; use a new --model_dir") from None
    if not isinstance(saved, dict):
        raise UserError(f"{path} is not a run's settings; use a new --model_dir")
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}
    current = dataclasses.asdict(resolved(cfg))
    diff = {k for k in current if k not in TrainConfig.RESUMABLE_CHANGES
            and _comparable(k, saved.get(k, defaults.get(k))) != _comparable(k, current[k])}
    if diff:
        raise UserError(f"{model_dir} holds a run with different settings ({', '.join(sorted(diff))}); "
                        "use a new --model_dir or the same flags")


def check_settings(cfg: TrainConfig) -> None:
    """Settings that contradict each other: tracker-only settings of a detector run, the simulated-int8 metric
    without the simulation, the simulation without trained weights."""
    if cfg.model not in MODELS:
        raise UserError(f"--model must be one of {', '.join(MODELS)}, got {cfg.model!r}")
    if cfg.model != "tracker":
        for flag in TRACKER_ONLY:
            if getattr(cfg, flag):
                raise UserError(f"--{flag} is only supported for --model=tracker")
        if cfg.best_metric.startswith(SIMULATED_PREFIX):
            raise UserError(f"--best_metric={cfg.best_metric} is only supported for --model=tracker")
    if cfg.best_metric.startswith(SIMULATED_PREFIX) and not cfg.simulate_int8:
        raise UserError(f"--best_metric={cfg.best_metric} needs --simulate_int8")
    if cfg.simulate_int8 and cfg.init_from == "scratch":
        raise UserError("--simulate_int8 fine-tunes trained weights (its int8 ranges are calibrated on the "
                        "initial ones): give --init_from")


def check_data_flags(cfg: TrainConfig) -> None:
    """``--train_data`` and (when given) ``--dev_data`` name globs that match shard files. Whether the shards are
    readable and hold records is checked when they are counted (with TensorFlow)."""
    for flag in ("train_data", "dev_data"):
        pattern = getattr(cfg, flag)
        if pattern is None or (flag == "dev_data" and not pattern):
            continue
        if not expand_patterns(pattern):
            raise UserError(f"--{flag} names no glob of TFRecord shards")
        try:
            list_shards(pattern)
        except FileNotFoundError as e:
            raise UserError(str(e)) from None


def check_weight_flags(cfg: TrainConfig) -> None:
    """The files the weight flags name are readable Keras archives (one-line
    :class:`~blazepose_tf.errors.ModelError`): ``--distill_from`` (``official`` or a file; read by every run) and,
    unless the run resumes from its checkpoint, ``--init_from`` (one of :data:`BUILT_IN_WEIGHTS`, a file, or a
    folder whose checkpoint is looked for when it is read)."""
    if cfg.distill_from and cfg.distill_from != "official":
        check_keras_file(Path(cfg.distill_from).expanduser(), "--distill_from")
    init = cfg.init_from
    if init and init not in BUILT_IN_WEIGHTS and not resumes(cfg) and not Path(init).expanduser().is_dir():
        check_keras_file(Path(init).expanduser(), "--init_from")


def _is_run_settings(path: Path) -> bool:
    """Whether ``path`` is a ``config.json`` a training run wrote: a JSON object with the run's ``model_dir`` and
    ``train_data`` among its settings (a run of an older version may also name settings since removed)."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(saved, dict) and {"model_dir", "train_data"} <= set(saved)


def check_fresh_model_dir(cfg: TrainConfig) -> None:
    """A run that starts afresh writes into ``--model_dir``: refuses a folder that holds anything but an earlier
    run of this package without a checkpoint (its ``config.json`` and the files a run writes beside it, which a
    fresh start replaces), so that a user's files, another command's outputs or a data folder are never written
    over."""
    model_dir = Path(expanded_model_dir(cfg))
    if resumes(cfg) or not model_dir.is_dir():
        return
    state = model_dir / CHECKPOINTS / "checkpoint"
    if state.exists():   # a state file naming no checkpoint: a fresh start would delete what is there
        raise UserError(f"--model_dir {model_dir}: {state} names no checkpoint that exists; delete "
                        f"{model_dir / CHECKPOINTS} to start afresh there, or choose a new folder")
    try:
        names = sorted(p.name for p in model_dir.iterdir()
                       if not p.name.startswith(".") and p.name not in _SYSTEM_ENTRIES)
    except OSError as e:
        raise UserError(f"--model_dir {model_dir} cannot be read: {e.strerror or e}") from None
    if not names:
        return
    other = [n for n in names if n not in RUN_ENTRIES and not _PART.search(n)]
    if other or not _is_run_settings(model_dir / CONFIG_FILE):
        shown = ", ".join((other or names)[:3]) + (", ..." if len(other or names) > 3 else "")
        raise UserError(f"--model_dir {model_dir} is not empty and holds no training run to resume ({shown}); "
                        "choose a new or empty folder")


def check_data_kind(cfg: TrainConfig) -> None:
    """Shards that ``data.prepare`` wrote for the other model (its ``manifest.json`` beside them records the
    ``kind``) are refused: a tracker cannot learn from detector images, nor a detector from tracker crops."""
    for flag in ("train_data", "dev_data"):
        pattern = getattr(cfg, flag)
        if not pattern:
            continue
        for folder in sorted({Path(f).parent for f in list_shards(pattern)}):
            try:
                kind = json.loads((folder / "manifest.json").read_text()).get("kind")
            except (OSError, ValueError, AttributeError):
                continue   # shards without data.prepare's manifest: their records are checked when read
            if kind in MODELS and kind != cfg.model:
                raise UserError(f"--{flag}: {folder} holds {kind} data (its manifest.json), not {cfg.model} data; "
                                f"prepare it with data.prepare --kind {cfg.model}")


def check_path_names(cfg: TrainConfig) -> None:
    """TensorFlow reads and writes files by UTF-8 names: a ``--model_dir`` or data glob that is not valid UTF-8
    (a byte of another encoding in a folder name) is refused before anything is written."""
    for flag in ("model_dir", "train_data", "dev_data", "init_from", "distill_from"):
        require_utf8(getattr(cfg, flag) or "", f"--{flag}", "TensorFlow")


def check_tf_config(cfg: TrainConfig) -> None:
    """Under ``--strategy=multi_worker``: ``TF_CONFIG`` is set and is JSON."""
    if cfg.strategy != "multi_worker":
        return
    if "TF_CONFIG" not in os.environ:
        raise UserError("--strategy=multi_worker needs the TF_CONFIG environment variable")
    try:
        json.loads(os.environ["TF_CONFIG"])
    except ValueError:
        raise UserError("TF_CONFIG is not valid JSON") from None


def check_run(cfg: TrainConfig) -> None:
    """Every check of this module, in the order a user meets them; one-line errors."""
    model_dir = Path(expanded_model_dir(cfg))
    if model_dir.exists() and not model_dir.is_dir():
        raise UserError(f"--model_dir {model_dir} is a file, not a folder")
    check_settings(cfg)
    check_path_names(cfg)
    check_tf_config(cfg)
    check_data_flags(cfg)
    check_data_kind(cfg)
    check_weight_flags(cfg)
    check_resumed_settings(cfg)
    check_fresh_model_dir(cfg)
