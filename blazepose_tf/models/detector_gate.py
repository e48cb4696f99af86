"""A fine-tuned detector score head gated by the one it was tuned from (issue #16 item 4: keep the official
alignment behaviour where fine-tuning cannot improve it).

A detector tuned with ``--trainable=score_head`` shares its backbone and box regressors with its base (MediaPipe's
detector): only which anchors fire, their ranking and their weights in the weighted NMS differ, and those moved
the ROIs the tracker gets out of domain. :func:`gate_detector` builds one model with both score heads on the
shared backbone: on an image where the base fires (any anchor at or above the detection threshold) it emits the
base's scores, so the ROIs are exactly the base's; elsewhere the tuned head's, which finds the people the base
misses. The output contract (``regressors``, ``scores``) is unchanged; the second head adds about 0.1% of the MACs.
``tuned_offset`` (a logit added to the tuned scores) lets the tuned head fire below the threshold it was trained at,
on the images the base misses only.

A gated model is for inference and export: train (``--init_from``, ``--trainable=score_head``) from the tuned run,
and gate again. The gate compares the base's top score with the threshold in probability space, as the runtime
does; a runtime threshold above it hides the tuned head on images where the base's top score lies between the two.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from blazepose_tf import contract
from blazepose_tf.errors import ModelError
from blazepose_tf.models.blocks import PACKAGE
from blazepose_tf.models.graph import upstream_layers

#: Prefix of the base's score-head layers inside the gated model.
BASE_PREFIX = "base_"
#: Prefix of the tuned score-head layers inside the gated model (the gate itself is named ``scores``).
TUNED_PREFIX = "tuned_"


@keras.saving.register_keras_serializable(package=PACKAGE)
class ScoreGate(layers.Layer):
    """``[base, tuned]`` score logits (B, A, 1) → ``base`` for the images where its largest logit reaches
    ``threshold`` (a probability), ``tuned + tuned_offset`` for the others."""

    def __init__(self, threshold: float = contract.MIN_DETECTION_CONFIDENCE, tuned_offset: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 < threshold < 1.0:  # also false for NaN
            raise ValueError(f"gate threshold must be in (0, 1), got {threshold}")
        if not np.isfinite(tuned_offset):
            raise ValueError(f"tuned score offset must be finite, got {tuned_offset}")
        self.threshold = float(threshold)
        self.tuned_offset = float(tuned_offset)

    def call(self, inputs):
        base, tuned = inputs
        fired = ops.sigmoid(ops.max(base, axis=(1, 2), keepdims=True)) >= self.threshold
        if self.tuned_offset:
            tuned = tuned + self.tuned_offset
        return ops.where(fired, base, tuned)

    def compute_output_shape(self, input_shapes):
        return input_shapes[0]

    def get_config(self) -> dict:
        return {**super().get_config(), "threshold": self.threshold, "tuned_offset": self.tuned_offset}


def score_branch(model: keras.Model) -> list[str]:
    """Names of the layers that feed a detector's ``scores`` and not its ``regressors``, in graph order.

    Raises:
        ModelError: ``model`` has no ``regressors`` and ``scores`` outputs.
    """
    out = dict(zip(model.output_names, model.outputs))
    missing = [r for r in contract.DETECTOR_ROLES if r not in out]
    if missing:
        raise ModelError(f"{model.name} is not a detector: no {', '.join(missing)} output")
    branch = upstream_layers(out["scores"]) - upstream_layers(out["regressors"])
    layers_by_name = {layer.name: layer for layer in model.layers}
    for name in sorted(branch):
        layer = layers_by_name.get(name)
        if layer is None:
            raise ModelError(f"{model.name}'s score head computes {name!r} outside a Keras layer: it cannot be gated")
        if isinstance(layer, ScoreGate):
            raise ModelError(f"{model.name} is already gated: gate the tuned run's model instead")
        if len(layer._inbound_nodes) != 1:
            raise ModelError(f"{model.name}'s score-head layer {name!r} is called {len(layer._inbound_nodes)} times: "
                             "gating needs each called once")
    return [layer.name for layer in model.layers if layer.name in branch]


def _same_layer(a: keras.layers.Layer, b: keras.layers.Layer) -> bool:
    """Same class, configuration (name and trainable aside) and weights, bit for bit."""
    config_a, config_b = ({k: v for k, v in layer.get_config().items() if k not in ("name", "trainable")}
                        for layer in (a, b))
    mine, theirs = a.get_weights(), b.get_weights()
    return (type(a) is type(b) and config_a == config_b and len(mine) == len(theirs)
            and all(x.shape == y.shape and np.array_equal(x, y) for x, y in zip(mine, theirs)))


def _layers_that_differ(tuned: keras.Model, base: keras.Model, names: list[str]) -> list[str]:
    """Of ``names``, the layers that differ between the two models (or are missing in ``base``)."""
    bad = []
    for name in names:
        try:
            other = base.get_layer(name)
        except ValueError:
            bad.append(name)
            continue
        if not _same_layer(tuned.get_layer(name), other):
            bad.append(name)
    return bad


def gate_detector(tuned: keras.Model, base: keras.Model,
                  threshold: float = contract.MIN_DETECTION_CONFIDENCE, name: str | None = None,
                  tuned_offset: float = 0.0) -> keras.Model:
    """One detector: ``tuned``'s backbone and regressors (which must equal ``base``'s) with both score heads,
    ``base``'s scores on the images where it fires at ``threshold``, ``tuned``'s plus ``tuned_offset`` (a logit) on
    the others (:class:`ScoreGate`).

    Raises:
        ModelError: either is not a detector, is already gated, or has a score head that is not a chain of
            once-called layers; they differ outside the score head (not a ``score_head`` tune of ``base``), or
            nowhere (``tuned`` is ``base``).
    """
    branch = score_branch(tuned)
    if score_branch(base) != branch:
        raise ModelError(f"{tuned.name} and {base.name} do not have the same score head")
    in_branch = set(branch)
    shared = [layer.name for layer in tuned.layers if layer.name not in in_branch]
    differ = _layers_that_differ(tuned, base, shared)
    if differ:
        raise ModelError(f"{tuned.name} differs from {base.name} outside the score head ({len(differ)} layers, "
                         f"e.g. {differ[0]!r}): gating needs a --trainable=score_head tune of it")
    if not _layers_that_differ(tuned, base, branch):
        raise ModelError(f"{tuned.name} has {base.name}'s own score head: nothing to gate")
    outputs = dict(zip(tuned.output_names, tuned.outputs))
    scores = {}
    for source, prefix in ((base, BASE_PREFIX), (tuned, TUNED_PREFIX)):
        mapped: dict[int, object] = {}
        for layer_name in branch:
            layer = source.get_layer(layer_name)
            node = tuned.get_layer(layer_name)._inbound_nodes[0]
            ins = [mapped.get(id(t), t) for t in node.input_tensors]
            if any(id(t) not in mapped and t._keras_history[0].name in in_branch for t in node.input_tensors):
                raise ModelError(f"{tuned.name}'s score head is not a chain of layers in graph order ({layer_name!r})")
            clone = layer.__class__.from_config({**layer.get_config(), "name": prefix + layer_name})
            out = clone(ins if len(ins) > 1 else ins[0])
            clone.set_weights(layer.get_weights())
            mapped[id(node.output_tensors[0])] = out
        scores[prefix] = mapped[id(outputs["scores"])]
    gated = ScoreGate(threshold, tuned_offset, name="scores")([scores[BASE_PREFIX], scores[TUNED_PREFIX]])
    return keras.Model(tuned.inputs, [outputs["regressors"], gated], name=name or f"{tuned.name}_gated")
