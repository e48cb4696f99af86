"""A converted tracker run at a lower resolution inside its input contract (blazepose_tf.models.resolution)."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from blazepose_tf.errors import ModelError
from blazepose_tf.models.official_layers import BatchReshape, ResizeBilinear
from blazepose_tf.models.resolution import INPUT_RESIZE, at_resolution, internal_resolution


def converted_like(size: int, pool_padding: str = "valid", seed: int = 0) -> keras.Model:
    """A tiny tracker shaped like the converted ones (an ``image`` input; stride-2 blocks whose shortcut is a
    2×2 max-pool, fixed-size upsamplings, a heatmap and a segmentation at fixed fractions of the input, a pool and
    a 2×2 "valid" head reshaped to the landmarks), built for a ``size`` of 128 (4×4 at 1/32)."""
    keras.utils.set_random_seed(seed)
    image = keras.Input((size, size, 3), name="image")
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="stem")(image)
    skips = []
    for i in range(4):          # size/2 -> size/32
        skips.append(x)
        main = keras.layers.DepthwiseConv2D(3, strides=2, padding="same", name=f"dw{i}")(x)
        short = keras.layers.MaxPooling2D(2, padding=pool_padding, name=f"pool{i}")(x)
        x = keras.layers.Add(name=f"add{i}")([keras.layers.Conv2D(8, 1, name=f"pw{i}")(main), short])
    up = ResizeBilinear((size // 16, size // 16), name="up")(x)
    up = keras.layers.Add(name="skip")([up, skips[3]])
    heatmap = keras.layers.Conv2D(5, 1, name="heatmap")(ResizeBilinear((size // 4, size // 4), name="up2")(up))
    segmentation = keras.layers.Conv2D(1, 1, name="segmentation")(
        ResizeBilinear((size // 2, size // 2), name="up3")(up))
    head = keras.layers.MaxPooling2D(2, padding=pool_padding, name="head_pool")(x)
    landmarks = BatchReshape((10,), name="landmarks")(keras.layers.Conv2D(10, 2, name="head")(head))
    return keras.Model(image, [landmarks, heatmap, segmentation], name="tiny")


def resize(x: np.ndarray, size: int) -> np.ndarray:
    return tf.raw_ops.ResizeBilinear(images=x, size=[size, size], half_pixel_centers=True).numpy()


def test_same_contract_same_weights_and_the_original_graph_at_the_lower_size():
    original = converted_like(128)
    low = at_resolution(original, 96)
    assert low.output_names == original.output_names
    assert [tuple(o.shape) for o in low.outputs] == [tuple(o.shape) for o in original.outputs]
    assert tuple(low.inputs[0].shape) == (None, 128, 128, 3)
    assert internal_resolution(low) == 96 and internal_resolution(original) == 128
    assert low.get_layer(INPUT_RESIZE).output.shape[1] == 96
    renamed = {"heatmap_low": "heatmap", "segmentation_low": "segmentation"}
    for layer in low.layers:
        if layer.weights:
            want = original.get_layer(renamed.get(layer.name, layer.name)).get_weights()
            assert all(np.array_equal(a, b) for a, b in zip(layer.get_weights(), want)), layer.name
    # it computes the original graph built at 96 on the resized crop, its 3x3 map at 1/32 pooled with 'same'
    # padding (rounding up as the stride-2 convolutions beside it do; 'valid' would give 1x1 beside their 2x2):
    # the landmarks exactly, the spatial outputs resized back to their contract sizes
    reference = converted_like(96, pool_padding="same")
    reference.set_weights(original.get_weights())
    x = np.random.default_rng(0).random((2, 128, 128, 3), np.float32)
    got = [np.asarray(t) for t in low(x)]
    want = [np.asarray(t) for t in reference(resize(x, 96))]
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[1], resize(want[1], 32), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[2], resize(want[2], 64), rtol=1e-5, atol=1e-5)
    assert not np.allclose(got[0], np.asarray(original(x)[0]), atol=1e-3)   # not the original at 128


@pytest.mark.parametrize("size, words", [(128, "multiple of 16 below"), (100, "multiple of 16"),
                                         (0, "multiple of 16"), (64, "does not fit at input resolution 64")])
def test_bad_sizes_are_one_line_model_errors(size, words):
    with pytest.raises(ModelError, match=words) as e:
        at_resolution(converted_like(128), size)
    assert "\n" not in str(e.value)
