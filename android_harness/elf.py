"""The Android ABI an ELF executable is built for, from its header (e_machine), and ABI compatibility."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Sequence

from android_harness.adb import BenchmarkError

ELF_MAGIC = b"\x7fELF"
# e_machine -> Android ABI
MACHINE_ABI = {183: "arm64-v8a", 40: "armeabi-v7a", 62: "x86_64", 3: "x86"}
# ABIs a device listing the key can also run (a 64-bit ARM device lists both in ro.product.cpu.abilist).
ABI_ALIASES = {"armeabi-v7a": ("armeabi-v7a", "armeabi")}


@dataclass
class ElfInfo:
    """What the header says."""

    machine: int
    bits: int
    abi: Optional[str]   # None for a machine Android does not use

    def describe(self) -> str:
        return f"{self.abi or f'e_machine {self.machine}'} ({self.bits}-bit ELF)"


def read_elf(path: str | os.PathLike) -> ElfInfo:
    """Reads the ELF header; raises :class:`BenchmarkError` if the file is not an ELF executable."""
    try:
        with open(path, "rb") as f:
            head = f.read(20)
    except OSError as e:
        raise BenchmarkError(f"cannot read {path}: {e.strerror or e}") from None
    if len(head) < 20 or head[:4] != ELF_MAGIC:
        raise BenchmarkError(f"{path} is not an ELF executable (expected TFLite's benchmark_model built for Android)")
    bits = {1: 32, 2: 64}.get(head[4], 0)
    order = {1: "little", 2: "big"}.get(head[5], "little")
    machine = int.from_bytes(head[18:20], order)
    return ElfInfo(machine=machine, bits=bits, abi=MACHINE_ABI.get(machine))


def abi_compatible(binary_abi: Optional[str], device_abis: Sequence[str]) -> bool:
    """True when a device supporting ``device_abis`` can run a ``binary_abi`` executable."""
    if binary_abi is None:
        return False
    accepted = ABI_ALIASES.get(binary_abi, (binary_abi,))
    return any(a in accepted for a in device_abis)
