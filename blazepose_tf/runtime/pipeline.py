"""The BlazePose runtime as a chain of small steps (as MediaPipe's calculators):

    detect → ROI → crop → landmarks → project back → smooth

:class:`PersonDetector` and :class:`LandmarkEstimator` are the two model steps; :class:`PoseTracker` chains
them in IMAGE mode (every image on its own, up to ``num_poses`` people, each tracked again on the ROI its own
auxiliary points give, ``roi_passes`` passes in all) or VIDEO mode (one person; the ROI is
carried from frame to frame through the tracker's auxiliary points, and the detector runs only on the first
frame and whenever the tracker's presence drops below its threshold).

Each model step checks its runner against the I/O contract of its role when it is built
(:func:`blazepose_tf.runtime.runners.check_runner`), so a wrong model (wrong input size or outputs, the detector and
landmark model swapped, a non-pose model) fails there with one :class:`blazepose_tf.errors.ModelError` line naming
the file, not with a traceback on the first image.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from blazepose_tf import contract
from blazepose_tf.codecs import roi as roi_codec
from blazepose_tf.codecs.anchors import AnchorOptions, generate_anchors
from blazepose_tf.codecs.detection import decode_detections, weighted_nms
from blazepose_tf.codecs.landmarks import decode_landmarks, refine_with_heatmap
from blazepose_tf.errors import InputError
from blazepose_tf.runtime.runners import ModelRunner, check_runner, model_io
from blazepose_tf.smoothing import AUX_LANDMARKS, LANDMARKS, LandmarkSmoother, OneEuroFilter, object_scale
from blazepose_tf.topology import BLAZEPOSE_33, Topology
from blazepose_tf.types import Detection, Pose, Roi

DETECTOR_INPUT_RANGE = contract.INPUT_RANGES[contract.DETECTOR]
LANDMARK_INPUT_RANGE = contract.INPUT_RANGES[contract.LANDMARKS]


def as_rgb(image: np.ndarray) -> np.ndarray:
    """Validates an image array and returns it as contiguous (H, W, 3) uint8 RGB."""
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] not in (1, 3, 4) or img.shape[0] < 1 or img.shape[1] < 1:
        raise InputError(f"expected an (H, W, 3) RGB image, got shape {img.shape}")
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    elif img.shape[2] == 4:
        img = img[..., :3]
    if img.dtype == np.uint16:
        img = (img.astype(np.uint32) * 255 + 32767) // 65535
    elif img.dtype != np.uint8:
        if np.issubdtype(img.dtype, np.floating) and img.size and float(np.nanmax(img)) <= 1.0:
            img = img * 255.0
        img = np.clip(np.nan_to_num(img), 0, 255)
    return np.ascontiguousarray(img.astype(np.uint8))


class PersonDetector:
    """Step 1: letterbox the image, run the detector, decode, weighted NMS, map back to image pixels.

    Raises:
        ModelError: ``runner`` does not meet the detector contract (:mod:`blazepose_tf.contract`).
    """

    def __init__(self, runner: ModelRunner, min_score: float = contract.MIN_DETECTION_CONFIDENCE,
                 iou_threshold: float = 0.3, input_range: tuple[float, float] = DETECTOR_INPUT_RANGE,
                 anchor_options: Optional[AnchorOptions] = None):
        check_runner(runner, contract.DETECTOR)
        self.runner = runner
        h, w = runner.input_shape[:2]
        self.input_size = (w, h)
        self.anchors = generate_anchors(anchor_options or AnchorOptions(input_size=w))
        self.min_score = min_score
        self.iou_threshold = iou_threshold
        self.input_range = input_range
        self.calls = 0

    def __call__(self, image: np.ndarray) -> list[Detection]:
        h, w = image.shape[:2]
        padded, _ = roi_codec.letterbox_roi(w, h, *self.input_size)
        tensor = roi_codec.to_tensor(roi_codec.crop(image, padded, *self.input_size, border="zero"), self.input_range)
        out = self.runner(tensor)
        self.calls += 1
        if out["regressors"].shape[1] != len(self.anchors):  # only with anchor_options not made for this model
            raise ValueError(f"detector emits {out['regressors'].shape[1]} boxes for {len(self.anchors)} anchors")
        dets = weighted_nms(decode_detections(out["regressors"][0], out["scores"][0], self.anchors,
                                              min_score=self.min_score, input_size=float(self.input_size[0])),
                            self.iou_threshold)
        result = []
        for box, kps, score in zip(dets.boxes, dets.keypoints, dets.scores):
            corners = roi_codec.project_to_image(box.reshape(2, 2), padded).reshape(4)
            result.append(Detection(box=corners, keypoints=roi_codec.project_to_image(kps, padded),
                                    score=float(score)))
        return result


def roi_from_detection(det: Detection, scale: float = contract.ROI_SCALE) -> Optional[Roi]:
    """Step 2: the tracker's ROI from detection keypoints 0 (centre) and 1 (scale/rotation); None if degenerate."""
    roi = roi_codec.alignment_roi(det.keypoints[0], det.keypoints[1], scale=scale)
    return roi if roi.width > 1e-3 else None


def roi_from_aux(aux: np.ndarray, scale: float = contract.ROI_SCALE) -> Optional[Roi]:
    """Step 2 for video: the next frame's ROI from the auxiliary points (centre, scale/rotation)."""
    roi = roi_codec.alignment_roi(aux[0], aux[1], scale=scale)
    return roi if roi.width > 1e-3 else None


@dataclass
class LandmarkOutput:
    """Decoded tracker output for one ROI, already projected back to image pixels."""

    keypoints: np.ndarray   # (N, 3)
    visibility: np.ndarray  # (N,)
    presence: np.ndarray    # (N,)
    aux: np.ndarray         # (2, 2)
    score: float
    world: Optional[np.ndarray]


class LandmarkEstimator:
    """Steps 3–5: crop the ROI, run the tracker, decode (with optional heatmap refinement), project back.

    Raises:
        ModelError: ``runner`` does not meet the landmark-model contract for ``topology``
            (:mod:`blazepose_tf.contract`).
    """

    def __init__(self, runner: ModelRunner, topology: Topology = BLAZEPOSE_33, refine_heatmap: bool = True,
                 heatmap_kernel: int = 7, input_range: tuple[float, float] = LANDMARK_INPUT_RANGE):
        check_runner(runner, contract.LANDMARKS, num_keypoints=topology.num_keypoints)
        self.runner = runner
        self.topology = topology
        h, w = runner.input_shape[:2]
        self.input_size = (w, h)
        self.refine_heatmap = refine_heatmap
        self.heatmap_kernel = heatmap_kernel
        self.input_range = input_range
        self.calls = 0

    def __call__(self, image: np.ndarray, roi: Roi) -> LandmarkOutput:
        crop = roi_codec.crop(image, roi, *self.input_size, border="replicate")
        out = self.runner(roi_codec.to_tensor(crop, self.input_range))
        self.calls += 1
        n = self.topology.num_keypoints
        lm = decode_landmarks(out["landmarks"][0], input_size=self.input_size[0])  # >= n + 2 points: checked
        xyz = lm.xyz
        if self.refine_heatmap and "heatmap" in out and out["heatmap"].shape[-1] == xyz.shape[0]:
            xyz = refine_with_heatmap(xyz, out["heatmap"][0], kernel_size=self.heatmap_kernel)
        pts = roi_codec.project_to_image(xyz, roi)
        score = float(np.asarray(out["presence"]).reshape(-1)[0]) if "presence" in out else 1.0
        world = None
        if "world" in out:
            w3 = np.asarray(out["world"][0], np.float32).reshape(-1, 3)[:n].copy()
            c, s = math.cos(roi.rotation), math.sin(roi.rotation)
            w3[:, 0], w3[:, 1] = c * w3[:, 0] - s * w3[:, 1], s * w3[:, 0] + c * w3[:, 1]
            world = w3
        return LandmarkOutput(keypoints=pts[:n], visibility=lm.visibility[:n], presence=lm.presence[:n],
                              aux=pts[n:n + 2, :2].copy(), score=score, world=world)


class PoseTracker:
    """Detector → tracker pipeline.

    Args:
        detector, landmarker: model runners (see :mod:`blazepose_tf.runtime.runners`).
        mode: ``"image"`` (independent images) or ``"video"`` (ROI carried between frames).
        num_poses: people per image in IMAGE mode (VIDEO mode tracks one).
        min_detection_confidence: detector score threshold.
        min_presence: tracker presence threshold under which a pose is dropped (and VIDEO mode re-detects).
        smooth: One Euro smoothing of landmarks and of the ROI points in VIDEO mode.
        refine_heatmap: MediaPipe's heatmap refinement when the tracker outputs a heatmap.
        roi_passes: tracker passes per person in IMAGE mode (:data:`blazepose_tf.contract.IMAGE_ROI_PASSES`): each
            pass after the first re-crops the ROI the previous pass's auxiliary points give and is kept while its
            presence stays above ``min_presence``; 1 is MediaPipe's graph. VIDEO mode carries the ROI to the next
            frame instead (one pass per frame).

    Raises:
        ModelError: a model does not meet the I/O contract of its role, or the two are swapped (one line naming
            the file and what is wrong; see :mod:`blazepose_tf.contract`).
    """

    def __init__(self, detector: ModelRunner, landmarker: ModelRunner, mode: str = "image", num_poses: int = 1,
                 min_detection_confidence: float = contract.MIN_DETECTION_CONFIDENCE,
                 min_presence: float = 0.5, smooth: bool = True,
                 refine_heatmap: bool = True, topology: Topology = BLAZEPOSE_33, roi_scale: float = contract.ROI_SCALE,
                 roi_passes: int = contract.IMAGE_ROI_PASSES):
        if mode not in ("image", "video"):
            raise ValueError(f"mode must be 'image' or 'video', got {mode!r}")
        if num_poses < 1:
            raise ValueError("num_poses must be >= 1")
        if roi_passes < 1:
            raise ValueError("roi_passes must be >= 1")
        if mode == "video" and num_poses != 1:
            raise ValueError("VIDEO mode tracks one person; use num_poses=1 (IMAGE mode supports more)")
        contract.check_not_swapped(model_io(detector), model_io(landmarker))
        self.detector = PersonDetector(detector, min_score=min_detection_confidence)
        self.landmarker = LandmarkEstimator(landmarker, topology=topology, refine_heatmap=refine_heatmap)
        self.mode = mode
        self.num_poses = num_poses
        self.min_presence = min_presence
        self.smooth = smooth
        self.roi_scale = roi_scale
        self.roi_passes = roi_passes
        self.topology = topology
        self._smoother = LandmarkSmoother(LANDMARKS)
        self._aux_filter = OneEuroFilter(AUX_LANDMARKS)
        self.reset()

    @classmethod
    def from_official(cls, mode: str = "image", num_threads: int = 1, landmarks: str = "pose_landmark_full",
                      **kwargs) -> "PoseTracker":
        """The pipeline on MediaPipe's official pose_detection and ``landmarks`` (``pose_landmark_full`` or
        ``pose_landmark_lite``) models."""
        from blazepose_tf.runtime.runners import TFLiteRunner
        from blazepose_tf.official import official_model_path

        return cls(TFLiteRunner(official_model_path("pose_detection"), num_threads),
                   TFLiteRunner(official_model_path(landmarks), num_threads), mode=mode, **kwargs)

    def reset(self) -> None:
        """Forgets the tracked ROI and the smoothing state (start of a new video)."""
        self._roi: Optional[Roi] = None
        self._frame = 0
        self._smoother.reset()
        self._aux_filter.reset()

    @property
    def detector_calls(self) -> int:
        return self.detector.calls

    def _pose(self, image: np.ndarray, roi: Roi, det: Optional[Detection]) -> Optional[Pose]:
        out = self.landmarker(image, roi)
        if not out.score > self.min_presence:
            return None
        return Pose(keypoints=out.keypoints, visibility=out.visibility, presence=out.presence, score=out.score,
                    roi=roi, aux_keypoints=out.aux, detection=det, world=out.world)

    def _repass(self, image: np.ndarray, pose: Pose, passes: int) -> Pose:
        """Up to ``passes - 1`` more tracker passes, each on the ROI of the previous pose's auxiliary points; the
        last pose whose presence passes the threshold."""
        for _ in range(passes - 1):
            roi = roi_from_aux(pose.aux_keypoints, self.roi_scale)
            better = self._pose(image, roi, pose.detection) if roi is not None else None
            if better is None:
                break
            pose = better
        return pose

    def _detect(self, image: np.ndarray, limit: int, passes: int = 1) -> list[Pose]:
        poses = []
        for det in self.detector(image)[:limit]:
            roi = roi_from_detection(det, self.roi_scale)
            pose = self._pose(image, roi, det) if roi is not None else None
            if pose is not None:
                poses.append(self._repass(image, pose, passes))
        return poses

    def process(self, image: np.ndarray, timestamp: Optional[float] = None) -> list[Pose]:
        """Runs the pipeline on one RGB image (IMAGE mode) or the next video frame (VIDEO mode).

        Args:
            image: (H, W, 3) uint8 RGB (grayscale, RGBA and 16-bit arrays are converted).
            timestamp: frame time in seconds for VIDEO-mode smoothing (default: frame index / 30).
        """
        image = as_rgb(image)
        if self.mode == "image":
            return self._detect(image, self.num_poses, self.roi_passes)
        t = self._frame / 30.0 if timestamp is None else float(timestamp)
        self._frame += 1
        pose = None
        if self._roi is not None:
            pose = self._pose(image, self._roi, None)
        if pose is None:  # first frame, or the tracker lost the person: run the detector on this frame
            self._smoother.reset()
            self._aux_filter.reset()
            found = self._detect(image, 1)
            pose = found[0] if found else None
        if pose is None:
            self._roi = None
            return []
        if self.smooth:
            scale = object_scale(pose.keypoints)
            pose.keypoints, pose.visibility = self._smoother(pose.keypoints, t, pose.visibility)
            pose.aux_keypoints = self._aux_filter(pose.aux_keypoints, t,
                                                  1.0 / scale if scale > 1e-6 else 1.0).astype(np.float32)
        self._roi = roi_from_aux(pose.aux_keypoints, self.roi_scale)
        return [pose]
