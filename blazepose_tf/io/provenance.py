"""A mark on the files this package writes, so that a rerun may replace its own outputs while a file the user
made is never overwritten unless they ask (``--overwrite``).

Each output format carries the mark where its readers ignore it:

* PNG: a ``tEXt`` chunk ``Software`` = ``blazepose_tf`` right after the header (``IHDR``);
* JPEG: a comment (``COM``) segment ``blazepose_tf`` after the JFIF header;
* MP4: a top-level ``free`` box holding ``blazepose_tf`` at the end of the file;
* AVI: a ``JUNK`` chunk holding ``blazepose_tf`` at the end of the last RIFF list (its size updated);
* JSON (under any other name): a first key ``"schema"`` whose value starts with ``blazepose_tf.`` (the writers put it first).
"""
from __future__ import annotations

import os
import re
import struct
import zlib
from pathlib import Path
from typing import Union

PathLike = Union[str, "os.PathLike[str]"]

MARK = b"blazepose_tf"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_TEXT = b"Software\x00" + MARK
_MP4_BOX = struct.pack(">I", 8 + len(MARK)) + b"free" + MARK
_AVI_CHUNK = b"JUNK" + struct.pack("<I", len(MARK)) + MARK  # even length: no pad byte
_JSON_HEAD = re.compile(rb'^\s*\{\s*"schema"\s*:\s*"blazepose_tf\.')
_HEAD_BYTES = 4096


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def mark_image(encoded: bytes, extension: str) -> bytes:
    """``encoded`` (a whole .png or .jpg/.jpeg file as an encoder made it) with the mark added; other extensions,
    or bytes that are not such a file, are returned unchanged."""
    ext = extension.lower()
    if ext == ".png" and encoded.startswith(_PNG_SIGNATURE) and encoded[12:16] == b"IHDR":
        end_of_header = 8 + 12 + struct.unpack(">I", encoded[8:12])[0]
        return encoded[:end_of_header] + _png_chunk(b"tEXt", _PNG_TEXT) + encoded[end_of_header:]
    if ext in (".jpg", ".jpeg") and encoded.startswith(b"\xff\xd8"):
        at = 2
        if encoded[2:4] == b"\xff\xe0":  # JFIF's APP0 must stay first
            at = 4 + struct.unpack(">H", encoded[4:6])[0]
        comment = b"\xff\xfe" + struct.pack(">H", 2 + len(MARK)) + MARK
        return encoded[:at] + comment + encoded[at:]
    return encoded


def mark_video(path: PathLike) -> None:
    """Appends the mark to a finished .mp4 or .avi file in place (other extensions: nothing).

    Raises:
        OSError: the file cannot be read or written.
    """
    ext = Path(path).suffix.lower()
    if ext not in (".mp4", ".avi"):
        return
    with open(path, "r+b") as f:
        if ext == ".mp4":
            f.seek(0, os.SEEK_END)
            f.write(_MP4_BOX)
            return
        size = f.seek(0, os.SEEK_END)
        last, offset = None, 0
        while offset + 8 <= size:  # OpenDML files hold several top-level RIFF lists; the last one grows
            f.seek(offset)
            kind, length = struct.unpack("<4sI", f.read(8))
            if kind != b"RIFF":
                break
            last, offset = (offset, length), offset + 8 + length + (length & 1)
        if last is None:
            return
        f.seek(0, os.SEEK_END)
        f.write(_AVI_CHUNK)
        f.seek(last[0] + 4)
        f.write(struct.pack("<I", last[1] + len(_AVI_CHUNK)))


def _png_marked(head: bytes) -> bool:
    at = len(_PNG_SIGNATURE)
    while at + 8 <= len(head):
        length, kind = struct.unpack(">I4s", head[at:at + 8])
        if kind == b"tEXt" and head[at + 8:at + 8 + length] == _PNG_TEXT:
            return True
        if kind == b"IDAT":
            return False
        at += 12 + length
    return False


def _jpeg_marked(head: bytes) -> bool:
    at = 2
    while at + 4 <= len(head) and head[at] == 0xFF:
        kind, length = head[at + 1], struct.unpack(">H", head[at + 2:at + 4])[0]
        if kind == 0xFE and head[at + 4:at + 2 + length] == MARK:
            return True
        if kind == 0xDA:  # start of scan: no header segment follows
            return False
        at += 2 + length
    return False


def written_here(path: PathLike) -> bool:
    """Whether the file at ``path`` carries this package's mark: an image's or video's for those extensions, the
    JSON ``schema`` for any other name; an unreadable file does not."""
    ext = Path(path).suffix.lower()
    try:
        with open(path, "rb") as f:
            head = f.read(_HEAD_BYTES)
            if ext in (".mp4", ".avi"):
                tail = _MP4_BOX if ext == ".mp4" else _AVI_CHUNK
                if f.seek(0, os.SEEK_END) < len(tail):
                    return False
                f.seek(-len(tail), os.SEEK_END)
                return f.read(len(tail)) == tail
    except OSError:
        return False
    if ext == ".png":
        return head.startswith(_PNG_SIGNATURE) and _png_marked(head)
    if ext in (".jpg", ".jpeg"):
        return head.startswith(b"\xff\xd8") and _jpeg_marked(head)
    return _JSON_HEAD.match(head) is not None  # the results and summaries are JSON whatever their name
