"""Re-encode a dump in another format, page for page, without filtering (`kdumpy convert`).

Whatever the input holds goes out: present pages as data, excluded pages as excluded, holes as holes.
Pages are handled in runs of at most `_CHUNK_PAGES`, so memory stays bounded whatever the dump size.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kdumpy.collect.pipeline import copy_pages
from kdumpy.errors import KdumpyError, UnsupportedError, UsageError
from kdumpy.formats.codecs import DEFLATE, get_codec
from kdumpy.formats.diskdump import DiskDumpWriter, Utsname
from kdumpy.formats.elf import EM_386, ElfCoreWriter, LoadSpec
from kdumpy.formats.io import Sink
from kdumpy.formats.notes import cpu_notes
from kdumpy.memory.dump import Dump, ElfDump, KdumpDump, PageState
from kdumpy.memory.kernel import Kernel

__all__ = ["FORMATS", "ConvertResult", "convert", "dump_utsname", "kdump_writer"]

FORMATS = ("elf", "kdump", "flat")
MAX_BITMAP_BYTES = 4 << 30
"""Both bitmaps are held in memory: 4 GiB covers 64 TiB of 4 KiB pages."""
_CHUNK_PAGES = 1024  # 4 MiB of 4 KiB pages per read and write
_STATE_WINDOW = 1 << 20  # pfns classified at a time: 1 MiB of state bytes
ELF_EXCLUDED_RUN = 256
"""Excluded runs shorter than this are written as zero data in ELF output rather than starting a new
PT_LOAD, as makedumpfile -E does (PFN_EXCLUDED), so a filtered dump does not explode into segments."""


@dataclass(frozen=True)
class ConvertResult:
    """What a conversion wrote."""

    pages_written: int
    """Pages whose content went into the output."""
    pages_excluded: int
    """RAM pages the output marks as not dumped."""
    pages_incomplete: int
    """Pages the input should have held but did not (the output says so too)."""
    seconds: float
    """Wall time of the conversion."""


def _state_windows(dump: Dump, start: int, end: int) -> Iterator[tuple[int, npt.NDArray[np.uint8]]]:
    for lo in range(start, end, _STATE_WINDOW):
        yield lo, dump.page_states(lo, min(end, lo + _STATE_WINDOW))


def dump_utsname(dump: Dump) -> Utsname:
    """The crashed kernel's utsname: from the kdump header, else read through the page tables."""
    if isinstance(dump, KdumpDump):
        return dump.dd.utsname
    info = dump.vmcoreinfo
    release = (info.osrelease if info else None) or ""
    try:
        return Kernel(dump).utsname()
    except KdumpyError:
        # No VMCOREINFO, or init_uts_ns unreadable: the fields the notes tell, the rest left empty.
        return Utsname("Linux", "", release, "", "x86_64" if dump.machine != EM_386 else "i686", "")


def _bitmaps(
    dump: Dump, max_mapnr: int
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """Bitmap 1 (RAM), bitmap 2 (dumpable) and the pages actually present (what is copied)."""
    nbytes = -(-max_mapnr // 8)
    if 2 * nbytes > MAX_BITMAP_BYTES:
        raise UnsupportedError(
            f"the dump spans {max_mapnr * dump.page_size >> 40} TiB of physical addresses: its two page "
            f"bitmaps would need {2 * nbytes >> 30} GiB of memory (kdumpy convert handles up to "
            f"{MAX_BITMAP_BYTES * 4 * dump.page_size >> 40} TiB)"
        )
    b1 = np.zeros(nbytes, dtype=np.uint8)
    b2 = np.zeros(nbytes, dtype=np.uint8)
    present = np.zeros(nbytes, dtype=np.uint8)
    for base, states in _state_windows(dump, 0, max_mapnr):
        # Windows start on multiples of 8 pfns, so whole bytes can be packed in place.
        lo = base // 8
        ram = np.packbits(states != PageState.MISSING, bitorder="little")
        # A page the input should have held but never got stays dumpable with no descriptor, so
        # readers say "incomplete" rather than "excluded" (what makedumpfile leaves after ENOSPC).
        dumpable = np.packbits(
            (states == PageState.PRESENT) | (states == PageState.INCOMPLETE), bitorder="little"
        )
        have = np.packbits(states == PageState.PRESENT, bitorder="little")
        b1[lo : lo + len(ram)] = ram
        b2[lo : lo + len(dumpable)] = dumpable
        present[lo : lo + len(have)] = have
    return b1, b2, present


def kdump_writer(
    dump: Dump,
    sink: Sink,
    *,
    codec: str,
    dump_level: int,
    max_mapnr: int,
    threads: int = 1,
    split_range: tuple[int, int] | None = None,
    limit: int | None = None,
    deflate: str = DEFLATE[0],
) -> DiskDumpWriter:
    """A kdump-compressed writer whose headers describe `dump`'s kernel, as makedumpfile fills them."""
    info = dump.vmcoreinfo
    if isinstance(dump, KdumpDump):
        timestamp, phys_base = dump.dd.timestamp, dump.dd.phys_base
    else:
        timestamp = float((info.crashtime if info else None) or 0)
        phys_base = (info.number("phys_base") if info else None) or 0
    return DiskDumpWriter(
        sink,
        page_size=dump.page_size,
        max_mapnr=max_mapnr,
        utsname=dump_utsname(dump),
        timestamp=timestamp,
        nr_cpus=len(cpu_notes(dump.notes)),
        phys_base=phys_base,
        dump_level=dump_level,
        codec=get_codec(codec, deflate=deflate),
        note_data=dump.note_data,
        threads=threads,
        split_range=split_range,
        limit=limit,
    )


def _write_kdump(dump: Dump, sink: Sink, codec_name: str, threads: int, deflate: str) -> None:
    # No filtering: a kdump input keeps its pfn space and says it was filtered at its own level.
    if isinstance(dump, KdumpDump):
        max_mapnr, dump_level = dump.dd.max_mapnr, dump.dd.dump_level
    else:
        max_mapnr, dump_level = dump.max_pfn, 0
    writer = kdump_writer(
        dump,
        sink,
        codec=codec_name,
        dump_level=dump_level,
        max_mapnr=max_mapnr,
        threads=threads,
        deflate=deflate,
    )
    b1, b2, present = _bitmaps(dump, max_mapnr)
    writer.write_bitmaps(b1, b2)
    # The collector's copy path (batched reads, one zero check, compression into reused buffers);
    # pages of bitmap 2 that are not present keep no descriptor and read as incomplete.
    copy_pages(dump, writer, present, 0, max_mapnr, threads=threads)
    writer.finish(incomplete=dump.incomplete)


def _elf_loads(dump: Dump) -> list[tuple[int, int, int, int]]:
    """(paddr, vaddr, filesz, memsz) of the output's PT_LOADs.

    An ELF input keeps its segments (and their vaddrs: the kernel-text mapping, the direct map); other
    inputs get one segment per run of RAM, with the direct map's vaddr found from the page tables
    (the kdump format does not record vaddrs), or 0 when it cannot be found.
    Inside each, an excluded run of `ELF_EXCLUDED_RUN` pages or more ends a segment's data.
    """
    ps = dump.page_size
    if isinstance(dump, ElfDump):
        spans = [(p, v, m) for p, v, m in dump.load_vaddrs() if m]
    else:
        base = _direct_map_base(dump)
        spans = [(r.start, base + r.start if base is not None else 0, r.end - r.start) for r in dump.ranges]
    out = []
    for paddr, vaddr, memsz in spans:
        first, n = paddr // ps, -(-(paddr + memsz) // ps) - paddr // ps
        absent = dump.page_states(first, first + n) != PageState.PRESENT
        cuts = [(a, a + k) for a, k in _runs_of(absent) if k >= ELF_EXCLUDED_RUN or a + k == n]
        seg = 0
        for a, b in [*cuts, (n, n)]:
            if seg == a == b:
                continue
            lo = max(paddr, (first + seg) * ps)
            data_end = min(paddr + memsz, (first + a) * ps)
            mem_end = min(paddr + memsz, (first + b) * ps)
            out.append((lo, vaddr + (lo - paddr) if vaddr else 0, max(0, data_end - lo), mem_end - lo))
            seg = b
    return out


def _direct_map_base(dump: Dump) -> int | None:
    try:
        return Kernel(dump).mmu.direct_map_base()
    except KdumpyError:
        return None  # no VMCOREINFO or no page tables: vaddr 0, as QEMU writes with paging off


def _write_elf(dump: Dump, sink: Sink, elf_class: int) -> None:
    ps = dump.page_size
    loads = _elf_loads(dump)
    writer = ElfCoreWriter(
        sink,
        elf_class=elf_class,
        machine=dump.machine,
        note_data=dump.note_data,
        loads=[LoadSpec(p, v, fs, ms) for p, v, fs, ms in loads],
        page_size=ps,
    )
    writer.write_headers(incomplete=dump.incomplete)
    for index, (paddr, _, filesz, _) in enumerate(loads):
        end = paddr + filesz
        pos = paddr
        while pos < end:
            # Read whole pages; the segment may start or end inside one.
            first = pos // ps
            count = min(_CHUNK_PAGES, -(-end // ps) - first)
            states = dump.page_states(first, first + count)
            data = bytearray(count * ps)
            for a, n in _runs_of(states == PageState.PRESENT):
                data[a * ps : (a + n) * ps] = dump.read_pages(first + a, n)
            lo, hi = pos - first * ps, min(end, (first + count) * ps) - first * ps
            writer.write_load_data(index, pos - paddr, memoryview(data)[lo:hi])
            pos = first * ps + hi


def _runs_of(mask: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.astype(np.int8), [0]))))
    return [(int(a), int(b - a)) for a, b in edges.reshape(-1, 2)]


def convert(
    dump: Dump,
    sink: Sink,
    fmt: str,
    *,
    codec: str = "zlib",
    elf32: bool = False,
    threads: int = 1,
    deflate: str = DEFLATE[0],
) -> ConvertResult:
    """Write `dump` to `sink` as `fmt` ("elf", or "kdump"/"flat": the sink decides flattening);
    `deflate` picks the library that writes zlib pages (`kdumpy.formats.codecs.DEFLATE`)."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown output format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if elf32 and fmt != "elf":
        raise UsageError("--elf32 goes with --format elf")
    t0 = time.monotonic()
    if fmt == "elf":
        _write_elf(dump, sink, 32 if elf32 else 64)
    else:
        _write_kdump(dump, sink, codec, threads, deflate)
    counts = dump.page_counts()
    return ConvertResult(
        counts[PageState.PRESENT],
        counts[PageState.EXCLUDED],
        counts[PageState.INCOMPLETE],
        time.monotonic() - t0,
    )
