"""The mark on the files blazepose_tf writes (``blazepose_tf.io.provenance``): present on what the writers make, absent
from what other programs make or from an edited output, and invisible to the readers (the same pixels, every video
frame, the same JSON)."""
from __future__ import annotations

import json
import shutil
import struct
import zlib

import cv2
import numpy as np
import pytest

from blazepose_tf.io.provenance import describe, mark_image, mark_video, marked_json, written_here
from blazepose_tf.io.video import VideoReader, VideoWriter
from blazepose_tf.overlay import save_image


def picture(height: int = 24, width: int = 32) -> np.ndarray:
    """A small RGB gradient (JPEG keeps it close; PNG exactly)."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 7, y * 9, (x + y) * 3], axis=-1).astype(np.uint8)


def flip_last_byte_before(data: bytes, end: int) -> bytes:
    """``data`` with the byte at ``end - 1`` changed (an edit the mark must notice)."""
    return data[:end - 1] + bytes([data[end - 1] ^ 1]) + data[end:]


@pytest.mark.parametrize("name", ["o.png", "o.jpg", "o.JPEG"])
def test_saved_images_are_marked_and_decode_as_before(tmp_path, name):
    image = picture()
    path = tmp_path / name
    save_image(path, image)
    assert written_here(path) and describe(path) is None
    ext = "." + name.rsplit(".", 1)[1]
    plain = cv2.imencode(ext, image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])[1]
    assert np.array_equal(cv2.imread(str(path)), cv2.imdecode(plain, cv2.IMREAD_COLOR))
    if ext == ".png":
        assert np.array_equal(cv2.imread(str(path))[:, :, ::-1], image)
    other = tmp_path / f"by_opencv{ext}"                # another program's file of the same kind
    assert cv2.imwrite(str(other), image)
    assert not written_here(other) and "not an unchanged blazepose_tf output" in describe(other)
    data = path.read_bytes()                            # the pixels edited, the mark kept
    path.write_bytes(flip_last_byte_before(data, len(data) - 20))
    assert not written_here(path)
    renamed = tmp_path / "renamed.bin"                  # the name does not matter, the content does
    save_image(tmp_path / f"again{ext}", image)
    shutil.copy(tmp_path / f"again{ext}", renamed)
    assert written_here(renamed)


def test_png_mark_is_a_valid_chunk():
    """The text chunk sits after IHDR with a correct CRC, so strict PNG readers (libpng) accept the file."""
    plain = cv2.imencode(".png", picture())[1].tobytes()
    marked = mark_image(plain, ".png")
    assert marked.startswith(plain[:33]) and marked.endswith(plain[33:])
    length, kind = struct.unpack(">I4s", marked[33:41])
    assert kind == b"tEXt" and marked[41:41 + length].startswith(b"Software\x00blazepose_tf sha256:")
    assert struct.unpack(">I", marked[41 + length:45 + length])[0] == zlib.crc32(marked[37:41 + length])
    assert cv2.imdecode(np.frombuffer(marked, np.uint8), cv2.IMREAD_COLOR) is not None
    assert mark_image(b"not a png", ".png") == b"not a png"   # not an encoder's file: unchanged, unmarked


@pytest.mark.parametrize("name", ["o.mp4", "o.avi"])
def test_written_videos_are_marked_and_keep_every_frame(tmp_path, name):
    path = tmp_path / name
    with VideoWriter(path, 10.0, (64, 48)) as writer:
        for i in range(7):
            writer.write(np.full((48, 64, 3), 20 * i, np.uint8))
    assert written_here(path)
    with VideoReader(path) as reader:
        read = [frame for _, _, frame in reader]
        assert not reader.truncated
    assert len(read) == 7
    assert [int(round(f.mean())) for f in read] == pytest.approx([20 * i for i in range(7)], abs=6)
    data = path.read_bytes()
    if name.endswith(".avi"):      # the RIFF list still spans the whole file
        assert data[:4] == b"RIFF" and struct.unpack("<I", data[4:8])[0] + 8 == len(data)
    path.write_bytes(flip_last_byte_before(data, len(data) // 2))     # a frame edited
    assert not written_here(path)


@pytest.mark.parametrize("name", ["o.mp4", "o.avi"])
def test_other_videos_are_not_marked(tmp_path, name):
    path = tmp_path / name
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*("mp4v" if "mp4" in name else "MJPG")),
                             10.0, (64, 48))
    for _ in range(3):
        writer.write(np.zeros((48, 64, 3), np.uint8))
    writer.release()
    assert not written_here(path)
    mark_video(path)
    assert written_here(path)


def test_marked_json_is_the_same_document_and_edits_unmark_it(tmp_path):
    doc = {"schema": "blazepose_tf.track/1", "results": [{"x": 1.5}], "errors": []}
    for kwargs in ({}, {"indent": 1}, {"separators": (",", ":")}):
        data = marked_json(doc, **kwargs)
        loaded = json.loads(data)
        assert list(loaded)[0] == "written_by" and {k: v for k, v in loaded.items() if k != "written_by"} == doc
        for name in ("r.json", "results.png", "no_extension"):     # told from the content, not the name
            (tmp_path / name).write_bytes(data)
            assert written_here(tmp_path / name)
    path = tmp_path / "r.json"
    loaded["results"][0]["x"] = 2.5                     # edited and saved with the mark's key kept first
    path.write_text(json.dumps(loaded))
    assert not written_here(path)
    path.write_text('{"written_by": "blazepose_tf sha256:' + "0" * 32 + '", "schema": "blazepose_tf.track/1"}')
    assert not written_here(path)                       # a made-up mark
    with pytest.raises(ValueError):
        marked_json({})


@pytest.mark.parametrize("text", ['{"schema": "blazepose_tf.track/1", "results": []}', '{"schema": "x"}',
                                  "plain notes", ""])
def test_unmarked_json_and_text_are_not_ours(tmp_path, text):
    (tmp_path / "r.json").write_text(text)
    assert not written_here(tmp_path / "r.json")


def test_missing_or_unreadable_is_not_ours_and_needs_no_permission(tmp_path):
    assert not written_here(tmp_path / "absent.png") and describe(tmp_path / "absent.png") is None
    (tmp_path / "folder.json").mkdir()
    assert not written_here(tmp_path / "folder.json")


def test_text_reports_are_marked_whatever_they_start_with(tmp_path):
    from blazepose_tf.io.provenance import mark_text

    for text in ("# Report\n| a | b |\n", "{fig} caption, then a table\n", "no final newline", ""):
        path = tmp_path / "r.md"
        path.write_bytes(mark_text(text))
        assert written_here(path), text
        assert path.read_text().startswith(text) and path.read_text().endswith(" -->\n")
        path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))   # a checkout with CRLF line endings
        assert written_here(path), text
        path.write_bytes(b"x" + path.read_bytes())                        # an edit
        assert not written_here(path), text


def test_forged_or_truncated_marks_are_not_ours(tmp_path):
    data = marked_json({"schema": "blazepose_tf.track/1"})
    path = tmp_path / "r.json"
    path.write_bytes(data.replace(b'"written_by"', b'"written_bx"', 1))    # the key renamed: not the writer's
    assert not written_here(path)
    mark = data[len(b'{"written_by": "'):].split(b'"')[0]
    tiny_riff = b"RIFF" + struct.pack("<I", 8) + b"AVI " + b"JUNK" + struct.pack("<I", len(mark)) + mark
    path.write_bytes(tiny_riff)                                           # a RIFF list shorter than the mark
    assert not written_here(path)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 3)                    # cut short
    assert not written_here(path)
