"""The isolated-mediapipe-venv plumbing (export.mediapipe_env, export.mediapipe_validate) without running
mediapipe: the worker scripts stay standalone (they run in a venv with NumPy < 2 and none of this project),
and the worker's command line, request and environment are what the workers expect."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from export import mediapipe_env as env
from export import mediapipe_validate as mv

REPO = Path(__file__).resolve().parents[1]
WORKERS = (REPO / "export" / "mp_worker_tasks.py", REPO / "benchmarks" / "mp_worker_legacy.py")
PROJECT_PACKAGES = {"blazepose_tf", "export", "data", "android_harness", "benchmarks"}
WORKER_MODULES = {"mediapipe", "cv2", "numpy"}


@pytest.mark.parametrize("script", WORKERS, ids=lambda p: p.name)
def test_worker_scripts_import_nothing_from_the_project(script: Path) -> None:
    tree = ast.parse(script.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{script.name}: relative import"
            imported.add((node.module or "").split(".")[0])
    imported.discard("__future__")
    assert not imported & PROJECT_PACKAGES, imported & PROJECT_PACKAGES
    assert imported <= set(sys.stdlib_module_names) | WORKER_MODULES, imported - set(sys.stdlib_module_names)


def test_tasks_worker_lives_in_export() -> None:
    assert mv.WORKER_SCRIPT == REPO / "export" / "mp_worker_tasks.py" and mv.WORKER_SCRIPT.is_file()


def test_pin_args() -> None:
    assert env.pin_args(None) == [] and env.pin_args([]) == []
    assert env.pin_args(0) == ["--pin_cpu", "0"]
    assert env.pin_args([0, 1]) == ["--pin_cpu", "0,1"]


def test_worker_env_drops_the_project_paths(monkeypatch) -> None:
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    monkeypatch.setenv("VIRTUAL_ENV", "/venv")
    monkeypatch.delenv("GLOG_minloglevel", raising=False)
    e = env.worker_env()
    assert "PYTHONPATH" not in e and "VIRTUAL_ENV" not in e and e["GLOG_minloglevel"] == "2"


def test_venv_lives_in_the_cache(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("BLAZEPOSE_TF_CACHE", str(tmp_path))
    assert env.cache_root() == tmp_path
    assert env.venv_python() == tmp_path / "mediapipe-venv" / "bin" / "python"


def test_tasks_request_and_command(tmp_path) -> None:
    req = mv.tasks_request(tmp_path / "b.task", [{"id": "a", "frames": []}], "video",
                           {"min_pose_presence_confidence": 0.0})
    assert req["bundle"] == str((tmp_path / "b.task").resolve()) and req["mode"] == "video"
    assert req["options"] == {**mv.MEDIAPIPE_DEFAULTS, "min_pose_presence_confidence": 0.0}
    assert (req["fps"], req["warmup"]) == (30.0, 1)
    cmd = mv.tasks_command(Path("/py"), tmp_path / "rq.json", tmp_path / "out.json", [2])
    assert cmd == ["/py", str(mv.WORKER_SCRIPT), "--request", str(tmp_path / "rq.json"), "--output",
                   str(tmp_path / "out.json"), "--pin_cpu", "2"]
