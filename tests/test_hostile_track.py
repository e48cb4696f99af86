"""Hostile-user tests of ``python -m blazepose_tf.track``: the user's files are never overwritten, and finished work
is never lost to a failing write.

* An ``--overlay`` / ``--output`` that would write over an input (same folder, same file through ``..``, a symbolic
  or hard link), over each other, onto a device, or into a folder that cannot be written is refused with one
  ``error:`` line and exit 2 before any model is loaded (``--detector`` names a missing file: were the models
  loaded first, the run would end with exit 4 instead).
* A file at an output that is not an unchanged blazepose_tf output (no valid mark of
  ``blazepose_tf.io.provenance``: the user's, or an edited output) is refused the same way unless ``--overwrite``;
  an earlier run's outputs are replaced.
* Overlays in a folder are named after the whole input name (``a.jpg`` -> ``a.jpg.png``), so ``a.jpg`` and
  ``a.png`` do not overwrite each other's; each result names its overlay.
* A full disk is simulated without root tricks (the tests run as root in CI, where read-only folders do not stop
  anyone): a driver module runs the command with ``os.fsync`` failing with ENOSPC for chosen files. A failed
  overlay is reported and the run goes on (exit 5); a failed results JSON is one error line (exit 2); neither
  leaves a partial file nor changes an earlier one.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from blazepose_tf.errors import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, UserError
from blazepose_tf.io.images import load_image
from blazepose_tf.io.provenance import marked_json, written_here
from blazepose_tf.io.video import VideoWriter
from blazepose_tf.io.samples import sample_image_path
from blazepose_tf.overlay import save_image
from hostile_utils import REPO, assert_clean_exit, checksums, error_lines, report, run_module

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and /dev/full")

ENOSPC_TEXT = os.strerror(errno.ENOSPC)   # "No space left on device"
EARLIER = b"an earlier run's output, to be kept when a new one cannot be written"

# Runs the track command as if the disk were full: os.fsync (which every output goes through before its rename)
# fails with ENOSPC for the N-th synced file ending in SUFFIX, after cutting that file in half, as a write that
# ran out of space would. FULL_DISK="SUFFIX:N[,SUFFIX:N...]".
FULL_DISK_DRIVER = '''
import errno
import os

from blazepose_tf import cli, track

_real_fsync = os.fsync
_rules = dict(rule.rsplit(":", 1) for rule in os.environ["FULL_DISK"].split(","))
_seen = dict.fromkeys(_rules, 0)


def _fsync(fd):
    name = os.readlink(f"/proc/self/fd/{fd}")
    for suffix, nth in _rules.items():
        if name.endswith(suffix):
            _seen[suffix] += 1
            if _seen[suffix] == int(nth):
                os.truncate(name, os.stat(name).st_size // 2)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    _real_fsync(fd)


os.fsync = _fsync
cli.run(track.main)
'''


# Writes 30 noise frames to the video file argv[1] with a 20 kB file size limit (a write past it fails with EFBIG,
# as on a full disk); prints the error of VideoWriter.close and exits 1.
VIDEO_ON_FULL_DISK = '''
import resource
import signal
import sys

import numpy as np

from blazepose_tf.errors import UserError
from blazepose_tf.io.video import VideoWriter

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
rng = np.random.default_rng(0)
writer = VideoWriter(sys.argv[1], 10.0, (64, 48))
resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
for _ in range(30):
    writer.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
try:
    writer.close()
except UserError as e:
    print(e)
    sys.exit(1)
'''


# --- helpers ------------------------------------------------------------------------------------------------------


def run_script(folder: Path, module: str, source: str, *args: object, env: dict | None = None):
    """Saves ``source`` as ``folder/module.py`` and runs it as ``python -m module args`` from the repository."""
    folder.mkdir(exist_ok=True)
    (folder / f"{module}.py").write_text(source)
    path = os.pathsep.join([str(folder), str(REPO), os.environ.get("PYTHONPATH", "")])
    return run_module(module, *args, env={"PYTHONPATH": path, **(env or {})})


def track(*args: object, full_disk: str | None = None, driver_dir: Path | None = None):
    """Runs the track command with the official models; ``full_disk`` runs it through the full-disk driver."""
    flags = ("--models=official", "--noprogress", *args)
    if full_disk is None:
        return run_module("blazepose_tf.track", *flags)
    assert driver_dir is not None
    return run_script(driver_dir, "track_on_full_disk", FULL_DISK_DRIVER, *flags, env={"FULL_DISK": full_disk})


def sample_bgr(size: int = 128) -> np.ndarray:
    """The bundled sample photo (a person), ``size`` x ``size``, BGR."""
    return cv2.resize(cv2.imread(str(sample_image_path())), (size, size), interpolation=cv2.INTER_AREA)


def photos(folder: Path, names: tuple[str, ...] = ("a.jpg", "a.png", "b.jpg")) -> Path:
    """``folder`` holding small copies of the sample photo under ``names``."""
    folder.mkdir(parents=True, exist_ok=True)
    image = sample_bgr()
    for name in names:
        assert cv2.imwrite(str(folder / name), image)
    return folder


def write_clip(path: Path, frames: int = 6, size: int = 128) -> Path:
    """A short MJPG clip of the sample photo."""
    image = sample_bgr(size)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (size, size))
    assert writer.isOpened()
    for _ in range(frames):
        writer.write(image)
    writer.release()
    return path


def earlier_output(path: Path) -> bytes:
    """Writes an earlier run's output at ``path``: a file carrying blazepose_tf's mark (so a run may replace it,
    :mod:`blazepose_tf.io.provenance`); returns its bytes."""
    if path.suffix == ".png":
        save_image(path, np.zeros((4, 4, 3), np.uint8))
    elif path.suffix == ".mp4":
        with VideoWriter(path, 10.0, (16, 16)) as writer:
            writer.write(np.zeros((16, 16, 3), np.uint8))
    else:
        path.write_bytes(marked_json({"schema": "blazepose_tf.track/1", "note": EARLIER.decode()}))
    assert written_here(path)
    return path.read_bytes()


def leftovers(root: Path) -> list[Path]:
    """Temporary files of an atomic write (``.NAME.XXXXXXXX.part.EXT``) left anywhere under ``root``."""
    return [p for p in root.rglob("*") if ".part" in p.name]


def assert_partial_exit(proc, *warnings: str) -> None:
    """Exit 5 with no traceback and no ``error:`` line; a ``warning:`` line holds every one of ``warnings``."""
    text = report(proc)
    assert proc.returncode == EXIT_PARTIAL, text
    assert "Traceback" not in proc.stderr + proc.stdout, text
    assert error_lines(proc) == [], text
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("warning:")]
    assert any(all(w in ln for w in warnings) for ln in lines), text


# --- refused before any model is loaded ---------------------------------------------------------------------------


def _case_files(d: Path) -> None:
    photos(d / "in", ("a.jpg", "b.jpg"))
    (d / "clip.avi").write_bytes(b"never read: outputs are checked first")
    (d / "ov").mkdir()
    (d / "ov" / "a.jpg.png").symlink_to(d / "in" / "a.jpg")        # an overlay name that is really an input
    (d / "ov2").mkdir()
    (d / "ov2" / "a.jpg.png").mkdir()                                # a folder where an overlay goes
    (d / "link.png").symlink_to(d / "in" / "b.jpg")
    os.link(d / "in" / "b.jpg", d / "hard.png")
    (d / "link.json").symlink_to(d / "in" / "b.jpg")
    (d / "earlier.json").symlink_to(d / "o.png")                     # --output and --overlay: one file
    (d / "full.json").symlink_to("/dev/full")
    (d / "proc_link.json").symlink_to("/proc/x.json")                  # links into a folder nothing can be made in
    (d / "proc_link.png").symlink_to("/proc/x.png")


@pytest.mark.parametrize("args, message", [
    (["--input", "{d}/in", "--overlay", "{d}/in"], "is the --input folder"),
    (["--input", "{d}/in", "--overlay", "{d}/in/../in/."], "is the --input folder"),
    (["--input", "{d}/in", "--overlay", "{d}/ov"], "would overwrite the --input file {d}/in/a.jpg"),
    (["--input", "{d}/in", "--overlay", "{d}/ov2"], "is not a regular file"),
    (["--input", "{d}/in/b.jpg", "--overlay", "{d}/in/b.jpg"], "would overwrite the --input file {d}/in/b.jpg"),
    (["--input", "{d}/in/b.jpg", "--overlay", "{d}/in/./../in/b.jpg"], "would overwrite the --input file {d}/in/b.jpg"),
    (["--input", "{d}/in/b.jpg", "--overlay", "{d}/link.png"], "would overwrite the --input file {d}/in/b.jpg"),
    (["--input", "{d}/in/b.jpg", "--overlay", "{d}/hard.png"], "would overwrite the --input file {d}/in/b.jpg"),
    (["--input", "{d}/clip.avi", "--overlay", "{d}/clip.avi"], "would overwrite the --input file {d}/clip.avi"),
    (["--input", "{d}/in/b.jpg", "--output", "{d}/link.json"], "--output {d}/link.json would overwrite the --input file"),
    (["--input", "{d}/in/b.jpg", "--output", "{d}/earlier.json", "--overlay", "{d}/o.png"],
     "is also the --overlay output"),
    (["--input", "{d}/in/b.jpg", "--output", "{d}/full.json"], "is not a regular file"),
    (["--input", "{d}/in/b.jpg", "--output", "/proc/r.json"], "cannot write --output /proc/r.json: folder /proc"),
    (["--input", "{d}/in/b.jpg", "--output", "{d}/proc_link.json"], "cannot write --output /proc/x.json: folder /proc"),
    (["--input", "{d}/in/b.jpg", "--output", "{d}/r.json", "--overlay", "{d}/proc_link.png"],
     "cannot write --overlay /proc/x.png: folder /proc"),
    (["--input", "{d}/in", "--overlay", "/proc/overlays"],
     "cannot write --overlay /proc/overlays/a.jpg.png: folder /proc"),
    (["--input", "{d}/in/b.jpg", "--overlay", "/proc/o.png"], "cannot write --overlay /proc/o.png: folder /proc"),
])
def test_unsafe_or_unwritable_outputs_refused_before_models(tmp_path, args, message):
    _case_files(tmp_path)
    argv = [a.format(d=tmp_path) for a in args]
    if "--output" not in argv:
        argv += ["--output", str(tmp_path / "r.json")]
    before = checksums(tmp_path)
    proc = track(*argv, "--detector", tmp_path / "no_such_detector.tflite")
    assert_clean_exit(proc, EXIT_USAGE, message.format(d=tmp_path))
    assert "no_such_detector" not in proc.stderr        # refused before the models were looked at
    assert checksums(tmp_path) == before                # no input changed, nothing written
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "o.png").exists()
    assert leftovers(tmp_path) == []


def test_output_checks_do_not_hide_model_errors(tmp_path):
    """The same run with safe outputs reaches the models (so the cases above prove the order of the checks); the
    output folders it would have made are made only once the models load, so the failed start leaves none."""
    photos(tmp_path / "in", ("b.jpg",))
    proc = track("--input", tmp_path / "in" / "b.jpg", "--output", tmp_path / "new" / "deeper" / "r.json",
                 "--overlay", tmp_path / "ov" / "o.png", "--detector", tmp_path / "no_such_detector.tflite")
    assert_clean_exit(proc, 4, "no_such_detector")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"] and leftovers(tmp_path) == []
    # a folder given as a model is the model's error, not an output "inside the --detector folder"
    proc = track("--input", tmp_path / "in" / "b.jpg", "--output", tmp_path / "r.json", "--detector", tmp_path)
    assert_clean_exit(proc, 4, "unsupported model file")


def test_files_it_did_not_write_need_overwrite(tmp_path, official_models):
    """A file at --output or --overlay that blazepose_tf did not write is the user's: refused (exit 2, unchanged)
    before the models load; --overwrite replaces it, and the outputs then carry the mark, so a rerun over them needs
    no --overwrite."""
    image = photos(tmp_path / "in", ("b.jpg",)) / "b.jpg"
    many = photos(tmp_path / "many", ("a.jpg", "b.jpg"))
    out, overlay, folder, fresh = tmp_path / "r.json", tmp_path / "o.png", tmp_path / "ov", tmp_path / "new.json"
    out.write_text('{"my": "results"}')
    assert cv2.imwrite(str(overlay), sample_bgr())
    folder.mkdir()
    assert cv2.imwrite(str(folder / "a.jpg.png"), sample_bgr())      # a user's file named like an overlay
    before = checksums(out, overlay, folder)
    no_models = ("--detector", tmp_path / "no_such_detector.tflite")
    for args, refused in [(["--input", image, "--output", out], f"--output {out}"),
                          (["--input", image, "--output", fresh, "--overlay", overlay], f"--overlay {overlay}"),
                          (["--input", many, "--output", fresh, "--overlay", folder], f"--overlay {folder}/a.jpg.png")]:
        proc = track(*args, *no_models)
        assert_clean_exit(proc, EXIT_USAGE, f"{refused} exists and is not an unchanged blazepose_tf output",
                          "--overwrite")
    assert checksums(out, overlay, folder) == before and not fresh.exists()
    for extra in (["--overwrite"], []):
        proc = track("--input", image, "--output", out, "--overlay", overlay, *extra)
        assert_clean_exit(proc, EXIT_OK)
        assert json.loads(out.read_text())["schema"] == "blazepose_tf.track/1" and written_here(overlay)
    assert load_image(overlay).shape == (128, 128, 3) and leftovers(tmp_path) == []
    # an output the user edited is theirs again (json.load / json.dump keeps the keys and their order)
    doc = json.loads(out.read_text())
    doc["my_notes"] = "checked by hand"
    out.write_text(json.dumps(doc))
    edited = checksums(out)
    proc = track("--input", image, "--output", out, *no_models)
    assert_clean_exit(proc, EXIT_USAGE, f"--output {out} exists and is not an unchanged blazepose_tf output")
    assert checksums(out) == edited
    # nor may the results go over the model files the run reads
    model = tmp_path / "my_detector.tflite"
    model.write_bytes(b"a model file")
    (tmp_path / "link.png").symlink_to(model)
    proc = track("--input", image, "--output", fresh, "--overlay", tmp_path / "link.png", "--detector", model,
                 "--overwrite")
    assert_clean_exit(proc, EXIT_USAGE, f"--overlay {tmp_path / 'link.png'} would overwrite the --detector file {model}")
    assert model.read_bytes() == b"a model file"


def test_run_with_nothing_processed_keeps_earlier_results(tmp_path, official_models):
    """Every input unreadable (exit 3): a results file already at --output is kept as it was, not replaced by an
    empty one; without an earlier file the run writes its errors there."""
    bad = tmp_path / "photo.jpg"
    bad.write_text("not an image")
    out = tmp_path / "r.json"
    earlier = earlier_output(out)
    proc = track("--input", bad, "--output", out)
    assert_clean_exit(proc, 3, "no input could be processed", "kept as it was")
    assert out.read_bytes() == earlier and leftovers(tmp_path) == []


# --- overlays: one per input, named in the JSON ---------------------------------------------------------------------


def test_same_stem_inputs_get_distinct_overlays(tmp_path, official_models):
    inputs = photos(tmp_path / "in", ("a.jpg", "a.png", "b.jpg"))
    overlays, out = tmp_path / "ov", tmp_path / "r.json"
    overlays.mkdir()
    earlier_output(overlays / "b.jpg.png")              # an earlier run's overlay: replaced, as asked
    (overlays / "notes.txt").write_text("the user's own file")
    before = checksums(inputs, overlays / "notes.txt")
    proc = track("--input", inputs, "--output", out, "--overlay", overlays)
    assert_clean_exit(proc, EXIT_OK)
    assert checksums(inputs, overlays / "notes.txt") == before
    doc = json.loads(out.read_text())
    by_input = {Path(r["source"]).name: r["overlay"] for r in doc["results"]}
    assert by_input == {name: str(overlays / f"{name}.png") for name in ("a.jpg", "a.png", "b.jpg")}
    assert sorted(p.name for p in overlays.iterdir()) == ["a.jpg.png", "a.png.png", "b.jpg.png", "notes.txt"]
    for name in ("a.jpg", "a.png", "b.jpg"):
        drawn, original = load_image(overlays / f"{name}.png"), load_image(inputs / name)
        assert drawn.shape == original.shape and np.any(drawn != original, axis=2).sum() > 100, name
    assert doc["errors"] == [] and leftovers(tmp_path) == []


# --- a full disk: keep what was done, never leave a partial file -----------------------------------------------------


def test_overlay_write_failure_keeps_results_and_other_overlays(tmp_path, official_models):
    inputs = photos(tmp_path / "in", ("a.jpg", "a.png", "b.jpg"))
    overlays, out = tmp_path / "ov", tmp_path / "r.json"
    overlays.mkdir()
    earlier_output(overlays / "a.png.png")             # the earlier overlay of the input whose write fails
    before = checksums(inputs, overlays / "a.png.png")
    proc = track("--input", inputs, "--output", out, "--overlay", overlays,
                 full_disk=".png:2", driver_dir=tmp_path / "driver")
    assert_partial_exit(proc, str(inputs / "a.png"), ENOSPC_TEXT)
    assert checksums(inputs, overlays / "a.png.png") == before
    doc = json.loads(out.read_text())
    assert [Path(r["source"]).name for r in doc["results"]] == ["a.jpg", "a.png", "b.jpg"]
    assert all(len(r["poses"]) == 1 for r in doc["results"])          # every pose kept
    assert [r["overlay"] for r in doc["results"]] == [str(overlays / "a.jpg.png"), None, str(overlays / "b.jpg.png")]
    [error] = doc["errors"]
    assert error["source"] == str(inputs / "a.png")
    assert "overlay not written" in error["error"] and str(overlays / "a.png.png") in error["error"]
    assert ENOSPC_TEXT in error["error"]
    assert doc["summary"]["processed"] == 3 and doc["summary"]["skipped"] == 0
    for name in ("a.jpg.png", "b.jpg.png"):
        assert load_image(overlays / name).shape == (128, 128, 3)
    assert leftovers(tmp_path) == []


# Runs track making, while the first overlay is drawn (after the up-front checks), each of $MAKE's comma-separated
# KIND:PATH items: a user's file (file) or a named pipe (fifo).
MID_RUN_DRIVER = '''
import os
from pathlib import Path

from blazepose_tf import cli, track

_draw = track.draw_poses


def _draw_and_make(*args, **kwargs):
    for item in filter(None, os.environ["MAKE"].split(",")):
        kind, path = item.split(":", 1)
        if not os.path.lexists(path):
            os.mkfifo(path) if kind == "fifo" else Path(path).write_bytes(b"made by the user during the run")
    return _draw(*args, **kwargs)


track.draw_poses = _draw_and_make
cli.run(track.main)
'''


def track_making(tmp_path: Path, make: str, *args: object):
    return run_script(tmp_path / "driver", "track_mid_run", MID_RUN_DRIVER, "--models=official", "--noprogress",
                      *args, env={"MAKE": make})


def test_overlay_targets_made_during_the_run_are_kept(tmp_path, official_models):
    inputs = photos(tmp_path / "in", ("a.jpg", "b.jpg", "c.jpg"))
    overlays, out = tmp_path / "ov", tmp_path / "r.json"
    user_file, pipe = overlays / "b.jpg.png", overlays / "c.jpg.png"
    proc = track_making(tmp_path, f"file:{user_file},fifo:{pipe}", "--input", inputs, "--output", out,
                        "--overlay", overlays)
    assert_partial_exit(proc, str(inputs / "b.jpg"), "not an unchanged blazepose_tf output")
    assert_partial_exit(proc, str(inputs / "c.jpg"), "appeared during the run and is not a regular file")
    assert user_file.read_bytes() == b"made by the user during the run" and pipe.is_fifo()
    doc = json.loads(out.read_text())
    assert [r["overlay"] for r in doc["results"]] == [str(overlays / "a.jpg.png"), None, None]
    assert all(len(r["poses"]) == 1 for r in doc["results"])


def test_output_made_during_the_run_is_kept(tmp_path, official_models):
    inputs = photos(tmp_path / "in", ("a.jpg", "b.jpg"))
    out = tmp_path / "r.json"
    proc = track_making(tmp_path, f"file:{out}", "--input", inputs, "--output", out, "--overlay", tmp_path / "ov")
    assert_clean_exit(proc, EXIT_USAGE, f"--output {out}", "not an unchanged blazepose_tf output",
                      "the results were not saved")
    assert out.read_bytes() == b"made by the user during the run"


def test_the_model_files_of_the_set_are_inputs(tmp_path, official_models):
    """An output that is (a link to) a model the --models set reads is refused, even with --overwrite."""
    from blazepose_tf.official import cache_dir

    cache = tmp_path / "cache"
    shutil.copytree(cache_dir(), cache / "official")
    model = cache / "official" / "pose_landmark_full.tflite"
    before = checksums(model)
    (tmp_path / "m.json").symlink_to(model)
    image = photos(tmp_path / "in", ("a.jpg",)) / "a.jpg"
    proc = run_module("blazepose_tf.track", "--models=official", "--noprogress", "--input", image, "--output",
                      tmp_path / "m.json", "--overwrite", env={"BLAZEPOSE_TF_CACHE": str(cache)})
    assert_clean_exit(proc, EXIT_USAGE, f"would overwrite the --models official file {model}")
    assert checksums(model) == before


def test_results_json_write_failure_is_one_error_and_keeps_earlier_json(tmp_path, official_models):
    inputs = photos(tmp_path / "in", ("a.jpg", "b.jpg"))
    out = tmp_path / "r.json"
    earlier_output(out)
    before = checksums(inputs, out)
    proc = track("--input", inputs, "--output", out, full_disk=".json:1", driver_dir=tmp_path / "driver")
    assert_clean_exit(proc, EXIT_USAGE, f"cannot write --output {out}", ENOSPC_TEXT, "not saved")
    assert checksums(inputs, out) == before
    assert leftovers(tmp_path) == []


def test_video_overlay_write_failure_keeps_frames_and_earlier_overlay(tmp_path, official_models):
    clip = write_clip(tmp_path / "clip.avi", frames=6)
    out, overlay = tmp_path / "r.json", tmp_path / "o.mp4"
    earlier_output(overlay)
    before = checksums(clip, overlay)
    proc = track("--input", clip, "--output", out, "--overlay", overlay,
                 full_disk=".mp4:1", driver_dir=tmp_path / "driver")
    assert_partial_exit(proc, str(clip), f"cannot write video {overlay}", ENOSPC_TEXT)
    assert checksums(clip, overlay) == before
    doc = json.loads(out.read_text())
    assert [r["frame"] for r in doc["results"]] == list(range(6))
    assert all(r["overlay"] is None and len(r["poses"]) == 1 for r in doc["results"])
    assert [e["source"] for e in doc["errors"]] == [str(clip)]
    assert leftovers(tmp_path) == []


# --- the writers themselves (in-process, no models) -----------------------------------------------------------------


def test_save_image_on_full_disk_keeps_earlier_file(tmp_path, monkeypatch):
    target = tmp_path / "o.png"
    target.write_bytes(EARLIER)

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, ENOSPC_TEXT)

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(UserError, match=f"cannot write image {target}: {ENOSPC_TEXT}"):
        save_image(target, np.zeros((8, 8, 3), np.uint8))
    assert target.read_bytes() == EARLIER
    assert [p.name for p in tmp_path.iterdir()] == ["o.png"]


@pytest.mark.parametrize("name", ["o.mp4", "o.avi"])
def test_video_writer_on_full_disk_keeps_earlier_file(tmp_path, name):
    """OpenCV reports no write error: a disk that fills up mid-video (a file size limit, which binds root too) must
    not leave a broken video (an MP4 without index, an AVI announcing frames it lacks) under the final name."""
    target = tmp_path / name
    target.write_bytes(EARLIER)
    proc = run_script(tmp_path / "driver", "video_on_full_disk", VIDEO_ON_FULL_DISK, target)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, report(proc)
    assert f"cannot write video {target}: the file does not hold the 30 frames written" in proc.stdout, report(proc)
    assert target.read_bytes() == EARLIER
    assert leftovers(tmp_path) == []
