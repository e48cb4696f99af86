"""A mark on the files this package writes, so that a rerun may replace its own outputs while a file the user
made (or edited) is never overwritten unless they ask (``--overwrite``).

The mark is ``blazepose_tf sha256:<digest>``, the digest of the file without its mark: a file counts as written
here only while it is exactly as written (an edited copy, or another program's file, does not). Each format
carries it where its readers ignore it:

* PNG: a ``tEXt`` chunk ``Software`` = the mark, right after the header (``IHDR``);
* JPEG: a comment (``COM``) segment after the JFIF header;
* MP4: a top-level ``free`` box at the end of the file;
* AVI: a ``JUNK`` chunk at the end of the last RIFF list (whose size is updated; the digest covers the file as it
  was before);
* JSON: a first key ``"written_by"`` (:func:`marked_json`);
* other text (Markdown reports): a last line ``<!-- mark -->``, an HTML comment Markdown does not show
  (:func:`mark_text`).

:func:`written_here` tells the format from the content, not the name, so a summary saved as ``s.png`` is still
recognised as JSON.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import zlib
from pathlib import Path
from typing import Any, BinaryIO, Optional, Union

PathLike = Union[str, "os.PathLike[str]"]

_PREFIX = b"blazepose_tf sha256:"
_DIGEST_HEX = 32
_MARK = re.compile(re.escape(_PREFIX) + rb"([0-9a-f]{%d})$" % _DIGEST_HEX)
_MARK_LEN = len(_PREFIX) + _DIGEST_HEX
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_KEY = b"Software\x00"
_JSON_KEY = '{"written_by": "'
_TEXT_OPEN, _TEXT_CLOSE = b"<!-- ", b" -->\n"
_CHUNK = 1 << 20


def _mark(digest: "hashlib._Hash") -> bytes:
    return _PREFIX + digest.hexdigest()[:_DIGEST_HEX].encode()


def _digest_of(*parts: bytes) -> "hashlib._Hash":
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    return h


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _jpeg_insert_at(encoded: bytes) -> int:
    """Where the comment goes: after JFIF's APP0, which must stay first, else right after the start marker."""
    if encoded[2:4] == b"\xff\xe0":
        return 4 + struct.unpack(">H", encoded[4:6])[0]
    return 2


def mark_image(encoded: bytes, extension: str) -> bytes:
    """``encoded`` (a whole .png or .jpg/.jpeg file as an encoder made it) with the mark added; other extensions,
    or bytes that are not such a file, are returned unchanged."""
    ext = extension.lower()
    mark = _mark(_digest_of(encoded))
    if ext == ".png" and encoded.startswith(_PNG_SIGNATURE) and encoded[12:16] == b"IHDR":
        at = 8 + 12 + struct.unpack(">I", encoded[8:12])[0]
        return encoded[:at] + _png_chunk(b"tEXt", _PNG_KEY + mark) + encoded[at:]
    if ext in (".jpg", ".jpeg") and encoded.startswith(b"\xff\xd8"):
        at = _jpeg_insert_at(encoded)
        return encoded[:at] + b"\xff\xfe" + struct.pack(">H", 2 + len(mark)) + mark + encoded[at:]
    return encoded


def _file_digest(f: BinaryIO, end: int) -> "hashlib._Hash":
    """sha256 of the first ``end`` bytes of ``f``."""
    h = hashlib.sha256()
    f.seek(0)
    left = end
    while left > 0:
        block = f.read(min(_CHUNK, left))
        if not block:
            break
        h.update(block)
        left -= len(block)
    return h


def _riff_lists(f: BinaryIO, size: int) -> list[tuple[int, int]]:
    """(offset, length) of the top-level RIFF lists (OpenDML files hold several)."""
    lists, offset = [], 0
    while offset + 8 <= size:
        f.seek(offset)
        kind, length = struct.unpack("<4sI", f.read(8))
        if kind != b"RIFF":
            break
        lists.append((offset, length))
        offset += 8 + length + (length & 1)
    return lists


def mark_video(path: PathLike) -> None:
    """Appends the mark to a finished .mp4 or .avi file in place (other extensions: nothing).

    Raises:
        OSError: the file cannot be read or written.
    """
    ext = Path(path).suffix.lower()
    if ext not in (".mp4", ".avi"):
        return
    with open(path, "r+b") as f:
        size = f.seek(0, os.SEEK_END)
        mark = _mark(_file_digest(f, size))
        if ext == ".mp4":
            f.seek(size)
            f.write(struct.pack(">I", 8 + len(mark)) + b"free" + mark)
            return
        lists = _riff_lists(f, size)
        if not lists:
            return
        f.seek(size)
        f.write(b"JUNK" + struct.pack("<I", len(mark)) + mark)   # even length: no pad byte
        offset, length = lists[-1]
        f.seek(offset + 4)
        f.write(struct.pack("<I", length + 8 + len(mark)))


def _mark_json_bytes(text: bytes) -> bytes:
    if not text.startswith(b"{") or text[1:].lstrip().startswith(b"}"):
        raise ValueError("a marked JSON document must be a non-empty object")
    return _JSON_KEY.encode() + _mark(_digest_of(text)) + b'", ' + text[1:]


def marked_json(doc: dict[str, Any], **dumps_kwargs: Any) -> bytes:
    """``json.dumps(doc, **dumps_kwargs)`` as bytes, with a first key ``"written_by"`` holding the mark."""
    if not isinstance(doc, dict):
        raise ValueError("a marked JSON document must be a non-empty object")
    return _mark_json_bytes(json.dumps(doc, **dumps_kwargs).encode())


def mark_text(text: str) -> bytes:
    """A report's ``text`` as marked bytes: a JSON object (text starting with ``{``) gains the first key
    ``"written_by"``, as :func:`marked_json` writes it; other text ends in the line ``<!-- mark -->``."""
    data = text.encode()
    if data.startswith(b"{"):
        return _mark_json_bytes(data)
    if data and not data.endswith(b"\n"):
        data += b"\n"
    return data + _TEXT_OPEN + _mark(_digest_of(data)) + _TEXT_CLOSE


def _png_written_here(data: bytes) -> bool:
    at = len(_PNG_SIGNATURE)
    while at + 12 <= len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        body = data[at + 8:at + 8 + length]
        if kind == b"tEXt" and body.startswith(_PNG_KEY):
            found = _MARK.match(body[len(_PNG_KEY):])
            return bool(found) and _mark(_digest_of(data[:at], data[at + 12 + length:])) == found.group(0)
        if kind == b"IDAT":
            return False
        at += 12 + length
    return False


def _jpeg_written_here(data: bytes) -> bool:
    at = 2
    while at + 4 <= len(data) and data[at] == 0xFF:
        kind, length = data[at + 1], struct.unpack(">H", data[at + 2:at + 4])[0]
        if kind == 0xFE:
            found = _MARK.match(data[at + 4:at + 2 + length])
            if found:
                return _mark(_digest_of(data[:at], data[at + 2 + length:])) == found.group(0)
        if kind == 0xDA:  # start of scan: no header segment follows
            return False
        at += 2 + length
    return False


def _json_written_here(data: bytes) -> bool:
    head = _JSON_KEY.encode()
    found = _MARK.match(data[len(head):len(head) + _MARK_LEN])
    rest = data[len(head) + _MARK_LEN:]
    if not found or not rest.startswith(b'", '):
        return False
    return _mark(_digest_of(b"{", rest[3:])) == found.group(0)


def _text_written_here(data: bytes) -> bool:
    tail = len(_TEXT_OPEN) + _MARK_LEN + len(_TEXT_CLOSE)
    if len(data) < tail:
        return False
    body, end = data[:-tail], data[-tail:]
    if not (end.startswith(_TEXT_OPEN) and end.endswith(_TEXT_CLOSE)):
        return False
    found = _MARK.match(end[len(_TEXT_OPEN):-len(_TEXT_CLOSE)])
    return bool(found) and _mark(_digest_of(body)) == found.group(0)


def _video_written_here(f: BinaryIO, size: int, riff: bool) -> bool:
    box = 8 + _MARK_LEN
    if size < box:
        return False
    f.seek(size - box)
    tail = f.read(box)
    found = _MARK.match(tail[8:])
    if (tail[:4] != b"JUNK" if riff else tail[4:8] != b"free") or not found:
        return False
    if not riff:
        return _mark(_file_digest(f, size - box)) == found.group(0)
    lists = _riff_lists(f, size)   # the digest covers the file with its last RIFF list's earlier size
    if not lists:
        return False
    offset, length = lists[-1]
    f.seek(0)
    h = hashlib.sha256(f.read(offset + 4) + struct.pack("<I", length - box))
    f.seek(offset + 8)
    left = size - box - offset - 8
    while left > 0:
        block = f.read(min(_CHUNK, left))
        if not block:
            return False
        h.update(block)
        left -= len(block)
    return _mark(h) == found.group(0)


def written_here(path: PathLike) -> bool:
    """Whether the file at ``path`` is exactly as this package wrote it (its mark holds the digest of the rest);
    the format is told from the content. A missing or unreadable file, or a folder, is not."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(0)
            head = f.read(16)
            if head.startswith(b"RIFF") or head[4:8] == b"ftyp":   # videos: only their tail is read
                return _video_written_here(f, size, head.startswith(b"RIFF"))
            f.seek(0)
            data = f.read()
    except OSError:
        return False
    if data.startswith(_PNG_SIGNATURE):
        return _png_written_here(data)
    if data.startswith(b"\xff\xd8"):
        return _jpeg_written_here(data)
    if data.startswith(b"{"):
        return _json_written_here(data)
    return _text_written_here(data)


def describe(path: PathLike) -> Optional[str]:
    """Why ``path`` may not be replaced unasked (a file without a valid mark), or None if it may (no file there, or
    one this package wrote)."""
    if not os.path.lexists(path) or not os.path.isfile(path):
        return None
    if written_here(path):
        return None
    return ("exists and is not an unchanged blazepose_tf output (a file of yours, an edited output, or one "
            "from a version before outputs were marked)")
