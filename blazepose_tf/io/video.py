"""Reading and writing videos frame by frame, as RGB uint8 arrays, through OpenCV (FFmpeg backend).

Notes on OpenCV's behaviour that shaped this module:

* An MP4/MOV written front-to-back keeps its index (``moov`` atom) at the end, so a truncated MP4 usually
  cannot be opened at all: it is reported as "cannot open video", not as a truncated one.
* A truncated AVI/MKV opens with the frame count of its header and stops decoding early; the reader then
  yields the frames it has and sets :attr:`VideoReader.truncated`.
* A container can open and still hold no decodable frame (e.g. an AVI written with no frames): the reader
  decodes the first frame when it opens, and raises "empty video" if there is none. (An MP4 written with
  no frames cannot be opened at all.)
* ``frame_count`` comes from the container header, which for some formats is an estimate
  (duration x fps); ``truncated`` compares it with the frames actually decoded.
* OpenCV's writers report no write error (a full disk gives a silently truncated file), so
  :class:`VideoWriter` writes to a temporary file, checks on close that it reopens with every frame, and only
  then renames it over the output. :func:`atomic_output` and :func:`write_bytes_atomic` give other outputs
  (overlay images, results JSON) the same guarantee: a file under its final name is always complete.
"""
from __future__ import annotations

import contextlib
import math
import os
import secrets
import sys
from pathlib import Path
from types import TracebackType
from typing import Iterator, Optional, Union

import cv2
import numpy as np

from blazepose_tf.errors import InputError, UserError
from blazepose_tf.io.images import to_rgb_uint8
from blazepose_tf.io.provenance import mark_video

PathLike = Union[str, "os.PathLike[str]"]

# FFmpeg prints its own complaints ("moov atom not found", "overread 8") to stderr; this module reports
# problems as InputError instead. OpenCV reads this variable when it first opens a video, and a value the
# user set (e.g. 32 to debug) wins.
_QUIET_DECODER_LOG = "-8"
# Our own default, inherited by child processes, does not count as the user's choice.
_USER_SET_DECODER_LOG = os.environ.get("OPENCV_FFMPEG_LOGLEVEL", _QUIET_DECODER_LOG) != _QUIET_DECODER_LOG
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", _QUIET_DECODER_LOG)

DEFAULT_FPS = 30.0

# Output container -> FourCC of the codec OpenCV's FFmpeg backend writes it with.
WRITER_CODECS: dict[str, str] = {".mp4": "mp4v", ".avi": "MJPG"}


def sanitize_fps(value: float, default: float = DEFAULT_FPS) -> float:
    """Returns ``value`` if it is a usable frame rate (finite, > 0), else ``default``."""
    try:
        fps = float(value)
    except (TypeError, ValueError):
        return default
    if not math.isfinite(fps) or fps <= 0:
        return default
    return fps


@contextlib.contextmanager
def _native_stderr_muted():
    """Sends what native code writes straight to file descriptor 2 to the null device, then restores it.

    When FFmpeg cannot open a file, OpenCV falls back to its built-in AVI/MJPEG parser, which prints e.g.
    ``Unexpected element. Expected: LIST. Got: <raw bytes>.`` to stderr for a corrupt AVI regardless of
    OpenCV's log level. The failure is reported as an InputError instead. A user who set
    ``OPENCV_FFMPEG_LOGLEVEL`` (to debug decoding) keeps every message.
    """
    saved = None
    if not _USER_SET_DECODER_LOG:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, 2)
            finally:
                os.close(devnull)
        except (OSError, ValueError, AttributeError):
            if saved is not None:
                os.close(saved)
                saved = None
    try:
        yield
    finally:
        if saved is not None:
            os.dup2(saved, 2)
            os.close(saved)


class VideoReader:
    """Iterates over a video's frames as ``(frame_index, timestamp_seconds, frame_rgb_uint8)``.

    Usable as a context manager; iterates once. Timestamps are ``frame_index / fps``.

    Attributes:
        path: the video file.
        fps: frame rate from the container, or 30.0 if it reports 0/NaN.
        frame_count: number of frames the container announces, or -1 if unknown.
        width, height: size of the decoded frames in pixels.
        frames_read: number of frames yielded so far.
        truncated: set once iteration ends if fewer frames were decoded than ``frame_count``.

    Raises:
        InputError: missing or zero-byte file, a file OpenCV cannot open, or a video with no decodable frame.
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        p = self.path
        if not p.exists():
            raise InputError(f"video not found: {p}")
        if p.is_dir():
            raise InputError(f"video path is a directory, not a file: {p}")
        if not p.is_file():   # a FIFO: OpenCV would wait on it
            raise InputError(f"video {p} is not a regular file")
        try:
            size = p.stat().st_size
        except OSError as e:
            raise InputError(f"cannot read video {p}: {e.strerror or e}") from None
        if size == 0:
            raise InputError(f"video file is empty (0 bytes): {p}")
        if not os.access(p, os.R_OK):
            raise InputError(f"cannot read video {p}: permission denied")

        with _native_stderr_muted():
            self._cap: Optional[cv2.VideoCapture] = cv2.VideoCapture(str(p))
            opened = self._cap.isOpened()
            fps = self._cap.get(cv2.CAP_PROP_FPS) if opened else 0.0
            count = self._cap.get(cv2.CAP_PROP_FRAME_COUNT) if opened else 0.0
        if not opened:
            self.close()
            raise InputError(f"cannot open video {p}: unsupported format, or the file is corrupt or truncated")

        self.fps: float = sanitize_fps(fps)
        self.frame_count: int = int(count) if math.isfinite(count) and count > 0 else -1
        self.frames_read = 0
        self.truncated = False

        first = self._read_raw()
        if first is None:
            self.close()
            raise InputError(f"empty video: no decodable frame in {p}")
        self._pending: Optional[np.ndarray] = first
        self.height, self.width = int(first.shape[0]), int(first.shape[1])

    def _read_raw(self) -> Optional[np.ndarray]:
        if self._cap is None:
            return None
        try:
            with _native_stderr_muted():  # a corrupt AVI also makes the fallback parser print while reading
                ok, frame = self._cap.read()
        except cv2.error:
            return None
        if not ok or frame is None or frame.size == 0:
            return None
        return frame

    def _finish(self) -> None:
        self.truncated = self.frame_count > 0 and self.frames_read < self.frame_count
        self.close()

    def __iter__(self) -> Iterator[tuple[int, float, np.ndarray]]:
        return self

    def __next__(self) -> tuple[int, float, np.ndarray]:
        if self._pending is not None:
            frame, self._pending = self._pending, None
        else:
            if self._cap is None:
                raise StopIteration
            frame = self._read_raw()
            if frame is None:
                self._finish()
                raise StopIteration
        index = self.frames_read
        self.frames_read += 1
        return index, index / self.fps, to_rgb_uint8(frame, str(self.path))

    def close(self) -> None:
        """Releases the decoder (idempotent)."""
        if self._cap is not None:
            with _native_stderr_muted():
                self._cap.release()
            self._cap = None
        self._pending = None

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.close()


# --- Output files: complete under their final name, or not there at all -----------------------------------------

_TEMP_NAME_TRIES = 100


def temp_file_beside(path: PathLike) -> Path:
    """Creates an empty, hidden file with a unique name in ``path``'s folder and returns its path.

    The name, ``.NAME.XXXXXXXX.part.EXT``, keeps ``path``'s extension (OpenCV's video writer picks the container
    from it). Being in the same folder, it can be renamed over ``path`` atomically.

    Raises:
        OSError: the folder does not exist or is not writable.
    """
    p = Path(path)
    for _ in range(_TEMP_NAME_TRIES):
        tmp = p.with_name(f".{p.name}.{secrets.token_hex(4)}.part{p.suffix}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"no free temporary name next to {p}")


def remove_quietly(path: PathLike) -> None:
    """Deletes a file if it is there, ignoring errors (cleanup of a temporary file on a failure path)."""
    with contextlib.suppress(OSError):
        os.unlink(path)


def sync_file(path: PathLike) -> None:
    """Flushes a written file to the disk, where a full disk or an I/O error may only then surface.

    Raises:
        OSError: the data could not be written.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_output(path: PathLike) -> Iterator[Path]:
    """Yields a temporary file to fill; when the block ends without error it is synced and renamed over ``path``,
    otherwise deleted. ``path`` is thus either left as it was or replaced by a complete file, never partly
    written. A symbolic link at ``path`` is written through (its target is replaced), not replaced.

    Raises:
        OSError: the temporary file cannot be created, synced or renamed (the temporary file is removed).
    """
    final = Path(os.path.realpath(path))
    tmp = temp_file_beside(final)
    try:
        yield tmp
        sync_file(tmp)
        os.replace(tmp, final)
    except BaseException:
        remove_quietly(tmp)
        raise


def write_bytes_atomic(path: PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` through :func:`atomic_output`.

    Raises:
        OSError: the file cannot be written; ``path`` is then unchanged.
    """
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def _holds_frames(path: Path, frames: int) -> bool:
    """Whether the video file reopens announcing at least ``frames`` frames and its last one decodes (a disk that
    filled up leaves an MP4 without its index, or an AVI whose header counts frames that are not there)."""
    with _native_stderr_muted():
        cap = cv2.VideoCapture(str(path))
        try:
            if not cap.isOpened() or cap.get(cv2.CAP_PROP_FRAME_COUNT) < frames:
                return False
            cap.set(cv2.CAP_PROP_POS_FRAMES, frames - 1)
            ok, frame = cap.read()
            return bool(ok) and frame is not None
        except cv2.error:
            return False
        finally:
            cap.release()


class VideoWriter:
    """Writes RGB uint8 frames to an .mp4 (MPEG-4 Part 2, ``mp4v``) or .avi (Motion JPEG) file.

    Frames go to a hidden temporary file next to ``path``; :meth:`close` checks that it reopens with every frame
    written (OpenCV reports no write error: a full disk truncates the file silently), marks it
    (:mod:`blazepose_tf.io.provenance`) and renames it over ``path``. :meth:`discard`, or leaving a ``with`` block on an exception, deletes it. So ``path`` is never left
    holding a partial video (an earlier file there stays until a complete one replaces it).

    Args:
        path: output file; its extension picks the container and codec.
        fps: frame rate (finite, > 0).
        size: ``(width, height)`` of every frame.

    Raises:
        UserError: unsupported extension, bad fps/size, or the file cannot be created (e.g. the directory does
            not exist or is not writable).

    Note: the ``mp4v`` encoder may crop odd frame sizes to even ones.
    """

    def __init__(self, path: PathLike, fps: float, size: tuple[int, int]) -> None:
        self.path = Path(path)
        ext = self.path.suffix.lower()
        if ext not in WRITER_CODECS:
            raise UserError(f"unsupported video output extension {self.path.suffix or '(none)'} for "
                            f"{self.path}; use {' or '.join(WRITER_CODECS)}")
        fps = float(fps)
        if not math.isfinite(fps) or fps <= 0:
            raise UserError(f"invalid output frame rate {fps} for {self.path}")
        width, height = (int(v) for v in size)
        if width <= 0 or height <= 0:
            raise UserError(f"invalid output video size {width}x{height} for {self.path}")
        self.fps = fps
        self.size = (width, height)
        self.frames_written = 0
        self._writer: Optional[cv2.VideoWriter] = None
        self._tmp: Optional[Path] = None
        if self.path.is_dir():
            raise UserError(f"cannot write video {self.path}: it is a directory")
        if not self.path.parent.is_dir():
            raise UserError(f"cannot write video {self.path}: directory {self.path.parent} does not exist")
        self._final = Path(os.path.realpath(self.path))
        try:
            self._tmp = temp_file_beside(self._final)
        except OSError as e:
            raise UserError(f"cannot write video {self.path}: {e.strerror or e}") from None
        fourcc = cv2.VideoWriter.fourcc(*WRITER_CODECS[ext])
        self._writer = cv2.VideoWriter(str(self._tmp), fourcc, fps, self.size)
        if not self._writer.isOpened():
            self.discard()
            raise UserError(f"cannot open video writer for {self.path} (is the location writable?)")

    def write(self, frame_rgb: np.ndarray) -> None:
        """Appends one (height, width, 3) uint8 RGB frame.

        Raises:
            ValueError: the frame has the wrong size, channels or dtype (OpenCV would drop it silently).
            RuntimeError: the writer is closed.
        """
        if self._writer is None:
            raise RuntimeError(f"video writer for {self.path} is closed")
        frame = np.asarray(frame_rgb)
        width, height = self.size
        if frame.shape != (height, width, 3) or frame.dtype != np.uint8:
            raise ValueError(f"expected a ({height}, {width}, 3) uint8 RGB frame, got {frame.shape} {frame.dtype}")
        self._writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
        self.frames_written += 1

    def _release(self) -> Optional[Path]:
        """Closes the encoder; returns the temporary file still to be committed or deleted (None if done)."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        tmp, self._tmp = self._tmp, None
        return tmp

    def close(self) -> None:
        """Finalises the video and moves it to ``path`` (idempotent).

        Raises:
            UserError: the video is incomplete (disk full) or cannot be moved to ``path``; the temporary file is
                deleted and ``path`` left as it was.
        """
        tmp = self._release()
        if tmp is None:
            return
        try:
            if self.frames_written == 0 or _holds_frames(tmp, self.frames_written):
                mark_video(tmp)
                sync_file(tmp)
                os.replace(tmp, self._final)
                return
            reason = f"the file does not hold the {self.frames_written} frames written (disk full?)"
        except OSError as e:
            reason = e.strerror or str(e)
        remove_quietly(tmp)
        raise UserError(f"cannot write video {self.path}: {reason}")

    def discard(self) -> None:
        """Stops writing and deletes the temporary file, leaving ``path`` as it was (idempotent)."""
        tmp = self._release()
        if tmp is not None:
            remove_quietly(tmp)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()
