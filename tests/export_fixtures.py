"""Small models and a small real-image COCO dataset for the export, benchmark and harness tests."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from blazepose_tf.io.samples import sample_image_path

# A person's 12 limb/torso points on scikit-image's astronaut (512x512), roughly where they are or would be.
_ASTRONAUT_POINTS = {
    "left_shoulder": (330, 300), "right_shoulder": (175, 300), "left_elbow": (380, 420),
    "right_elbow": (130, 420), "left_wrist": (360, 500), "right_wrist": (150, 500),
    "left_hip": (300, 505), "right_hip": (205, 505), "nose": (255, 190),
}


def tiny_tracker(input_size: int = 64, points: int = 35, name: str = "tiny_tracker"):
    """A conv tracker with the training heads (heatmap, offsets) and the inference outputs; every weight
    tensor that dynamic-range quantization would quantize has >= 1024 elements."""
    import keras

    inp = keras.Input((input_size, input_size, 3), name="input_layer")
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(inp)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(64, 1, activation="relu")(x)
    x = keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu")(x)
    hm = keras.layers.Conv2D(points, 1, name="heatmap")(x)
    off = keras.layers.Conv2D(2 * points, 1, name="offsets")(x)
    g = keras.layers.GlobalAveragePooling2D()(x)
    lm = keras.layers.Dense(points * 5, name="landmarks")(g)
    pr = keras.layers.Dense(1, activation="sigmoid", name="presence")(g)
    model = keras.Model(inp, {"landmarks": lm, "presence": pr, "heatmap": hm, "offsets": off}, name=name)
    _randomize(model)
    return model


def tiny_detector(input_size: int = 64):
    """A detector with ``regressors`` (1, A, 12) and ``scores`` (1, A, 1) outputs."""
    import keras

    inp = keras.Input((input_size, input_size, 3), name="input_layer")
    x = keras.layers.Conv2D(32, 3, strides=4, padding="same", activation="relu")(inp)
    x = keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu")(x)
    reg = keras.layers.Reshape((-1, 12), name="regressors")(keras.layers.Conv2D(24, 1)(x))
    sc = keras.layers.Reshape((-1, 1), name="scores")(keras.layers.Conv2D(2, 1)(x))
    model = keras.Model(inp, {"regressors": reg, "scores": sc}, name="tiny_detector")
    _randomize(model)
    return model


def flex_model(input_size: int = 16):
    """A model whose graph needs TensorFlow's MatrixInverse (no TFLite builtin kernel)."""
    import keras
    import tensorflow as tf

    class MatrixInverse(keras.layers.Layer):
        def call(self, x):
            m = tf.reshape(x[:, :4, :4, 0], [-1, 4, 4]) + 4.0 * tf.eye(4)
            return tf.reshape(tf.linalg.inv(m), [-1, 16])

    inp = keras.Input((input_size, input_size, 3), name="input_layer")
    x = keras.layers.Conv2D(4, 3, padding="same")(inp)
    lm = keras.layers.Dense(35 * 5, name="landmarks")(MatrixInverse()(x))
    return keras.Model(inp, {"landmarks": lm}, name="flex_tracker")


def _randomize(model, seed: int = 0) -> None:
    """Non-trivial biases and BatchNorm statistics, so that outputs are not near zero."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        new = []
        for w in weights:
            if w.ndim == 1 and layer.__class__.__name__ == "BatchNormalization":
                new.append(np.abs(rng.normal(1.0, 0.2, w.shape)).astype(w.dtype))
            elif w.ndim == 1:
                new.append(rng.normal(0.0, 0.5, w.shape).astype(w.dtype))
            else:
                new.append(w)
        layer.set_weights(new)


def synthetic_coco(folder: Path, num_images: int = 8) -> Path:
    """A COCO-keypoints dataset of ``num_images`` variants of the astronaut photo (shifted, scaled, flipped),
    with a person whose shoulders and hips are annotated; returns the annotations JSON
    (``images/`` and ``splits.json`` beside it)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "images").mkdir(exist_ok=True)
    base = cv2.imread(str(sample_image_path()))
    names = list(_ASTRONAUT_POINTS)
    images, annotations = [], []
    rng = np.random.default_rng(1)
    for i in range(num_images):
        scale = 0.5 + 0.5 * i / max(1, num_images - 1)
        shift = rng.uniform(-40, 40, 2)
        m = np.array([[scale, 0, shift[0] + 20], [0, scale, shift[1] + 20]], np.float64)
        w = h = int(512 * scale) + 60
        img = cv2.warpAffine(base, m, (w, h), borderMode=cv2.BORDER_REFLECT)
        pts = np.array([_ASTRONAUT_POINTS[n] for n in names], np.float64) @ m[:, :2].T + m[:, 2]
        if i % 2:
            img = img[:, ::-1].copy()
            pts[:, 0] = w - 1 - pts[:, 0]
            names_i = [n.replace("left", "@").replace("right", "left").replace("@", "right") for n in names]
        else:
            names_i = names
        fname = f"im{i:03d}.jpg"
        cv2.imwrite(str(folder / "images" / fname), img)
        images.append({"id": i, "file_name": fname, "width": w, "height": h})
        kps = []
        for n in names:
            x, y = pts[names_i.index(n)]
            kps += [float(x), float(y), 2]
        annotations.append({"id": 100 + i, "image_id": i, "category_id": 1, "iscrowd": 0, "keypoints": kps,
                            "num_keypoints": len(names)})
    doc = {"images": images, "annotations": annotations,
           "categories": [{"id": 1, "name": "person", "keypoints": names}]}
    path = folder / "annotations.json"
    path.write_text(json.dumps(doc))
    (folder / "splits.json").write_text(json.dumps({"train": list(range(num_images)),
                                                    "dev": list(range(num_images // 2))}))
    return path
