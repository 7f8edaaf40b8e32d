"""Loading an x86_64 capture kernel with kexec_load(2), where userspace builds every segment.

kexec_file_load (kdumpy.arm.kexec) lets the kernel place the image and write the ELF core header,
always as ELF64. kexec_load(entry, nr_segments, segments, flags) takes the memory image instead, so
the header's class is ours to choose: the capture kernel's /proc/vmcore keeps the class of the header
it finds at `elfcorehdr=` (fs/proc/vmcore.c: parse_crash_elf32_headers / parse_crash_elf64_headers).
That is what `kexec -p --elf32-core-headers` did before kexec_file_load, and the only way to get a
kernel-made ELF32 /proc/vmcore on x86_64 with Debian's kexec-tools, which ignores that option there.
The command line is `kdumpy load --elf32-core-headers` (kdumpy.cli.arm), which calls load_elf32 with
the capture kernel, initrd and command line `kdumpy load` would use.

Segments, all page aligned and inside the crashkernel region (kernel/kexec.c checks both):
  kernel      the bzImage's protected-mode part at a kernel_alignment boundary, memsz = init_size
              (the decompressor works in place within that buffer)
  initrd      the initramfs, as is
  zero page   struct boot_params (arch/x86/include/uapi/asm/bootparam.h): the image's setup header,
              command line and initrd pointers, and the e820 map the capture kernel may use
  cmdline     the capture command line plus `elfcorehdr=0x<addr>`
  purgatory   a few bytes of our own machine code: GDT, segments, %rsi = zero page, jump to the
              64-bit entry (startup_64, 0x200 past the protected-mode start)
  elfcorehdr  ELF header, one PT_NOTE per CPU (crash_notes), one for VMCOREINFO, for ELF64 the
              kernel-text PT_LOAD, one PT_LOAD per "System RAM" range of /proc/iomem outside the
              crashkernel regions and the low 1 MiB; at the top of the region, and left out of the
              capture kernel's e820 RAM so nothing overwrites it

The model is what the kernel's own kexec_file_load does for a crash kernel (arch/x86/kernel/crash.c
crash_setup_memmap_entries and prepare_elf_headers, arch/x86/kernel/kexec-bzimage64.c,
arch/x86/purgatory/entry64.S); no code of the kernel or of kexec-tools is used. docs/kexec-load.md
has the boot-state facts this relies on.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdumpy.arm import kexec
from kdumpy.arm.checks import lockdown
from kdumpy.arm.crashkernel import iomem_entries, reservation
from kdumpy.arm.root import Root
from kdumpy.errors import KdumpyError, UsageError
from kdumpy.formats.elf import EM_X86_64, PF_RWX, PT_LOAD, PT_NOTE, ElfCore, ProgramHeader, pack_headers

__all__ = [
    "E820_ACPI",
    "E820_NVS",
    "E820_RAM",
    "E820_RESERVED",
    "KEXEC_ARCH_X86_64",
    "KEXEC_ON_CRASH",
    "SYSCALL_NR",
    "E820Entry",
    "ElfNote",
    "LegacyLoadError",
    "LoadPlan",
    "RamRange",
    "Segment",
    "SetupHeader",
    "boot_params",
    "build_plan",
    "capture_e820",
    "elfcorehdr",
    "kexec_load",
    "load_elf32",
    "load_legacy",
    "purgatory",
    "read_setup_header",
    "refusal",
]

SYSCALL_NR = 246
"""kexec_load on x86_64 (arch/x86/entry/syscalls/syscall_64.tbl)."""
KEXEC_ON_CRASH = 0x1
KEXEC_ARCH_X86_64 = 62 << 16
"""KEXEC_ARCH_X86_64 is EM_X86_64 << 16 (include/uapi/linux/kexec.h)."""
KEXEC_SEGMENT_MAX = 16

PAGE = 4096
SZ_1M = 1 << 20
SZ_4G = 1 << 32

# e820 types (arch/x86/include/asm/e820/types.h) and the names /sys/firmware/memmap gives them
# (e820_type_to_string in arch/x86/kernel/e820.c; anything unknown there reads "Reserved").
E820_RAM = 1
E820_RESERVED = 2
E820_ACPI = 3
E820_NVS = 4
E820_UNUSABLE = 5
E820_PMEM = 7
E820_PRAM = 12
E820_SOFT_RESERVED = 0xEFFFFFFF
_MEMMAP_TYPES = {
    "System RAM": E820_RAM,
    "Reserved": E820_RESERVED,
    "reserved": E820_RESERVED,
    "ACPI Tables": E820_ACPI,
    "ACPI Non-volatile Storage": E820_NVS,
    "Unusable memory": E820_UNUSABLE,
    "Persistent Memory": E820_PMEM,
    "Persistent Memory (legacy)": E820_PRAM,
    "Soft Reserved": E820_SOFT_RESERVED,
}
E820_MAX_ENTRIES_ZEROPAGE = 128

# The 64-bit boot protocol's selectors (Documentation/arch/x86/boot.rst, "64-bit Boot Protocol").
BOOT_CS = 0x10
BOOT_DS = 0x18

# Where the ELF32/ELF64 p_vaddr of RAM comes from when /proc/kcore does not say: the x86_64 direct
# map base without KASLR, 4-level paging (arch/x86/include/asm/page_64_types.h __PAGE_OFFSET_BASE_L4).
DEFAULT_PAGE_OFFSET = 0xFFFF888000000000
START_KERNEL_MAP = 0xFFFFFFFF80000000

# sizeof(note_buf_t) of x86_64 (include/linux/crash_core.h CRASH_CORE_NOTE_BYTES): two Elf_Nhdr,
# "CORE" padded to 8, and struct elf_prstatus (336 bytes); used when crash_notes_size is absent.
NOTE_BUF_BYTES_X86_64 = 12 * 2 + 8 + 336

LOADER_TYPE_UNDEFINED = 0xFF
"""type_of_loader 0xFF: "special, undefined" (boot.rst); 0x0D would claim to be kexec-tools."""

# Offsets in struct boot_params (the zero page).
_BP_ACPI_RSDP = 0x070
_BP_EXT_RAMDISK_IMAGE = 0x0C0
_BP_EXT_RAMDISK_SIZE = 0x0C4
_BP_EXT_CMD_LINE_PTR = 0x0C8
_BP_E820_ENTRIES = 0x1E8
_BP_HDR = 0x1F1
_BP_E820_TABLE = 0x2D0
# Offsets of setup_header fields, counted from the start of the image (and of the zero page).
_HDR_TYPE_OF_LOADER = 0x210
_HDR_RAMDISK_IMAGE = 0x218
_HDR_RAMDISK_SIZE = 0x21C
_HDR_CMD_LINE_PTR = 0x228
_BOOT_E820_ENTRY = struct.Struct("<QQI")  # struct boot_e820_entry (packed, 20 bytes)



class LegacyLoadError(kexec.KexecError):
    """The capture kernel could not be laid out or loaded with kexec_load."""


# --- the image --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SetupHeader:
    """The bzImage fields a 64-bit loader needs (struct setup_header at 0x1f1)."""

    setup_sects: int
    """512-byte sectors of real-mode setup after the boot sector (0 means 4)."""
    protocol: tuple[int, int]
    loadflags: int
    initrd_addr_max: int
    """Highest address the initrd may end at, when ext_ramdisk_image cannot be used."""
    kernel_alignment: int
    relocatable: bool
    xloadflags: int
    cmdline_size: int
    pref_address: int
    """The preferred (and, for a relocatable kernel, lowest useful) load address."""
    init_size: int
    """Bytes from the load address the kernel needs before it can set up its own memory map."""
    header: bytes
    """The setup header's bytes as in the file: 0x1f1 up to the end the jump at 0x200 gives."""
    payload_offset: int
    """File offset of the protected-mode kernel: (setup_sects + 1) * 512."""

    @property
    def loads_64bit(self) -> bool:
        """XLF_KERNEL_64: the image has the 64-bit entry at protected-mode start + 0x200."""
        return bool(self.xloadflags & 0x1)


def read_setup_header(data: bytes, name: str = "the kernel") -> SetupHeader:
    """The setup header of a bzImage held in `data`. Raises LegacyLoadError when it is not a
    64-bit, relocatable bzImage of boot protocol 2.12 or later."""
    if len(data) < 0x270 or data[0x202:0x206] != b"HdrS":
        raise LegacyLoadError(f"{name} is not a bzImage (no HdrS setup header)")
    (version,) = struct.unpack_from("<H", data, 0x206)
    protocol = (version >> 8, version & 0xFF)
    if version < 0x20C:
        raise LegacyLoadError(f"{name} has boot protocol {protocol[0]}.{protocol[1]}; kexec_load needs 2.12+")
    # The 2-byte jump at 0x200 skips the header: its end is 0x202 + the jump's 8-bit displacement.
    end = 0x202 + data[0x201]
    setup_sects = data[0x1F1] or 4
    hdr = SetupHeader(
        setup_sects=setup_sects,
        protocol=protocol,
        loadflags=data[0x211],
        initrd_addr_max=struct.unpack_from("<I", data, 0x22C)[0],
        kernel_alignment=struct.unpack_from("<I", data, 0x230)[0],
        relocatable=bool(data[0x234]),
        xloadflags=struct.unpack_from("<H", data, 0x236)[0],
        cmdline_size=struct.unpack_from("<I", data, 0x238)[0],
        pref_address=struct.unpack_from("<Q", data, 0x258)[0],
        init_size=struct.unpack_from("<I", data, 0x260)[0],
        header=bytes(data[_BP_HDR:end]),
        payload_offset=(setup_sects + 1) * 512,
    )
    if not hdr.loads_64bit:
        raise LegacyLoadError(f"{name} has no 64-bit entry point (xloadflags {hdr.xloadflags:#x})")
    if not hdr.relocatable:
        raise LegacyLoadError(f"{name} is not relocatable; a capture kernel must run in the crash region")
    if hdr.kernel_alignment == 0 or hdr.kernel_alignment & (hdr.kernel_alignment - 1):
        raise LegacyLoadError(f"{name} has an invalid kernel_alignment {hdr.kernel_alignment:#x}")
    if hdr.payload_offset >= len(data):
        raise LegacyLoadError(f"{name} ends inside its real-mode setup ({setup_sects} sectors)")
    return hdr


# --- memory of the running system -------------------------------------------------------------


@dataclass(frozen=True)
class RamRange:
    """A physical range [start, end) (end exclusive)."""

    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class E820Entry:
    """One struct boot_e820_entry of the capture kernel's memory map."""

    addr: int
    size: int
    type: int


@dataclass(frozen=True)
class ElfNote:
    """A PT_NOTE of the ELF core header: note data in the crashed kernel's memory."""

    paddr: int
    size: int
    what: str
    """"cpu N" or "vmcoreinfo"."""


def _iomem(root: Root) -> list[tuple[int, int, int, str]]:
    """(depth, start, end exclusive, name) of every /proc/iomem line."""
    text = root.read("/proc/iomem")
    if text is None:
        raise LegacyLoadError("cannot read /proc/iomem")
    out = [(d, s, e + 1, n) for d, s, e, n in iomem_entries(text)]
    if out and all(s == 0 and e == 1 for _d, s, e, _n in out):
        raise LegacyLoadError("/proc/iomem shows zero addresses: loading needs root")
    return out


def _crash_regions(root: Root) -> tuple[RamRange, list[RamRange]]:
    """The crashkernel region segments must go to (crashk_res), and every "Crash kernel" range
    (crashk_res and crashk_low_res, whose size kexec_crash_size does not count)."""
    res = reservation(root)
    regions = [RamRange(s, e + 1) for s, e in res.regions]
    if not regions or res.size == 0:
        raise LegacyLoadError(
            "no crashkernel reservation (/sys/kernel/kexec_crash_size is 0 or /proc/iomem has no "
            '"Crash kernel"); set one with `kdumpy crashkernel --set ...` and reboot'
        )
    main = next((r for r in regions if r.size == res.size), max(regions, key=lambda r: r.size))
    return main, regions


def _system_ram(root: Root) -> list[RamRange]:
    """Top-level "System RAM" ranges of /proc/iomem (what prepare_elf_headers walks)."""
    return [RamRange(s, e) for d, s, e, n in _iomem(root) if d == 0 and n == "System RAM"]


def _subtract(ranges: Sequence[RamRange], holes: Sequence[RamRange]) -> list[RamRange]:
    out = list(ranges)
    for h in holes:
        nxt = []
        for r in out:
            if h.end <= r.start or h.start >= r.end:
                nxt.append(r)
                continue
            if r.start < h.start:
                nxt.append(RamRange(r.start, h.start))
            if h.end < r.end:
                nxt.append(RamRange(h.end, r.end))
        out = nxt
    return sorted(out, key=lambda r: r.start)


def _firmware_memmap(root: Root) -> list[E820Entry]:
    """The firmware's e820 map, from /sys/firmware/memmap/N/{start,end,type}."""
    base = root.path("/sys/firmware/memmap")
    if not base.is_dir():
        raise LegacyLoadError("no /sys/firmware/memmap: the capture kernel's e820 map cannot be built")
    out = []
    for d in base.iterdir():
        try:
            start = int((d / "start").read_text(), 16)
            end = int((d / "end").read_text(), 16) + 1
            name = (d / "type").read_text().strip()
        except (OSError, ValueError):
            continue
        out.append(E820Entry(start, end - start, _MEMMAP_TYPES.get(name, E820_RESERVED)))
    return sorted(out, key=lambda e: e.addr)


def capture_e820(root: Root, usable: Sequence[RamRange]) -> list[E820Entry]:
    """The capture kernel's memory map, as crash_setup_memmap_entries (arch/x86/kernel/crash.c) makes
    it: firmware RAM below 1 MiB (the real-mode trampoline needs some), every non-RAM firmware range
    with its type (reserved, ACPI tables and NVS, so ACPI is found), and `usable` as RAM."""
    out = []
    for e in _firmware_memmap(root):
        if e.type == E820_RAM:
            end = min(e.addr + e.size, SZ_1M)
            if end > e.addr:
                out.append(E820Entry(e.addr, end - e.addr, E820_RAM))
        else:
            out.append(e)
    out += [E820Entry(r.start, r.size, E820_RAM) for r in usable if r.size > 0]
    out.sort(key=lambda e: e.addr)
    if len(out) > E820_MAX_ENTRIES_ZEROPAGE:
        raise LegacyLoadError(
            f"the capture kernel's memory map has {len(out)} entries; the zero page holds "
            f"{E820_MAX_ENTRIES_ZEROPAGE}"
        )
    return out


def _cpu_notes(root: Root) -> list[ElfNote]:
    """crash_notes of each CPU: /sys/devices/system/cpu/cpuN/crash_notes (hex physical address) and
    crash_notes_size (bytes: sizeof(note_buf_t); absent before 4.? kernels)."""
    base = root.path("/sys/devices/system/cpu")
    cpus = []
    for d in base.glob("cpu[0-9]*"):
        if d.name[3:].isdigit() and (d / "crash_notes").exists():
            cpus.append(int(d.name[3:]))
    out = []
    for n in sorted(cpus):
        text = root.read(f"/sys/devices/system/cpu/cpu{n}/crash_notes") or ""
        try:
            addr = int(text.split()[0], 16)  # printed with %llx, without 0x
        except (ValueError, IndexError):
            continue
        size = root.read_int(f"/sys/devices/system/cpu/cpu{n}/crash_notes_size") or NOTE_BUF_BYTES_X86_64
        out.append(ElfNote(addr, size, f"cpu {n}"))
    if not out:
        raise LegacyLoadError("no /sys/devices/system/cpu/cpu*/crash_notes: is CONFIG_CRASH_DUMP set?")
    return out


def _vmcoreinfo_note(root: Root) -> ElfNote:
    """/sys/kernel/vmcoreinfo: "<hex address> <hex size>" of the VMCOREINFO note."""
    text = root.read("/sys/kernel/vmcoreinfo")
    try:
        addr, size = (int(w, 16) for w in (text or "").split()[:2])
    except ValueError:
        raise LegacyLoadError("cannot read /sys/kernel/vmcoreinfo (address and size of VMCOREINFO)") from None
    return ElfNote(addr, size, "vmcoreinfo")


def _kcore_layout(root: Root) -> tuple[int, RamRange | None, int]:
    """(page_offset, kernel text range, text vaddr) from /proc/kcore's program headers: a KCORE_RAM
    load has p_vaddr = __va(p_paddr), the KCORE_TEXT one covers _text.._end. Without /proc/kcore
    the non-KASLR direct map base is assumed and no text load is given."""
    page_offset, text, text_vaddr = DEFAULT_PAGE_OFFSET, None, 0
    try:
        with root.path("/proc/kcore").open("rb") as f:
            kcore = ElfCore(f, os.fstat(f.fileno()).st_size)
    except (OSError, KdumpyError):
        return page_offset, None, 0
    if kcore.elf_class != 64:
        return page_offset, None, 0
    found_ram = False
    for p in kcore.loads:
        if p.paddr in (0, 0xFFFFFFFFFFFFFFFF):
            continue
        if p.vaddr >= START_KERNEL_MAP and text is None and p.vaddr < 0xFFFFFFFFC0000000:
            text, text_vaddr = RamRange(p.paddr, p.paddr + p.memsz), p.vaddr
        elif 0xFFFF800000000000 <= p.vaddr < START_KERNEL_MAP and not found_ram:
            page_offset, found_ram = p.vaddr - p.paddr, True
    return page_offset, text, text_vaddr


# --- the pieces -------------------------------------------------------------------------------


def elfcorehdr(
    elf_class: int,
    notes: Sequence[ElfNote],
    ram: Sequence[RamRange],
    *,
    page_offset: int = DEFAULT_PAGE_OFFSET,
    kernel_text: tuple[int, RamRange] | None = None,
) -> bytes:
    """The ELF core header the capture kernel reads at elfcorehdr=: ELF header, the PT_NOTEs, then
    the kernel text load (if given, as (vaddr, range)) and one PT_LOAD per RAM range.

    p_offset = p_paddr = the physical address (fs/proc/vmcore.c reads both notes and loads there).
    ELF32 keeps the low 32 bits of p_vaddr, as kexec-tools' --elf32-core-headers does, and refuses
    anything physical above 4 GiB.
    """
    if elf_class not in (32, 64):
        raise ValueError(f"elf_class must be 32 or 64, not {elf_class}")
    limit = 1 << elf_class
    rows: list[tuple[int, int, int, int, int]] = []  # type, flags, paddr, vaddr, size
    for n in notes:
        rows.append((PT_NOTE, 0, n.paddr, 0, n.size))
    if kernel_text is not None:
        vaddr, r = kernel_text
        rows.append((PT_LOAD, PF_RWX, r.start, vaddr, r.size))
    for r in ram:
        rows.append((PT_LOAD, PF_RWX, r.start, page_offset + r.start, r.size))
    phdrs = []
    for p_type, flags, paddr, vaddr, size in rows:
        if paddr + size > limit:
            raise LegacyLoadError(
                f"ELF{elf_class} cannot describe physical {paddr:#x}-{paddr + size - 1:#x} (above 4 GiB); "
                "use ELF64 core headers on this machine"
            )
        vaddr &= limit - 1  # ELF32: low 32 bits (kexec-tools does the same); ELF64: unchanged
        # p_offset = p_paddr: vmcore.c reads the notes and loads of an elfcorehdr at their physical address.
        phdrs.append(ProgramHeader(p_type, flags, paddr, vaddr, paddr, size, size, 0))
    return pack_headers(elf_class, EM_X86_64, phdrs)


def purgatory(base: int, boot_params_addr: int, entry: int) -> bytes:
    """The code run after relocate_kernel (arch/x86/kernel/relocate_kernel_64.S) jumps to the image's
    start: long mode, identity-mapped page tables, interrupts off, but the GDT and IDT of the old
    kernel invalidated (machine_kexec). The 64-bit boot protocol (boot.rst) wants a GDT with flat
    __BOOT_CS (0x10) and __BOOT_DS (0x18), CS/DS/ES/SS loaded from it and %rsi = the zero page.

    One page at physical `base`: code at 0, the GDT pointer at 0x80, the GDT at 0x100, a stack that
    grows down from the end of the page (used by lretq only).
    """
    gdtr, gdt = 0x80, 0x100
    code = bytearray()
    code += b"\xfa"  # cli
    code += b"\x0f\x01\x15" + struct.pack("<i", gdtr - (len(code) + 7))  # lgdt [rip+disp32]
    code += b"\x48\x8d\x25" + struct.pack("<i", PAGE - (len(code) + 7))  # lea rsp, [rip+disp32]
    code += b"\xb8" + struct.pack("<I", BOOT_DS)  # mov eax, __BOOT_DS
    code += b"\x8e\xd8\x8e\xc0\x8e\xd0\x8e\xe0\x8e\xe8"  # mov ds/es/ss/fs/gs, eax
    code += b"\x6a" + bytes([BOOT_CS])  # push __BOOT_CS
    after = len(code) + 7 + 1 + 2  # the lea, push rax and lretq below
    code += b"\x48\x8d\x05" + struct.pack("<i", after - (len(code) + 7))  # lea rax, [rip+disp32]
    code += b"\x50"  # push rax
    code += b"\x48\xcb"  # lretq: CS = __BOOT_CS, RIP = next instruction
    code += b"\x48\xbe" + struct.pack("<Q", boot_params_addr)  # movabs rsi, zero page
    code += b"\x48\xb8" + struct.pack("<Q", entry)  # movabs rax, startup_64
    code += b"\xff\xe0"  # jmp rax
    assert len(code) <= gdtr
    page = bytearray(gdt + 4 * 8)
    page[: len(code)] = code
    struct.pack_into("<HQ", page, gdtr, 4 * 8 - 1, base + gdt)  # limit, base of the GDT
    # Null, unused, __BOOT_CS: 64-bit code (L=1, P, DPL 0, execute/read), __BOOT_DS: flat 4G data.
    struct.pack_into("<QQQQ", page, gdt, 0, 0, 0x00AF9A000000FFFF, 0x00CF92000000FFFF)
    return bytes(page)


def boot_params(
    setup: SetupHeader,
    *,
    cmdline_addr: int,
    initrd_addr: int,
    initrd_size: int,
    e820: Sequence[E820Entry],
    acpi_rsdp: int = 0,
) -> bytes:
    """The zero page: a clean struct boot_params (so the sentinel at 0x1ef stays 0) holding the
    image's setup header, with the fields a boot loader fills in (boot.rst, "the real-mode kernel
    header" and "64-bit boot protocol")."""
    bp = bytearray(PAGE)
    bp[_BP_HDR : _BP_HDR + len(setup.header)] = setup.header
    bp[_HDR_TYPE_OF_LOADER] = LOADER_TYPE_UNDEFINED
    struct.pack_into("<I", bp, _HDR_CMD_LINE_PTR, cmdline_addr & 0xFFFFFFFF)
    struct.pack_into("<I", bp, _BP_EXT_CMD_LINE_PTR, cmdline_addr >> 32)
    struct.pack_into("<II", bp, _HDR_RAMDISK_IMAGE, initrd_addr & 0xFFFFFFFF, initrd_size & 0xFFFFFFFF)
    struct.pack_into("<I", bp, _BP_EXT_RAMDISK_IMAGE, initrd_addr >> 32)
    struct.pack_into("<I", bp, _BP_EXT_RAMDISK_SIZE, initrd_size >> 32)
    if setup.protocol >= (2, 14):
        struct.pack_into("<Q", bp, _BP_ACPI_RSDP, acpi_rsdp)
    bp[_BP_E820_ENTRIES] = len(e820)
    for i, e in enumerate(e820):
        _BOOT_E820_ENTRY.pack_into(bp, _BP_E820_TABLE + i * _BOOT_E820_ENTRY.size, e.addr, e.size, e.type)
    return bytes(bp)


# --- the plan ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """One struct kexec_segment: `data` copied to physical `mem`, zero-filled up to `memsz`."""

    what: str
    mem: int
    memsz: int
    data: bytes

    def as_dict(self) -> dict[str, Any]:
        return {"what": self.what, "mem": self.mem, "memsz": self.memsz, "bufsz": len(self.data)}


@dataclass(frozen=True)
class LoadPlan:
    """Everything kexec_load gets, and what it was made from."""

    entry: int
    """The purgatory's physical address (kexec_load's entry)."""
    segments: tuple[Segment, ...]
    cmdline: str
    """The capture kernel's command line, elfcorehdr= included."""
    elf_class: int
    crash: RamRange
    e820: tuple[E820Entry, ...]
    notes: tuple[ElfNote, ...]
    ram: tuple[RamRange, ...]
    """The PT_LOAD ranges of the ELF core header."""
    elfcorehdr_addr: int
    kernel_entry: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "entry": self.entry,
            "kernel_entry": self.kernel_entry,
            "elf_class": self.elf_class,
            "elfcorehdr": self.elfcorehdr_addr,
            "crash": [self.crash.start, self.crash.end],
            "cmdline": self.cmdline,
            "segments": [s.as_dict() for s in self.segments],
            "e820": [[e.addr, e.size, e.type] for e in self.e820],
            "notes": [[n.paddr, n.size, n.what] for n in self.notes],
            "ram": [[r.start, r.end] for r in self.ram],
        }


def _up(n: int, align: int) -> int:
    return -(-n // align) * align


def _acpi_rsdp(root: Root) -> int:
    """acpi_rsdp_addr of the running kernel's own zero page (/sys/kernel/boot_params/data), which
    kexec_file_load passes on too; 0 lets the capture kernel scan for the RSDP as usual."""
    data = root.read_bytes("/sys/kernel/boot_params/data")
    if data is None or len(data) < _BP_ACPI_RSDP + 8:
        return 0
    value: int = struct.unpack_from("<Q", data, _BP_ACPI_RSDP)[0]
    return value


def build_plan(
    root: Root,
    kernel: Path,
    initrd: Path | None,
    cmdline: str,
    *,
    elf_class: int = 32,
    kernel_text: bool | None = None,
) -> LoadPlan:
    """Lay the capture kernel out in the crashkernel region, reading the running system under `root`
    (nothing is loaded). `kernel_text` adds the kernel-text PT_LOAD kexec_file_load writes (default:
    for ELF64 only, since ELF32 cannot hold its virtual address)."""
    if elf_class not in (32, 64):
        raise UsageError(f"the ELF class of the core headers must be 32 or 64, not {elf_class}")
    if root.machine() != "x86_64":
        raise LegacyLoadError(f"kdumpy's kexec_load loader is for x86_64, not {root.machine()}")
    crash, crash_all = _crash_regions(root)
    kpath = root.path(kernel)
    try:
        image = kpath.read_bytes()
    except OSError as e:
        raise LegacyLoadError(f"cannot read the capture kernel {kernel}: {e.strerror}") from e
    setup = read_setup_header(image, str(kernel))
    payload = image[setup.payload_offset :]
    rd = b""
    if initrd is not None:
        try:
            rd = root.path(initrd).read_bytes()
        except OSError as e:
            raise LegacyLoadError(f"cannot read the capture initrd {initrd}: {e.strerror}") from e

    notes = [*_cpu_notes(root), _vmcoreinfo_note(root)]
    # The low 1 MiB is left out as kexec_file_load does (crash.c prepare_elf_headers): the first kernel
    # reserved it at boot, and the capture kernel uses it (real-mode trampoline), so it is not evidence.
    ram = _subtract(_system_ram(root), [*crash_all, RamRange(0, SZ_1M)])
    if not ram:
        raise LegacyLoadError("/proc/iomem lists no System RAM outside the crashkernel region")
    page_offset, text, text_vaddr = _kcore_layout(root)
    if kernel_text is None:
        kernel_text = elf_class == 64
    text_load = (text_vaddr, text) if kernel_text and text is not None else None

    # The ELF core header goes at the top of the region, so the capture kernel's RAM is one range.
    hdr_size = len(elfcorehdr(elf_class, notes, ram, page_offset=page_offset, kernel_text=text_load))
    hdr_addr = (crash.end - _up(hdr_size, PAGE)) // PAGE * PAGE

    # The decompressor runs from the load address rounded up to kernel_alignment, and not below
    # pref_address (LOAD_PHYSICAL_ADDR) for a relocatable kernel; it needs init_size from there.
    kaddr = _up(max(crash.start, setup.pref_address), setup.kernel_alignment)
    kmemsz = _up(max(setup.init_size, len(payload)), PAGE)
    cursor = kaddr + kmemsz
    iaddr = cursor
    cursor += _up(len(rd), PAGE)
    bp_addr = cursor
    cursor += PAGE
    cl_addr = cursor
    full = f"{cmdline} elfcorehdr={hdr_addr:#x}".strip()
    cl = full.encode() + b"\0"
    if len(cl) - 1 > setup.cmdline_size:
        raise LegacyLoadError(
            f"the capture command line is {len(cl) - 1} bytes with elfcorehdr=; {kernel.name} takes "
            f"{setup.cmdline_size}"
        )
    cursor += _up(len(cl), PAGE)
    pg_addr = cursor
    cursor += PAGE
    if cursor > hdr_addr:
        need = cursor - crash.start + _up(hdr_size, PAGE)
        raise LegacyLoadError(
            f"the crashkernel region ({crash.size >> 20} MiB at {crash.start:#x}) is too small: "
            f"{kernel.name} (init_size {setup.init_size >> 20} MiB), the initrd ({len(rd) >> 20} MiB) and "
            f"the boot data need {need >> 20} MiB from there"
        )
    if rd and iaddr + len(rd) - 1 > setup.initrd_addr_max and not setup.xloadflags & 0x2:
        raise LegacyLoadError(
            f"the initrd would end at {iaddr + len(rd):#x}, above initrd_addr_max {setup.initrd_addr_max:#x}"
        )

    # The capture kernel's RAM: the crash region less the ELF core header (crash.c excludes it the
    # same way), plus any other "Crash kernel" range (crashk_low_res).
    usable = _subtract([crash], [RamRange(hdr_addr, crash.end)])
    usable += [r for r in crash_all if r != crash]
    e820 = capture_e820(root, usable)
    entry = kaddr + 0x200  # startup_64: protected-mode start + 0x200 (boot.rst, 64-bit boot protocol)
    zero = boot_params(
        setup, cmdline_addr=cl_addr, initrd_addr=iaddr if rd else 0, initrd_size=len(rd),
        e820=e820, acpi_rsdp=_acpi_rsdp(root),
    )  # fmt: skip
    hdr = elfcorehdr(elf_class, notes, ram, page_offset=page_offset, kernel_text=text_load)
    segments = [
        Segment("kernel", kaddr, kmemsz, payload),
        *([Segment("initrd", iaddr, _up(len(rd), PAGE), rd)] if rd else []),
        Segment("boot_params", bp_addr, PAGE, zero),
        Segment("cmdline", cl_addr, _up(len(cl), PAGE), cl),
        Segment("purgatory", pg_addr, PAGE, purgatory(pg_addr, bp_addr, entry)),
        Segment("elfcorehdr", hdr_addr, _up(len(hdr), PAGE), hdr),
    ]
    return LoadPlan(
        entry=pg_addr,
        segments=tuple(segments),
        cmdline=full,
        elf_class=elf_class,
        crash=crash,
        e820=tuple(e820),
        notes=tuple(notes),
        ram=tuple(ram),
        elfcorehdr_addr=hdr_addr,
        kernel_entry=entry,
    )


# --- the syscall ------------------------------------------------------------------------------

# (entry, segments, flags) -> None; raises OSError(errno).
LegacySyscallFn = Callable[[int, Sequence[Segment], int], None]


class _KexecSegment(ctypes.Structure):
    """struct kexec_segment (include/uapi/linux/kexec.h)."""

    _fields_ = [
        ("buf", ctypes.c_void_p),
        ("bufsz", ctypes.c_size_t),
        ("mem", ctypes.c_void_p),
        ("memsz", ctypes.c_size_t),
    ]


def kexec_load(entry: int, segments: Sequence[Segment], flags: int) -> None:
    """The real kexec_load(2). Raises OSError with the kernel's errno."""
    if os.uname().machine != "x86_64":
        raise OSError(errno.ENOSYS, f"kdumpy's kexec_load loader is for x86_64, not {os.uname().machine}")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    bufs = [ctypes.create_string_buffer(s.data, len(s.data)) for s in segments]  # kept alive here
    array = (_KexecSegment * max(len(segments), 1))()
    for i, (s, b) in enumerate(zip(segments, bufs, strict=True)):
        array[i] = _KexecSegment(ctypes.cast(b, ctypes.c_void_p), len(s.data), s.mem, s.memsz)
    ret = libc.syscall(
        ctypes.c_long(SYSCALL_NR),
        ctypes.c_ulong(entry),
        ctypes.c_ulong(len(segments)),
        array if segments else None,
        ctypes.c_ulong(flags),
    )
    if ret != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


_FILE_LOAD = "load with kexec_file_load instead (`kdumpy load` without --elf32-core-headers)"


def _explain(e: OSError, root: Root, plan: LoadPlan) -> str:
    code = e.errno
    name = errno.errorcode.get(code or 0, str(code))
    if code == errno.EADDRNOTAVAIL:
        return (
            f"the kernel refused the segment layout (EADDRNOTAVAIL): a segment lies outside the "
            f"crashkernel region {plan.crash.start:#x}-{plan.crash.end - 1:#x} or is not page aligned"
        )
    if code == errno.EPERM:
        refused = refusal(root)
        if refused:
            return refused
        if root.read_int("/proc/sys/kernel/kexec_load_limit_panic") == 0:
            return "no more crash kernels may be loaded until the next boot (kernel.kexec_load_limit_panic=0)"
        return (
            "not permitted (EPERM): loading a kernel needs root (CAP_SYS_BOOT); as root, a security "
            f"module refused kexec_load: {_FILE_LOAD}"
        )
    if code == errno.EACCES:
        return (
            "refused (EACCES): this kernel wants to verify the image's signature (secure boot with IMA's "
            f"policy), which kexec_load cannot offer; {_FILE_LOAD}"
        )
    if code == errno.EINVAL:
        return "the kernel rejected the segments (EINVAL): too many, overlapping, or bufsz > memsz"
    if code == errno.ENOMEM:
        return "the kernel is out of memory for the segments (ENOMEM)"
    if code == errno.EBUSY:
        return "another kexec load or unload is in progress (EBUSY); try again"
    if code == errno.ENOSYS:
        return "this kernel has no kexec_load (CONFIG_KEXEC is not set)"
    return f"kexec_load failed: {e.strerror or name} ({name})"


def refusal(root: Root) -> str | None:
    """Why the running kernel refuses kexec_load whatever the segments, when that can be read
    beforehand: kexec_load_disabled (which stops kexec_file_load too), and lockdown, which refuses
    kexec_load (LOCKDOWN_KEXEC) but lets kexec_file_load load a signed image. None otherwise."""
    if (root.read_int("/proc/sys/kernel/kexec_load_disabled") or 0) == 1:
        return "kexec loading is disabled until the next boot (kernel.kexec_load_disabled=1)"
    lock = lockdown(root)
    if lock and lock != "none":
        return f"kexec_load is refused under lockdown {lock!r}; {_FILE_LOAD}"
    return None


def _syscall_for(root: Root, syscall: LegacySyscallFn | None) -> LegacySyscallFn:
    if syscall is not None:
        return syscall
    kexec.require_live(root, "kexec_load")
    # Looked up at call time, so a test can replace the module attribute.
    fn: LegacySyscallFn = globals()["kexec_load"]
    return fn


def load_legacy(
    root: Root,
    kernel: Path,
    initrd: Path | None,
    cmdline: str,
    *,
    elf_class: int = 32,
    kernel_text: bool | None = None,
    syscall: LegacySyscallFn | None = None,
) -> kexec.LoadResult:
    """Load `kernel` (host path under `root`) as the capture kernel with kexec_load(2), with ELF core
    headers of `elf_class`; `cmdline` is the capture command line without elfcorehdr=. Records the
    load for `kdumpy status` like kexec.load does. Raises LegacyLoadError (a kexec.KexecError), before
    anything is laid out when refusal() knows the kernel will say no."""
    call = _syscall_for(root, syscall)
    refused = refusal(root)
    if refused:
        raise LegacyLoadError(refused)
    plan = build_plan(root, kernel, initrd, cmdline, elf_class=elf_class, kernel_text=kernel_text)
    if len(plan.segments) > KEXEC_SEGMENT_MAX:
        raise LegacyLoadError(f"{len(plan.segments)} segments; kexec_load takes {KEXEC_SEGMENT_MAX}")
    try:
        call(plan.entry, plan.segments, KEXEC_ON_CRASH | KEXEC_ARCH_X86_64)
    except OSError as e:
        raise LegacyLoadError(_explain(e, root, plan)) from e
    image = kexec.read_bzimage(root.path(kernel))
    result = kexec.LoadResult(
        kernel,
        initrd,
        plan.cmdline,
        image.release if image else "",
        root.read_int("/sys/kernel/kexec_crash_size") or 0,
    )
    record = result.as_dict()
    record.update(loaded_at=int(time.time()), running_release=root.release(), loader="kexec_load",
                  elf_class=elf_class)  # fmt: skip
    with contextlib.suppress(OSError):  # a read-only /run costs only the "which kernel" line of status
        root.write_file(kexec.STATE_FILE, json.dumps(record, indent=2) + "\n", mode=0o644)
    return result


def load_elf32(
    root: Root, kernel: Path, initrd: Path | None, cmdline: str, *, syscall: LegacySyscallFn | None = None
) -> kexec.LoadResult:
    """`kexec -p --elf32-core-headers`: load_legacy with ELF32 core headers. `kdumpy load
    --elf32-core-headers` calls this."""
    return load_legacy(root, kernel, initrd, cmdline, elf_class=32, syscall=syscall)
