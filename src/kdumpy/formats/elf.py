"""ELF core files (ELF64 and ELF32, little-endian): /proc/vmcore, `makedumpfile -E`, QEMU's dump-guest-memory.

Reader: `ElfCore` reads the ELF header and program headers at open, validating every field against the
file size before it is used, and reads notes and segment data on demand. A PT_LOAD cut short by the end
of the file is recorded in `truncated_loads` (the dump is readable for what it has); reading past the
end raises `TruncatedDumpError`.

Writer: `ElfCoreWriter` lays out ELF header, program headers (one PT_NOTE, then the PT_LOADs), the note
data, then each load's data, and writes through a sink (`write_at(offset, data)`), so the same code
writes a regular file or makedumpfile's flattened stream.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from kdumpy.errors import CorruptDumpError, TruncatedDumpError, UnsupportedError
from kdumpy.formats.notes import EM_386, EM_X86_64, Note, _parse_notes

__all__ = [
    "ELF_INCOMPLETE",
    "EM_386",
    "EM_X86_64",
    "ET_CORE",
    "PF_RWX",
    "PN_XNUM",
    "PT_LOAD",
    "PT_NOTE",
    "PT_NULL",
    "ElfCore",
    "ElfCoreWriter",
    "LoadSpec",
    "ProgramHeader",
    "Sink",
    "pack_headers",
]

PT_NULL = 0
PT_LOAD = 1
PT_NOTE = 4
ET_CORE = 4
PN_XNUM = 0xFFFF
"""e_phnum value meaning "the real count is in section header 0's sh_info" (extended numbering)."""
ELF_INCOMPLETE = 0x1
"""e_flags bit makedumpfile sets when it could not write the whole dump (DUMP_ELF_INCOMPLETE)."""

_ELFMAG = b"\x7fELF"
_ELFCLASS32 = 1
_ELFCLASS64 = 2
_ELFDATA2LSB = 1
_ELFDATA2MSB = 2
_EV_CURRENT = 1
_EI_NIDENT = 16
PF_RWX = 7
_NOTE_ALIGN = 4  # p_align of the merged PT_NOTE in /proc/vmcore (fs/proc/vmcore.c)


@dataclass(frozen=True)
class _Layout:
    """The on-disk records of one ELF class; each struct is used to read and to write."""

    ehdr: struct.Struct
    phdr: struct.Struct
    shdr: struct.Struct
    phdr_is_64: bool


# Elf64_Ehdr: e_ident, e_type, e_machine, e_version, e_entry, e_phoff, e_shoff, e_flags, e_ehsize,
# e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx. Elf32_Ehdr: the same with 32-bit addresses.
# Elf64_Phdr: p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align.
# Elf32_Phdr: p_type, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_flags, p_align (flags moved).
# Elf64_Shdr / Elf32_Shdr: sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size, sh_link, sh_info,
# sh_addralign, sh_entsize.
_LAYOUTS = {
    64: _Layout(
        ehdr=struct.Struct("<16sHHIQQQIHHHHHH"),
        phdr=struct.Struct("<IIQQQQQQ"),
        shdr=struct.Struct("<IIQQQQIIQQ"),
        phdr_is_64=True,
    ),
    32: _Layout(
        ehdr=struct.Struct("<16sHHIIIIIHHHHHH"),
        phdr=struct.Struct("<IIIIIIII"),
        shdr=struct.Struct("<IIIIIIIIII"),
        phdr_is_64=False,
    ),
}
_SH_INFO = 7  # index of sh_info in the unpacked Shdr tuple (both classes)


@dataclass(frozen=True)
class ProgramHeader:
    """One program header (Elf64_Phdr / Elf32_Phdr), class-independent."""

    type: int
    """p_type: PT_LOAD, PT_NOTE, ..."""
    flags: int
    """p_flags: PF_R | PF_W | PF_X bits."""
    offset: int
    """p_offset: where the segment's data starts in the file (0 for a load with no data)."""
    vaddr: int
    """p_vaddr: the kernel's virtual address of the segment (not to be trusted for translation)."""
    paddr: int
    """p_paddr: the physical address of the segment."""
    filesz: int
    """p_filesz: bytes present in the file; the rest up to memsz was excluded."""
    memsz: int
    """p_memsz: bytes of memory the segment covers."""
    align: int
    """p_align."""

    def _pack(self, layout: _Layout) -> bytes:
        if layout.phdr_is_64:
            return layout.phdr.pack(
                self.type,
                self.flags,
                self.offset,
                self.vaddr,
                self.paddr,
                self.filesz,
                self.memsz,
                self.align,
            )
        return layout.phdr.pack(
            self.type, self.offset, self.vaddr, self.paddr, self.filesz, self.memsz, self.flags, self.align
        )

    @staticmethod
    def _unpack(layout: _Layout, data: bytes, pos: int) -> ProgramHeader:
        v = layout.phdr.unpack_from(data, pos)
        if layout.phdr_is_64:
            return ProgramHeader(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7])
        return ProgramHeader(v[0], v[6], v[1], v[2], v[3], v[4], v[5], v[7])


@dataclass(frozen=True)
class LoadSpec:
    """A PT_LOAD to write: where it sits in memory and how much of it has data in the file."""

    paddr: int
    """Physical start address."""
    vaddr: int
    """Virtual start address (kernel direct map or text mapping; see ElfCoreWriter for ELF32)."""
    filesz: int
    """Bytes of data written for it (from its start)."""
    memsz: int
    """Bytes of memory it covers; memsz > filesz marks an excluded tail (as makedumpfile -E does)."""
    flags: int = PF_RWX
    """p_flags; RWX like the kernel and kexec-tools."""


class Sink(Protocol):
    """Where a writer's bytes go: a regular file, or makedumpfile's flattened stream."""

    def write_at(self, offset: int, data: bytes | memoryview) -> None:
        """Write `data` at file offset `offset`."""
        ...


class ElfCore:
    """An ELF core file opened for reading. Headers are parsed at init; notes and data on demand."""

    elf_class: int
    """32 or 64."""
    machine: int
    """e_machine (EM_X86_64, EM_386, ...)."""
    e_type: int
    """e_type (always ET_CORE once opened)."""
    e_flags: int
    """e_flags (makedumpfile sets ELF_INCOMPLETE here)."""
    phdrs: list[ProgramHeader]
    """Every program header, in file order."""
    loads: list[ProgramHeader]
    """The PT_LOAD headers, in file order."""
    truncated_loads: list[ProgramHeader]
    """The PT_LOADs whose data runs past the end of the file (a dump cut short)."""
    size: int
    """The file size the headers were checked against."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self._f = f
        self._lock = threading.Lock()  # read_at seeks then reads: keep the pair atomic across threads
        self.size = size
        self._note_data: bytes | None = None
        self._notes: list[Note] | None = None

        ident = self.read_at(0, min(size, _EI_NIDENT))
        if not ident.startswith(_ELFMAG) and not _ELFMAG.startswith(ident):
            raise CorruptDumpError("not an ELF file (no \\x7fELF magic)")
        if len(ident) < _EI_NIDENT:
            raise TruncatedDumpError(f"ELF file is only {size} bytes, shorter than its identification")
        ei_class, ei_data = ident[4], ident[5]
        if ei_data == _ELFDATA2MSB:
            raise UnsupportedError("big-endian ELF dumps are not supported (only little-endian)")
        if ei_data != _ELFDATA2LSB:
            raise CorruptDumpError(f"ELF header has an invalid data encoding EI_DATA={ei_data}")
        if ei_class == _ELFCLASS64:
            self.elf_class = 64
        elif ei_class == _ELFCLASS32:
            self.elf_class = 32
        else:
            raise CorruptDumpError(f"ELF header has an invalid class EI_CLASS={ei_class}")
        lay = _LAYOUTS[self.elf_class]
        self._layout = lay

        if size < lay.ehdr.size:
            raise TruncatedDumpError(
                f"ELF{self.elf_class} file is only {size} bytes, shorter than its {lay.ehdr.size}-byte header"
            )
        (_, self.e_type, self.machine, _, _, phoff, shoff, self.e_flags, _, phentsize, phnum,
         shentsize, _, _) = lay.ehdr.unpack(self.read_at(0, lay.ehdr.size))  # fmt: skip
        if self.e_type != ET_CORE:
            raise CorruptDumpError(
                f"ELF file is not a core dump (e_type {self.e_type}, a core has {ET_CORE})"
            )

        if phnum == PN_XNUM:
            phnum = self._extended_phnum(shoff, shentsize)
        if phnum and phentsize != lay.phdr.size:
            raise CorruptDumpError(
                f"ELF{self.elf_class} program header size e_phentsize is {phentsize}, "
                f"expected {lay.phdr.size}"
            )
        table_end = phoff + phnum * lay.phdr.size
        if phnum:
            where = f"ELF program headers ({phnum} at offset {phoff:#x})"
            if phoff < lay.ehdr.size or phoff >= size:
                raise CorruptDumpError(f"{where} lie outside the file ({size} bytes)")
            if table_end > size:
                raise TruncatedDumpError(f"{where} run past the end of the file ({size} bytes)")
        # Bounded now: the table is inside the file.
        table = self.read_at(phoff, phnum * lay.phdr.size) if phnum else b""
        self.phdrs = [ProgramHeader._unpack(lay, table, i * lay.phdr.size) for i in range(phnum)]
        self.loads = [p for p in self.phdrs if p.type == PT_LOAD]
        self.truncated_loads = []
        for i, p in enumerate(self.phdrs):
            end = p.offset + p.filesz
            if p.type == PT_LOAD:
                if p.filesz > p.memsz:
                    raise CorruptDumpError(
                        f"PT_LOAD {i} at physical {p.paddr:#x} has p_filesz {p.filesz:#x} "
                        f"> p_memsz {p.memsz:#x}"
                    )
                if p.filesz and end > size:
                    self.truncated_loads.append(p)
            elif p.type == PT_NOTE and p.filesz and end > size:
                raise TruncatedDumpError(
                    f"PT_NOTE {i} (offset {p.offset:#x}, {p.filesz} bytes) runs past the end of the file "
                    f"({size} bytes)"
                )

    def _extended_phnum(self, shoff: int, shentsize: int) -> int:
        """Extended numbering: e_phnum == PN_XNUM and section header 0's sh_info holds the count."""
        lay = self._layout
        if shoff == 0:
            raise CorruptDumpError("ELF e_phnum is PN_XNUM but there is no section header (e_shoff 0)")
        if shentsize != lay.shdr.size:
            raise CorruptDumpError(
                f"ELF{self.elf_class} section header size e_shentsize is {shentsize}, "
                f"expected {lay.shdr.size}"
            )
        if shoff < lay.ehdr.size or shoff + lay.shdr.size > self.size:
            raise CorruptDumpError(
                f"ELF section header 0 at offset {shoff:#x} lies outside the file ({self.size} bytes)"
            )
        shdr0 = lay.shdr.unpack(self.read_at(shoff, lay.shdr.size))
        count: int = shdr0[_SH_INFO]
        return count

    @property
    def incomplete(self) -> bool:
        """makedumpfile's ELF_INCOMPLETE flag: the dump was cut short when written."""
        return bool(self.e_flags & ELF_INCOMPLETE)

    @staticmethod
    def probe(head: bytes) -> bool:
        """True if `head` (the file's first bytes, at least 18) starts an ELF core file."""
        if len(head) < 18 or head[:4] != _ELFMAG:
            return False
        # Big-endian cores are recognised here so that opening them says "unsupported" clearly.
        order = "<" if head[5] == _ELFDATA2LSB else ">" if head[5] == _ELFDATA2MSB else None
        if order is None:
            return False
        (e_type,) = struct.unpack_from(order + "H", head, 16)
        return bool(e_type == ET_CORE)

    def read_at(self, offset: int, n: int) -> bytes:
        """Read exactly n bytes at a file offset; past the end raises TruncatedDumpError."""
        if offset < 0 or n < 0:
            raise ValueError(f"read_at({offset}, {n}): negative offset or length")
        if offset + n > self.size:
            raise TruncatedDumpError(
                f"the dump ends at {self.size:#x}; {n} bytes at offset {offset:#x} are missing"
            )
        with self._lock:
            self._f.seek(offset)
            data = self._f.read(n)
        if len(data) != n:
            raise TruncatedDumpError(
                f"the dump file ends early: read {len(data)} of {n} bytes at offset {offset:#x}"
            )
        return data

    def note_data(self) -> bytes:
        """All PT_NOTE segments' file content, concatenated in program header order."""
        if self._note_data is None:
            self._note_data = b"".join(
                self.read_at(p.offset, p.filesz) for p in self.phdrs if p.type == PT_NOTE and p.filesz
            )
        return self._note_data

    def notes(self) -> list[Note]:
        """The notes of every PT_NOTE; desc_offset is relative to note_data().

        Each segment is parsed on its own, because before the capture kernel merges them (and in other
        writers) each per-CPU segment ends with a zero terminator and padding.
        """
        if self._notes is None:
            notes: list[Note] = []
            base = 0
            for p in self.phdrs:
                if p.type == PT_NOTE and p.filesz:
                    notes += _parse_notes(self.read_at(p.offset, p.filesz), base)
                    base += p.filesz
            self._notes = notes
        return list(self._notes)


def pack_headers(elf_class: int, machine: int, phdrs: Sequence[ProgramHeader], *, flags: int = 0) -> bytes:
    """A core file's ELF header (e_flags `flags`) and program headers right after it; with 65535
    headers or more, extended numbering: section header 0 after them, as makedumpfile does."""
    if elf_class not in _LAYOUTS:
        raise ValueError(f"elf_class must be 32 or 64, not {elf_class}")
    lay = _LAYOUTS[elf_class]
    phnum = len(phdrs)
    xnum = phnum >= PN_XNUM
    ident = _ELFMAG + bytes([_ELFCLASS64 if elf_class == 64 else _ELFCLASS32, _ELFDATA2LSB, _EV_CURRENT])
    ehdr = lay.ehdr.pack(
        ident.ljust(_EI_NIDENT, b"\0"),
        ET_CORE,
        machine,
        _EV_CURRENT,
        0,  # e_entry
        lay.ehdr.size,  # e_phoff
        lay.ehdr.size + phnum * lay.phdr.size if xnum else 0,  # e_shoff
        flags,
        lay.ehdr.size,  # e_ehsize
        lay.phdr.size,
        PN_XNUM if xnum else phnum,
        lay.shdr.size if xnum else 0,
        1 if xnum else 0,  # e_shnum
        0,  # e_shstrndx: SHN_UNDEF
    )
    out = bytearray(ehdr)
    for p in phdrs:
        out += p._pack(lay)
    if xnum:
        # Section header 0 of type SHT_NULL: sh_size = e_shnum, sh_link = e_shstrndx, sh_info = e_phnum.
        out += lay.shdr.pack(0, 0, 0, 0, 0, 1, 0, phnum, 0, 0)
    return bytes(out)


class ElfCoreWriter:
    """Writes an ELF core file through a sink.

    Layout: ELF header; program headers (one PT_NOTE, then the PT_LOADs in the given order); for
    extended numbering (65535 headers or more), section header 0 right after them, as makedumpfile
    does; the note data; then each load's data, in order, at an offset that is page-aligned plus the
    load's paddr offset within its page (as /proc/vmcore places them, so a page can be mmapped). A load
    with filesz 0 gets p_offset 0 (makedumpfile -E does the same).

    ELF32: every physical address, size and file offset must fit in 32 bits, or UnsupportedError is
    raised. A vaddr that does not fit keeps its low 32 bits: kexec-tools --elf32-core-headers assigns
    the 64-bit direct-map address to the 32-bit p_vaddr (crashdump-elf.c), so this matches a real
    ELF32 /proc/vmcore of an x86_64 kernel.
    """

    load_offsets: list[int]
    """File offset of each load's data (its p_offset); 0 for a load with filesz 0."""
    phdrs: list[ProgramHeader]
    """The program headers as written: the PT_NOTE, then the loads."""
    note_offset: int
    """File offset of the note data."""
    end_offset: int
    """File offset just past the last load's data: the size of the complete file."""

    def __init__(
        self,
        sink: Sink,
        *,
        elf_class: int,
        machine: int,
        note_data: bytes,
        loads: Sequence[LoadSpec],
        page_size: int = 4096,
    ) -> None:
        if elf_class not in _LAYOUTS:
            raise ValueError(f"elf_class must be 32 or 64, not {elf_class}")
        if page_size <= 0 or page_size & (page_size - 1):
            raise ValueError(f"page_size must be a power of two, not {page_size}")
        self._sink = sink
        self._class = elf_class
        lay = _LAYOUTS[elf_class]
        self._machine = machine
        self._note_data = bytes(note_data)

        phnum = 1 + len(loads)
        offset = lay.ehdr.size + phnum * lay.phdr.size
        if phnum >= PN_XNUM:  # section header 0 follows the program headers (pack_headers)
            offset += lay.shdr.size
        self.note_offset = offset
        cursor = offset + len(self._note_data)

        self.load_offsets = []
        for spec in loads:
            if spec.filesz < 0 or spec.memsz < spec.filesz or spec.paddr < 0 or spec.vaddr < 0:
                raise ValueError(f"invalid load {spec}: need 0 <= filesz <= memsz and non-negative addresses")
            if spec.filesz == 0:
                self.load_offsets.append(0)
                continue
            start = -(-cursor // page_size) * page_size + spec.paddr % page_size
            self.load_offsets.append(start)
            cursor = start + spec.filesz
        self.end_offset = cursor

        note = ProgramHeader(PT_NOTE, 0, self.note_offset, 0, 0, len(self._note_data),
                             len(self._note_data), _NOTE_ALIGN)  # fmt: skip
        self.phdrs = [note]
        limit = 1 << elf_class
        for spec, off in zip(loads, self.load_offsets, strict=True):
            end = spec.paddr + max(spec.memsz, 1) - 1
            if end >= limit or spec.memsz >= limit:
                if elf_class == 32:
                    raise UnsupportedError(
                        f"ELF32 cannot describe memory at physical {spec.paddr:#x}-{end:#x} (above 4 GiB); "
                        "write an ELF64 dump instead"
                    )
                raise ValueError(f"load at physical {spec.paddr:#x} does not fit in 64 bits")
            vaddr = spec.vaddr
            if vaddr >= limit:
                if elf_class == 64:
                    raise ValueError(f"load vaddr {vaddr:#x} does not fit in 64 bits")
                # kexec-tools --elf32-core-headers stores the 64-bit direct-map address in the 32-bit
                # p_vaddr, which keeps its low 32 bits: do the same.
                vaddr &= limit - 1
            self.phdrs.append(ProgramHeader(PT_LOAD, spec.flags, off, vaddr, spec.paddr, spec.filesz,
                                            spec.memsz, 0))  # fmt: skip
        if self.end_offset >= limit:
            raise UnsupportedError(
                f"ELF{elf_class} file offsets cannot reach {self.end_offset:#x} (the data is too large); "
                "write an ELF64 dump instead"
            )
        self._filesz = [spec.filesz for spec in loads]

    def write_headers(self, *, incomplete: bool = False) -> None:
        """Write the ELF header, program headers, section header 0 (if needed) and the note data.

        May be called again once the data is written, to set makedumpfile's ELF_INCOMPLETE flag.
        """
        out = pack_headers(self._class, self._machine, self.phdrs, flags=ELF_INCOMPLETE if incomplete else 0)
        self._sink.write_at(0, out + self._note_data)

    def write_load_data(self, index: int, offset_in_load: int, data: bytes | memoryview) -> None:
        """Write part of load `index`'s data, `offset_in_load` bytes after its start."""
        if not 0 <= index < len(self._filesz):
            raise IndexError(f"load index {index} out of range ({len(self._filesz)} loads)")
        n = len(data) if isinstance(data, bytes) else data.nbytes
        if offset_in_load < 0 or offset_in_load + n > self._filesz[index]:
            raise ValueError(
                f"{n} bytes at {offset_in_load:#x} do not fit in load {index} "
                f"(filesz {self._filesz[index]:#x})"
            )
        self._sink.write_at(self.load_offsets[index] + offset_in_load, data)
