"""ELF note records of a crash dump: the note blob, per-CPU NT_PRSTATUS and the VMCOREINFO note.

A note blob is a run of `Elf_Nhdr {u32 namesz, descsz, type}` records, each followed by its name
(with a terminating NUL, counted in namesz) and its descriptor, each padded to 4 bytes. Linux pads to
4 bytes in ELF64 cores too (`append_elf_note()`), so one layout serves both classes. An all-zero
header ends the list (the kernel writes one after each CPU's notes).

Other notes (vmcoredd "LINUX", Xen, QEMU's own) are kept verbatim as `Note` records.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from kdumpy.errors import CorruptDumpError, UnsupportedError

__all__ = [
    "EM_386",
    "EM_X86_64",
    "NT_PRSTATUS",
    "Note",
    "PrStatus",
    "build_notes",
    "cpu_notes",
    "find_vmcoreinfo",
    "parse_notes",
]

NT_PRSTATUS = 1
"""Note type of `struct elf_prstatus` (one per CPU, name "CORE")."""

# ELF e_machine values whose prstatus layout is decoded here (also exported by elf.py).
EM_386 = 3
EM_X86_64 = 62

_NHDR = struct.Struct("<III")  # Elf32_Nhdr == Elf64_Nhdr: namesz, descsz, type
_ALIGN = 4

_CORE = b"CORE"
_VMCOREINFO = b"VMCOREINFO"


def _pad(n: int) -> int:
    return (n + _ALIGN - 1) & ~(_ALIGN - 1)


@dataclass(frozen=True)
class Note:
    """One ELF note."""

    name: bytes
    """Owner name without its terminating NUL, e.g. b"CORE", b"VMCOREINFO"."""
    type: int
    """n_type (NT_PRSTATUS for "CORE" CPU notes, 0 for VMCOREINFO)."""
    desc: bytes
    """The descriptor, without its padding."""
    desc_offset: int = 0
    """Offset of desc within the note blob it was parsed from (0 for notes not parsed from a blob)."""


def _parse_notes(data: bytes, base: int) -> list[Note]:
    """Parse one note blob; `base` is added to every desc_offset (the blob's place in a larger one)."""
    notes: list[Note] = []
    pos = 0
    end = len(data)
    while pos < end:
        if end - pos < _NHDR.size:
            # A header cannot fit: only zero padding may follow the last note.
            if any(data[pos:]):
                raise CorruptDumpError(
                    f"note data: {end - pos} stray bytes at offset {base + pos:#x}, "
                    "too short for a note header"
                )
            break
        namesz, descsz, ntype = _NHDR.unpack_from(data, pos)
        if namesz == 0 and descsz == 0 and ntype == 0:
            break  # the terminator the kernel appends after each CPU's notes
        name_at = pos + _NHDR.size
        desc_at = name_at + _pad(namesz)
        next_at = desc_at + _pad(descsz)
        # Checked before slicing: namesz/descsz are untrusted u32 values.
        if next_at > end:
            raise CorruptDumpError(
                f"note at offset {base + pos:#x} (namesz {namesz}, descsz {descsz}) runs past the end "
                f"of the note data ({base + end:#x})"
            )
        name = data[name_at : name_at + namesz]
        if name.endswith(b"\0"):
            name = name[:-1]
        notes.append(Note(name, ntype, data[desc_at : desc_at + descsz], base + desc_at))
        pos = next_at
    return notes


def parse_notes(data: bytes) -> list[Note]:
    """Parse a note blob (the content of a PT_NOTE segment).

    Stops at an all-zero header or at the end; zero padding after the last note is accepted.
    A note whose name or descriptor runs past the end raises CorruptDumpError.
    """
    return _parse_notes(data, 0)


def build_notes(notes: Sequence[Note]) -> bytes:
    """Serialise notes into a blob: the inverse of `parse_notes`.

    For a kernel-made blob `b`, `build_notes(parse_notes(b))` equals `b` up to the end of its last note:
    the all-zero terminator and any zero padding after it are not written (as in /proc/vmcore, whose
    merged PT_NOTE has none). Padding is written as zeros; names get one terminating NUL.
    """
    out = bytearray()
    for note in notes:
        namesz = len(note.name) + 1 if note.name else 0
        if namesz == 0 and not note.desc and note.type == 0:
            raise ValueError("an empty note of type 0 would read back as the end of the note list")
        out += _NHDR.pack(namesz, len(note.desc), note.type)
        if namesz:
            out += note.name
            out += bytes(_pad(namesz) - len(note.name))
        out += note.desc
        out += bytes(_pad(len(note.desc)) - len(note.desc))
    return bytes(out)


def find_vmcoreinfo(notes: Sequence[Note]) -> Note | None:
    """The first note named "VMCOREINFO" (makedumpfile finds it by name), or None."""
    for note in notes:
        if note.name.rstrip(b"\0") == _VMCOREINFO:
            return note
    return None


def cpu_notes(notes: Sequence[Note]) -> list[Note]:
    """The per-CPU notes (name "CORE", type NT_PRSTATUS), in order; makedumpfile counts CPUs so."""
    return [n for n in notes if n.type == NT_PRSTATUS and n.name.rstrip(b"\0") == _CORE]


# struct elf_prstatus, x86_64 (336 bytes): elf_siginfo {si_signo, si_code, si_errno}, pr_cursig
# (short, padded), pr_sigpend, pr_sighold (unsigned long), pr_pid, pr_ppid, pr_pgrp, pr_sid (pid_t),
# pr_utime, pr_stime, pr_cutime, pr_cstime (struct timeval: two longs), pr_reg (27 u64),
# pr_fpvalid (int, padded).
_PRSTATUS_X86_64 = struct.Struct("<iiih2xQQiiii8q27Qi4x")
# The same struct for i386 (144 bytes): longs are 32-bit and pr_reg is 17 u32.
_PRSTATUS_I386 = struct.Struct("<iiih2xIIiiii8i17Ii")

# pr_reg order: x86_64 struct user_regs_struct / i386 struct user_regs_struct (asm/user_*.h).
_REGS_X86_64 = (
    "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx", "rsi", "rdi",
    "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base", "ds", "es", "fs", "gs",
)  # fmt: skip
_REGS_I386 = (
    "ebx", "ecx", "edx", "esi", "edi", "ebp", "eax", "xds", "xes", "xfs", "xgs",
    "orig_eax", "eip", "xcs", "eflags", "esp", "xss",
)  # fmt: skip

_LAYOUTS: dict[int, tuple[struct.Struct, tuple[str, ...], str]] = {
    EM_X86_64: (_PRSTATUS_X86_64, _REGS_X86_64, "x86_64"),
    EM_386: (_PRSTATUS_I386, _REGS_I386, "i386"),
}


def _layout(machine: int) -> tuple[struct.Struct, tuple[str, ...], str]:
    try:
        return _LAYOUTS[machine]
    except KeyError:
        raise UnsupportedError(
            f"CPU registers (NT_PRSTATUS) of ELF machine {machine} are not decoded; only x86_64 "
            f"(e_machine {EM_X86_64}) and i386 (e_machine {EM_386}) are"
        ) from None


@dataclass(frozen=True)
class PrStatus:
    """A CPU's `struct elf_prstatus`, as the crashing kernel saved it (crash_save_cpu())."""

    pid: int
    """pr_pid: the task running on this CPU at the crash (0 for the idle task)."""
    registers: dict[str, int]
    """pr_reg by the kernel's register names (user_regs_struct), e.g. "rip", "rsp"; unsigned values."""
    signo: int = 0
    """pr_info.si_signo."""
    code: int = 0
    """pr_info.si_code."""
    errno: int = 0
    """pr_info.si_errno."""
    cursig: int = 0
    """pr_cursig: the current signal."""
    sigpend: int = 0
    """pr_sigpend: pending signals mask."""
    sighold: int = 0
    """pr_sighold: blocked signals mask."""
    ppid: int = 0
    """pr_ppid."""
    pgrp: int = 0
    """pr_pgrp."""
    sid: int = 0
    """pr_sid."""
    utime: tuple[int, int] = (0, 0)
    """pr_utime as (seconds, microseconds)."""
    stime: tuple[int, int] = (0, 0)
    """pr_stime as (seconds, microseconds)."""
    cutime: tuple[int, int] = (0, 0)
    """pr_cutime as (seconds, microseconds)."""
    cstime: tuple[int, int] = (0, 0)
    """pr_cstime as (seconds, microseconds)."""
    fpvalid: int = 0
    """pr_fpvalid: nonzero if an NT_PRFPREG note follows."""
    machine: int = field(default=EM_X86_64, compare=False)
    """The ELF e_machine whose layout this was decoded with."""

    @classmethod
    def from_note(cls, note: Note, machine: int) -> PrStatus:
        """Decode an NT_PRSTATUS note of the given ELF machine (EM_X86_64 or EM_386).

        The layout follows the crashed kernel's machine, not the ELF class: an ELF32 vmcore of an
        x86_64 kernel (kexec --elf32-core-headers) still holds 336-byte x86_64 notes.
        """
        layout, names, arch = _layout(machine)
        if len(note.desc) != layout.size:
            raise CorruptDumpError(
                f"NT_PRSTATUS note has {len(note.desc)} bytes, "
                f"an {arch} struct elf_prstatus has {layout.size}"
            )
        v = layout.unpack(note.desc)
        t = v[10:18]
        return cls(
            pid=v[6],
            registers=dict(zip(names, v[18 : 18 + len(names)], strict=True)),
            signo=v[0],
            code=v[1],
            errno=v[2],
            cursig=v[3],
            sigpend=v[4],
            sighold=v[5],
            ppid=v[7],
            pgrp=v[8],
            sid=v[9],
            utime=(t[0], t[1]),
            stime=(t[2], t[3]),
            cutime=(t[4], t[5]),
            cstime=(t[6], t[7]),
            fpvalid=v[18 + len(names)],
            machine=machine,
        )

    def to_desc(self, machine: int | None = None) -> bytes:
        """Encode as the note descriptor of `machine` (default: the one it was decoded with).

        Registers not named are written as 0; an unknown register name raises ValueError.
        """
        layout, names, _ = _layout(self.machine if machine is None else machine)
        unknown = set(self.registers) - set(names)
        if unknown:
            raise ValueError(f"unknown register names for this machine: {sorted(unknown)}")
        return layout.pack(
            self.signo, self.code, self.errno, self.cursig, self.sigpend, self.sighold,
            self.pid, self.ppid, self.pgrp, self.sid,
            *self.utime, *self.stime, *self.cutime, *self.cstime,
            *(self.registers.get(n, 0) for n in names),
            self.fpvalid,
        )  # fmt: skip
