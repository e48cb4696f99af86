"""Shared command-line plumbing: absl flag parsing without tracebacks, one-line errors with documented exit
codes, ``--help`` / ``--helpfull``, output checks (nothing of the user's is overwritten) and marked report writes.
It imports nothing of the project but :mod:`blazepose_tf.errors` and :mod:`blazepose_tf.io`, so every layer's
command can use it (the shared model flags are :mod:`blazepose_tf.zoo.model_flags`)."""
from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Optional, Sequence

from absl import flags

from blazepose_tf.errors import EXIT_USAGE, ModelError, UserError
from blazepose_tf.io import provenance
from blazepose_tf.io.video import write_bytes_atomic

HELP_ARGS: tuple[str, ...] = ("-h", "-help", "--help", "-helpshort", "--helpshort")
HELPFULL_ARGS: tuple[str, ...] = ("-helpfull", "--helpfull")
# The project's top-level packages (pyproject.toml): their flags are the command's own in ``--help``.
PROJECT_PACKAGES = ("blazepose_tf", "export", "data", "android_harness", "benchmarks")
# Flags absl itself handles for every command (not in any module's flag list).
_COMMON_FLAGS_HELP = """every command:
  --flagfile: Read more flags from this file (one --flag=value per line).
  --help: This help.
  --helpfull: Every flag, absl's and TensorFlow's internal ones included."""


def help_request(argv: list[str]) -> Optional[Literal["help", "helpfull"]]:
    """``"helpfull"`` / ``"help"`` if ``argv`` (argv[0] excluded, up to a ``--``) asks for it (the full help
    wins when both are asked for), else None."""
    args = argv[1:argv.index("--")] if "--" in argv[1:] else argv[1:]
    if any(a in HELPFULL_ARGS for a in args):
        return "helpfull"
    return "help" if any(a in HELP_ARGS for a in args) else None


def _is_project_module(name: str) -> bool:
    """Whether module ``name`` belongs to this project's packages (not to absl, TensorFlow or another library)."""
    return name.split(".")[0] in PROJECT_PACKAGES


def command_help(main_module: str, label: str, full: bool = False) -> str:
    """The help of a command whose ``main`` is defined in ``main_module`` (shown as ``label``): its docstring,
    then its flags grouped by defining module.

    ``full=False`` (``--help``) lists the flags of ``main_module`` and of this repository's modules it defined
    flags through (e.g. ``--models`` from :func:`blazepose_tf.zoo.model_flags.define_model_flags`): every flag the
    command accepts except absl's and TensorFlow's internal ones. ``full=True`` (``--helpfull``) lists every
    defined flag.
    """
    module = sys.modules.get(main_module)
    doc = ((module.__doc__ if module else None) or "").strip()
    FLAGS = flags.FLAGS
    if full:
        body = FLAGS.get_help().strip("\n")
    else:
        names = [main_module] + sorted(n for n in FLAGS.flags_by_module_dict()
                                       if n != main_module and _is_project_module(n))
        sections = [FLAGS.module_help(name).strip("\n") for name in names]
        if sections[0]:  # absl heads __main__'s flags "__main__:"; show the command's name
            sections[0] = label + sections[0][len(main_module):]
        body = "\n\n".join([s for s in sections if s] + [_COMMON_FLAGS_HELP])
    return f"{doc}\n\n{body}\n" if doc else f"{body}\n"


def expand_home() -> None:
    """Expands a leading ``~`` in every value of this package's flags (strings, and the items of lists): the shell
    leaves it in ``--output=~/x.json`` (no expansion after ``=``) and in flagfiles, and every command reads it as
    the user's home folder, never as a folder named ``~``. :func:`run` calls it after parsing."""
    for module, module_flags in flags.FLAGS.flags_by_module_dict().items():
        # absl files the running command's own flags under its script path (sys.argv[0]), not "__main__"
        if not (_is_project_module(module) or module in ("__main__", sys.argv[0])):
            continue
        for flag in module_flags:
            value = flag.value
            if isinstance(value, str) and value.startswith("~"):
                flag.value = os.path.expanduser(value)
            elif isinstance(value, list) and any(isinstance(v, str) and v.startswith("~") for v in value):
                flag.value = [os.path.expanduser(v) if isinstance(v, str) else v for v in value]


# Flagfiles the shell hands over as streams (process substitution ``<(...)``, ``/dev/stdin``): read as given.
STREAM_FLAGFILES = ("/dev/fd/", "/proc/self/fd/", "/dev/stdin")


def check_flagfiles(argv: list[str]) -> None:
    """A one-line :class:`UserError` for a ``--flagfile`` on the command line that absl could not read as flags: not
    a regular file (a FIFO would block the parse for ever), or not UTF-8 text (e.g. a photo given by mistake). A
    missing one is left to absl's own message."""
    args = argv[1:argv.index("--")] if "--" in argv[1:] else argv[1:]
    for i, arg in enumerate(args):
        if arg.startswith(("--flagfile=", "-flagfile=")):
            value = arg.split("=", 1)[1]
        elif arg in ("--flagfile", "-flagfile") and i + 1 < len(args):
            value = args[i + 1]
        else:
            continue
        path = Path(value).expanduser()
        if not path.exists() or value.startswith(STREAM_FLAGFILES):
            continue   # absl's message for a missing file; a pipe the shell made (<(...), stdin) has a writer
        if not path.is_file():
            raise UserError(f"--flagfile {value} is not a regular file")
        try:
            path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise UserError(f"--flagfile {value} is not a UTF-8 text file") from None
        except OSError as e:
            raise UserError(f"--flagfile {value} cannot be read: {e.strerror or e}") from None


def run(main: Callable[[list[str]], int], argv: Optional[list[str]] = None, positional: bool = False) -> None:
    """Parses flags and runs ``main``; user errors become ``error: ...`` on stderr and their exit code.

    ``--help`` / ``--helpfull`` print :func:`command_help` and exit 0. With ``positional`` the command also
    takes non-flag arguments (passed to ``main`` after argv[0]).
    """
    argv = list(sys.argv if argv is None else argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    wanted = help_request(argv)
    if wanted:
        print(command_help(main.__module__, _module_name(argv[0]), full=wanted == "helpfull"), end="")
        sys.exit(0)
    try:
        check_flagfiles(argv)
        rest = flags.FLAGS(argv)
    except (flags.Error, UserError) as e:
        print(f"error: {re.sub(r'^(ERROR:+ *)+', '', str(e))}", file=sys.stderr)
        print(f"run `python -m {_module_name(argv[0])} --help` for the flags", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except (UnicodeDecodeError, OSError) as e:   # a --flagfile named inside another one: read by absl
        why = "is not a UTF-8 text file" if isinstance(e, UnicodeDecodeError) else f"cannot be read ({e})"
        print(f"error: a --flagfile {why}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    if len(rest) > 1 and not positional:
        print(f"error: unexpected arguments {rest[1:]} (every option is a --flag)", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    expand_home()
    try:
        code = main(rest)
    except (UserError, ModelError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)


def check_output_folder(output: Path, flag: str = "--output") -> None:
    """A one-line :class:`UserError` unless ``output``'s folder exists or can be created: its nearest existing
    ancestor is a folder where a file can be made (one is made and removed). Cheap: commands call it before loading
    anything."""
    _check_writable(output.parent, f"{flag} {output}")


def check_writable_folder(folder: Path, flag: str) -> None:
    """:func:`check_output_folder` for a folder a command writes files into (e.g. a cache): it exists or can be
    created, and a file can be made there."""
    _check_writable(folder, f"{flag} {folder}")


def _check_writable(folder: Path, what: str) -> None:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise UserError(f"cannot write {what}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {what}: folder {folder} is not writable")
    try:  # os.access says yes to root everywhere; a file made and removed at once tells (e.g. /sys, read-only mounts)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as e:
        raise UserError(f"cannot write {what}: folder {folder} is not writable ({e.strerror or e})") from None


def path_identities(path: str | os.PathLike) -> set:
    """What identifies the file ``path`` names: its real path (symbolic links and ``..`` resolved) and, if it
    exists, its (device, inode), which another name for the same file also has (a hard link, or another case of
    the name on a case-insensitive file system)."""
    keys: set = {os.path.realpath(path)}
    try:
        st = os.stat(path)
    except OSError:
        return keys
    keys.add((st.st_dev, st.st_ino))
    return keys


def _inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    real, base = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([real, base]) == base


OVERWRITE_HELP = ("Replace an existing output file that is not an unchanged blazepose_tf output (without it such a "
                  "file is refused; outputs an earlier run wrote, unedited, are replaced either way).")


def define_overwrite_flag(help_text: str = OVERWRITE_HELP) -> None:
    """``--overwrite``, for the commands whose outputs keep a file this package did not write (see
    :func:`check_replaceable`). Every command defines it through here: one definition per process, whichever
    command modules a process imports (the first one's help is shown)."""
    if "overwrite" not in flags.FLAGS:
        flags.DEFINE_bool("overwrite", False, help_text)


# What a report that cannot be written costs the user, at the end of its refusal.
NOT_SAVED = "the results were not saved"


def check_replaceable(flag: str, path: str | os.PathLike, overwrite: bool) -> None:
    """A one-line :class:`UserError` if a file is at ``path`` that is not an unchanged output of this package (it
    lacks a valid mark, :mod:`blazepose_tf.io.provenance`) and ``overwrite`` is false: a user's file is never
    replaced unasked."""
    why = None if overwrite else provenance.describe(path)
    if why:
        raise UserError(f"{flag} {path} {why}; pass --overwrite to replace it, or choose another path")


def check_still_replaceable(flag: str, path: str | os.PathLike, overwrite: bool, lost: str = "") -> None:
    """Just before a long run writes an output its start checked (:func:`check_outputs`): a one-line
    :class:`UserError` if something appeared there since that is not a regular file, or (without ``overwrite``)
    not an unchanged output of this package. ``lost`` says what the refusal costs (e.g. the results)."""
    p = Path(path)
    try:
        if p.exists() and not p.is_file():
            raise UserError(f"{flag} {p} appeared during the run and is not a regular file")
        check_replaceable(flag, p, overwrite)
    except UserError as e:
        raise UserError(f"{e}; {lost}" if lost else str(e)) from None


def write_marked(path: str | os.PathLike, content: str | dict, flag: str = "--output",
                 overwrite: Optional[bool] = None, **json_options: Any) -> None:
    """Writes a report atomically, creating its folder: Markdown or plain ``content`` text, or a dict as JSON
    (``json_options`` override the defaults ``indent=1, default=str``; e.g. ``allow_nan=False``), with
    blazepose_tf's mark (:mod:`blazepose_tf.io.provenance`: a rerun may replace it). With ``overwrite`` given (the
    command's ``--overwrite``), ``path`` is checked again first (:func:`check_still_replaceable`): a file that
    appeared there during the run and that this package did not write is kept. A refusal or a failure (check the
    path first with :func:`check_outputs`, so a full disk or the like) is a one-line :class:`UserError` that
    leaves any earlier file at ``path`` as it was."""
    if overwrite is not None:
        check_still_replaceable(flag, path, overwrite, lost=NOT_SAVED)
    data = (provenance.marked_json(content, **{"indent": 1, "default": str, **json_options})
            if isinstance(content, dict) else provenance.mark_text(content))
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, data)
    except OSError as e:
        raise UserError(f"cannot write {flag} {path}: {e.strerror or e}; {NOT_SAVED}") from None


def check_outputs(outputs: Sequence[tuple[str, Optional[str | os.PathLike]]],
                  inputs: Iterable[tuple[str, Optional[str | os.PathLike]]] = (),
                  overwrite: Optional[bool] = None) -> None:
    """Refuses, before any work, output files that would write over an input (one of the ``inputs`` files, or
    anything inside one of its folders) or over each other, that exist and are not regular files, or whose folder
    cannot be written or created: a one-line :class:`UserError` (exit 2). ``outputs`` and ``inputs`` are
    ``(flag, path)`` pairs; pairs whose path is empty or None are skipped. With ``overwrite`` given (a command
    with ``--overwrite``), an existing file this package did not write is refused unless it is true."""
    given = [(flag, Path(p).expanduser()) for flag, p in inputs if p]
    folders = [(flag, source) for flag, source in given if source.is_dir()]
    input_keys: dict = {}
    for flag, source in given:
        for key in path_identities(source):
            input_keys.setdefault(key, (flag, source))
    output_keys: dict = {}
    probed: set[str] = set()
    for flag, value in outputs:  # linear in the outputs: a folder run may give thousands
        if not value:
            continue
        path = Path(value)  # as the command writes it (run() has expanded a leading "~": expand_home)
        keys = path_identities(path)
        for in_flag, source in folders:
            if _inside(path, source):
                raise UserError(f"{flag} {path} is inside the {in_flag} folder {source}; choose another path")
        clash = next((input_keys[key] for key in keys if key in input_keys), None)
        if clash is not None:
            raise UserError(f"{flag} {path} would overwrite the {clash[0]} file {clash[1]}; choose another path")
        other = next((output_keys[key] for key in keys if key in output_keys), None)
        if other is not None:
            raise UserError(f"{flag} {path} is also the {other} output; give each output its own path")
        if path.exists() and not path.is_file():
            raise UserError(f"cannot write {flag} {path}: it exists and is not a regular file"
                            + (" (a folder)" if path.is_dir() else ""))
        if overwrite is not None:
            check_replaceable(flag, path, overwrite)
        real = Path(os.path.realpath(path))   # a symbolic link is written through: probe where the file goes
        if path.is_symlink() and not real.parent.is_dir():
            raise UserError(f"cannot write {flag} {path}: it is a symbolic link into {real.parent}, which does not "
                            "exist")
        if str(real.parent) not in probed:
            probed.add(str(real.parent))
            check_output_folder(real, flag)
        output_keys.update(dict.fromkeys(keys, flag))


def _module_name(argv0: str) -> str:
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name:
        return spec.name
    return os.path.splitext(os.path.basename(argv0))[0]
