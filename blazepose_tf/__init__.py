"""blazepose-tf: BlazePose (person detector + 33-keypoint tracker) in TensorFlow/Keras, with training,
quantization, TFLite export and benchmarking."""
import os as _os

# Keep OpenCV's and TensorFlow's C++ logging to errors; users can override either variable.
_os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
