"""One interface over every dump format: ELF vmcores, kdump-compressed files, flattened streams, split sets.

`open_dump()` looks at the content, not the file name, and returns a `Dump`. Everything above this module
(the collector, dmesg, the report, convert) asks a `Dump` for physical pages and never which format it holds.
"""

from __future__ import annotations

import bisect
import itertools
import mmap
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from functools import cached_property
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

from kdumpy.errors import (
    CorruptDumpError,
    DumpError,
    PageExcludedError,
    PageIncompleteError,
    PageMissingError,
    UsageError,
)
from kdumpy.formats import diskdump
from kdumpy.formats.diskdump import DiskDump
from kdumpy.formats.elf import PT_LOAD, ElfCore, ProgramHeader
from kdumpy.formats.flattened import FlatSource, is_flattened
from kdumpy.formats.io import FileSource, Source
from kdumpy.formats.notes import Note, PrStatus, cpu_notes, find_vmcoreinfo, parse_notes
from kdumpy.formats.vmcoreinfo import VmcoreInfo

__all__ = ["MAX_PHYS_ADDR", "Dump", "PageState", "PhysRange", "open_dump"]

MAX_PHYS_ADDR = 1 << 52
"""x86_64's MAX_PHYSMEM_BITS with 5-level paging: no RAM lies above it."""
_COUNT_WINDOW = 1 << 20
PROC_VMCORE = "/proc/vmcore"
_MMAP_WINDOW = 64 << 20  # bytes of /proc/vmcore mapped at a time (address space, not RSS)


class PageState(IntEnum):
    """What a dump says about one page frame."""

    PRESENT = diskdump.PAGE_PRESENT
    """The page's content is in the dump."""
    EXCLUDED = diskdump.PAGE_EXCLUDED
    """RAM, but filtered out when the dump was made."""
    MISSING = diskdump.PAGE_MISSING
    """Not RAM in this dump: a hole, or past the end."""
    INCOMPLETE = diskdump.PAGE_INCOMPLETE
    """Should be in the dump, but the dump was cut short before it was written."""


@dataclass(frozen=True)
class PhysRange:
    """A run of physical memory the dump knows about, [start, end) in bytes."""

    start: int
    """First byte."""
    end: int
    """One past the last byte."""


class Dump(ABC):
    """A crashed kernel's physical memory as one dump holds it."""

    format: str
    """Format name: elf64, elf32, kdump, kdump-flat, kdump-split-part or kdump-split."""
    page_size: int
    """Page size of the dumped kernel."""
    machine: int
    """ELF machine number (EM_X86_64, ...)."""
    note_data: bytes
    """The ELF notes as the capture kernel merged them (PT_NOTE content)."""
    incomplete: bool
    """The dump was cut short (flag set by the writer, or data missing at the end of the file)."""

    def __init__(self, path: str) -> None:
        self.path = path

    @cached_property
    def notes(self) -> list[Note]:
        return parse_notes(self.note_data)

    @cached_property
    def vmcoreinfo(self) -> VmcoreInfo | None:
        note = find_vmcoreinfo(self.notes)
        return VmcoreInfo(note.desc) if note is not None else None

    @cached_property
    def cpus(self) -> list[PrStatus]:
        """One per CPU note (NT_PRSTATUS), in note order."""
        return [PrStatus.from_note(n, self.machine) for n in cpu_notes(self.notes)]

    @property
    @abstractmethod
    def ranges(self) -> list[PhysRange]:
        """Physical memory the dump covers (RAM), sorted, not overlapping."""

    @property
    def max_pfn(self) -> int:
        """One past the highest page frame the dump covers."""
        rs = self.ranges
        return -(-rs[-1].end // self.page_size) if rs else 0

    @abstractmethod
    def page_states(self, start_pfn: int, end_pfn: int) -> npt.NDArray[np.uint8]:
        """`PageState` of each pfn in [start_pfn, end_pfn)."""

    def page_counts(self) -> dict[PageState, int]:
        """How many pages of the dump's RAM are in each state."""
        counts = np.zeros(len(PageState), dtype=np.int64)
        ps = self.page_size
        for r in self.ranges:
            lo, hi = r.start // ps, -(-r.end // ps)
            for w in range(lo, hi, _COUNT_WINDOW):
                states = self.page_states(w, min(hi, w + _COUNT_WINDOW))
                counts += np.bincount(states, minlength=len(PageState))[: len(PageState)]
        return {s: int(counts[s]) for s in PageState}

    @abstractmethod
    def read_pages(self, start_pfn: int, count: int) -> bytes:
        """The content of `count` pages from `start_pfn`; each must be PRESENT, else a PageError."""

    def read_pages_into(self, start_pfn: int, count: int, out: memoryview) -> None:
        """Fill `out` (count * page_size bytes) with `count` pages from `start_pfn`.

        For callers that already know the pages are present (the collector, from its bitmap):
        formats that can read straight into `out` do so without a copy."""
        out[:] = self.read_pages(start_pfn, count)

    def read(self, paddr: int, n: int) -> bytes:
        """`n` bytes of physical memory from `paddr`; a PageError for any page not in the dump."""
        ps = self.page_size
        first = paddr // ps
        last = (paddr + n + ps - 1) // ps
        data = self.read_pages(first, last - first)
        skip = paddr - first * ps
        return data[skip : skip + n]

    def metadata(self) -> dict[str, Any]:
        """Format-specific facts for `kdumpy info`."""
        return {}

    def close(self) -> None:  # noqa: B027 - formats without open resources need nothing
        pass

    def __enter__(self) -> Dump:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _raise_for(self, pfn: int, state: int) -> None:
        paddr = pfn * self.page_size
        if state == PageState.EXCLUDED:
            raise PageExcludedError(paddr)
        if state == PageState.INCOMPLETE:
            raise PageIncompleteError(paddr)
        raise PageMissingError(paddr)


@dataclass
class _LoadRun:
    """A PT_LOAD's page-aligned physical extent and where its file data lies."""

    start: int  # first paddr
    file_end: int  # paddr one past the data in the file (p_paddr + p_filesz)
    mem_end: int  # paddr one past the segment (p_paddr + p_memsz)
    offset: int  # file offset of `start`
    file_avail_end: int  # paddr one past the data actually present in a truncated file


class ElfDump(Dump):
    """An ELF core file: a copy of /proc/vmcore, makedumpfile -E output, or QEMU's dump-guest-memory."""

    def __init__(self, path: str, f: BinaryIO, size: int, mapped: bool = False) -> None:
        super().__init__(path)
        self._f = f
        self._fd = f.fileno()
        self.mapped = mapped
        """Whether `read_pages_into` copies from a mapping of the file rather than reading it: chosen
        for /proc/vmcore, whose read() maps and unmaps every old-memory page it copies (the capture
        kernel's system time), where mmap() maps a window once (makedumpfile does the same)."""
        self._window: tuple[int, mmap.mmap] | None = None
        self.elf = ElfCore(f, size)
        self.format = f"elf{self.elf.elf_class}"
        self.machine = self.elf.machine
        self.note_data = self.elf.note_data()
        info = self.vmcoreinfo
        self.page_size = (info.pagesize if info is not None else None) or 4096
        self._size = size
        self._runs = self._load_runs(self.elf.loads, size)
        self._starts = [r.start for r in self._runs]
        self.incomplete = self.elf.incomplete or any(r.file_avail_end < r.file_end for r in self._runs)

    @cached_property
    def notes(self) -> list[Note]:
        # Each PT_NOTE parsed on its own: a segment's zero terminator must not hide the next one's notes.
        return self.elf.notes()

    @staticmethod
    def _load_runs(loads: Sequence[ProgramHeader], size: int) -> list[_LoadRun]:
        runs = []
        for ph in loads:
            if ph.type != PT_LOAD or ph.memsz == 0:
                continue
            if ph.paddr + ph.memsz > MAX_PHYS_ADDR:
                raise CorruptDumpError(
                    f"PT_LOAD at physical address {ph.paddr:#x} with size {ph.memsz:#x} ends past "
                    f"the {MAX_PHYS_ADDR.bit_length() - 1}-bit physical address space"
                )
            avail = max(0, min(ph.filesz, size - ph.offset)) if ph.filesz else 0
            runs.append(
                _LoadRun(
                    start=ph.paddr,
                    file_end=ph.paddr + ph.filesz,
                    mem_end=ph.paddr + ph.memsz,
                    offset=ph.offset,
                    file_avail_end=ph.paddr + avail,
                )
            )
        # On x86_64 the kernel-text PT_LOAD covers physical memory that a direct-map PT_LOAD covers
        # too; the later, larger segment is as good a source, so drop runs nested inside another.
        runs.sort(key=lambda r: (r.start, -r.mem_end))
        out: list[_LoadRun] = []
        for r in runs:
            if out and r.mem_end <= out[-1].mem_end:
                continue
            if out and r.start < out[-1].mem_end:
                raise CorruptDumpError(f"PT_LOAD segments overlap at physical address {r.start:#x}")
            out.append(r)
        return out

    @property
    def ranges(self) -> list[PhysRange]:
        return [PhysRange(r.start, r.mem_end) for r in self._runs]

    def page_states(self, start_pfn: int, end_pfn: int) -> npt.NDArray[np.uint8]:
        ps = self.page_size
        states = np.full(max(0, end_pfn - start_pfn), PageState.MISSING, dtype=np.uint8)
        # A page only partly inside a segment counts as present, its outside part reading as zeros
        # (makedumpfile does the same for the last page of a range that ends mid-page).
        for r in self._runs:
            lo = r.start // ps
            self._fill(states, start_pfn, lo, -(-r.mem_end // ps), PageState.EXCLUDED)
            self._fill(states, start_pfn, lo, -(-r.file_end // ps), PageState.INCOMPLETE)
            self._fill(states, start_pfn, lo, -(-r.file_avail_end // ps), PageState.PRESENT)
        return states

    def page_counts(self) -> dict[PageState, int]:
        # From the segments' extents, without a state per page: an ELF's memsz can be huge
        # (makedumpfile -E marks excluded tails that way) while its file is small.
        ps = self.page_size
        counts = dict.fromkeys(PageState, 0)
        for r in self._runs:
            lo = r.start // ps
            present = -(-r.file_avail_end // ps) - lo if r.file_avail_end > r.start else 0
            incomplete = max(0, -(-r.file_end // ps) - lo - present)
            counts[PageState.PRESENT] += present
            counts[PageState.INCOMPLETE] += incomplete
            counts[PageState.EXCLUDED] += max(0, -(-r.mem_end // ps) - lo - present - incomplete)
        return counts

    @staticmethod
    def _fill(states: npt.NDArray[np.uint8], base: int, lo: int, hi: int, value: int) -> None:
        lo, hi = max(lo - base, 0), min(hi - base, len(states))
        if lo < hi:
            states[lo:hi] = value

    def read_pages(self, start_pfn: int, count: int) -> bytes:
        ps = self.page_size
        states = self.page_states(start_pfn, start_pfn + count)
        bad = np.flatnonzero(states != PageState.PRESENT)
        if len(bad):
            self._raise_for(start_pfn + int(bad[0]), int(states[bad[0]]))
        out = bytearray(count * ps)
        self.read_pages_into(start_pfn, count, memoryview(out))
        return bytes(out)

    def read_pages_into(self, start_pfn: int, count: int, out: memoryview) -> None:
        # One preadv per PT_LOAD the pages touch, straight into `out`; bytes of a page outside
        # every segment (a range ending mid-page) read as zeros.
        ps = self.page_size
        base, end = start_pfn * ps, (start_pfn + count) * ps
        pos = base
        i = max(0, bisect.bisect_right(self._starts, base) - 1)
        for r in self._runs[i:]:
            if r.start >= end:
                break
            lo, hi = max(pos, r.start), min(end, r.file_avail_end)
            if lo >= hi:
                continue
            if lo > pos:
                out[pos - base : lo - base] = bytes(lo - pos)
            dst, offset = out[lo - base : hi - base], r.offset + (lo - r.start)
            copied = self.mapped and self._copy_mapped(dst, offset)
            if not copied and os.preadv(self._fd, [dst], offset) != hi - lo:
                raise CorruptDumpError(f"short read at physical address {lo:#x}")
            pos = hi
        if pos < end:
            out[pos - base : end - base] = bytes(end - pos)

    def _copy_mapped(self, dst: memoryview, offset: int) -> bool:
        """Copy the file's bytes at `offset` into `dst` from the mapped window, moving the window
        when needed; False (and no more mapping) when the file cannot be mapped."""
        n = len(dst)
        if self._window is None or not (
            self._window[0] <= offset and offset + n <= self._window[0] + len(self._window[1])
        ):
            self._unmap()
            start = offset - offset % mmap.ALLOCATIONGRANULARITY
            length = min(max(_MMAP_WINDOW, offset + n - start), self._size - start)
            try:
                mm = mmap.mmap(self._fd, length, mmap.MAP_PRIVATE, mmap.PROT_READ, offset=start)
            except (OSError, ValueError, OverflowError):
                self.mapped = False
                return False
            self._window = (start, mm)
        start, mm = self._window
        with memoryview(mm) as view:
            dst[:] = view[offset - start : offset - start + n]
        return True

    def _unmap(self) -> None:
        if self._window is not None:
            self._window[1].close()
            self._window = None

    def read(self, paddr: int, n: int) -> bytes:
        # Small unaligned reads (dmesg, page-table walks) go straight to the file.
        i = bisect.bisect_right(self._starts, paddr) - 1
        if i >= 0:
            r = self._runs[i]
            if paddr + n <= r.file_avail_end:
                data = os.pread(self._fd, n, r.offset + (paddr - r.start))
                if len(data) == n:
                    return data
        return super().read(paddr, n)

    def load_vaddrs(self) -> list[tuple[int, int, int]]:
        """(paddr, vaddr, memsz) of each PT_LOAD, as the file gives them."""
        return [(ph.paddr, ph.vaddr, ph.memsz) for ph in self.elf.loads]

    def metadata(self) -> dict[str, Any]:
        return {"pt_load": len(self.elf.loads), "elf_class": self.elf.elf_class}

    def close(self) -> None:
        self._unmap()
        self._f.close()


class KdumpDump(Dump):
    """makedumpfile's kdump-compressed format, from a regular file or a flattened stream."""

    def __init__(self, path: str, source: Source, flat: bool) -> None:
        super().__init__(path)
        self._source = source
        self.dd = DiskDump(source)
        self.format = "kdump-flat" if flat else "kdump"
        self.machine = _machine_of(self.dd.utsname.machine)
        self.page_size = self.dd.block_size
        self.note_data = self.dd.note_data
        # A flattened stream without its end marker was cut short, whatever its header says.
        cut = isinstance(source, FlatSource) and not source.complete
        self.incomplete = self.dd.incomplete or self.dd.truncated or cut

    @cached_property
    def vmcoreinfo(self) -> VmcoreInfo | None:
        # The sub-header's VMCOREINFO pointer is authoritative; the notes copy is the fallback.
        if self.dd.vmcoreinfo:
            return VmcoreInfo(self.dd.vmcoreinfo)
        return super().vmcoreinfo

    @cached_property
    def _ranges(self) -> list[PhysRange]:
        return _bitmap_ranges(self.dd.bitmap1, self.dd.max_mapnr, self.page_size)

    @property
    def ranges(self) -> list[PhysRange]:
        return self._ranges

    def page_states(self, start_pfn: int, end_pfn: int) -> npt.NDArray[np.uint8]:
        return self.dd.page_states(start_pfn, end_pfn)

    def read_pages(self, start_pfn: int, count: int) -> bytes:
        states = self.dd.page_states(start_pfn, start_pfn + count)
        bad = np.flatnonzero(states != PageState.PRESENT)
        if len(bad):
            self._raise_for(start_pfn + int(bad[0]), int(states[bad[0]]))
        return self.dd.read_pages(np.arange(start_pfn, start_pfn + count, dtype=np.uint64))

    def metadata(self) -> dict[str, Any]:
        dd = self.dd
        meta: dict[str, Any] = {
            "header_version": dd.header_version,
            "codec": dd.codec.name,
            "dump_level": dd.dump_level,
            "max_mapnr": dd.max_mapnr,
            "nr_cpus": dd.nr_cpus,
        }
        if dd.split:
            meta["split_range"] = [dd.start_pfn, dd.end_pfn]
        return meta

    def close(self) -> None:
        close = getattr(self._source, "close", None)
        if close is not None:
            close()


class SplitDump(Dump):
    """A set of `makedumpfile --split` parts, each holding the pages of its own pfn range."""

    def __init__(self, parts: list[KdumpDump]) -> None:
        super().__init__(parts[0].path)
        parts.sort(key=lambda p: p.dd.start_pfn)
        for a, b in itertools.pairwise(parts):
            if a.dd.end_pfn != b.dd.start_pfn:
                raise UsageError(
                    f"split parts do not fit together: {a.path} ends at pfn {a.dd.end_pfn:#x}, "
                    f"{b.path} starts at {b.dd.start_pfn:#x}"
                )
        self.parts = parts
        self._starts = [p.dd.start_pfn for p in parts]
        first = parts[0]
        self.format = "kdump-split"
        self.machine = first.machine
        self.page_size = first.page_size
        self.note_data = first.note_data
        self.incomplete = any(p.incomplete for p in parts)

    @cached_property
    def vmcoreinfo(self) -> VmcoreInfo | None:
        return self.parts[0].vmcoreinfo

    @property
    def ranges(self) -> list[PhysRange]:
        return self.parts[0].ranges

    def _spans(self, start_pfn: int, end_pfn: int) -> list[tuple[KdumpDump, int, int]]:
        out = []
        for p in self.parts:
            lo, hi = max(start_pfn, p.dd.start_pfn), min(end_pfn, p.dd.end_pfn)
            if lo < hi:
                out.append((p, lo, hi))
        return out

    def page_states(self, start_pfn: int, end_pfn: int) -> npt.NDArray[np.uint8]:
        states = np.full(max(0, end_pfn - start_pfn), PageState.MISSING, dtype=np.uint8)
        for p, lo, hi in self._spans(start_pfn, end_pfn):
            states[lo - start_pfn : hi - start_pfn] = p.page_states(lo, hi)
        return states

    def read_pages(self, start_pfn: int, count: int) -> bytes:
        end = start_pfn + count
        spans = self._spans(start_pfn, end)
        covered = sum(hi - lo for _, lo, hi in spans)
        if covered != count:
            states = self.page_states(start_pfn, end)
            bad = int(np.flatnonzero(states != PageState.PRESENT)[0])
            self._raise_for(start_pfn + bad, int(states[bad]))
        return b"".join(p.read_pages(lo, hi - lo) for p, lo, hi in spans)

    def metadata(self) -> dict[str, Any]:
        meta = self.parts[0].metadata()
        meta["split_parts"] = [{"path": p.path, "range": [p.dd.start_pfn, p.dd.end_pfn]} for p in self.parts]
        meta.pop("split_range", None)
        return meta

    def close(self) -> None:
        for p in self.parts:
            p.close()


def _machine_of(uts_machine: str) -> int:
    from kdumpy.formats.elf import EM_386, EM_X86_64

    return {"x86_64": EM_X86_64, "i686": EM_386, "i386": EM_386}.get(uts_machine, 0)


def _bitmap_ranges(bitmap: npt.NDArray[np.uint8], max_mapnr: int, page_size: int) -> list[PhysRange]:
    bits = np.unpackbits(bitmap, bitorder="little")[:max_mapnr].astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate(([0], bits, [0]))))
    return [PhysRange(int(a) * page_size, int(b) * page_size) for a, b in edges.reshape(-1, 2)]


def _open_one(path: str) -> Dump:
    try:
        f = open(path, "rb")  # noqa: SIM115 - the Dump owns it until close()
    except IsADirectoryError:
        raise UsageError(f"{path} is a directory, not a dump") from None
    try:
        size = os.fstat(f.fileno()).st_size
        head = f.read(4096)
        if ElfCore.probe(head):
            return ElfDump(path, f, size, mapped=os.path.realpath(path) == PROC_VMCORE)
        if DiskDump.probe(head):
            f.close()
            return KdumpDump(path, FileSource(path), flat=False)
        if is_flattened(head):
            f.close()
            return KdumpDump(path, FlatSource(path), flat=True)
    except BaseException:
        f.close()
        raise
    f.close()
    if not head:
        raise DumpError(f"{path}: empty file")
    raise DumpError(f"{path}: not a crash dump (neither ELF core, kdump-compressed, nor flattened)")


def open_dump(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> Dump:
    """Open a dump, detecting its format by content. Several paths make a `--split` set."""
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    names = [os.fspath(p) for p in paths]
    if not names:
        raise UsageError("no dump file given")
    dumps = [_open_one(p) for p in names]
    if len(dumps) == 1:
        d = dumps[0]
        if isinstance(d, KdumpDump) and d.dd.split:
            d.format = "kdump-split-part"
        return d
    if not all(isinstance(d, KdumpDump) and d.dd.split for d in dumps):
        for d in dumps:
            d.close()
        raise UsageError("several files make a dump only as the parts of one --split set")
    return SplitDump([d for d in dumps if isinstance(d, KdumpDump)])
