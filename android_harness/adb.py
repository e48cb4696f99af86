"""A small wrapper around the ``adb`` client: device selection with clear errors, getprop, push, shell, rm.

Every failure raises :class:`DeviceError` (exit code 6) with one line saying what went wrong and what to do;
whatever adb or the device printed is quoted only as a short, printable :func:`excerpt`.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from typing import Optional, Sequence

from blazepose_tf.errors import UserError

EXIT_DEVICE = 6      # adb missing or failing, no/several/unauthorized/offline device, push failed
EXIT_BENCHMARK = 7   # benchmark binary unusable (wrong ABI, not executable), crashed, or output not parseable
EXCERPT_CHARS = 120  # longest quote of adb's or the device's output in a message


class DeviceError(UserError):
    """adb or the device is not usable."""

    exit_code = EXIT_DEVICE


class BenchmarkError(UserError):
    """The benchmark binary could not run on the device, crashed, or printed nothing parseable."""

    exit_code = EXIT_BENCHMARK


@dataclass
class DeviceEntry:
    """One line of ``adb devices``."""

    serial: str
    state: str


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """``text`` made safe to quote in a one-line message: whitespace runs (newlines included) become one space,
    other non-printable characters are escaped (``\\x00``, ``\\x1b``, ...), and it is cut to ``limit``
    characters, the last one "…"."""
    flat = " ".join(text.split())
    safe = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in flat)
    return safe if len(safe) <= limit else safe[:limit - 1] + "…"


def _last_line(text: str) -> str:
    """An :func:`excerpt` of the last non-empty line of adb's output (its daemon start-up notes skipped)."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip() and not ln.startswith("* daemon")]
    return excerpt(lines[-1]) if lines else "no output"


class Adb:
    """Runs adb commands (``-s SERIAL`` once a device is selected) with a timeout.

    Args:
        executable: adb binary name or path.
        timeout: seconds any single adb call may take (benchmark runs pass their own).
    """

    def __init__(self, executable: str = "adb", timeout: float = 60.0):
        path = shutil.which(executable)
        if path is None:
            where = "is not an executable file" if os.sep in executable else "is not on PATH"
            raise DeviceError(f"adb not found ({executable!r} {where}): install Android's platform-tools or "
                              "Debian's adb package (apt-get install adb), or pass --adb PATH")
        self.path = path
        self.timeout = timeout
        self.serial: Optional[str] = None

    def run(self, args: Sequence[str], timeout: Optional[float] = None, device: bool = True,
            what: Optional[str] = None) -> subprocess.CompletedProcess:
        """Runs ``adb [-s SERIAL] ARGS``; output is decoded as text (undecodable bytes as ``\\xNN``)."""
        cmd = [self.path] + (["-s", self.serial] if device and self.serial else []) + list(args)
        limit = self.timeout if timeout is None else timeout
        what = what or f"adb {' '.join(args)}"[:80]
        try:
            return subprocess.run(cmd, capture_output=True, text=True, errors="backslashreplace", timeout=limit,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise DeviceError(f"`{what}` did not finish within {limit:g} s (adb server or device stuck? try "
                              "`adb kill-server`, reconnect the device, or raise the timeout)") from None
        except OSError as e:
            raise DeviceError(f"cannot run adb ({self.path}): {e.strerror or e}") from None

    def devices(self) -> list[DeviceEntry]:
        """Parses ``adb devices`` (starting the adb server if needed); serials and states as :func:`excerpt` s."""
        proc = self.run(["devices"], device=False, what="adb devices")
        if proc.returncode != 0:
            raise DeviceError(f"`adb devices` failed (exit code {proc.returncode}): "
                              f"{_last_line(proc.stderr + proc.stdout)}")
        entries = []
        for line in proc.stdout.splitlines():
            line = line.strip()
            if not line or line.startswith("List of devices") or line.startswith("*"):
                continue
            parts = line.split(None, 1)
            state = parts[1].split()[0] if len(parts) > 1 else "unknown"
            if parts[1:] and parts[1].startswith("no permissions"):
                state = "no permissions"
            entries.append(DeviceEntry(excerpt(parts[0]), excerpt(state)))
        return entries

    def select(self, serial: Optional[str] = None) -> str:
        """Picks the device to use: ``serial``, or the only one connected. Raises :class:`DeviceError`."""
        entries = self.devices()
        listing = excerpt(", ".join(f"{e.serial} ({e.state})" for e in entries))
        if serial:
            match = [e for e in entries if e.serial == serial]
            if not match:
                raise DeviceError(f"device {serial!r} not found; adb lists: {listing or 'no device'}")
            entry = match[0]
        elif not entries:
            raise DeviceError("no Android device found (`adb devices` lists none): connect a phone with USB "
                              "debugging enabled, or start an emulator")
        elif len(entries) > 1:
            raise DeviceError(f"several devices connected: {listing}; choose one with --serial")
        else:
            entry = entries[0]
        if entry.state == "unauthorized":
            raise DeviceError(f"device {entry.serial} is unauthorized: unlock it and accept the 'Allow USB "
                              "debugging?' prompt, then retry")
        if entry.state == "offline":
            raise DeviceError(f"device {entry.serial} is offline: reconnect it (or run `adb kill-server`) and retry")
        if entry.state != "device":
            raise DeviceError(f"device {entry.serial} is not ready (state {entry.state!r})")
        self.serial = entry.serial
        return entry.serial

    def shell(self, command: Sequence[str], timeout: Optional[float] = None, what: Optional[str] = None
              ) -> subprocess.CompletedProcess:
        """Runs a command on the device (arguments shell-quoted); exit status is the remote one (adb ≥ 1.0.36)."""
        return self.run(["shell", " ".join(shlex.quote(str(c)) for c in command)], timeout=timeout,
                        what=what or "adb shell " + " ".join(command)[:60])

    def getprop(self, name: str) -> str:
        """A system property as an :func:`excerpt` ('' if unset)."""
        proc = self.shell(["getprop", name])
        if proc.returncode != 0:
            raise DeviceError(f"cannot read {name} from device {self.serial}: {_last_line(proc.stderr + proc.stdout)}")
        return excerpt(proc.stdout.strip())

    def push(self, local: str | os.PathLike, remote: str) -> None:
        """Copies a file to the device."""
        proc = self.run(["push", str(local), remote], what=f"adb push {os.path.basename(str(local))}")
        if proc.returncode != 0:
            raise DeviceError(f"adb push {local} -> {remote} failed: {_last_line(proc.stderr + proc.stdout)}")

    def remove(self, paths: Sequence[str]) -> None:
        """Deletes files on the device (best effort: errors are ignored)."""
        if paths:
            try:
                self.shell(["rm", "-f", *paths], what="adb shell rm")
            except DeviceError:
                pass
