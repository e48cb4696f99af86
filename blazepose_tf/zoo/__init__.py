"""The models this repository ships (the model zoo), and the named model sets the runtime commands use.

Shipped models live in ``blazepose_tf/zoo/weights/`` (``$BLAZEPOSE_TF_ZOO_WEIGHTS`` overrides the folder), one
pair of files per name in :data:`MODEL_NAMES`:

* ``<name>.keras``: the fine-tunable Keras inference model (``--init_from`` for training, :mod:`export.to_tflite`);
* ``<name>.tflite``: its fp16-weight TFLite export, what the runtime (:mod:`blazepose_tf.track`,
  :mod:`blazepose_tf.evaluate`) runs.

``weights/MANIFEST.json`` (written by ``python -m blazepose_tf.zoo.publish``, never by hand) describes them::

    {"schema": "blazepose_tf.zoo/1",
     "models": {"<name>": {"kind": "detector"|"tracker",
                           "files": {"keras": {"file", "sha256", "bytes"},
                                     "tflite": {"file", "sha256", "bytes", "quantization", "outputs"}},
                           "source", "flagfile", "flags", "command", "step", "dev_metrics", "export",
                           "published_at", "git_commit", "publish_command"}}}

Model sets (``--models``): ``ours`` (our detector + our Full tracker; the default), ``ours_lite`` (our detector +
our Lite tracker), ``official`` (MediaPipe's ``pose_detection.tflite`` + ``pose_landmark_full.tflite``, fetched and
checked by :mod:`data.fetch_official`) and ``official_lite`` (MediaPipe's detector + its Lite
``pose_landmark_lite.tflite``, which this package carries: :mod:`blazepose_tf.official`).

Every shipped file is checked against its sha256 in the manifest before use; a file that is missing, not
published or changed raises :class:`blazepose_tf.errors.ModelError` with one line naming the file and how to
restore it. Example::

    >>> from blazepose_tf import zoo
    >>> detector, landmarks = zoo.model_set("ours")          # two verified .tflite paths
    >>> zoo.model_path("lite", fmt="keras")                   # the fine-tunable Keras model
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

from blazepose_tf.errors import ModelError, UserError

SCHEMA = "blazepose_tf.zoo/1"
MANIFEST_NAME = "MANIFEST.json"
WEIGHTS_ENV = "BLAZEPOSE_TF_ZOO_WEIGHTS"
DEFAULT_WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
REPO_ROOT = Path(__file__).resolve().parents[2]

#: Shipped model name -> kind.
MODEL_KINDS: dict[str, str] = {"detector": "detector", "full": "tracker", "lite": "tracker"}
MODEL_NAMES: tuple[str, ...] = tuple(MODEL_KINDS)
#: File formats of a shipped model: extension -> manifest key.
FORMATS: tuple[str, ...] = ("tflite", "keras")
#: Roles of a model set, in the order :func:`model_set` returns them.
ROLES: tuple[str, ...] = ("detector", "landmarks")
#: Set name -> (detector, landmarks) as ``zoo:<name>`` or ``official:<official model name>``.
MODEL_SETS: dict[str, tuple[str, str]] = {
    "ours": ("zoo:detector", "zoo:full"),
    "ours_lite": ("zoo:detector", "zoo:lite"),
    "official": ("official:pose_detection", "official:pose_landmark_full"),
    "official_lite": ("official:pose_detection", "official:pose_landmark_lite"),
}
DEFAULT_SET = "ours"

# (path, size, mtime_ns) -> sha256, so that a process resolving the same file twice hashes it once.
_HASHES: dict[tuple[str, int, int], str] = {}


def weights_dir() -> Path:
    """The folder holding the shipped files and ``MANIFEST.json`` (``$BLAZEPOSE_TF_ZOO_WEIGHTS`` overrides)."""
    env = os.environ.get(WEIGHTS_ENV)
    return Path(env).expanduser() if env else DEFAULT_WEIGHTS_DIR


def manifest_path(directory: Optional[str | os.PathLike] = None) -> Path:
    """``MANIFEST.json`` of ``directory`` (default :func:`weights_dir`)."""
    return Path(directory or weights_dir()) / MANIFEST_NAME


def display_path(path: str | os.PathLike) -> str:
    """``path`` relative to the repository when inside it (what ``git checkout --`` takes), else as is."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(p)


def empty_manifest() -> dict[str, Any]:
    """A manifest with no published model."""
    return {"schema": SCHEMA, "models": {}}


def read_manifest(directory: Optional[str | os.PathLike] = None) -> dict[str, Any]:
    """The parsed manifest (an empty one when the file does not exist yet).

    Raises:
        ModelError: the file exists but is not a valid manifest.
    """
    path = manifest_path(directory)
    if not path.is_file():
        return empty_manifest()
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"{display_path(path)} is not readable JSON ({e}); restore it with "
                         f"`git checkout -- {display_path(path)}`") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or not isinstance(doc.get("models"), dict):
        raise ModelError(f"{display_path(path)} is not a {SCHEMA} manifest; restore it with "
                         f"`git checkout -- {display_path(path)}`")
    return doc


def _check_name(name: str) -> None:
    if name not in MODEL_KINDS:
        raise UserError(f"unknown zoo model {name!r}; known: {', '.join(MODEL_NAMES)}")


def publish_hint(name: str, entry: Optional[dict] = None) -> str:
    """The command that (re)publishes ``name``: the recorded one when the manifest has it, else a template."""
    if entry and entry.get("publish_command"):
        return str(entry["publish_command"])
    flagfile = f"configs/{name}.flags"
    how = f"--flagfile {flagfile}" if (REPO_ROOT / flagfile).is_file() else "--command \"TRAINING COMMAND\""
    return f"python -m blazepose_tf.zoo.publish --name {name} --model RUN/best.keras {how}"


def model_entry(name: str, directory: Optional[str | os.PathLike] = None) -> dict[str, Any]:
    """The manifest entry of a shipped model.

    Raises:
        UserError: unknown name.
        ModelError: the model is not published (no manifest entry).
    """
    _check_name(name)
    entry = read_manifest(directory)["models"].get(name)
    if not isinstance(entry, dict):
        raise ModelError(f"zoo model {name!r} is not published (no entry in "
                         f"{display_path(manifest_path(directory))}); publish it with `{publish_hint(name)}`, "
                         "or use --models official")
    return entry


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file (cached per path, size and modification time)."""
    from blazepose_tf.official import sha256

    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = sha256(Path(path))
    return _HASHES[key]


def model_path(name: str, fmt: str = "tflite", verify: bool = True,
               directory: Optional[str | os.PathLike] = None) -> Path:
    """Path of a shipped model file, checked against the manifest.

    Args:
        name: one of :data:`MODEL_NAMES` (``detector``, ``full``, ``lite``).
        fmt: ``tflite`` (the runtime's fp16 export) or ``keras`` (the fine-tunable model).
        verify: compare the file's sha256 and size with the manifest.
        directory: the weights folder (default :func:`weights_dir`).
    Raises:
        UserError: unknown name or format.
        ModelError: not published, file missing, or its contents differ from the manifest.
    """
    if fmt not in FORMATS:
        raise UserError(f"zoo model format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    entry = model_entry(name, directory)
    info = (entry.get("files") or {}).get(fmt)
    if not isinstance(info, dict) or not info.get("file") or not info.get("sha256"):
        raise ModelError(f"zoo model {name!r} has no {fmt} file in {display_path(manifest_path(directory))}; "
                         f"republish it with `{publish_hint(name, entry)}`")
    path = Path(directory or weights_dir()) / str(info["file"])
    shown = display_path(path)
    restore = f"restore it with `git checkout -- {shown}` or republish with `{publish_hint(name, entry)}`"
    if not path.is_file():
        raise ModelError(f"zoo model file {shown} is missing; {restore}")
    if verify:
        size = path.stat().st_size
        digest = file_sha256(path)
        if digest != info["sha256"] or ("bytes" in info and size != int(info["bytes"])):
            why = " (a Git LFS pointer?)" if size < 1024 else ""
            raise ModelError(f"zoo model file {shown} does not match {MANIFEST_NAME} (sha256 {digest[:12]}…, "
                             f"{size} bytes; expected {str(info['sha256'])[:12]}…, {info.get('bytes')} bytes){why}; "
                             f"{restore}")
    return path


def _check_set(set_name: str) -> None:
    if set_name not in MODEL_SETS:
        raise UserError(f"--models must be one of {', '.join(MODEL_SETS)}, got {set_name!r}")


def set_member(set_name: str, role: str) -> str:
    """``zoo:<name>`` or ``official:<name>``: what a set uses as its ``detector`` or ``landmarks`` model."""
    _check_set(set_name)
    if role not in ROLES:
        raise UserError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    return MODEL_SETS[set_name][ROLES.index(role)]


def resolve(spec: str, fmt: str = "tflite") -> Path:
    """Path of ``zoo:<name>`` (verified shipped file) or ``official:<name>`` (fetched if needed).

    Raises:
        UserError: not such a spec, or an unknown name (as :func:`model_path`).
        ModelError: the file is missing, corrupt or cannot be fetched.
    """
    source, _, name = spec.partition(":")
    if source == "zoo":
        return model_path(name, fmt)
    if source == "official":
        from blazepose_tf.official import OFFICIAL_SHA256
        if name not in OFFICIAL_SHA256:
            raise UserError(f"unknown official model {name!r} in {spec!r}; known: {', '.join(sorted(OFFICIAL_SHA256))}")
        if fmt != "tflite":
            from blazepose_tf.models.convert_official import converted_model_path
            return converted_model_path(name)
        from blazepose_tf.official import official_model_path
        return official_model_path(name)
    raise UserError(f"model spec must be zoo:NAME or official:NAME, got {spec!r}")


def member_location(spec: str) -> Optional[Path]:
    """Where ``zoo:<name>`` or ``official:<name>`` lives, without verifying or fetching it (None when that cannot be
    told: an unknown name or an unpublished zoo model): what output checks protect."""
    source, _, name = spec.partition(":")
    if source == "official":
        from blazepose_tf.official import model_location
        return model_location(name)
    try:
        return model_path(name, verify=False) if source == "zoo" else None
    except (ModelError, UserError, AttributeError, TypeError, ValueError):   # a bad manifest: the loader says so
        return None


def set_member_path(set_name: str, role: str, fmt: str = "tflite") -> Path:
    """The verified file a set uses for one role (``detector`` or ``landmarks``)."""
    return resolve(set_member(set_name, role), fmt)


def model_set(set_name: str = DEFAULT_SET, fmt: str = "tflite") -> tuple[Path, Path]:
    """(detector, landmarks) files of a model set (see :data:`MODEL_SETS`), verified.

    Args:
        set_name: a name of :data:`MODEL_SETS` (``ours``, ``ours_lite``, ``official``, ``official_lite``).
        fmt: ``tflite`` (runtime) or ``keras`` (for the official sets: the converted Keras models).
    Raises:
        UserError: unknown set.
        ModelError: a file is missing, unpublished or corrupted (or the official models cannot be fetched).
    """
    _check_set(set_name)
    return set_member_path(set_name, "detector", fmt), set_member_path(set_name, "landmarks", fmt)


def git_commit() -> Optional[str]:
    """The repository's HEAD commit, or None outside a git checkout."""
    import subprocess

    try:
        proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else None


def published() -> list[str]:
    """Names with a manifest entry (files not checked)."""
    models = read_manifest()["models"]
    return [n for n in MODEL_NAMES if n in models]


__all__ = [
    "DEFAULT_SET", "FORMATS", "MODEL_KINDS", "MODEL_NAMES", "MODEL_SETS", "ROLES", "SCHEMA", "WEIGHTS_ENV",
    "display_path", "empty_manifest", "file_sha256", "git_commit", "manifest_path", "model_entry", "model_path",
    "model_set",
    "publish_hint", "published", "read_manifest", "resolve", "set_member", "set_member_path", "weights_dir",
]
