"""Hostile-user tests of the command lines: every documented command answers ``--help`` and ``--helpfull``;
``evaluate`` says which annotations it dropped and why, and names an empty or incomplete dataset; an image over
the decompression-bomb limit is called too large, not corrupt; garbage from a misbehaving ``adb`` is quoted only
as a short printable excerpt. Each case checks the exit code, the absence of a traceback, the one ``error:``
line, and that the user's files are unchanged. All data is built in tmp_path."""
from __future__ import annotations

import json
import os
import re
import struct
import sys
import zlib
from pathlib import Path

import pytest

from android_harness.adb import EXIT_DEVICE
from blazepose_tf.errors import EXIT_NO_INPUT, EXIT_OK, EXIT_USAGE
from blazepose_tf.topology import COCO_17
from hostile_utils import REPO, assert_clean_exit, checksums, error_lines, report, run_module
from test_android_harness import make_elf

# --- every command in README's Commands table answers --help and --helpfull -----------------------------------


def readme_commands() -> list[tuple[str, str]]:
    """(module, table row) of every ``python -m MODULE`` row of README's "Commands" table."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Commands", 1)[1].split("\n## ", 1)[0]
    rows = [(m.group(1), line) for line in section.splitlines()
            if (m := re.match(r"\|\s*`python -m ([\w.]+)", line))]
    assert len(rows) >= 10, "README's Commands table not found or changed shape"
    return rows


def readme_runtime_flags() -> list[str]:
    """The model flags README says both runtime commands (track, evaluate) take."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    paragraph = text[text.index("Both runtime commands take"):].split("\n\n", 1)[0]
    return sorted(set(re.findall(r"`--([a-z_]+)", paragraph)))


def flags_named_in(row: str) -> set[str]:
    """Flag names a README row mentions (``--flag``, ``--noflag`` for a boolean; not other tools' ``--no-deps``)."""
    return set(re.findall(r"(?<![\w-])--([a-z][a-z0-9_]*)(?![\w-])", row))


def help_lists(help_text: str, name: str) -> bool:
    """Whether ``help_text`` documents ``--name`` (or ``--[no]name``, of which ``--noname`` is the negation)."""
    candidates = [name] + ([name[2:]] if name.startswith("no") else [])
    return any(re.search(rf"^\s*--(\[no\])?{re.escape(c)}:", help_text, re.M) for c in candidates)


HELP_CASES = [pytest.param(module, row, flag, id=f"{module}{flag}")
              for module, row in readme_commands() for flag in ("--help", "--helpfull")]


@pytest.mark.parametrize("module, row, flag", HELP_CASES)
def test_every_readme_command_answers_help(module, row, flag):
    """Each lists its flags, and answers without importing TensorFlow (about 7 s of start-up a user would wait)."""
    proc = run_module(module, flag, timeout=120, python_options=("-X", "importtime"))
    assert_clean_exit(proc, EXIT_OK)
    imported = {ln.rsplit("|", 1)[-1].strip() for ln in proc.stderr.splitlines() if ln.startswith("import time:")}
    assert imported and not imported & {"tensorflow", "keras"}, f"{module} {flag} imports TensorFlow or Keras"
    assert not [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")], report(proc)
    out = proc.stdout
    assert len(out.strip().splitlines()) >= 3, report(proc)
    named = flags_named_in(row)
    if module in ("blazepose_tf.track", "blazepose_tf.evaluate"):
        named |= set(readme_runtime_flags())
        assert {"models", "detector", "landmarks", "num_threads"} <= named
    named -= {"help", "helpfull", "flagfile"}  # absl's own, listed under "every command"
    missing = sorted(n for n in named if not help_lists(out, n))
    assert not missing, f"{module} {flag} does not list {missing}\n{report(proc)}"
    if flag == "--help":
        assert "--flagfile" in out and "--helpfull" in out
        assert "--undefok" not in out  # absl internals only in --helpfull
    else:
        assert "--undefok" in out


def test_help_of_evaluate_shows_the_model_sets():
    proc = run_module("blazepose_tf.evaluate", "--help", timeout=120)
    assert_clean_exit(proc, EXIT_OK)
    assert "<ours|ours_lite|official|official_lite>" in proc.stdout and "blazepose_tf.evaluate:" in proc.stdout
    assert proc.stdout.index("--annotations") < proc.stdout.index("--models")  # the command's own flags first


def test_fetch_official_help_and_bad_flag():
    proc = run_module("data.fetch_official", "--help", timeout=120)
    assert_clean_exit(proc, EXIT_OK)
    assert all(f"--{n}" in proc.stdout for n in ("cache_dir", "wheel")) and "--[no]force" in proc.stdout
    proc = run_module("data.fetch_official", "--bogus", timeout=120)
    assert_clean_exit(proc, EXIT_USAGE, "Unknown command line flag 'bogus'")


# --- evaluate: dropped annotations, empty or incomplete datasets ------------------------------------------------


def keypoints(offset: float = 100.0) -> list[float]:
    """A valid COCO-17 keypoint list (every point labelled)."""
    return [v for i in range(17) for v in (offset + 3 * i, offset + 5 * i, 2)]


def write_dataset(root: Path, doc: dict, image_bytes: bytes = b"") -> tuple[Path, Path]:
    """annotations.json and images/ (with ``a.png`` holding ``image_bytes`` when given)."""
    images = root / "images"
    images.mkdir()
    if image_bytes:
        (images / "a.png").write_bytes(image_bytes)
    ann = root / "annotations.json"
    ann.write_text(json.dumps(doc))
    return ann, images


def coco(images: list, annotations: list | None) -> dict:
    doc = {"images": images, "categories": [{"id": 1, "name": "person", "keypoints": list(COCO_17.keypoints)}]}
    if annotations is not None:
        doc["annotations"] = annotations
    return doc


IMAGE = {"id": 1, "file_name": "a.png", "width": 512, "height": 512}
BAD_ANNOTATIONS = [
    {"id": 1, "image_id": 1, "category_id": 1, "keypoints": keypoints()[:-3]},                 # wrong length
    {"id": 2, "image_id": 1, "category_id": 1, "keypoints": keypoints()[:15] + [float("nan")] + keypoints()[16:]},
    {"id": 3, "image_id": 1, "category_id": 1, "keypoints": [str(v) for v in keypoints()]},    # strings
    {"id": 4, "image_id": 1, "category_id": 1, "keypoints": {"x": 1}},                         # not a list
    {"id": 5, "image_id": 99, "category_id": 1, "keypoints": keypoints()},                     # unknown image
]


def run_evaluate(ann: Path, images: Path, *extra: object):
    return run_module("blazepose_tf.evaluate", "--annotations", ann, "--images", images, "--noprogress", *extra,
                      timeout=300)


def test_evaluate_every_annotation_dropped(tmp_path):
    ann, images = write_dataset(tmp_path, coco([IMAGE], BAD_ANNOTATIONS), b"\x89PNG not decoded")
    before = checksums(tmp_path)
    proc = run_evaluate(ann, images)
    assert_clean_exit(proc, EXIT_NO_INPUT, "no image in the dataset has a person",
                      "(5 annotations dropped, see the warnings)")
    warnings = [ln for ln in proc.stderr.splitlines() if ln.startswith("warning:")]
    assert sorted(warnings) == sorted([
        "warning: 1 annotation dropped: NaN or infinite keypoint value (the x or y of a labelled point, or a v)",
        "warning: 2 annotations dropped: 'keypoints' is missing or not a list of numbers",
        "warning: 1 annotation dropped: 'keypoints' does not hold 3 values (x, y, v) per keypoint name of the "
        "category (expected 51 values)",
        "warning: 1 annotation dropped: its image_id matches no entry of 'images'",
    ]), report(proc)
    assert checksums(tmp_path) == before


@pytest.mark.parametrize("doc, code, words", [
    (coco([], [{"id": 1, "image_id": 1, "keypoints": keypoints()}]), EXIT_NO_INPUT, "has an empty 'images' list"),
    (coco([IMAGE], None), EXIT_USAGE, "has no 'annotations' list"),
    (coco([IMAGE], []), EXIT_NO_INPUT, "has an empty 'annotations' list"),
], ids=["empty_images", "no_annotations_key", "empty_annotations"])
def test_evaluate_empty_or_incomplete_dataset(tmp_path, doc, code, words):
    ann, images = write_dataset(tmp_path, doc, b"\x89PNG not decoded")
    before = checksums(tmp_path)
    proc = run_evaluate(ann, images)
    line = assert_clean_exit(proc, code, str(ann), words)
    assert "shoulders" not in line
    assert checksums(tmp_path) == before


# --- an image over the decompression-bomb limit --------------------------------------------------------------


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` RGB pixels, with almost no pixel data (a few KB)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + chunk(b"IEND", b""))


def test_evaluate_image_over_the_pixel_limit(tmp_path, official_models):
    ann, images = write_dataset(tmp_path, coco([IMAGE], [{"id": 1, "image_id": 1, "category_id": 1,
                                                          "keypoints": keypoints()}]),
                                png_header_only(20000, 10000))
    out = tmp_path / "summary.json"
    before = checksums(ann, images)
    proc = run_evaluate(ann, images, "--models", "official", "--output", out)
    assert_clean_exit(proc, EXIT_NO_INPUT, "none of the 1 scored images could be read",
                      "is too large: 20000 x 10000 = 200,000,000 pixels, over the 178,956,970-pixel limit")
    assert "corrupt" not in proc.stderr
    assert "too large" in json.loads(out.read_text())["errors"][0]["error"]
    assert checksums(ann, images) == before


# --- a misbehaving adb ---------------------------------------------------------------------------------------


def fake_adb(tmp_path: Path, stdout: bytes, stderr: bytes, code: int) -> Path:
    """An ``adb`` that prints these raw bytes for every call and exits with ``code``."""
    script = tmp_path / "adb"
    script.write_text(f"#!{sys.executable}\nimport sys\nsys.stdout.buffer.write({stdout!r})\n"
                      f"sys.stderr.buffer.write({stderr!r})\nsys.exit({code})\n")
    script.chmod(0o755)
    return script


# Every control character (line breaks included), then escape sequences, NUL, bell and invalid UTF-8 at length.
GARBAGE = bytes(range(1, 32)) + b"\x1b[31m\x00\xff\xfe adb: \x07boom " + b"\xc3\x28" * 400


@pytest.mark.parametrize("stdout, stderr, code, words", [
    (b"", GARBAGE + b"\n" + GARBAGE, 1, "`adb devices` failed (exit code 1): "),
    (b"List of devices attached\n" + b"\n".join(b"DEV%d\x1b\xff\tdevice" % i for i in range(300)), b"", 0,
     "several devices connected: DEV0\\x1b\\xff (device), DEV1"),
], ids=["failing_adb_devices", "garbage_device_list"])
def test_misbehaving_adb_is_quoted_short_and_printable(tmp_path, stdout, stderr, code, words):
    adb = fake_adb(tmp_path, stdout, stderr, code)
    model = tmp_path / "m.tflite"
    model.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(64))     # the header check_model looks at
    binary = make_elf(tmp_path / "benchmark_model", 183)  # aarch64: passes the ELF check, then adb is asked
    before = checksums(model, binary, adb)
    proc = run_module("android_harness.bench", "--adb", adb, "--model", model, "--benchmark_binary", binary,
                      "--results", tmp_path / "r.csv", timeout=120)
    line = assert_clean_exit(proc, EXIT_DEVICE, words)
    assert line.isprintable(), repr(line)
    assert len(line) <= 300, line
    assert "\\x1b" in line and "\\xff" in line   # escaped, not echoed
    assert not (tmp_path / "r.csv").exists()
    assert checksums(model, binary, adb) == before


def test_help_request_stops_at_double_dash():
    from blazepose_tf.cli import help_request

    assert help_request(["prog", "--input", "x", "-h"]) == "help"
    assert help_request(["prog", "--helpshort"]) == "help"
    assert help_request(["prog", "--help", "--helpfull"]) == "helpfull"
    assert help_request(["prog", "--", "--help"]) is None      # a positional argument after --
    assert help_request(["--help"]) is None                    # argv[0] is the program


# --- the hostile audit of session 29: flagfiles, FIFOs, outputs over what evaluate reads, `~`, `sample` -------


@pytest.mark.parametrize("module", ["blazepose_tf.track", "blazepose_tf.train", "data.prepare"])
def test_a_flagfile_that_is_not_flags_is_one_line(tmp_path, module):
    """A FIFO as --flagfile would block absl's parse for ever; a photo or a latin-1 file made it raise."""
    fifo, latin1 = tmp_path / "pipe.flags", tmp_path / "latin1.flags"
    os.mkfifo(fifo)
    latin1.write_bytes(b"--input=caf\xe9.jpg\n")
    for path, words in ((fifo, "is not a regular file"), (latin1, "is not a UTF-8 text file")):
        proc = run_module(module, f"--flagfile={path}", timeout=60)
        assert_clean_exit(proc, EXIT_USAGE, f"--flagfile {path} {words}")
    proc = run_module(module, f"--flagfile={tmp_path / 'missing.flags'}", timeout=60)
    assert_clean_exit(proc, EXIT_USAGE, "unable to open flagfile")
    assert not error_lines(proc)[0].startswith("error: ERROR")


def test_track_refuses_a_fifo_input_instead_of_waiting_on_it(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    proc = run_module("blazepose_tf.track", "--input", fifo, "--output", tmp_path / "out.json", "--noprogress",
                      timeout=120)
    assert_clean_exit(proc, EXIT_NO_INPUT)
    assert f"{fifo} is not a regular file" in proc.stderr, report(proc)


def test_evaluate_never_writes_over_an_image_it_reads(tmp_path):
    """An annotation may name an image outside --images ("../other/x.json"): --output onto it is refused even with
    --overwrite; an --output that is not .json is refused too."""
    photo = tmp_path / "other" / "x.json"   # a photo under an odd name, read through "../other/"
    photo.parent.mkdir()
    photo.write_bytes(b"\x89PNG the user's photo")
    ann, images = write_dataset(tmp_path, coco([{**IMAGE, "file_name": "../other/x.json"}],
                                               [{"id": 1, "image_id": 1, "category_id": 1,
                                                 "keypoints": keypoints()}]))
    before = checksums(tmp_path)
    proc = run_evaluate(ann, images, "--output", photo, "--overwrite")
    assert_clean_exit(proc, EXIT_USAGE, f"--output {photo} would overwrite the --annotations image file")
    proc = run_evaluate(ann, images, "--output", tmp_path / "summary.txt")
    assert_clean_exit(proc, EXIT_USAGE, "--output must be a .json file, got summary.txt")
    assert checksums(tmp_path) == before


def test_track_expands_home_in_its_paths_and_prefers_a_users_sample_folder(tmp_path, official_models):
    """The shell leaves `~` in --output=~/x.json: it is the home folder, not a folder named `~`. A folder named
    `sample` where the user runs track is theirs: it is the input, not the bundled photo."""
    from blazepose_tf.io.samples import sample_image_path

    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    (work / "sample").mkdir(parents=True)
    (home / "photo.png").write_bytes(sample_image_path().read_bytes())
    env = {"HOME": str(home), "PYTHONPATH": str(REPO)}
    proc = run_module("blazepose_tf.track", "--input=~/photo.png", "--output=~/out.json", "--noprogress",
                      timeout=300, cwd=work, env=env)
    assert_clean_exit(proc, 0)
    assert (home / "out.json").is_file() and not (work / "~").exists()
    proc = run_module("blazepose_tf.track", "--input=sample", "--output=out.json", "--noprogress", timeout=300,
                      cwd=work, env=env)
    assert_clean_exit(proc, EXIT_NO_INPUT, "sample")
    assert not (work / "out.json").exists()
