"""Model runners: one small interface over a .tflite file (ai-edge-litert + XNNPACK) or a Keras model.

A runner takes one float32 NHWC batch and returns a dict of named outputs. Output *roles* are resolved by
name when the model names them, else by shape (TFLite output order differs from the names, docs/design.md §3):

* detector: ``regressors`` (1, A, 4+2K) and ``scores`` (1, A, 1);
* landmarks: ``landmarks`` (1, L·5), ``presence`` (1, 1), ``segmentation`` (1, H, W, 1),
  ``heatmap`` (1, h, w, L), ``world`` (1, L·3); a training-only ``offsets`` head is recognised by name.

Loading checks only that the model takes one fixed-size HxWx3 image; :func:`check_runner` checks the I/O contract
of a role (:mod:`blazepose_tf.contract`), which the pipeline's steps do when they are built.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Mapping, Optional, Protocol, Sequence

import numpy as np

from blazepose_tf import contract
from blazepose_tf.contract import DETECTOR_ROLES, LANDMARK_ROLES, TRAINING_ONLY_ROLES
from blazepose_tf.errors import ModelError, model_file
from blazepose_tf.tflite_file import load_interpreter


class ModelRunner(Protocol):
    """What the pipeline needs from a model."""

    label: str                         # names the model in messages (its path, or the Keras model's name)
    input_shape: tuple[int, int, int]  # H, W, C
    output_roles: list[str]
    output_shapes: list[tuple[int, ...]]  # per output, batch dimension included, in output_roles' order

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        ...


def assign_roles(shapes: Sequence[tuple[int, ...]], names: Optional[Sequence[str]] = None,
                 input_hw: Optional[tuple[int, int]] = None) -> list[str]:
    """Gives each output a role (see module docstring) from its name or, failing that, its shape."""
    names = list(names or [""] * len(shapes))
    roles: list[Optional[str]] = []
    for name in names:
        low = name.lower()
        roles.append(next((r for r in DETECTOR_ROLES + LANDMARK_ROLES + TRAINING_ONLY_ROLES
                           if low == r or low.endswith("/" + r) or low.endswith(":" + r)), None))
    if all(roles):
        return [str(r) for r in roles]
    ranks = [len(s) for s in shapes]
    if len(shapes) == 2 and all(r == 3 for r in ranks):  # detector
        return ["scores" if s[-1] == 1 else "regressors" for s in shapes]
    flat = [(i, int(np.prod(s[1:]))) for i, s in enumerate(shapes) if len(s) == 2]
    out: list[str] = ["" for _ in shapes]
    for i, s in enumerate(shapes):
        if len(s) == 4:  # a heatmap has a channel per landmark point (>= 35); a segmentation mask has one
            out[i] = "segmentation" if s[-1] == 1 else "heatmap"
    vec = [(i, n) for i, n in flat if n > 1]
    for i, n in flat:
        if n == 1:
            out[i] = "presence"
    if len(vec) == 1:
        out[vec[0][0]] = "landmarks"
    elif len(vec) >= 2:
        # landmarks has 5 values per point, world 3: the larger one with n % 5 == 0 and a twin n*3/5.
        sizes = {n: i for i, n in vec}
        for i, n in vec:
            if n % 5 == 0 and (n // 5 * 3) in sizes:
                out[i] = "landmarks"
                out[sizes[n // 5 * 3]] = "world"
        for i, n in vec:
            out[i] = out[i] or f"output_{i}"
    for i, r in enumerate(roles):
        if r:
            out[i] = r
    return [r or f"output_{i}" for i, r in enumerate(out)]


def _signature_output_names(interpreter) -> dict[int, str]:
    """Tensor index -> output name from the model's only SignatureDef (e.g. ``landmarks``); empty when the model
    has no signature or several."""
    try:
        signatures = interpreter.get_signature_list()
        if len(signatures) != 1:
            return {}
        details = interpreter.get_signature_runner(next(iter(signatures))).get_output_details()
        return {int(d["index"]): str(name) for name, d in details.items()}
    except (ValueError, RuntimeError, KeyError, AttributeError):
        return {}


class TFLiteRunner:
    """Runs a .tflite model with ai-edge-litert (XNNPACK delegate, applied by default)."""

    def __init__(self, path: str | os.PathLike, num_threads: int = 1):
        self.path = model_file(path)
        self.label = str(self.path)
        if num_threads < 1:
            raise ModelError(f"num_threads must be >= 1, got {num_threads}")
        self.num_threads = num_threads
        self._it = load_interpreter(self.path, num_threads)
        inp = self._it.get_input_details()
        self.input_shape = contract.image_input_shape(self.label, [tuple(int(v) for v in d["shape"]) for d in inp])
        self._in = inp[0]
        outs = self._it.get_output_details()
        self._out_idx = [d["index"] for d in outs]
        self.output_shapes = [tuple(int(v) for v in d["shape"]) for d in outs]
        signature_names = _signature_output_names(self._it)  # preferred over tensor names when present
        self.output_roles = assign_roles(self.output_shapes,
                                         [signature_names.get(d["index"], d["name"]) for d in outs],
                                         self.input_shape[:2])

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        x = np.asarray(batch, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"{self.path.name} expects input {self.input_shape}, got {tuple(x.shape[1:])}")
        outs = []
        for b in range(x.shape[0]):
            self._it.set_tensor(self._in["index"], x[b:b + 1])
            self._it.invoke()
            outs.append([self._it.get_tensor(i) for i in self._out_idx])
        return {role: np.concatenate([o[k] for o in outs], axis=0) for k, role in enumerate(self.output_roles)}


class KerasRunner:
    """Runs a Keras model (in memory or a ``.keras`` file) with the same contract as :class:`TFLiteRunner`."""

    def __init__(self, model, output_names: Optional[Sequence[str]] = None):
        if isinstance(model, (str, os.PathLike)):
            from blazepose_tf.models.loading import load_keras_model

            self.label = str(model)
            model = load_keras_model(model, what="model file")
        else:
            self.label = str(getattr(model, "name", "keras model"))
        self.model = model
        self.input_shape = contract.image_input_shape(self.label, [tuple(i.shape) for i in model.inputs])
        self.output_shapes = [tuple(int(d) if d is not None else 1 for d in o.shape) for o in model.outputs]
        # A model built with dict outputs returns a dict keyed by its output names (model.outputs is in their order).
        self._keys = list(getattr(model, "output_names", None) or [])
        self.output_roles = assign_roles(self.output_shapes, list(output_names or self._keys) or None,
                                         self.input_shape[:2])
        self._fn: Optional[Callable] = None

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        x = np.asarray(batch, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"model expects input {self.input_shape}, got {tuple(x.shape[1:])}")
        if self._fn is None:
            import tensorflow as tf
            self._fn = tf.function(lambda t: self.model(t, training=False), reduce_retracing=True,
                                   autograph=False)
        outs = self._fn(x)
        if isinstance(outs, Mapping):
            outs = [outs[k] for k in self._keys]
        elif not isinstance(outs, (list, tuple)):
            outs = [outs]
        return {role: np.asarray(o) for role, o in zip(self.output_roles, outs)}


def model_io(runner: ModelRunner) -> contract.ModelIO:
    """What :mod:`blazepose_tf.contract` checks of a runner: its label, input shape and (role, shape) outputs."""
    return contract.ModelIO(runner.label, tuple(runner.input_shape),
                            list(zip(runner.output_roles, runner.output_shapes)))


def check_runner(runner: ModelRunner, role: str, num_keypoints: int = contract.NUM_KEYPOINTS) -> None:
    """Raises a one-line :class:`ModelError` naming the model unless ``runner`` meets the runtime's I/O contract
    for ``role`` (:data:`contract.DETECTOR` or :data:`contract.LANDMARKS`; see :func:`contract.check_model`)."""
    contract.check_model(role, *model_io(runner), num_keypoints=num_keypoints)


def load_runner(path: str | os.PathLike, num_threads: int = 1) -> ModelRunner:
    """A runner for a ``.tflite`` or ``.keras`` file, by extension."""
    p = Path(path)
    if p.suffix == ".tflite":
        return TFLiteRunner(p, num_threads)
    if p.suffix in (".keras", ".h5"):
        return KerasRunner(p)
    raise ModelError(f"unsupported model file {p.name!r}: expected .tflite or .keras")
