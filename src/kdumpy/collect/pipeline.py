"""The collector's passes over a dump, in bounded cycles of pfns.

1. `filter_pages`: for each cycle, the struct pages (one numpy array), their categories
   (`kdumpy.memory.pages.classify`), the multi-page exclusions in pfn order (`Excluder`); out come
   bitmap 1 (RAM) and bitmap 2 (dumpable), and the count of pages excluded per category.
2. `copy_pages`: the dumpable pages in batches of `BATCH_PAGES`, each read into a reused buffer with
   one preadv per run of pages -> the zero check and compression of the whole batch in one C call
   (`kdumpy.formats.codecs.Packer`, on a long-lived pool with --num-threads, while the next batch is
   read; the zero pages found serve both the report and the shared zero page) -> the kdump writer,
   in pfn order.

Memory: the bitmaps (2 bits per pfn) plus one cycle of struct pages and, per batch in flight, one
buffer of pages and one output area.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from kdumpy.errors import KdumpyError
from kdumpy.memory.dump import Dump, ElfDump, PageState
from kdumpy.memory.pages import L_FREE, Category, Excluder, MemMap, PageLayout, classify

from .progress import Messages

if TYPE_CHECKING:
    from kdumpy.formats.codecs import Packed
    from kdumpy.formats.diskdump import DiskDumpWriter

__all__ = [
    "BATCH_PAGES",
    "CYCLE_PFNS",
    "SMALL_BATCH_PAGES",
    "SMALL_CYCLE_PFNS",
    "CopyResult",
    "FilterResult",
    "PageReader",
    "copy_pages",
    "dumpable_batches",
    "filter_pages",
    "masked_view",
    "original_pages",
    "read_batches",
]

CYCLE_PFNS = 32768
"""pfns classified at a time: 2 MiB of struct pages (64 bytes each); larger cycles were no faster
(65 536: the same time on 5 GiB at -d 31, 2.7 MiB more peak RSS)."""
BATCH_PAGES = 1024
"""Pages read, checked, compressed and written at once (4 MiB of 4 KiB pages): large enough that the
per-batch work (a few numpy calls, one write of data, one of descriptors) is small beside the pages'."""
SMALL_CYCLE_PFNS, SMALL_BATCH_PAGES = 8192, 256
"""The same where memory is short (a capture kernel with a small crashkernel=): some MiB less at
the peak, for more per-cycle and per-batch work."""
_CLASSIFY_LEVELS = 0x1E  # any of -d 2, 4, 8, 16 needs the struct pages


@dataclass
class FilterResult:
    """What the filtering pass found."""

    max_mapnr: int
    """pfns covered by the bitmaps."""
    bitmap1: npt.NDArray[np.uint8]
    """RAM: one bit per pfn, LSB first."""
    bitmap2: npt.NDArray[np.uint8]
    """Dumpable: RAM with data in the input, less the excluded pages (zero pages stay: they are
    found when written)."""
    excluded: dict[Category, int] = field(default_factory=dict)
    """pfns excluded per category, counted as makedumpfile counts them (a multi-page exclusion counts
    every pfn it covers)."""
    notes: list[str] = field(default_factory=list)
    """Rules that could not be decided (those pages were kept)."""

    @property
    def num_dumpable(self) -> int:
        return int(np.unpackbits(self.bitmap2).sum())


def filter_pages(
    dump: Dump, dump_level: int, messages: Messages | None = None, *, cycle: int = CYCLE_PFNS
) -> FilterResult:
    """Pass 1: bitmaps and per-category counts for `dump_level`, `cycle` pfns at a time (a multiple
    of 8)."""
    max_mapnr = dump.max_pfn
    nbytes = -(-max_mapnr // 8)
    b1 = np.zeros(nbytes, dtype=np.uint8)
    b2 = np.zeros(nbytes, dtype=np.uint8)
    counts = np.zeros(len(Category), dtype=np.int64)
    result = FilterResult(max_mapnr, b1, b2)
    memmap = _memmap(dump, dump_level, max_mapnr, result, messages)
    excluder = Excluder(max_mapnr)
    if messages:
        messages.start("Excluding unnecessary pages")
    for lo in range(0, max_mapnr, cycle):
        hi = min(max_mapnr, lo + cycle)
        states = dump.page_states(lo, hi)
        ram = states != PageState.MISSING
        keep = states == PageState.PRESENT
        if memmap is not None:
            found = _settled_cycle(memmap, excluder, lo, hi, ram, dump_level)
            if found is None:
                pages, valid = memmap.read(lo, hi)
                found = classify(memmap.layout, pages, valid & ram, lo, dump_level)
            final = excluder.apply(lo, *found)
            counts += np.bincount(final, minlength=len(Category))
            keep &= final == 0
        # Cycles start on multiples of 8 pfns, so whole bytes are packed in place.
        b1[lo // 8 : lo // 8 + -(-(hi - lo) // 8)] = np.packbits(ram, bitorder="little")
        b2[lo // 8 : lo // 8 + -(-(hi - lo) // 8)] = np.packbits(keep, bitorder="little")
        if messages:
            messages.progress(hi, max_mapnr)
    if messages:
        messages.finish(max_mapnr)
    result.excluded = {c: int(counts[c]) for c in Category if c != Category.KEEP}
    return result


def _settled_cycle(
    memmap: MemMap, excluder: Excluder, lo: int, hi: int, ram: npt.NDArray[np.bool_], dump_level: int
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]] | None:
    """The candidates of a cycle that needs no struct page read one by one, else None (then all are
    read and classified): a cycle without RAM (a hole: 8 of the 48 cycles of the lab's 5 GiB
    guest), and a cycle of nothing but free buddy blocks of the largest order, found from the first
    struct page of each block.

    With -d 16 such a block's first page excludes the whole block and the others are not examined
    (makedumpfile's rule, `Excluder`), so reading their struct pages is wasted: on an idle machine
    that is most of memory (4.3 of the 4.9 GiB of the lab's 5 GiB vmcore)."""
    if excluder.covered_until > lo:
        return None
    if not ram.any():
        none = np.zeros(hi - lo, dtype=np.uint8)
        return none, none
    top = (memmap.layout.max_order or 0) - 1
    # Blocks of fewer than 64 pages: the heads' reads, one by one, would cost more than they save.
    if not dump_level & L_FREE or top < 6 or (hi - lo) % (1 << top) or lo % (1 << top) or not ram.all():
        return None
    step = 1 << top
    heads, valid = memmap.read_every(lo, hi, step)
    if not valid.all():
        return None
    # The same rules decide each first page; pfns are spaced, which only compound pages (not free
    # ones) would notice.
    cat, order = classify(memmap.layout, heads, valid, lo, dump_level)
    if not (np.all(cat == Category.FREE) and np.all(order == top)):
        return None
    cat = np.zeros(hi - lo, dtype=np.uint8)
    order = np.zeros(hi - lo, dtype=np.uint8)
    cat[::step] = Category.FREE
    order[::step] = top
    return cat, order


def _memmap(
    dump: Dump, dump_level: int, max_mapnr: int, result: FilterResult, messages: Messages | None
) -> MemMap | None:
    """The struct page reader, or None when the level needs none and the dump cannot give one.

    makedumpfile runs the page pass for hwpoison and offline pages whatever the level; without
    VMCOREINFO (or on an unsupported kernel) -d 0 and -d 1 still work, and other levels fail.
    """
    from kdumpy.memory.kernel import Kernel

    try:
        kernel = Kernel(dump)
        layout = PageLayout.from_vmcoreinfo(kernel.info)
        memmap = MemMap(kernel, layout, max_mapnr)
    except KdumpyError as e:
        if dump_level & _CLASSIFY_LEVELS:
            raise
        if messages:
            messages.debug(f"struct pages not read ({e}): hwpoison and offline pages are kept")
        return None
    for note in layout.notes:
        result.notes.append(note)
        if messages:
            messages.common_once(f"kdumpy: {note}")
    return memmap


def _bit_windows(
    bitmap2: npt.NDArray[np.uint8], start: int, end: int
) -> Iterator[tuple[int, npt.NDArray[np.uint8]]]:
    """(first pfn, one bit per pfn) of [start, end) one cycle at a time, bits before `start` cleared.

    One cycle, not more: at -d 0/-d 1 nearly every pfn is set, and a larger window's arrays grew
    peak RSS with the dump size (+14 MiB from 1 to 5 GiB with 8 cycles)."""
    lo = start - start % 8
    while lo < end:
        hi = min(end, lo + CYCLE_PFNS)
        bits = np.unpackbits(bitmap2[lo // 8 : -(-hi // 8)], bitorder="little")[: hi - lo]
        if lo < start:
            bits[: start - lo] = 0
        yield lo, bits
        lo = hi


def dumpable_batches(
    bitmap2: npt.NDArray[np.uint8], start: int, end: int, limit: int = BATCH_PAGES
) -> Iterator[npt.NDArray[np.int64]]:
    """The pfns set in `bitmap2` within [start, end), ascending, in arrays of `limit` (the last shorter)."""
    carry = np.empty(0, dtype=np.int64)
    for lo, bits in _bit_windows(bitmap2, start, end):
        pfns = np.flatnonzero(bits) + lo
        if len(carry):
            pfns = np.concatenate((carry, pfns))
        full = len(pfns) - len(pfns) % limit
        for a in range(0, full, limit):
            yield pfns[a : a + limit]
        carry = pfns[full:]
    if len(carry):
        yield carry


class PageReader:
    """Reads pages of a dump into a caller's buffer: one `Dump.read_pages_into` per run of
    consecutive pfns (for /proc/vmcore, one preadv straight into the buffer)."""

    def __init__(self, dump: Dump) -> None:
        self.dump = dump
        self.page_size = dump.page_size

    def read(self, pfns: npt.NDArray[np.int64], out: npt.NDArray[np.uint8]) -> None:
        """Fill `out` (len(pfns) x page_size) with the pages `pfns` (ascending, each present)."""
        n = len(pfns)
        if not n:
            return
        first, last = int(pfns[0]), int(pfns[-1])
        if last - first + 1 == n:  # one run (ascending pfns): the usual batch at -d 0 and -d 1
            self.dump.read_pages_into(first, n, out.reshape(-1).data)
            return
        breaks = np.flatnonzero(np.diff(pfns) != 1) + 1
        starts = np.concatenate(([0], breaks)).tolist()
        ends = np.concatenate((breaks, [n])).tolist()
        first = pfns[starts].tolist()
        flat = out.reshape(-1).data
        ps = self.page_size
        for a, b, pfn in zip(starts, ends, first, strict=True):
            self.dump.read_pages_into(pfn, b - a, flat[a * ps : b * ps])


def read_batches(
    dump: Dump, bitmap2: npt.NDArray[np.uint8], start: int, end: int, *, buffers: int = 1,
    batch: int = BATCH_PAGES,
) -> Iterator[tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8]]]:  # fmt: skip
    """(pfns, pages) of each batch of (at most `batch`) dumpable pages of [start, end): pages is
    len(pfns) x page_size, in one of `buffers` buffers used in turn, so it stays valid for
    `buffers - 1` more batches."""
    reader = PageReader(dump)
    ring: list[npt.NDArray[np.uint8]] = []
    for k, pfns in enumerate(dumpable_batches(bitmap2, start, end, batch)):
        if len(ring) < buffers:
            ring.append(np.empty((batch, dump.page_size), dtype=np.uint8))
        pages = ring[k % buffers][: len(pfns)]
        reader.read(pfns, pages)
        yield pfns, pages


@dataclass
class CopyResult:
    """What `copy_pages` wrote."""

    pages: int = 0
    """Pages whose descriptor was written (zero pages included)."""
    zero: int = 0
    """Zero pages found (stored as the shared zero page), 0 unless dump_level & 1."""


def copy_pages(
    dump: Dump,
    writer: DiskDumpWriter,
    bitmap2: npt.NDArray[np.uint8],
    start: int,
    end: int,
    *,
    threads: int = 0,
    progress: Callable[[int], None] | None = None,
    result: CopyResult | None = None,
    batch: int = BATCH_PAGES,
) -> CopyResult:
    """Write the pages of [start, end) set in `bitmap2` through `writer` (after its bitmaps).

    Each batch is checked for zero pages (with dump_level & 1) and compressed as one task per
    thread, and written with one write of data and one of descriptors. With `threads` >= 1 (and a
    codec threads help, `kdumpy.formats.codecs.Packer`) the next batch is read while the pool
    compresses the current one. The writer's `DumpLimitReached`
    propagates; `result` then holds what was written before it.
    """
    from kdumpy.formats.codecs import Packer

    result = result if result is not None else CopyResult()
    share_zero = bool(writer.dump_level & 1)
    packer = Packer(writer.codec, dump.page_size, threads)
    depth = 1 if packer.threads else 0  # batches compressing while the next one is read
    pending: deque[tuple[npt.NDArray[np.int64], Callable[[], Packed]]] = deque()

    def flush() -> None:
        pfns, wait = pending.popleft()
        packed = wait()
        if packed.zero is not None:
            result.zero += int(np.count_nonzero(packed.zero))
        try:
            writer.write_compressed(pfns, packed.sizes, packed.pieces, packed.zero)
        finally:
            packer.release(packed)
        result.pages += len(pfns)
        if progress is not None:
            progress(result.pages)

    try:
        for pfns, pages in read_batches(dump, bitmap2, start, end, buffers=depth + 1, batch=batch):
            pending.append((pfns, packer.submit(pages, exclude_zero=share_zero)))
            if len(pending) > depth:
                flush()
        while pending:
            flush()
    finally:
        packer.close()
    return result


def original_pages(dump: Dump, result: FilterResult) -> int:
    """makedumpfile's "Original pages": max_mapnr less its memory-hole count.

    For an ELF input, makedumpfile counts the pages of each PT_LOAD, so memory that two segments
    cover (the kernel-text segment lies inside a direct-map one on x86_64) counts twice; we report the
    same number. For other inputs it is the RAM of bitmap 1.
    """
    if isinstance(dump, ElfDump):
        ps = dump.page_size
        total = 0
        for paddr, _, memsz in dump.load_vaddrs():
            if memsz:
                lo, hi = paddr // ps, min((paddr + memsz) // ps, result.max_mapnr)
                total += max(0, hi - lo)
        return total
    return int(np.unpackbits(result.bitmap1).sum())


def masked_view(dump: Dump, bitmap2: npt.NDArray[np.uint8]) -> Dump:
    """The same dump, with every pfn not set in `bitmap2` reported EXCLUDED (for the ELF writer of
    `kdumpy.collect.convert`, which writes what a dump says is present).

    The view shares the dump's open file: close the dump, not the view.
    """
    view = type(dump).__new__(type(dump))
    view.__dict__.update(dump.__dict__)
    inner = dump.page_states
    nbits = len(bitmap2) * 8

    def page_states(start_pfn: int, end_pfn: int) -> npt.NDArray[np.uint8]:
        states = inner(start_pfn, end_pfn).copy()
        lo, hi = max(start_pfn, 0), min(end_pfn, nbits)
        if lo < hi:
            first = lo - lo % 8
            packed = bitmap2[first // 8 : -(-hi // 8)]
            bits = np.unpackbits(packed, bitorder="little")[lo - first : hi - first]
            seg = states[lo - start_pfn : hi - start_pfn]
            seg[(seg == PageState.PRESENT) & (bits == 0)] = PageState.EXCLUDED
        return states

    setattr(view, "page_states", page_states)  # noqa: B010 - shadows the method on this instance only
    # Counts must come from the masked states too: a format's own shortcut (ElfDump counts from its
    # segments) would report the unmasked pages.
    setattr(view, "page_counts", functools.partial(Dump.page_counts, view))  # noqa: B010
    return view
