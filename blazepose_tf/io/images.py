"""Reading still images and finding the inputs (images, videos) a command should process.

Every image is returned as an (H, W, 3) ``uint8`` RGB array, whatever it was stored as:

* grayscale -> the gray value repeated in R, G and B;
* RGBA / gray+alpha -> the alpha channel is **dropped** (colour values kept as stored, no compositing);
* palette (indexed) images -> their palette colours;
* 16-bit PNG/TIFF -> 8-bit by ``round(value / 257)`` (so 0 -> 0, 257*k -> k, 65535 -> 255);
* floating-point TIFFs are assumed to hold values in [0, 1] (clipped, scaled by 255);
* the EXIF orientation of JPEG/PNG/WebP files is applied (TIFF orientation is applied by OpenCV's decoder).

Decoding uses OpenCV on the file's bytes (so non-ASCII paths work everywhere); Pillow only reads headers: the
image size, checked against Pillow's decompression-bomb limit (:func:`max_image_pixels`) *before* decoding,
and the EXIF orientation tag. Any problem with an input file raises :class:`~blazepose_tf.errors.InputError`
with a one-line message that names the file.
"""
from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Union

import cv2
import numpy as np

from blazepose_tf.errors import InputError

PathLike = Union[str, "os.PathLike[str]"]

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")
VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg")

_EXIF_ORIENTATION_TAG = 0x0112
# Pillow format plugins of the IMAGE_EXTENSIONS, whose headers give the image size.
_PILLOW_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF")


def _supported_text() -> str:
    return f"images {' '.join(IMAGE_EXTENSIONS)}; videos {' '.join(VIDEO_EXTENSIONS)}"


def read_input_bytes(path: PathLike, what: str = "file") -> bytes:
    """Reads a whole input file, turning every file-system problem into a one-line ``InputError``.

    Args:
        path: the file to read.
        what: word used in messages ("image", "video"...).
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} not found: {p}")
    if p.is_dir():
        raise InputError(f"{what} path is a directory, not a file: {p}")
    if not p.is_file():   # a FIFO or a device would block the read or never end it
        raise InputError(f"{what} {p} is not a regular file")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read {what} {p}: {e.strerror or e}") from None
    if not data:
        raise InputError(f"{what} file is empty (0 bytes): {p}")
    return data


def to_rgb_uint8(array: np.ndarray, source: str = "image") -> np.ndarray:
    """Converts an array decoded by OpenCV (BGR/BGRA/gray, 8/16-bit or float) to (H, W, 3) uint8 RGB.

    Args:
        array: (H, W), (H, W, 1), (H, W, 2) gray+alpha, (H, W, 3) BGR or (H, W, 4) BGRA.
        source: name used in the error message if the pixel format is not supported.
    """
    a = np.asarray(array)
    if a.dtype == np.uint8:
        pass
    elif a.dtype == np.uint16:
        # round(v / 257) in integer arithmetic: floor((2v + 257) / 514).
        a = ((a.astype(np.uint32) * 2 + 257) // 514).astype(np.uint8)
    elif np.issubdtype(a.dtype, np.floating):
        a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=1.0, neginf=0.0)
        a = np.rint(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)
    else:
        raise InputError(f"unsupported pixel type {a.dtype} in {source}")

    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3:
        raise InputError(f"unsupported image layout {a.shape} in {source}")
    channels = a.shape[2]
    if channels in (1, 2):            # gray, gray+alpha: drop alpha, repeat gray
        rgb = np.repeat(a[:, :, :1], 3, axis=2)
    elif channels in (3, 4):          # BGR, BGRA: drop alpha, reorder
        rgb = a[:, :, 2::-1]
    else:
        raise InputError(f"unsupported number of channels ({channels}) in {source}")
    return np.ascontiguousarray(rgb)


def apply_exif_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """Returns ``image`` (H, W, ...) transformed so that it displays upright for an EXIF orientation 1..8.

    Unknown orientation values leave the image unchanged.
    """
    if orientation == 2:
        out = image[:, ::-1]
    elif orientation == 3:
        out = image[::-1, ::-1]
    elif orientation == 4:
        out = image[::-1]
    elif orientation == 5:              # transpose (mirror along the main diagonal)
        out = np.swapaxes(image, 0, 1)
    elif orientation == 6:              # rotate 90 degrees clockwise
        out = np.rot90(image, k=-1)
    elif orientation == 7:              # transverse (mirror along the anti-diagonal)
        out = np.swapaxes(image, 0, 1)[::-1, ::-1]
    elif orientation == 8:              # rotate 90 degrees counter-clockwise
        out = np.rot90(image, k=1)
    else:
        return image
    return np.ascontiguousarray(out)


def _exif_orientation(data: bytes) -> int:
    """EXIF orientation tag of a JPEG/PNG/WebP file given as bytes (1 if absent or unreadable)."""
    is_jpeg = data[:3] == b"\xff\xd8\xff"
    is_png = data[:8] == b"\x89PNG\r\n\x1a\n"
    is_webp = data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    if not (is_jpeg or is_png or is_webp):
        return 1  # TIFF: OpenCV's decoder already applies the orientation tag; BMP/GIF have no EXIF.
    # Pillow decodes a whole PNG/WebP to look for EXIF that is not in its header, so check first.
    if is_png and not _has_chunk(data, 8, b"eXIf", big_endian=True):
        return 1
    if is_webp and not _has_chunk(data, 12, b"EXIF", big_endian=False):
        return 1
    try:
        from PIL import Image

        with warnings.catch_warnings():   # size already checked by decode_image; no DecompressionBombWarning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:   # lazy: reads headers only, does not decode pixels
                value = im.getexif().get(_EXIF_ORIENTATION_TAG, 1)
        return int(value)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not make a decodable image unreadable
        return 1


def _has_chunk(data: bytes, start: int, name: bytes, big_endian: bool) -> bool:
    """Whether a PNG (big-endian, length before type, CRC after) or RIFF/WebP (type before little-endian
    length, padded to even) chunk list starting at ``start`` contains a chunk called ``name``."""
    pos, n = start, len(data)
    while pos + 8 <= n:
        if big_endian:
            length = int.from_bytes(data[pos:pos + 4], "big")
            kind = data[pos + 4:pos + 8]
            pos += 12 + length
        else:
            kind = data[pos:pos + 4]
            length = int.from_bytes(data[pos + 4:pos + 8], "little")
            pos += 8 + length + (length & 1)
        if kind == name:
            return True
    return False


def header_size(data: bytes) -> Optional[tuple[int, int]]:
    """(width, height) from the header of an encoded PNG/JPEG/WebP/TIFF/BMP/GIF, read by Pillow's format plugin
    without decoding pixels (and without Pillow's size check); None if no plugin recognises the bytes."""
    from PIL import Image

    Image.init()
    prefix = data[:16]
    for name in _PILLOW_FORMATS:
        factory, accept = Image.OPEN.get(name, (None, None))
        recognised = factory is not None and accept is not None and accept(prefix)
        if not recognised or isinstance(recognised, str):  # a str: recognised, but Pillow cannot read it
            continue
        try:
            with warnings.catch_warnings():  # e.g. TIFF's "Corrupt EXIF data": OpenCV's decoder has the last word
                warnings.simplefilter("ignore")
                with factory(io.BytesIO(data)) as im:
                    return im.size
        except Exception:  # noqa: BLE001 - an unreadable header: OpenCV's decoder will say what is wrong
            return None
    return None


def max_image_pixels() -> Optional[int]:
    """The largest image (in pixels) that is decoded: where Pillow refuses to open an image as a possible
    decompression bomb (2 x ``PIL.Image.MAX_IMAGE_PIXELS``, about 179 million); None if that is disabled."""
    from PIL import Image

    return None if Image.MAX_IMAGE_PIXELS is None else 2 * int(Image.MAX_IMAGE_PIXELS)


def decode_image(data: bytes, source: str = "image") -> np.ndarray:
    """Decodes encoded image bytes to (H, W, 3) uint8 RGB with EXIF orientation applied.

    Raises:
        InputError: the image is larger than :func:`max_image_pixels` (checked on its header, before any
            decoding), or the bytes are not a decodable image (the message names ``source``).
    """
    size, limit = header_size(data), max_image_pixels()
    if size is not None and limit is not None and size[0] * size[1] > limit:
        raise InputError(f"image {source} is too large: {size[0]} x {size[1]} = {size[0] * size[1]:,} pixels, "
                         f"over the {limit:,}-pixel limit (a guard against decompression bombs)")
    try:
        decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        decoded = None
    if decoded is None or decoded.size == 0:
        raise InputError(f"cannot decode image {source}: not an image, or the file is corrupt or truncated")
    rgb = to_rgb_uint8(decoded, source)
    return apply_exif_orientation(rgb, _exif_orientation(data))


def load_image(path: PathLike) -> np.ndarray:
    """Loads an image file as an (H, W, 3) uint8 RGB array (see the module docstring for conversions).

    Raises:
        InputError: missing path, a directory, an empty file, an image over :func:`max_image_pixels`, or a
            file that cannot be decoded (not an image, corrupt, truncated).
    """
    data = read_input_bytes(path, "image")
    return decode_image(data, str(Path(path)))


@dataclass(frozen=True)
class InputItem:
    """One input to process: an image or a video file."""

    path: Path
    kind: Literal["image", "video"]


def _kind_of(path: Path) -> str | None:
    ext = path.suffix.lower()
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in VIDEO_EXTENSIONS:
        return "video"
    return None


def collect_inputs(path: PathLike) -> list[InputItem]:
    """Lists the inputs named by ``path``: one image, one video, or a directory's images and videos.

    A directory is scanned non-recursively; its regular files with an image or video extension
    (case-insensitive) are returned sorted by name. Other files, sub-directories and hidden files
    (names starting with ``.``) are ignored.

    Raises:
        InputError: the path does not exist, a file has an unsupported extension, or a directory holds no
            image or video file.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"input not found: {p}")
    if p.is_dir():
        try:
            entries = sorted(os.scandir(p), key=lambda e: e.name)
        except OSError as e:
            raise InputError(f"cannot list directory {p}: {e.strerror or e}") from None
        items: list[InputItem] = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if not entry.is_file():
                    continue
            except OSError:
                continue
            kind = _kind_of(Path(entry.name))
            if kind is not None:
                items.append(InputItem(p / entry.name, kind))  # type: ignore[arg-type]
        if not items:
            raise InputError(f"no image or video files in directory {p} (supported: {_supported_text()})")
        return items
    kind = _kind_of(p)
    if kind is None:
        ext = p.suffix or "(no extension)"
        raise InputError(f"unsupported file type {ext} for {p} (supported: {_supported_text()})")
    return [InputItem(p, kind)]  # type: ignore[arg-type]
