"""Tests for blazepose_tf.io.images and blazepose_tf.io.video. All data is generated in tmp_path."""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from blazepose_tf.errors import EXIT_NO_INPUT, InputError, UserError
from blazepose_tf.io.images import (IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, InputItem, apply_exif_orientation,
                                    collect_inputs, header_size, load_image, max_image_pixels)
from blazepose_tf.io.video import VideoReader, VideoWriter, sanitize_fps


def _write_cv2(path: Path, array: np.ndarray) -> Path:
    ok, buf = cv2.imencode(path.suffix, array)
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def _rgb_pattern(h: int = 40, w: int = 60) -> np.ndarray:
    """An RGB image with a distinct colour in each quadrant (robust to JPEG)."""
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 2, : w // 2] = (255, 0, 0)
    img[: h // 2, w // 2:] = (0, 255, 0)
    img[h // 2:, : w // 2] = (0, 0, 255)
    img[h // 2:, w // 2:] = (255, 255, 255)
    return img


def _assert_input_error(path: Path, match: str | None = None) -> InputError:
    with pytest.raises(InputError) as info:
        load_image(path)
    msg = str(info.value)
    assert path.name in msg
    assert "\n" not in msg
    assert info.value.exit_code == EXIT_NO_INPUT
    if match:
        assert match in msg
    return info.value


# ----------------------------------------------------------------------------------------------- images

def test_extensions_are_lowercase_with_dot():
    for ext in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS:
        assert ext.startswith(".") and ext == ext.lower()
    assert {".jpg", ".jpeg", ".png"} <= set(IMAGE_EXTENSIONS)
    assert {".mp4", ".avi"} <= set(VIDEO_EXTENSIONS)
    assert not set(IMAGE_EXTENSIONS) & set(VIDEO_EXTENSIONS)


def test_png_roundtrip_is_exact_and_rgb(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (23, 31, 3), dtype=np.uint8)
    path = _write_cv2(tmp_path / "a.png", rgb[:, :, ::-1])  # cv2 stores BGR
    out = load_image(path)
    assert out.dtype == np.uint8 and out.shape == (23, 31, 3)
    np.testing.assert_array_equal(out, rgb)
    assert out.flags.c_contiguous


def test_jpeg_loads_as_rgb(tmp_path):
    rgb = _rgb_pattern()
    Image.fromarray(rgb).save(tmp_path / "a.jpg", quality=95)
    out = load_image(tmp_path / "a.jpg")
    assert out.shape == (40, 60, 3) and out.dtype == np.uint8
    assert np.abs(out[5, 5].astype(int) - (255, 0, 0)).max() < 20     # red stays in channel 0
    assert np.abs(out[35, 5].astype(int) - (0, 0, 255)).max() < 20


def test_non_ascii_path(tmp_path):
    rgb = _rgb_pattern()
    path = tmp_path / "données_é_图像.png"
    Image.fromarray(rgb).save(path)
    np.testing.assert_array_equal(load_image(path), rgb)
    np.testing.assert_array_equal(load_image(str(path)), rgb)


def test_grayscale_becomes_rgb(tmp_path):
    gray = np.arange(12 * 20, dtype=np.uint8).reshape(12, 20)
    path = _write_cv2(tmp_path / "g.png", gray)
    out = load_image(path)
    assert out.shape == (12, 20, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], gray)


def test_rgba_drops_alpha(tmp_path):
    rgba = np.zeros((8, 9, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2] = 200, 100, 50
    rgba[..., 3] = 0                                     # fully transparent: colour is kept, not blackened
    rgba[:4, :, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png")
    assert out.shape == (8, 9, 3)
    assert (out == np.array([200, 100, 50], np.uint8)).all()


def test_gray_alpha_png(tmp_path):
    gray = np.full((5, 6), 77, np.uint8)
    alpha = np.full((5, 6), 10, np.uint8)
    Image.merge("LA", [Image.fromarray(gray), Image.fromarray(alpha)]).save(tmp_path / "la.png")
    out = load_image(tmp_path / "la.png")
    assert out.shape == (5, 6, 3)
    assert (out == 77).all()


def test_16bit_gray_png_scaled_with_rounding(tmp_path):
    values = np.array([[0, 65535, 257 * 100, 128 * 257, 128, 129, 383, 386]], np.uint16)
    path = _write_cv2(tmp_path / "g16.png", values)
    assert cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    out = load_image(path)
    assert out.dtype == np.uint8 and out.shape == (1, 8, 3)
    np.testing.assert_array_equal(out[0, :, 0], [0, 255, 100, 128, 0, 1, 1, 2])


def test_16bit_color_png_and_tiff(tmp_path):
    rgb16 = np.zeros((4, 5, 3), np.uint16)
    rgb16[..., 0] = 65535
    rgb16[..., 1] = 257 * 60
    for name in ("c16.png", "c16.tiff"):
        out = load_image(_write_cv2(tmp_path / name, rgb16[:, :, ::-1]))
        assert out.dtype == np.uint8 and out.shape == (4, 5, 3)
        assert (out == np.array([255, 60, 0], np.uint8)).all(), name


def test_palette_png(tmp_path):
    idx = np.array([[0, 1], [2, 1]], np.uint8)
    img = Image.fromarray(idx, "P")
    img.putpalette([10, 20, 30, 200, 0, 0, 0, 0, 250] + [0] * (256 * 3 - 9))
    img.save(tmp_path / "p.png")
    out = load_image(tmp_path / "p.png")
    assert out.shape == (2, 2, 3)
    np.testing.assert_array_equal(out[0, 0], [10, 20, 30])
    np.testing.assert_array_equal(out[0, 1], [200, 0, 0])
    np.testing.assert_array_equal(out[1, 0], [0, 0, 250])
    # a palette with a transparent index still gives 3 channels
    img.save(tmp_path / "pt.png", transparency=1)
    out_t = load_image(tmp_path / "pt.png")
    assert out_t.shape == (2, 2, 3)
    np.testing.assert_array_equal(out_t[0, 1], [200, 0, 0])


def test_one_pixel_image(tmp_path):
    Image.fromarray(np.array([[[9, 8, 7]]], np.uint8)).save(tmp_path / "one.png")
    out = load_image(tmp_path / "one.png")
    assert out.shape == (1, 1, 3)
    np.testing.assert_array_equal(out[0, 0], [9, 8, 7])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(tmp_path, orientation):
    rgb = np.random.default_rng(orientation).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "o.png"                     # PNG keeps the comparison exact
    Image.fromarray(rgb).save(path, exif=exif)
    with Image.open(path) as im:
        expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    out = load_image(path)
    assert out.shape == expected.shape
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(apply_exif_orientation(rgb, orientation), expected)


def test_exif_orientation_jpeg(tmp_path):
    rgb = _rgb_pattern(40, 60)
    exif = Image.Exif()
    exif[0x0112] = 6                              # stored sideways: display rotated 90 degrees clockwise
    Image.fromarray(rgb).save(tmp_path / "o.jpg", exif=exif, quality=95)
    out = load_image(tmp_path / "o.jpg")
    assert out.shape == (60, 40, 3)
    # the stored top-left (red) quadrant ends up top-right after a clockwise rotation
    assert np.abs(out[5, 35].astype(int) - (255, 0, 0)).max() < 20
    assert np.abs(out[5, 5].astype(int) - (0, 0, 255)).max() < 20


def test_missing_path(tmp_path):
    _assert_input_error(tmp_path / "nope.png", "not found")


def test_directory_is_not_an_image(tmp_path):
    d = tmp_path / "dir.png"
    d.mkdir()
    _assert_input_error(d, "directory")


def test_zero_byte_file(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    _assert_input_error(p, "empty")


def test_text_file_named_jpg(tmp_path):
    p = tmp_path / "notes.jpg"
    p.write_text("this is not an image\n" * 10)
    _assert_input_error(p, "cannot decode")


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
@pytest.mark.parametrize("keep", [0.5, 0.97])
def test_truncated_image(tmp_path, suffix, keep):
    rgb = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    full = _write_cv2(tmp_path / f"full{suffix}", rgb).read_bytes()
    assert load_image(tmp_path / f"full{suffix}").shape == (64, 64, 3)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(full[: int(len(full) * keep)])
    _assert_input_error(cut)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".tif", ".webp", ".gif"])
def test_header_size_of_every_format(tmp_path, suffix):
    path = _write_cv2(tmp_path / f"a{suffix}", _rgb_pattern(40, 60)[:, :, ::-1])
    assert header_size(path.read_bytes()) == (60, 40)
    assert header_size(b"this is not an image") is None
    assert header_size(path.read_bytes()[:12]) is None  # truncated header


def test_image_over_the_pixel_limit_is_too_large_not_corrupt(tmp_path, monkeypatch):
    rgb = _rgb_pattern(40, 60)                                     # 2,400 pixels
    path = _write_cv2(tmp_path / "big.png", rgb[:, :, ::-1])
    before = path.read_bytes()
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)           # Pillow refuses above 2 x 1,000
    assert max_image_pixels() == 2000
    err = _assert_input_error(path, "is too large: 60 x 40 = 2,400 pixels, over the 2,000-pixel limit")
    assert "corrupt" not in str(err)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1200)           # exactly at the limit: decoded
    np.testing.assert_array_equal(load_image(path), rgb)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)           # check disabled, as in Pillow
    assert max_image_pixels() is None
    np.testing.assert_array_equal(load_image(path), rgb)
    assert path.read_bytes() == before


def test_exif_image_between_the_pillow_limits_loads_without_warning(tmp_path, monkeypatch):
    rgb = _rgb_pattern(40, 60)
    exif = Image.Exif()
    exif[0x0112] = 3                                               # rotate 180
    Image.fromarray(rgb).save(tmp_path / "a.png", exif=exif)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)           # 2,400 px: Pillow would only warn
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(load_image(tmp_path / "a.png"), rgb[::-1, ::-1])


# ----------------------------------------------------------------------------------------- collect_inputs

def test_collect_single_image_and_video(tmp_path):
    img = tmp_path / "photo.JPG"
    img.write_bytes(b"x")
    vid = tmp_path / "clip.mp4"
    vid.write_bytes(b"x")
    assert collect_inputs(img) == [InputItem(img, "image")]
    assert collect_inputs(str(vid)) == [InputItem(vid, "video")]


def test_collect_directory_sorted_and_filtered(tmp_path):
    for name in ("b.png", "a.jpg", "c.avi", "readme.txt", "data.json", ".hidden.png", "Z.MP4"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.jpg").mkdir()                # a directory with an image-like name is not an input
    (tmp_path / "sub.jpg" / "inner.png").write_bytes(b"x")
    items = collect_inputs(tmp_path)
    assert [i.path.name for i in items] == ["Z.MP4", "a.jpg", "b.png", "c.avi"]
    assert [i.kind for i in items] == ["video", "image", "image", "video"]
    assert all(i.path.parent == tmp_path for i in items)


def test_collect_missing(tmp_path):
    with pytest.raises(InputError, match="missing_dir"):
        collect_inputs(tmp_path / "missing_dir")


def test_collect_directory_without_inputs(tmp_path):
    with pytest.raises(InputError, match="no image or video"):
        collect_inputs(tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="no image or video"):
        collect_inputs(tmp_path)


def test_collect_unknown_extension(tmp_path):
    p = tmp_path / "model.tflite"
    p.write_bytes(b"x")
    with pytest.raises(InputError) as info:
        collect_inputs(p)
    msg = str(info.value)
    assert "model.tflite" in msg and ".jpg" in msg and ".mp4" in msg and ".tflite" in msg


# ------------------------------------------------------------------------------------------------- video

FRAME_COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255)]


def _write_video_cv2(path: Path, frames: list[np.ndarray], fps: float, fourcc: str) -> Path:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), fps, (w, h))
    assert writer.isOpened()
    for f in frames:
        writer.write(f)
    writer.release()
    return path


def _noise_frames(n: int, h: int = 48, w: int = 64) -> list[np.ndarray]:
    rng = np.random.default_rng(2)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def test_video_reader_frames_timestamps_and_rgb(tmp_path):
    bgr_frames = [np.full((48, 64, 3), c[::-1], np.uint8) for c in FRAME_COLORS * 2]   # 12 frames
    path = _write_video_cv2(tmp_path / "clip.avi", bgr_frames, 10.0, "MJPG")
    with VideoReader(path) as reader:
        assert reader.fps == pytest.approx(10.0)
        assert reader.frame_count == 12
        assert (reader.width, reader.height) == (64, 48)
        got = list(reader)
        assert not reader.truncated
        assert reader.frames_read == 12
    assert [i for i, _, _ in got] == list(range(12))
    assert [t for _, t, _ in got] == pytest.approx([i / 10.0 for i in range(12)])
    for (i, _, frame) in got:
        assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8
        expected = np.array(FRAME_COLORS[i % len(FRAME_COLORS)])
        assert np.abs(frame[24, 32].astype(int) - expected).max() < 30, (i, frame[24, 32])


def test_video_writer_roundtrip_mp4_and_avi(tmp_path):
    for name in ("out.mp4", "out.avi"):
        path = tmp_path / name
        with VideoWriter(path, 12.0, (64, 48)) as writer:
            for c in FRAME_COLORS:
                writer.write(np.full((48, 64, 3), c, np.uint8))
            assert writer.frames_written == len(FRAME_COLORS)
        assert path.stat().st_size > 0
        with VideoReader(path) as reader:
            frames = list(reader)
            assert reader.fps == pytest.approx(12.0)
        assert len(frames) == len(FRAME_COLORS), name
        for (i, _, frame), c in zip(frames, FRAME_COLORS):
            assert np.abs(frame[24, 32].astype(int) - np.array(c)).max() < 40, (name, i, frame[24, 32])


def test_truncated_avi_yields_partial_frames(tmp_path):
    full = _write_video_cv2(tmp_path / "full.avi", _noise_frames(20), 10.0, "MJPG")
    data = full.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    with VideoReader(cut) as reader:
        assert reader.frame_count == 20
        frames = list(reader)
        assert reader.truncated
    assert 1 <= len(frames) < 20
    assert all(f.shape == (48, 64, 3) for _, _, f in frames)


def test_truncated_mp4_cannot_be_opened(tmp_path):
    # OpenCV's mp4v writer puts the index (moov) at the end: without it, FFmpeg cannot open the file.
    full = _write_video_cv2(tmp_path / "full.mp4", _noise_frames(10), 10.0, "mp4v")
    data = full.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.mp4"):
        VideoReader(cut)


def test_empty_video(tmp_path):
    path = tmp_path / "noframes.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (64, 48))
    writer.release()
    assert path.stat().st_size > 0
    with pytest.raises(InputError) as info:
        VideoReader(path)
    assert "empty video" in str(info.value) and "noframes.avi" in str(info.value)


@pytest.mark.parametrize("case", ["missing", "zero", "text", "directory"])
def test_video_reader_bad_inputs(tmp_path, case):
    path = tmp_path / "bad.mp4"
    if case == "zero":
        path.write_bytes(b"")
    elif case == "text":
        path.write_text("not a video at all\n" * 20)
    elif case == "directory":
        path.mkdir()
    with pytest.raises(InputError) as info:
        VideoReader(path)
    assert "bad.mp4" in str(info.value) and "\n" not in str(info.value)


def test_sanitize_fps():
    assert sanitize_fps(25.0) == 25.0
    for bad in (0.0, -5.0, math.nan, math.inf, None):
        assert sanitize_fps(bad) == 30.0  # type: ignore[arg-type]


def test_video_writer_errors(tmp_path):
    with pytest.raises(UserError, match="out.mkv"):
        VideoWriter(tmp_path / "out.mkv", 10.0, (64, 48))
    with pytest.raises(UserError, match="does not exist"):
        VideoWriter(tmp_path / "no" / "such" / "out.mp4", 10.0, (64, 48))
    with pytest.raises(UserError):
        VideoWriter(tmp_path / "out.mp4", 0.0, (64, 48))
    with VideoWriter(tmp_path / "out.mp4", 10.0, (64, 48)) as writer:
        with pytest.raises(ValueError):
            writer.write(np.zeros((64, 48, 3), np.uint8))    # swapped width/height
        with pytest.raises(ValueError):
            writer.write(np.zeros((48, 64), np.uint8))
    with pytest.raises(RuntimeError):
        writer.write(np.zeros((48, 64, 3), np.uint8))
