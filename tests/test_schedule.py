"""The run's learning-rate schedule (``blazepose_tf.training.schedule``): Keras' warm-up + cosine rates, traced
without a ``cond``."""
from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from blazepose_tf.training.config import TrainConfig  # noqa: E402
from blazepose_tf.training.schedule import WarmupCosineDecay, make_schedule  # noqa: E402


@pytest.mark.parametrize("warmup_steps", [0, 1, 7])
def test_rates_are_keras_cosine_decay_with_warm_up(warmup_steps):
    cfg = TrainConfig(train_data="x", model_dir="y", steps=40, warmup_steps=warmup_steps, learning_rate=3e-3)
    ours = make_schedule(cfg)
    theirs = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=3e-3 * (0.01 if warmup_steps else 1.0), decay_steps=max(40 - warmup_steps, 1),
        alpha=0.01, warmup_target=3e-3 if warmup_steps else None, warmup_steps=warmup_steps)
    steps = list(range(0, 60))
    np.testing.assert_allclose([float(ours(s)) for s in steps], [float(theirs(s)) for s in steps], rtol=1e-6)
    assert float(ours(0)) == pytest.approx(3e-3 * (0.01 if warmup_steps else 1.0))
    assert float(ours(warmup_steps)) == pytest.approx(3e-3) and float(ours(100)) == pytest.approx(3e-5)


def test_constant_rate_and_a_graph_without_branches():
    assert make_schedule(TrainConfig(train_data="x", model_dir="y", schedule="constant", learning_rate=0.1)) == 0.1
    schedule = WarmupCosineDecay(1e-5, decay_steps=10, alpha=0.01, warmup_target=1e-3, warmup_steps=5)
    graph = tf.function(schedule, autograph=False).get_concrete_function(tf.TensorSpec((), tf.int64)).graph
    kinds = {op.type for op in graph.get_operations()}
    assert "SelectV2" in kinds and not kinds & {"If", "StatelessIf"}
