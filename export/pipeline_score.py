"""Pipeline PCK@0.2 of candidate tracker exports on an annotated split, as ``python -m blazepose_tf.evaluate
--split SPLIT --landmarks m.tflite`` measures it (the runtime's defaults: IMAGE mode, one pose per image,
docs/design.md §8), for the int8 choices an export makes on ``--eval`` (activation ranges, float layers).

The detector is the same for every candidate, so its outputs are computed once per image and reused
(:class:`MemoRunner`); each candidate then costs `roi_passes` tracker runs per scored image.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

import numpy as np

from blazepose_tf.datasets.coco import load_coco_keypoints
from blazepose_tf.errors import UserError
from blazepose_tf.evaluation import EvaluationResult, evaluate, scored_records
from blazepose_tf.official import official_model_path
from blazepose_tf.runtime.pipeline import PoseTracker
from blazepose_tf.runtime.runners import ModelRunner, TFLiteRunner, load_runner
from export.representative import parse_spec

OFFICIAL_DETECTOR = "official"


class MemoRunner:
    """A model runner that remembers its outputs per input (the detector, run on the same images again)."""

    def __init__(self, runner: ModelRunner):
        self.runner = runner
        self._memo: dict[bytes, dict[str, np.ndarray]] = {}

    def __getattr__(self, name: str) -> Any:  # label, input_shape, output_roles, output_shapes
        return getattr(self.runner, name)

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        x = np.ascontiguousarray(batch, np.float32)
        key = hashlib.sha1(x.tobytes()).digest()
        if key not in self._memo:
            self._memo[key] = self.runner(x)
        return self._memo[key]


class PipelineScorer:
    """Scores tracker files behind a fixed detector on the scored images of an annotated dataset spec.

    Args:
        spec: ``PATH[:SPLIT][,images=DIR]`` (:mod:`export.representative`), annotated.
        detector: ``official`` (MediaPipe's pose_detection) or a detector file (.tflite / .keras).
    Raises:
        UserError: the spec has no annotations. InputError: no scored image. ModelError: bad detector.
    """

    def __init__(self, spec: str, detector: str = OFFICIAL_DETECTOR):
        parsed = parse_spec(spec)
        if not parsed.annotated:
            raise UserError(f"--eval {spec!r} has no annotations: choosing int8 settings by pipeline PCK needs an "
                            "annotated split (e.g. ../shared/data/lspet:dev)")
        dataset = load_coco_keypoints(parsed.annotations, parsed.images, split=parsed.split,
                                      require_annotations=True)
        self.records = scored_records(dataset)
        self.spec = spec
        path = official_model_path("pose_detection") if detector == OFFICIAL_DETECTOR else Path(detector)
        self.detector_label = detector
        self.detector = MemoRunner(load_runner(path, 1))

    def evaluate(self, landmarks: bytes | str | os.PathLike) -> EvaluationResult:
        """The pipeline's result with ``landmarks`` (a .tflite path or its bytes) as the tracker."""
        if isinstance(landmarks, (bytes, bytearray)):
            with tempfile.TemporaryDirectory(prefix="blazepose_tf_") as tmp:
                path = Path(tmp) / "landmarks.tflite"
                path.write_bytes(landmarks)
                return self.evaluate(path)
        tracker = PoseTracker(self.detector, TFLiteRunner(landmarks, 1))  # the runtime's defaults: IMAGE mode
        return evaluate(tracker.process, self.records, progress=False)

    def __call__(self, landmarks: bytes | str | os.PathLike) -> float:
        """Pipeline PCK@0.2 (mid torso, %) with ``landmarks`` as the tracker."""
        return float(self.evaluate(landmarks).pck.pck)

    def describe(self, num: Optional[int] = None) -> str:
        return f"pipeline PCK@0.2 on {num or len(self.records)} scored images of {self.spec} " \
               f"(detector: {self.detector_label})"
