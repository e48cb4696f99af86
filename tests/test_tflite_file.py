"""blazepose_tf.tflite_file: the flatbuffer reader (graph, constants, inspection) and the interpreter factory on a
small model built here, and the names export.tflite_model keeps for the export modules."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from blazepose_tf import tflite_file
from blazepose_tf.errors import ModelError
from blazepose_tf.tflite_file import (TFLiteGraph, inspect_model, invoke, load_interpreter, read_bytes, schema)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, bytes]:
    """A float32 conv + add + sigmoid model (path and bytes)."""
    import keras
    import tensorflow as tf

    inp = keras.Input((8, 8, 3), batch_size=1, name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu6", name="conv")(inp)
    y = keras.layers.Add(name="add")([x, keras.layers.Conv2D(4, 1, name="skip")(inp)])
    out = keras.layers.Activation("sigmoid", name="prob")(y)
    model = keras.Model(inp, out)
    model.set_weights([np.random.default_rng(0).normal(size=w.shape).astype(np.float32)
                       for w in model.get_weights()])
    blob = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    path = tmp_path_factory.mktemp("tflite") / "tiny.tflite"
    path.write_bytes(blob)
    return path, blob


def test_graph_reads_ops_options_and_constants(tiny):
    path, blob = tiny
    graph = TFLiteGraph(path)
    assert graph.op_counts() == TFLiteGraph(blob).op_counts() == inspect_model(path).op_histogram
    conv = next(op for op in graph.ops if op.kind == "CONV_2D" and graph.constant(op.inputs[1]).shape[1] == 3)
    assert conv.options["padding"] == "same" and conv.options["stride_h"] == 1
    assert graph.constant(conv.inputs[1]).shape == (4, 3, 3, 3)  # OHWI
    assert graph.constant(graph.inputs[0]) is None  # computed at run time
    assert [graph.tensors[i].shape for i in graph.inputs] == [(1, 8, 8, 3)]
    assert all(t.index == i for i, t in enumerate(graph.tensors))


def test_inspect_model_io_and_quantization(tiny):
    path, blob = tiny
    info = inspect_model(blob)
    assert info.size_bytes == len(blob) and info.custom_ops == [] and info.flex_ops == []
    assert [(t.shape, t.dtype) for t in info.inputs] == [((1, 8, 8, 3), "FLOAT32")]
    assert info.guess_quantization() == "none"
    graph = TFLiteGraph(path)
    assert [t.index for t in info.outputs] == graph.outputs


def test_not_a_model_is_one_line_model_error(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"definitely not a flatbuffer")
    with pytest.raises(ModelError, match="no 'TFL3' identifier"):
        read_bytes(bad)
    with pytest.raises(ModelError, match="model file not found"):
        inspect_model(tmp_path / "missing.tflite")
    for source, label in ((bad, str(bad)), (bad.read_bytes(), "<tflite bytes>")):
        with pytest.raises(ModelError) as err:
            load_interpreter(source)
        msg = str(err.value)
        assert msg.startswith(f"{label} is not a loadable TFLite model: ") and "\n" not in msg
    with pytest.raises(ModelError, match=r"^weights\.bin is not a loadable"):
        load_interpreter(bad, label="weights.bin")


def test_interpreter_from_path_or_bytes_same_outputs(tiny):
    path, blob = tiny
    x = np.random.default_rng(1).uniform(size=(3, 8, 8, 3)).astype(np.float32)
    outs = [invoke(load_interpreter(path), x)[0], invoke(load_interpreter(blob, num_threads=2), x)[0],
            invoke(load_interpreter(path, use_xnnpack=False, experimental_preserve_all_tensors=True), x)[0]]
    assert outs[0].shape == (3, 8, 8, 4)
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-6)
    np.testing.assert_allclose(outs[0], outs[2], atol=1e-5)
    single = load_interpreter(path)
    np.testing.assert_array_equal(invoke(single, x[1:2])[0], outs[0][1:2])


def test_schema_is_ai_edge_litert_and_export_keeps_its_names():
    from ai_edge_litert import schema_py_generated

    import export.tflite_model as export_tflite

    assert schema() is schema_py_generated
    for name in ("inspect_model", "read_bytes", "schema", "ModelInfo", "TensorInfo", "TFLITE_IDENTIFIER"):
        assert getattr(export_tflite, name) is getattr(tflite_file, name)
