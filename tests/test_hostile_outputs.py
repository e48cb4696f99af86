"""Hostile-user tests of where the reports go: ``evaluate --output``, the benchmarks' ``--json`` / ``--markdown`` /
``--png``, ``model_zoo --output`` and the Android harness's ``--results`` never write over (or into) the dataset
they read, nor over each other, and an output that cannot be written is one ``error:`` line (exit 2) before any
work; a malformed splits file is one line too. :func:`blazepose_tf.cli.check_outputs` is tested directly, the
commands through their command lines (every refusal comes before a model is looked at). All data is in tmp_path."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from blazepose_tf import cli
from blazepose_tf.datasets.coco import split_ids
from blazepose_tf.errors import EXIT_USAGE, UserError
from blazepose_tf.io.provenance import marked_json, written_here
from hostile_utils import assert_clean_exit, checksums, run_module


def dataset(root: Path) -> tuple[Path, Path, Path]:
    """annotations.json, splits.json and images/a.png (the commands refuse their outputs before reading them)."""
    images = root / "data" / "images"
    images.mkdir(parents=True)
    (images / "a.png").write_bytes(b"a user's photo")
    ann = root / "data" / "annotations.json"
    ann.write_text(json.dumps({"images": [], "annotations": []}))
    splits = root / "data" / "splits.json"
    splits.write_text(json.dumps({"dev": [1]}))
    return ann, splits, images


# --- the shared check ----------------------------------------------------------------------------------------------


def test_check_outputs_refuses_inputs_collisions_and_non_files(tmp_path):
    ann, splits, images = dataset(tmp_path)
    inputs = [("--annotations", ann), ("--splits", splits), ("--images", images)]
    os.link(ann, tmp_path / "hard.json")
    (tmp_path / "dangling.json").symlink_to(tmp_path / "no_such_folder" / "r.json")
    (tmp_path / "proc.json").symlink_to("/proc/r.json")
    (tmp_path / "link.json").symlink_to(splits)
    (tmp_path / "a_folder.json").mkdir()
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    cases = [
        ([("--output", ann)], "would overwrite the --annotations file"),
        ([("--output", tmp_path / "hard.json")], "would overwrite the --annotations file"),
        ([("--json", tmp_path / "link.json")], "would overwrite the --splits file"),
        ([("--png", images / "a.png")], "is inside the --images folder"),
        ([("--png", images / "new.png")], "is inside the --images folder"),
        ([("--json", tmp_path / "r.json"), ("--markdown", tmp_path / "x" / ".." / "r.json")],
         "is also the --json output"),
        ([("--json", tmp_path / "a_folder.json")], "exists and is not a regular file (a folder)"),
        ([("--json", tmp_path / "notes.txt" / "r.json")], "is a file, not a folder"),
        ([("--json", tmp_path / "dangling.json")], "is a symbolic link into .*, which does not exist"),
        ([("--json", tmp_path / "proc.json")], "cannot write --json /proc/r.json: folder /proc"),
    ]
    before = checksums(tmp_path / "data")
    for outputs, message in cases:
        with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
            cli.check_outputs(outputs, inputs)
    assert checksums(tmp_path / "data") == before
    # fine: new files beside the data, an existing earlier report, unset outputs
    (tmp_path / "earlier.md").write_text("an earlier report")
    cli.check_outputs([("--json", tmp_path / "new" / "r.json"), ("--markdown", tmp_path / "earlier.md"),
                       ("--png", None), ("--csv", "")], inputs)
    assert not (tmp_path / "new").exists()   # checking makes no folder
    # with an --overwrite flag (overwrite given): a file blazepose_tf did not write needs it to be true
    with pytest.raises(UserError, match="exists and is not an unchanged blazepose_tf output .*; pass --overwrite"):
        cli.check_outputs([("--output", tmp_path / "earlier.md")], inputs, overwrite=False)
    cli.check_outputs([("--output", tmp_path / "earlier.md")], inputs, overwrite=True)
    (tmp_path / "ours.json").write_bytes(marked_json({"schema": "blazepose_tf.evaluate/1"}))
    cli.check_outputs([("--output", tmp_path / "ours.json")], inputs, overwrite=False)


def test_check_still_replaceable_refuses_what_appeared_during_a_run(tmp_path):
    out = tmp_path / "r.json"
    cli.check_still_replaceable("--output", out, False)                         # nothing there
    out.write_bytes(marked_json({"schema": "an earlier run"}))
    cli.check_still_replaceable("--output", out, False)                         # an earlier output
    out.write_text("the user's notes")
    with pytest.raises(UserError, match="not an unchanged blazepose_tf output.*; the results were not saved$"):
        cli.check_still_replaceable("--output", out, False, lost="the results were not saved")
    cli.check_still_replaceable("--output", out, True)
    os.mkfifo(tmp_path / "pipe.json")
    with pytest.raises(UserError, match="appeared during the run and is not a regular file"):
        cli.check_still_replaceable("--output", tmp_path / "pipe.json", True)


def test_reports_keep_a_file_that_appeared_during_the_run(tmp_path):
    """The benchmarks' reports are checked again just before they are written: a user's file that appeared at a
    report path while the benchmark ran is kept (one line naming the flag), an earlier report is replaced, and
    --overwrite replaces the user's file."""
    from benchmarks.ood_guard import write_reports

    md, js = tmp_path / "r.md", tmp_path / "r.json"
    js.write_bytes(marked_json({"an": "earlier report"}))
    md.write_text("the user's table")
    with pytest.raises(UserError, match=f"^--markdown {md} {NOT_OURS}.*; the results were not saved$"):
        write_reports([("--json", js, {"info": {"n": 2}}), ("--markdown", md, "# new\n")], overwrite=False)
    assert md.read_text() == "the user's table"
    assert json.loads(js.read_text())["an"] == "earlier report"        # no report of the pair is written
    write_reports([("--json", js, {"info": {"n": 2}})], overwrite=False)
    assert json.loads(js.read_text())["info"] == {"n": 2}              # an earlier report is replaced
    write_reports([("--markdown", md, "# new\n")], overwrite=True)
    assert md.read_text().startswith("# new\n")
    # Without ``overwrite`` (a caller that did not check its outputs) nothing is re-checked: the old behaviour.
    md.write_text("the user's table again")
    cli.write_marked(md, "# newer\n", "--markdown")
    assert md.read_text().startswith("# newer\n")


# Every command that writes a report after a long run passes its --overwrite to the writer, which re-checks.
_REPORT_WRITERS = {"write_marked", "write_reports", "write_outputs", "write_summary"}


def _passes_overwrite(call) -> bool:
    """Whether a writer call passes a real ``overwrite`` (not the constant None): keyword, or last argument."""
    import ast

    for k in call.keywords:
        if k.arg == "overwrite":
            return not (isinstance(k.value, ast.Constant) and k.value.value is None)
    return bool(call.args) and "overwrite" in ast.unparse(call.args[-1])


def test_every_report_writer_call_re_checks_its_output():
    """Each call of a report writer in the package's commands, benchmarks and tools passes the command's
    ``overwrite`` (so none writes over a file that appeared during its run unchecked), and each function that saves
    an image (overlays, figures) checks its path again first (``check_still_replaceable``)."""
    import ast

    root = Path(__file__).resolve().parents[1]
    unchecked = []
    for folder in ("blazepose_tf", "benchmarks", "export", "data", "android_harness"):
        for path in root.glob(f"{folder}/**/*.py"):
            for fn in ast.walk(ast.parse(path.read_text())):
                if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                calls = [n for n in ast.walk(fn) if isinstance(n, ast.Call)]
                names = [getattr(c.func, "attr", None) or getattr(c.func, "id", None) for c in calls]
                unchecked += [f"{path.relative_to(root)}:{c.lineno}" for c, name in zip(calls, names)
                              if name in _REPORT_WRITERS and not _passes_overwrite(c)]
                if "save_image" in names and "check_still_replaceable" not in names:
                    unchecked.append(f"{path.relative_to(root)}:{fn.lineno} ({fn.name} saves an image)")
    assert not unchecked, f"outputs written without the --overwrite re-check: {unchecked}"


def test_check_outputs_probes_each_output_folder_once(tmp_path, monkeypatch):
    """A folder run checks thousands of overlays: the folder is probed once, not once per file."""
    inputs = [("--input", tmp_path / f"in{i}.jpg") for i in range(300)]
    for _, p in inputs:
        p.write_bytes(b"a photo")
    probes = []
    real_probe = cli.check_output_folder
    monkeypatch.setattr(cli, "check_output_folder", lambda path, flag: probes.append(path) or real_probe(path, flag))
    outputs = [("--overlay", tmp_path / "ov" / f"in{i}.png") for i in range(300)] + [("--output", tmp_path / "r.json")]
    cli.check_outputs(outputs, inputs, overwrite=False)
    assert [p.parent for p in probes] == [tmp_path / "ov", tmp_path]
    with pytest.raises(UserError, match="is also the --overlay output"):
        cli.check_outputs(outputs + [("--output", tmp_path / "ov" / "in299.png")], inputs)


@pytest.mark.parametrize("doc, split, words", [
    ({"test": [[34]]}, "test", "split 'test' must be a list of image ids"),
    ({"dev": [{"id": 34}]}, "dev", "split 'dev' must be a list of image ids"),
    ({"train": [1, True]}, "train", "got true"),
])
def test_malformed_splits_are_one_line(tmp_path, doc, split, words):
    path = tmp_path / "splits.json"
    path.write_text(json.dumps(doc | {"notes": [{"other": "lists"}]}))
    with pytest.raises(UserError, match=words):
        split_ids(path, split)


def test_other_lists_in_a_splits_file_do_not_matter(tmp_path):
    path = tmp_path / "splits.json"
    path.write_text(json.dumps({"train": [1, "b"], "notes": [{"made by": "a script"}]}))
    assert split_ids(path, "train") == [1, "b"]


# --- the commands --------------------------------------------------------------------------------------------------


def _case(tmp_path: Path, module: str, *args: str, message: str) -> None:
    ann, splits, images = dataset(tmp_path)
    for name in ("q.json", "lm.tflite"):   # a user's quantization table and model, read by some of the commands
        (tmp_path / name).write_text("{}")
    argv = [a.format(ann=ann, splits=splits, images=images, d=tmp_path) for a in args]
    (tmp_path / "other").mkdir()
    for flag, ext in REPORT_FLAGS.get(module, ()):   # the reports a case does not name: not the repository's out/
        if flag not in argv:
            argv += [flag, str(tmp_path / "other" / f"{flag[2:]}{ext}")]
    before = checksums(tmp_path)
    quiet = ("--noprogress",) if module in WITH_PROGRESS else ()
    proc = run_module(module, *argv, *quiet, timeout=300)
    assert_clean_exit(proc, EXIT_USAGE, message.format(ann=ann, splits=splits, images=images, d=tmp_path))
    assert checksums(tmp_path) == before
    assert "Traceback" not in proc.stderr


DATA = ("--annotations", "{ann}", "--images", "{images}")
# Report flags whose defaults are in the repository's out/ folder.
REPORT_FLAGS = {"benchmarks.keypoint_errors": (("--png", ".png"), ("--json", ".json"), ("--markdown", ".md")),
                "benchmarks.detector_roi": (("--json", ".json"), ("--markdown", ".md")),
                "benchmarks.ood_guard": (("--json", ".json"), ("--markdown", ".md")),
                "benchmarks.model_zoo": (("--output", ".md"), ("--json", ".json"))}
NOT_OURS = "exists and is not an unchanged blazepose_tf output"
WITH_PROGRESS = ("blazepose_tf.evaluate", "benchmarks.keypoint_errors", "benchmarks.detector_roi", "benchmarks.ood_guard",
                 "benchmarks.model_zoo", "benchmarks.converted_parity")   # the others log their steps instead


@pytest.mark.parametrize("module, args, message", [
    ("blazepose_tf.evaluate", DATA + ("--output", "{ann}"), "--output {ann} would overwrite the --annotations"),
    ("blazepose_tf.evaluate", DATA + ("--output", "{splits}"), "would overwrite the --splits file"),
    ("blazepose_tf.evaluate", DATA + ("--output", "{images}/a.png"), "is inside the --images folder"),
    ("benchmarks.keypoint_errors", DATA + ("--png", "{images}/a.png", "--json", "{d}/r.json"),
     "--png {images}/a.png is inside the --images folder"),
    ("benchmarks.detector_roi", DATA + ("--json", "{splits}", "--markdown", "{d}/r.md"),
     "--json {splits} would overwrite the --splits file"),
    ("benchmarks.ood_guard", ("--data", "{d}/data", "--json", "{ann}", "--markdown", "{d}/r.md"),
     "is inside the --data folder"),
    ("benchmarks.ood_guard", ("--data", "{d}/data", "--json", "{d}/r.txt", "--markdown", "{d}/r.txt"),
     "is also the --markdown output"),
    ("benchmarks.ood_guard", ("--data", "{d}/data", "--json", "{d}/r.json", "--markdown", "{d}/r.md",
                              "--cache_dir", "{ann}"), "--cache_dir {ann} is a file"),
    ("benchmarks.model_zoo", DATA + ("--output", "{images}/MODEL_ZOO.md"), "is inside the --images folder"),
    ("benchmarks.model_zoo", DATA + ("--output", "{d}/zoo.md", "--quantization_table", "{d}/q.json", "--json",
                                     "{d}/q.json"), "--json {d}/q.json would overwrite the --quantization_table"),
    ("blazepose_tf.evaluate", DATA + ("--landmarks", "{d}/lm.tflite", "--output", "{d}/lm.tflite"),
     "would overwrite the --landmarks file"),
    ("benchmarks.ood_guard", ("--data", "{d}/data", "--detector", "{d}/lm.tflite", "--json", "{d}/lm.tflite",
                              "--markdown", "{d}/r.md"), "would overwrite the --detector file"),
    # a file of the user's (q.json) where a report goes: refused unless --overwrite
    ("benchmarks.keypoint_errors", DATA + ("--json", "{d}/q.json"), f"--json {{d}}/q.json {NOT_OURS}"),
    ("benchmarks.detector_roi", DATA + ("--markdown", "{d}/q.json"), f"--markdown {{d}}/q.json {NOT_OURS}"),
    ("benchmarks.ood_guard", ("--data", "{d}/data", "--json", "{d}/q.json"), f"--json {{d}}/q.json {NOT_OURS}"),
    ("benchmarks.model_zoo", DATA + ("--output", "{d}/q.json"), f"--output {{d}}/q.json {NOT_OURS}"),
    ("benchmarks.quantization", ("--dataset", "{d}/data", "--output", "{d}/q.json"), f"--output {{d}}/q.json {NOT_OURS}"),
    ("benchmarks.converted_parity", ("--data_dir", "{d}/data", "--output", "{d}/q.json"), f"{{d}}/q.json {NOT_OURS}"),
    ("benchmarks.parity_mediapipe", ("--data_dir", "{d}/data", "--output", "{d}/q.json"), f"{{d}}/q.json {NOT_OURS}"),
    ("benchmarks.pipeline_speed", ("--data_dir", "{d}/data", "--output", "{d}/q.json"), f"{{d}}/q.json {NOT_OURS}"),
    ("benchmarks.mediapipe_bundle", ("--data_dir", "{d}/data", "--output", "{d}/q.json"), f"{{d}}/q.json {NOT_OURS}"),
    ("benchmarks.train_throughput", ("--lspet", "{d}/data", "--output", "{d}/q.json"), f"{{d}}/q.json {NOT_OURS}"),
    ("benchmarks.model_speed", ("--output", "{d}/q.json"), f"{{d}}/q.json {NOT_OURS}"),
    ("export.bench", ("--model", "{d}/lm.tflite", "--output", "{d}/q.json"), f"{{d}}/q.json {NOT_OURS}"),
    ("export.bench", ("--model", "{d}/lm.tflite", "--output", "{d}/lm.tflite"), "would overwrite the --model file"),
    ("blazepose_tf.training.debug", ("--data", "{d}/none-*.tfrecord", "--output", "{images}/a.png"),
     f"--output {{images}}/a.png {NOT_OURS}"),
    ("benchmarks.quantization", ("--dataset", "{d}/data", "--output", "{ann}"), "is inside the --dataset folder"),
])
def test_reports_never_overwrite_the_dataset(tmp_path, module, args, message):
    _case(tmp_path, module, *args, message=message)


def test_evaluate_with_no_image_read_keeps_an_earlier_summary(tmp_path, official_models):
    """Every scored image unreadable (exit 3): the summary already at --output is kept, not replaced."""
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.png").write_bytes(b"not a png")
    points = [v for i in range(17) for v in (100.0 + 3 * i, 100.0 + 5 * i, 2)]
    ann = tmp_path / "annotations.json"
    ann.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": 256, "height": 256}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "keypoints": points}],
        "categories": [{"id": 1, "name": "person", "keypoints": [
            "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
            "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
            "right_knee", "left_ankle", "right_ankle"]}]}))
    out = tmp_path / "summary.json"
    earlier = marked_json({"schema": "blazepose_tf.evaluate/1", "note": "an earlier good summary"}).decode()
    out.write_text(earlier)
    proc = run_module("blazepose_tf.evaluate", "--annotations", ann, "--images", images, "--output", out,
                      "--noprogress", timeout=300)
    assert_clean_exit(proc, 3, "none of the 1 scored images could be read")
    assert out.read_text() == earlier and "kept as it was" in proc.stderr


def test_evaluate_refuses_a_summary_it_did_not_write(tmp_path):
    """An --output file that is not an evaluate summary (no blazepose_tf ``schema``) is the user's: refused before
    the dataset is read, unless --overwrite."""
    ann, _, images = dataset(tmp_path)
    out = tmp_path / "results.json"
    out.write_text('{"my": "own results"}')
    proc = run_module("blazepose_tf.evaluate", "--annotations", ann, "--images", images, "--output", out,
                      "--noprogress", "--landmarks", tmp_path / "no_such.tflite", timeout=300)
    assert_clean_exit(proc, EXIT_USAGE, f"--output {out} exists and is not an unchanged blazepose_tf output",
                      "--overwrite")
    assert out.read_text() == '{"my": "own results"}'
    proc = run_module("blazepose_tf.evaluate", "--annotations", ann, "--images", images, "--output", out,
                      "--noprogress", "--landmarks", tmp_path / "no_such.tflite", "--overwrite", timeout=300)
    assert_clean_exit(proc, 3, "empty")                                       # past the check: to the dataset
    assert out.read_text() == '{"my": "own results"}'


def test_reports_carry_the_mark_so_a_rerun_replaces_them(tmp_path):
    """The benchmarks' Markdown and JSON reports are marked: the next run may replace them; once edited they are the
    user's (the check refuses them without --overwrite)."""
    from benchmarks.ood_guard import write_reports

    md, js = tmp_path / "r.md", tmp_path / "r.json"
    write_reports([("--markdown", md, "# title\n| a |\n"), ("--json", js, {"info": {"n": 1}})])
    assert written_here(md) and written_here(js)
    assert md.read_text().startswith("# title\n| a |\n") and json.loads(js.read_text())["info"] == {"n": 1}
    cli.check_outputs([("--markdown", md), ("--json", js)], overwrite=False)
    md.write_text(md.read_text().replace("title", "my title"))
    with pytest.raises(UserError, match=f"--markdown {md} {NOT_OURS}"):
        cli.check_outputs([("--markdown", md)], overwrite=False)


def test_convert_official_keeps_a_keras_file_it_did_not_write(tmp_path):
    """A <name>.keras in --output_dir without the converter's stamp beside it is the user's: refused before any
    conversion (exit 2, unchanged)."""
    (tmp_path / "pose_detection.keras").write_bytes(b"a model of the user's")
    proc = run_module("blazepose_tf.models.convert_official", "--output_dir", tmp_path, "--models", "pose_detection",
                      timeout=300)
    assert_clean_exit(proc, EXIT_USAGE, f"{tmp_path}/pose_detection.keras exists and was not written by this "
                      "converter", "--overwrite")
    assert (tmp_path / "pose_detection.keras").read_bytes() == b"a model of the user's"
