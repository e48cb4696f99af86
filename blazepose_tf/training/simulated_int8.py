"""``--simulate_int8``: a tracker trained through its simulated-int8 view (:mod:`blazepose_tf.models.fake_quant`).

The training step runs both the view and the float model on each batch, with the run's loss terms on each (the float
model's prefixed ``float_``): the view learns to reproduce the targets through int8 rounding while the float model
is held to them too (a first run without that term, and with the tail in int8, lost 3 points of float dev crop PCK
in 400 steps while the view did not improve: experiments/README.md). The optimizer updates the float weights the
view shares; the run saves and exports the float model as usual. The view's activation ranges are calibrated once,
on the initialized weights (:data:`CALIBRATION_BATCHES` un-augmented training batches), and checkpointed, so a
resumed run uses the same ones. The dev evaluation scores the view too, on the same crops in the same pass
(``SimulatedTraining.inference_view``, its metrics prefixed
:data:`~blazepose_tf.training.config.SIMULATED_PREFIX`: ``int8sim_pck``, ``int8sim_pck_refined``).
"""
from __future__ import annotations

from typing import Callable

import keras

from blazepose_tf.errors import UserError
from blazepose_tf.models.fake_quant import SimulatedInt8
from blazepose_tf.training.registry import Models, outputs_by_name

CALIBRATION_BATCHES = 4
FLOAT_PREFIX = "float_"


class SimulatedTraining:
    """The simulated-int8 view of a tracker's training model, its calibration and its dev scoring."""

    def __init__(self, models: Models, preset: str = ""):
        try:
            self.sim = SimulatedInt8(models.training)
        except ValueError as e:
            raise UserError(f"--simulate_int8 supports trackers whose layers map one to one onto the int8 export "
                            f"(the official_* presets); --preset={preset}: {e}") from None
        view = self.sim.view(models.training, name="int8sim_view")
        # The training step sees both: the view's outputs and, under FLOAT_PREFIX, the float model's.
        image = keras.Input(models.training.inputs[0].shape[1:], name="image")
        plain = outputs_by_name(models.training(image), models.training.output_names)
        self.forward = keras.Model(image, {**view(image), **{FLOAT_PREFIX + k: v for k, v in plain.items()}},
                                   name="int8sim_training")
        scored = [n for n in models.inference.output_names if n in models.training.output_names]
        self.inference_view = self.sim.view(models.inference, scored, name="int8sim_inference")
        # The ranges are checkpointed with the run (resume uses the calibrated ones).
        self.state = {"int8sim_ranges": [v for layer in self.sim.layers.values() for v in layer.weights]}

    def losses(self, base: Callable[[dict, dict], dict]) -> Callable[[dict, dict], dict]:
        """The run's loss terms: ``base``'s on the view's outputs, and the same on the float model's (prefixed
        ``float_``), so that the float model keeps its outputs while its int8 rounding learns to match them."""
        def terms(outputs: dict, targets: dict) -> dict:
            sim = {k: v for k, v in outputs.items() if not k.startswith(FLOAT_PREFIX)}
            plain = {k[len(FLOAT_PREFIX):]: v for k, v in outputs.items() if k.startswith(FLOAT_PREFIX)}
            return {**base(sim, targets), **{FLOAT_PREFIX + k: v for k, v in base(plain, targets).items()}}
        return terms

    def calibrator(self, batches: Callable) -> Callable[[], None]:
        """``prepare`` of the run: calibrates the ranges on ``batches()`` (un-augmented images)."""
        def prepare() -> None:
            self.sim.calibrate(images.numpy() for images, _ in batches().take(CALIBRATION_BATCHES))
        return prepare
