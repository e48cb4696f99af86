"""The mark on the files blazepose_tf writes (``blazepose_tf.io.provenance``): present on what the writers make, absent
from what other programs make, and invisible to the readers (the same pixels, every video frame)."""
from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

from blazepose_tf.io.provenance import mark_image, mark_video, written_here
from blazepose_tf.io.video import VideoReader, VideoWriter
from blazepose_tf.overlay import save_image


def picture(height: int = 24, width: int = 32) -> np.ndarray:
    """A small RGB gradient (JPEG keeps it close; PNG exactly)."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 7, y * 9, (x + y) * 3], axis=-1).astype(np.uint8)


@pytest.mark.parametrize("name", ["o.png", "o.jpg", "o.JPEG"])
def test_saved_images_are_marked_and_decode_as_before(tmp_path, name):
    image = picture()
    save_image(tmp_path / name, image)
    assert written_here(tmp_path / name)
    ext = "." + name.rsplit(".", 1)[1]
    plain = cv2.imencode(ext, image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])[1]
    assert np.array_equal(cv2.imread(str(tmp_path / name)), cv2.imdecode(plain, cv2.IMREAD_COLOR))
    if ext == ".png":
        assert np.array_equal(cv2.imread(str(tmp_path / name))[:, :, ::-1], image)
    other = tmp_path / f"by_opencv{ext}"                # another program's file of the same kind
    assert cv2.imwrite(str(other), image)
    assert not written_here(other)


def test_png_mark_is_a_valid_chunk():
    """The text chunk sits after IHDR with a correct CRC, so strict PNG readers (libpng) accept the file."""
    plain = cv2.imencode(".png", picture())[1].tobytes()
    marked = mark_image(plain, ".png")
    assert marked.startswith(plain[:33]) and marked.endswith(plain[33:])
    length, kind = struct.unpack(">I4s", marked[33:41])
    assert kind == b"tEXt" and marked[41:41 + length] == b"Software\x00blazepose_tf"
    assert cv2.imdecode(np.frombuffer(marked, np.uint8), cv2.IMREAD_COLOR) is not None
    assert mark_image(b"not a png", ".png") == b"not a png"   # not an encoder's file: unchanged, unmarked


@pytest.mark.parametrize("name", ["o.mp4", "o.avi"])
def test_written_videos_are_marked_and_keep_every_frame(tmp_path, name):
    frames = [np.full((48, 64, 3), 20 * i, np.uint8) for i in range(7)]
    with VideoWriter(tmp_path / name, 10.0, (64, 48)) as writer:
        for frame in frames:
            writer.write(frame)
    assert written_here(tmp_path / name)
    with VideoReader(tmp_path / name) as reader:
        read = [frame for _, _, frame in reader]
        assert not reader.truncated
    assert len(read) == 7
    assert [int(round(f.mean())) for f in read] == pytest.approx([20 * i for i in range(7)], abs=6)
    if name.endswith(".avi"):      # the RIFF list still spans the whole file
        data = (tmp_path / name).read_bytes()
        assert data[:4] == b"RIFF" and struct.unpack("<I", data[4:8])[0] + 8 == len(data)


@pytest.mark.parametrize("name", ["o.mp4", "o.avi"])
def test_other_videos_are_not_marked(tmp_path, name):
    writer = cv2.VideoWriter(str(tmp_path / name), cv2.VideoWriter.fourcc(*("mp4v" if "mp4" in name else "MJPG")),
                             10.0, (64, 48))
    for _ in range(3):
        writer.write(np.zeros((48, 64, 3), np.uint8))
    writer.release()
    assert not written_here(tmp_path / name)
    mark_video(tmp_path / name)
    assert written_here(tmp_path / name)


@pytest.mark.parametrize("text, ours", [
    ('{"schema": "blazepose_tf.track/1", "results": []}', True),
    ('{\n "schema": "blazepose_tf.evaluate/1",\n "pck": {}}', True),
    ('{"results": [], "schema": "blazepose_tf.track/1"}', False),    # the writers put the schema first
    ('{"schema": "someone_else/1"}', False),
    ("plain notes", False),
    ("", False),
])
def test_json_is_ours_by_its_schema_whatever_its_name(tmp_path, text, ours):
    for name in ("r.json", "results.txt"):
        (tmp_path / name).write_text(text)
        assert written_here(tmp_path / name) is ours


def test_missing_or_unreadable_is_not_ours(tmp_path):
    assert not written_here(tmp_path / "absent.png")
    (tmp_path / "folder.json").mkdir()
    assert not written_here(tmp_path / "folder.json")
