"""Small synthetic vmcores, built with kdumpy's own writers, for fast unit tests only."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from kdumpy.formats.elf import EM_X86_64, ElfCoreWriter, LoadSpec
from kdumpy.formats.notes import NT_PRSTATUS, Note, PrStatus, build_notes

PAGE = 4096
VMCOREINFO = (
    "OSRELEASE=6.1.0-test-amd64\nBUILD-ID=0123456789abcdef0123456789abcdef01234567\nPAGESIZE=4096\n"
    "SYMBOL(init_uts_ns)=ffffffff82a0e3c0\nOFFSET(uts_namespace.name)=4\nNUMBER(phys_base)=0\n"
    "CRASHTIME=1764320000\n"
)


class PwriteSink:
    """A Sink over an open file descriptor."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write_at(self, offset: int, data: bytes | memoryview) -> None:
        os.pwrite(self.fd, data, offset)

    def close(self) -> None:
        os.close(self.fd)


def notes(cpus: int = 2, vmcoreinfo: str = VMCOREINFO) -> bytes:
    out = []
    for cpu in range(cpus):
        regs = {"rip": 0xFFFFFFFF81000000 + cpu, "rsp": 0xFFFFC90000000000 + cpu}
        pr = PrStatus(pid=cpu + 1, registers=regs)
        out.append(Note(b"CORE", NT_PRSTATUS, pr.to_desc(EM_X86_64), 0))
    out.append(Note(b"VMCOREINFO", 0, vmcoreinfo.encode(), 0))
    return build_notes(out)


def page_pattern(pfn: int) -> bytes:
    """A page whose bytes say which pfn it is (so a misplaced page is caught)."""
    return (pfn.to_bytes(8, "little") * (PAGE // 8))[:PAGE]


def elf_vmcore(
    path: Path,
    segments: Sequence[tuple[int, int, int]],
    *,
    elf_class: int = 64,
    content: dict[int, bytes] | None = None,
    note_data: bytes | None = None,
) -> Path:
    """An ELF vmcore with PT_LOADs (paddr, filesz, memsz); page content from `content` or the pattern."""
    content = content or {}
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    sink = PwriteSink(fd)
    loads = [LoadSpec(p, 0xFFFF888000000000 + p if elf_class == 64 else 0, fs, ms) for p, fs, ms in segments]
    w = ElfCoreWriter(
        sink, elf_class=elf_class, machine=EM_X86_64, note_data=note_data or notes(), loads=loads
    )
    w.write_headers()
    for i, (paddr, filesz, _) in enumerate(segments):
        data = bytearray()
        first = paddr // PAGE
        for pfn in range(first, -(-(paddr + filesz) // PAGE)):
            data += content.get(pfn, page_pattern(pfn))
        skip = paddr - first * PAGE
        w.write_load_data(i, 0, bytes(data[skip : skip + filesz]))
    sink.close()
    return path
