"""`kdumpy dump`: makedumpfile's job. Filter a crash dump by dump level and write it out.

The output is kdump-compressed (optionally flattened, or split in parts) or ELF (`-E`), written as
PATH-incomplete and renamed when whole (`kdumpy.collect.output.DumpOutput`). Pages come from any
`Dump` (/proc/vmcore, an ELF or kdump file), are classified from VMCOREINFO alone
(`kdumpy.memory.pages`), and are written in pfn order, so the file is the same whatever the thread count.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from kdumpy.errors import UsageError
from kdumpy.formats import clib
from kdumpy.formats.codecs import DEFLATE, get_codec, zero_pages
from kdumpy.memory.dump import Dump
from kdumpy.memory.pages import Category

from .levels import DL_EXCLUDE_ZERO, REPORT_NAMES
from .pipeline import (
    BATCH_PAGES,
    CYCLE_PFNS,
    SMALL_BATCH_PAGES,
    SMALL_CYCLE_PFNS,
    CopyResult,
    FilterResult,
    copy_pages,
    filter_pages,
    masked_view,
    original_pages,
    read_batches,
)
from .progress import Messages

if TYPE_CHECKING:
    from kdumpy.formats.diskdump import DiskDumpWriter
    from kdumpy.formats.io import Sink

__all__ = ["DumpJob", "DumpResult", "mem_usage", "run_dump", "split_points", "work_sizes"]


@dataclass
class DumpJob:
    """What to write."""

    dump_level: int = 31
    """-d: page kinds to leave out (`kdumpy.collect.levels`)."""
    codec: str = "none"
    """-c zlib, -l lzo, -p snappy, -z zstd; none (makedumpfile's default: pages stored raw)."""
    deflate: str = DEFLATE[0]
    """--deflate: the library that writes zlib pages (`kdumpy.formats.codecs.DEFLATE`)."""
    elf: bool = False
    """-E: ELF output instead of kdump-compressed."""
    flattened: bool = False
    """-F: makedumpfile's flattened stream."""
    threads: int = 0
    """--num-threads: compression threads beside the main thread, which reads and writes (0: the main
    thread compresses too, makedumpfile's default). The output is identical whatever the number."""
    limit: int | None = None
    """-L: largest output size in bytes; when reached the dump is marked incomplete."""
    force: bool = False
    """-f: overwrite existing files."""


@dataclass
class DumpResult:
    """What a dump run did, with makedumpfile's report numbers."""

    max_mapnr: int
    original: int
    """makedumpfile's "Original pages"."""
    excluded: dict[Category, int]
    """Excluded pages per category, zero pages included."""
    written_pages: int = 0
    """Pages whose data went out (zero pages stored as the shared zero page included)."""
    bytes_written: int = 0
    complete: bool = True
    """False when -L or a full file system cut the dump short."""
    paths: list[str] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def total_excluded(self) -> int:
        return sum(self.excluded.values())

    def report(self) -> str:
        """makedumpfile's report (`print_report()`), page counts in hex."""
        lines = ["", f"Original pages  : 0x{self.original:016x}"]
        lines.append(f"  Excluded pages   : 0x{self.total_excluded:016x}")
        for cat, name in REPORT_NAMES.items():
            lines.append(f"    {name:<24}: 0x{self.excluded.get(cat, 0):016x}")
        lines.append(f"  Remaining pages  : 0x{self.original - self.total_excluded:016x}")
        if self.original:
            lines.append(
                f"  (The number of pages is reduced to "
                f"{(self.original - self.total_excluded) * 100 // self.original}%.)"
            )
        lines += [
            f"Memory Hole     : 0x{self.max_mapnr - self.original:016x}",
            "-" * 50,
            f"Total pages     : 0x{self.max_mapnr:016x}",
            f"Write bytes     : {self.bytes_written}",
            "",
        ]
        return "\n".join(lines)


def _new_writer(
    dump: Dump, job: DumpJob, max_mapnr: int, sink: Sink, split_range: tuple[int, int] | None
) -> DiskDumpWriter:
    from kdumpy.collect.convert import kdump_writer

    return kdump_writer(
        dump,
        sink,
        codec=job.codec,
        dump_level=job.dump_level,
        max_mapnr=max_mapnr,
        threads=job.threads,
        split_range=split_range,
        limit=job.limit,
        deflate=job.deflate,
    )


def split_points(bitmap2: npt.NDArray[np.uint8], max_mapnr: int, parts: int) -> list[tuple[int, int]]:
    """pfn ranges [start, end) of `parts` split files, each with about the same number of dumpable pages."""
    bits = np.unpackbits(bitmap2, bitorder="little")[:max_mapnr]
    cum = np.cumsum(bits, dtype=np.int64)
    total = int(cum[-1]) if len(cum) else 0
    bounds = [0]
    for k in range(1, parts):
        # The first pfn after which k/parts of the dumpable pages lie behind.
        pfn = int(np.searchsorted(cum, total * k // parts, side="right"))
        bounds.append(max(bounds[-1], min(pfn, max_mapnr)))
    bounds.append(max_mapnr)
    return list(itertools.pairwise(bounds))


def _write_kdump_part(
    dump: Dump,
    filt: FilterResult,
    job: DumpJob,
    out_path: str,
    split_range: tuple[int, int] | None,
    messages: Messages,
    result: DumpResult,
    batch: int,
) -> None:
    from kdumpy.formats.diskdump import DumpLimitReached

    from .output import DumpOutput

    start, end = split_range if split_range is not None else (0, filt.max_mapnr)
    ps = dump.page_size
    with DumpOutput(out_path, flattened=job.flattened, force=job.force) as out:
        writer = _new_writer(dump, job, filt.max_mapnr, out.sink, split_range)
        writer.write_bitmaps(filt.bitmap1, filt.bitmap2)
        total = _count_bits(filt.bitmap2, start, end)
        copied = CopyResult()
        messages.start("Copying data")
        try:
            copy_pages(
                dump,
                writer,
                filt.bitmap2,
                start,
                end,
                threads=job.threads,
                progress=lambda done: messages.progress(done, total, ps),
                result=copied,
                batch=batch,
            )
        except DumpLimitReached as e:
            result.complete = False
            messages.error(f"Can't write the dump file({out_path}). {e}")
            messages.error("This is an incomplete dumpfile, but might analyzable.")
        writer.finish(incomplete=dump.incomplete)
        messages.finish(total, ps)
        result.excluded[Category.ZERO] += copied.zero
        result.written_pages += copied.pages
        result.bytes_written += writer.bytes_written
    result.paths.append(out_path)


def _count_bits(bitmap: npt.NDArray[np.uint8], start: int, end: int) -> int:
    """Set bits of `bitmap` (LSB first) in [start, end)."""
    first, last = start // 8, -(-end // 8)
    bits = np.unpackbits(bitmap[first:last], bitorder="little")
    return int(np.count_nonzero(bits[start - first * 8 : end - first * 8]))


def _write_elf(
    dump: Dump, filt: FilterResult, job: DumpJob, out_path: str, messages: Messages, result: DumpResult,
    batch: int,
) -> None:  # fmt: skip
    from kdumpy.collect.convert import convert

    from .output import DumpOutput

    if job.dump_level & DL_EXCLUDE_ZERO:
        # ELF has no shared zero page: zero pages leave bitmap 2 before the headers are built, so
        # the dumpable pages are read twice, as makedumpfile does.
        messages.start("Excluding zero pages")
        bits = np.unpackbits(filt.bitmap2, bitorder="little")
        for pfns, pages in read_batches(dump, filt.bitmap2, 0, filt.max_mapnr, batch=batch):
            z = pfns[zero_pages(pages)]
            bits[z] = 0
            result.excluded[Category.ZERO] += len(z)
        b2 = np.packbits(bits, bitorder="little")[: len(filt.bitmap2)]
        messages.finish(filt.max_mapnr)
    else:
        b2 = filt.bitmap2
    view = masked_view(dump, b2)
    elf32 = dump.format == "elf32"
    messages.start("Copying data")
    with DumpOutput(out_path, force=job.force) as out:
        res = convert(view, out.sink, "elf", elf32=elf32)
    messages.finish(1)
    result.written_pages += res.pages_written
    result.bytes_written += _file_size(out_path)
    result.paths.append(out_path)


def _file_size(path: str) -> int:
    import os

    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def run_dump(dump: Dump, outputs: list[str], job: DumpJob, messages: Messages | None = None) -> DumpResult:
    """Filter `dump` at `job.dump_level` and write it to `outputs` (several: a --split set; "-": the
    flattened stream on standard output)."""
    messages = messages or Messages(0)
    if not outputs:
        raise UsageError("no dump file given")
    if job.elf and (job.codec != "none" or len(outputs) > 1 or job.flattened):
        raise UsageError("-E cannot be combined with compression, --split or -F")
    if len(outputs) > 1 and job.flattened:
        raise UsageError("--split cannot be combined with -F")
    if job.threads < 0:
        raise UsageError("--num-threads must be 0 or more")
    get_codec(job.codec, deflate=job.deflate)  # before the filter pass: a missing library fails at once
    if job.codec == "zlib" and job.deflate == "libdeflate" and clib.load("libdeflate") is None:
        messages.common_once("kdumpy: libdeflate is not installed: zlib pages are written by libz")
    t0 = time.monotonic()
    _keep_freed_memory()
    cycle, batch = work_sizes()
    filt = filter_pages(dump, job.dump_level, messages, cycle=cycle)
    excluded = dict(filt.excluded)
    excluded[Category.ZERO] = 0
    result = DumpResult(filt.max_mapnr, original_pages(dump, filt), excluded, notes=list(filt.notes))
    if job.elf:
        _write_elf(dump, filt, job, outputs[0], messages, result, batch)
    elif len(outputs) == 1:
        _write_kdump_part(dump, filt, job, outputs[0], None, messages, result, batch)
    else:
        for path, rng in zip(outputs, split_points(filt.bitmap2, filt.max_mapnr, len(outputs)), strict=True):
            _write_kdump_part(dump, filt, job, path, rng, messages, result, batch)
    result.seconds = time.monotonic() - t0
    return result


SHORT_OF_MEMORY = 64 << 20
"""MemAvailable below which the collector works in smaller cycles and batches, about 5 MiB less at
its peak: in the lab's capture kernel crashkernel=112M leaves 35 MiB, 128M 50 MiB, 192M 112 MiB.
Not higher: small batches cost time where many pages are written (-d 1 lzo on 5 GiB: 0.96 s with
batches of 1024 pages, 1.29 s with 256)."""


def work_sizes() -> tuple[int, int]:
    """(pfns per filter cycle, pages per batch) for this machine: smaller where memory is short."""
    return (SMALL_CYCLE_PFNS, SMALL_BATCH_PAGES) if _memory_is_short() else (CYCLE_PFNS, BATCH_PAGES)


def _memory_is_short() -> bool:
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024 < SHORT_OF_MEMORY
    except (OSError, ValueError, IndexError):
        pass
    return False


# glibc mallopt() parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def _keep_freed_memory() -> None:
    """Let glibc reuse the memory of freed arrays instead of unmapping it.

    Each cycle and batch makes numpy arrays of 64 KiB to 4 MiB; by default glibc maps most of them
    afresh and unmaps them when freed, so every cycle page-faults its arrays in again (measured: 40%
    of the classification's time on a 5 GiB dump). With the heap kept, peak RSS is what it was: the
    same arrays, now reused. Not glibc: nothing to do.
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, 32 << 20)
    mallopt(_M_TRIM_THRESHOLD, 64 << 20)
    mallopt(_M_TOP_PAD, 4 << 20)


def mem_usage(dump: Dump, messages: Messages | None = None) -> str:
    """The page composition of a dump, as `makedumpfile --mem-usage` prints it (`print_mem_usage()`):
    every page kind -d 31 would exclude, zero pages found by reading the pages."""
    cycle, batch = work_sizes()
    filt = filter_pages(dump, 31, messages, cycle=cycle)
    zero = 0
    ps = dump.page_size
    for _, pages in read_batches(dump, filt.bitmap2, 0, filt.max_mapnr, batch=batch):
        zero += int(np.count_nonzero(zero_pages(pages)))
    ex = dict(filt.excluded)
    ex[Category.ZERO] = zero
    original = original_pages(dump, filt)
    kern = original - sum(ex.values())
    rows = [
        ("ZERO", ex[Category.ZERO], "yes", "Pages filled with zero"),
        ("NON_PRI_CACHE", ex[Category.CACHE], "yes", "Cache pages without private flag"),
        ("PRI_CACHE", ex[Category.CACHE_PRIVATE], "yes", "Cache pages with private flag"),
        ("USER", ex[Category.USER], "yes", "User process pages"),
        ("FREE", ex[Category.FREE], "yes", "Free pages"),
        ("KERN_DATA", kern, "no", "Dumpable kernel data "),
    ]
    lines = ["", "TYPE\t\tPAGES\t\t\tEXCLUDABLE\tDESCRIPTION", "-" * 70]
    for name, n, yes, desc in rows:
        tabs = "\t\t" if len(name) < 8 else "\t"
        lines.append(f"{name}{tabs}{n:<16}\t{yes}\t\t{desc}")
    lines += [
        "",
        f"page size:\t\t{ps:<16}",
        f"Total pages on system:\t{original:<16}",
        f"Total size on system:\t{original * ps:<16} Byte",
    ]
    return "\n".join(lines)
