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
  (:func:`mark_text`); its digest ignores line endings (a checkout that turns ``\\n`` into ``\\r\\n`` edits
  nothing).

:func:`written_here` finds the mark from the content, not the name (a summary saved as ``s.png`` is still JSON):
it reads the file's head and tail, and the whole file, in blocks, only when a mark is there to check.
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
_MARK = re.compile(re.escape(_PREFIX) + rb"[0-9a-f]{%d}" % _DIGEST_HEX)
_MARK_LEN = len(_PREFIX) + _DIGEST_HEX
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_KEY = b"Software\x00"
_JSON_OPEN, _JSON_CLOSE = b'{"written_by": "', b'", '
_TEXT_OPEN, _TEXT_CLOSE = b"<!-- ", b" -->\n"
_VIDEO_BOX = 8 + _MARK_LEN          # an MP4 box or AVI chunk header, then the mark
_HEAD = 4096                         # the PNG and JPEG marks sit in the header, well within this
_CHUNK = 1 << 20


def _mark(digest: "hashlib._Hash") -> bytes:
    return _PREFIX + digest.hexdigest()[:_DIGEST_HEX].encode()


def _is_mark(data: bytes) -> bool:
    return len(data) == _MARK_LEN and _MARK.fullmatch(data) is not None


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _jpeg_insert_at(encoded: bytes) -> int:
    """Where the comment goes: after JFIF's APP0, which must stay first, else right after the start marker."""
    if encoded[2:4] == b"\xff\xe0":
        return 4 + struct.unpack(">H", encoded[4:6])[0]
    return 2


# --- marking ------------------------------------------------------------------------------------------------------


def mark_image(encoded: bytes, extension: str) -> bytes:
    """``encoded`` (a whole .png or .jpg/.jpeg file as an encoder made it) with the mark added; other extensions,
    or bytes that are not such a file, are returned unchanged."""
    ext = extension.lower()
    mark = _mark(hashlib.sha256(encoded))
    if ext == ".png" and encoded.startswith(_PNG_SIGNATURE) and encoded[12:16] == b"IHDR":
        at = 8 + 12 + struct.unpack(">I", encoded[8:12])[0]
        return encoded[:at] + _png_chunk(b"tEXt", _PNG_KEY + mark) + encoded[at:]
    if ext in (".jpg", ".jpeg") and encoded.startswith(b"\xff\xd8"):
        at = _jpeg_insert_at(encoded)
        return encoded[:at] + b"\xff\xfe" + struct.pack(">H", 2 + len(mark)) + mark + encoded[at:]
    return encoded


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


def _digest_of_file(f: BinaryIO, pieces: list[tuple[int, int]], prefix: bytes = b"") -> "hashlib._Hash":
    """sha256 of ``prefix`` then the byte ranges ``[start, end)`` of ``f``, read in blocks."""
    h = hashlib.sha256(prefix)
    for start, end in pieces:
        f.seek(start)
        left = end - start
        while left > 0:
            block = f.read(min(_CHUNK, left))
            if not block:
                break
            h.update(block)
            left -= len(block)
    return h


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
        mark = _mark(_digest_of_file(f, [(0, size)]))
        if ext == ".mp4":
            f.seek(size)
            f.write(struct.pack(">I", _VIDEO_BOX) + b"free" + mark)
            return
        lists = _riff_lists(f, size)
        if not lists:
            return
        f.seek(size)
        f.write(b"JUNK" + struct.pack("<I", _MARK_LEN) + mark)   # even length: no pad byte
        offset, length = lists[-1]
        f.seek(offset + 4)
        f.write(struct.pack("<I", length + _VIDEO_BOX))


def marked_json(doc: dict[str, Any], **dumps_kwargs: Any) -> bytes:
    """``json.dumps(doc, **dumps_kwargs)`` as bytes, with a first key ``"written_by"`` holding the mark.

    Raises:
        ValueError: ``doc`` is not a non-empty dict (or :func:`json.dumps` refuses it).
    """
    if not isinstance(doc, dict) or not doc:
        raise ValueError("a marked JSON document must be a non-empty object")
    text = json.dumps(doc, **dumps_kwargs).encode()
    return _JSON_OPEN + _mark(hashlib.sha256(text)) + _JSON_CLOSE + text[1:]


def _text_digest(body: bytes) -> "hashlib._Hash":
    return hashlib.sha256(body.replace(b"\r\n", b"\n"))


def mark_text(text: str) -> bytes:
    """A text report (Markdown) as marked bytes: ``text``, ending in a newline, then the line ``<!-- mark -->``."""
    data = text.encode()
    if data and not data.endswith(b"\n"):
        data += b"\n"
    return data + _TEXT_OPEN + _mark(_text_digest(data)) + _TEXT_CLOSE


# --- checking -----------------------------------------------------------------------------------------------------


def _png_mark(head: bytes) -> Optional[tuple[bytes, int, int]]:
    """(mark, start, end) of the mark chunk in a PNG's ``head``, or None."""
    at = len(_PNG_SIGNATURE)
    while at + 12 <= len(head):
        length, kind = struct.unpack(">I4s", head[at:at + 8])
        if kind == b"tEXt" and head[at + 8:at + 8 + len(_PNG_KEY)] == _PNG_KEY:
            mark = head[at + 8 + len(_PNG_KEY):at + 8 + length]
            return (mark, at, at + 12 + length) if _is_mark(mark) else None
        if kind == b"IDAT":
            return None
        at += 12 + length
    return None


def _jpeg_mark(head: bytes) -> Optional[tuple[bytes, int, int]]:
    """(mark, start, end) of the mark comment in a JPEG's ``head``, or None."""
    at = 2
    while at + 4 <= len(head) and head[at] == 0xFF:
        kind, length = head[at + 1], struct.unpack(">H", head[at + 2:at + 4])[0]
        if kind == 0xFE and _is_mark(head[at + 4:at + 2 + length]):
            return head[at + 4:at + 2 + length], at, at + 2 + length
        if kind == 0xDA:  # start of scan: no header segment follows
            return None
        at += 2 + length
    return None


def _json_mark(head: bytes) -> Optional[tuple[bytes, int, int]]:
    """(mark, start, end) of ``"written_by": "<mark>", `` after a JSON file's opening brace, or None."""
    end = len(_JSON_OPEN) + _MARK_LEN
    mark = head[len(_JSON_OPEN):end]
    if head.startswith(_JSON_OPEN) and _is_mark(mark) and head[end:end + len(_JSON_CLOSE)] == _JSON_CLOSE:
        return mark, 1, end + len(_JSON_CLOSE)
    return None


def _text_written_here(f: BinaryIO, size: int) -> bool:
    for close in (_TEXT_CLOSE, _TEXT_CLOSE.replace(b"\n", b"\r\n")):
        tail = len(_TEXT_OPEN) + _MARK_LEN + len(close)
        if size < tail:
            continue
        f.seek(size - tail)
        end = f.read(tail)
        mark = end[len(_TEXT_OPEN):-len(close)]
        if end.startswith(_TEXT_OPEN) and end.endswith(close) and _is_mark(mark):
            f.seek(0)
            return _mark(_text_digest(f.read(size - tail))) == mark
    return False


def _video_written_here(f: BinaryIO, size: int, riff: bool) -> bool:
    if size < _VIDEO_BOX:
        return False
    f.seek(size - _VIDEO_BOX)
    tail = f.read(_VIDEO_BOX)
    mark = tail[8:]
    if (tail[:4] != b"JUNK" if riff else tail[4:8] != b"free") or not _is_mark(mark):
        return False
    if not riff:
        return _mark(_digest_of_file(f, [(0, size - _VIDEO_BOX)])) == mark
    lists = _riff_lists(f, size)   # the digest covers the file with its last RIFF list's earlier size
    if not lists or lists[-1][1] < _VIDEO_BOX:
        return False
    offset, length = lists[-1]
    f.seek(0)
    prefix = f.read(offset + 4) + struct.pack("<I", length - _VIDEO_BOX)
    return _mark(_digest_of_file(f, [(offset + 8, size - _VIDEO_BOX)], prefix)) == mark


def written_here(path: PathLike) -> bool:
    """Whether the file at ``path`` is exactly as this package wrote it (its mark holds the digest of the rest);
    the format is told from the content. A missing or unreadable file, or a folder, is not."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(0)
            head = f.read(_HEAD)
            if head.startswith(b"RIFF") or head[4:8] == b"ftyp":   # videos: the mark is at the end
                return _video_written_here(f, size, head.startswith(b"RIFF"))
            if head.startswith(_PNG_SIGNATURE):
                found = _png_mark(head)
            elif head.startswith(b"\xff\xd8"):
                found = _jpeg_mark(head)
            else:   # JSON, or text (a Markdown report may start with "{" too)
                found = _json_mark(head)
                if found is None:
                    return _text_written_here(f, size)
            if found is None:
                return False
            mark, start, end = found
            return _mark(_digest_of_file(f, [(0, start), (end, size)])) == mark
    except OSError:
        return False


def describe(path: PathLike) -> Optional[str]:
    """Why ``path`` may not be replaced unasked (a file without a valid mark), or None if it may (no file there, or
    one this package wrote)."""
    if not os.path.isfile(path) or written_here(path):
        return None
    return ("exists and is not an unchanged blazepose_tf output (a file of yours, an edited output, or one "
            "from a version before outputs were marked)")
