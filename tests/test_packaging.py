"""``pip install .`` gives a user every package and the commands: the wheel built from pyproject.toml holds the
five top-level packages, the zoo's shipped weights, and a console script per documented command that resolves
to a callable ``entry_point``."""
from __future__ import annotations

import ast
import configparser
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("blazepose_tf", "export", "data", "android_harness", "benchmarks")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built (no dependencies, no network) from a copy of the repository's tracked files."""
    src = tmp_path_factory.mktemp("src")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        if (REPO / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           "-w", str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (whl,) = out.glob("*.whl")
    return whl


def test_wheel_holds_every_package_and_the_zoo_weights(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    for package in PACKAGES:
        assert f"{package}/__init__.py" in names, package
    manifest = "blazepose_tf/zoo/weights/MANIFEST.json"
    assert manifest in names
    shipped = [n for n in names if n.startswith("blazepose_tf/zoo/weights/") and n.endswith(".tflite")]
    assert shipped, "no .tflite of the zoo in the wheel"
    assert "blazepose_tf/official_models/pose_landmark_lite.tflite" in names  # the one official file we carry
    assert not [n for n in names if n.startswith("tests/")]


def test_console_scripts_point_at_entry_points(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        text = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/entry_points.txt"))).decode()
    parser = configparser.ConfigParser()
    parser.read_string(text)
    scripts = dict(parser["console_scripts"])
    assert {"blazepose-track", "blazepose-evaluate", "blazepose-train", "blazepose-export"} <= set(scripts)
    for name, target in scripts.items():  # read, not imported: each command defines its own absl flags
        module, attr = target.split(":")
        tree = ast.parse((REPO / (module.replace(".", "/") + ".py")).read_text())
        assert any(isinstance(n, ast.FunctionDef) and n.name == attr for n in tree.body), name
