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


def test_truncated_or_corrupt_flatbuffer_is_one_line_model_error_naming_the_file(tiny, tmp_path):
    """A cut-off download fails in the generated flatbuffer reader (struct.error, IndexError, a short buffer...):
    every reader turns that into the one-line ModelError naming the file. inspect_model (which checks that every
    buffer lies inside the file) and the interpreter refuse every cut; the readers that read only part of the
    file fail when the cut is in that part."""
    from export.metadata import get_metadata_buffers
    from export.tflite_model import unpack

    def graph_constants(p):
        graph = TFLiteGraph(p)
        return [graph.constant(i) for i in range(len(graph.tensors))]

    _, blob = tiny
    path = tmp_path / "cut.tflite"
    for n in range(8, len(blob), max(1, len(blob) // 64)):
        path.write_bytes(blob[:n])
        with pytest.raises(ModelError, match=rf"^{path} is not a loadable TFLite model: truncated or corrupt "
                                             r"flatbuffer \(.*\)$"):
            inspect_model(path)
        with pytest.raises(ModelError, match=rf"^{path} is not a loadable TFLite model: "):
            load_interpreter(path)
        for read in (unpack, get_metadata_buffers, graph_constants):
            try:
                read(path)
            except ModelError as e:
                msg = str(e)
                assert msg.startswith(f"{path} is not a loadable TFLite model: ") and "\n" not in msg, (n, msg)
    with pytest.raises(ModelError, match=r"^model buffer is not a loadable TFLite model: truncated"):
        inspect_model(blob[:len(blob) // 2])
    with pytest.raises(ModelError, match=r"^cut\.tflite is not a loadable TFLite model: truncated"):
        inspect_model(blob[:len(blob) // 2], label="cut.tflite")


def test_interpreter_reads_the_bytes_so_any_file_name_loads(tiny, tmp_path):
    """LiteRT takes model_path only if it encodes as UTF-8: a file name with a latin-1 byte (a lone surrogate in
    Python) loads like any other, since the interpreter is given the file's bytes; a FIFO is refused without
    blocking, an empty file with one line."""
    import os

    path, blob = tiny
    latin1 = tmp_path / os.fsdecode(b"mod\xe8le.tflite")
    latin1.write_bytes(blob)
    x = np.random.default_rng(2).uniform(size=(1, 8, 8, 3)).astype(np.float32)
    np.testing.assert_array_equal(invoke(load_interpreter(latin1), x)[0], invoke(load_interpreter(path), x)[0])
    assert inspect_model(latin1).op_histogram == inspect_model(path).op_histogram
    fifo = tmp_path / "fifo.tflite"
    os.mkfifo(fifo)
    with pytest.raises(ModelError, match="is not a regular file"):
        load_interpreter(fifo)
    empty = tmp_path / "empty.tflite"
    empty.write_bytes(b"")
    with pytest.raises(ModelError, match=rf"^{empty} is not a loadable TFLite model: it is empty \(0 bytes\)$"):
        load_interpreter(empty)


def test_tflite_runner_loads_a_non_utf8_file_name(tmp_path):
    """The runtime's runner (track, evaluate, bench) on a model whose file name is not valid UTF-8."""
    import os

    from blazepose_tf.official import official_model_path
    from blazepose_tf.runtime.runners import TFLiteRunner

    try:
        source = official_model_path("pose_landmark_lite")  # packaged: no network
    except ModelError as e:
        pytest.skip(f"official Lite unavailable: {e}")
    latin1 = tmp_path / os.fsdecode(b"l\xe9.tflite")
    latin1.write_bytes(Path(source).read_bytes())
    runner = TFLiteRunner(latin1)
    assert runner.output_roles == TFLiteRunner(source).output_roles
    assert runner.label == str(latin1)
