"""kdump-compressed files: writer -> reader round trips, makedumpfile's layout rules, split parts,
incomplete dumps, eraseinfo, hostile input; and, on a real vmcore, byte-exactness with makedumpfile."""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import shutil
import struct
import subprocess
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdumpy.errors import (
    CorruptDumpError,
    DumpError,
    KdumpyError,
    PageExcludedError,
    PageIncompleteError,
    PageMissingError,
    TruncatedDumpError,
    UnsupportedError,
)
from kdumpy.formats.codecs import Codec, Packer, get_codec, zero_pages
from kdumpy.formats.diskdump import (
    DISK_DUMP_HEADER,
    DUMP_DH_COMPRESSED_INCOMPLETE,
    KDUMP_SUB_HEADER,
    PAGE_DESC,
    PAGE_EXCLUDED,
    PAGE_INCOMPLETE,
    PAGE_MISSING,
    PAGE_PRESENT,
    DiskDump,
    DiskDumpHeader,
    DiskDumpWriter,
    DumpLimitReached,
    KdumpSubHeader,
    Utsname,
    _Bitmap,
)
from kdumpy.formats.io import BytesSink, BytesSource, FileSink, FileSource

PAGE = 4096
MAX_MAPNR = 1203  # not a multiple of 8: the last bitmap byte is partly past max_mapnr
UTS = Utsname("Linux", "lab", "6.1.0-18-amd64", "#1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1", "x86_64", "(none)")
VMCOREINFO = b"OSRELEASE=6.1.0-18-amd64\nPAGESIZE=4096\nCRASHTIME=1700000000\n"
CODEC_NAMES = ["zlib", "lzo", "snappy", "zstd", "none"]


def note(name: bytes, ntype: int, desc: bytes) -> bytes:
    """One ELF note: Elf64_Nhdr, name and desc each padded to 4 bytes."""
    pad = lambda b: b + bytes(-len(b) % 4)  # noqa: E731
    return struct.pack("<III", len(name) + 1, len(desc), ntype) + pad(name + b"\0") + pad(desc)


NOTES = note(b"CORE", 1, bytes(336)) + note(b"CORE", 1, bytes(336)) + note(b"VMCOREINFO", 0, VMCOREINFO)


def make_page(pfn: int, kind: int) -> bytes:
    """kind 0 zero, 1 random (incompressible), 2 text, 3 low-entropy; each names its pfn."""
    if kind == 0:
        return bytes(PAGE)
    if kind == 1:
        return os.urandom(PAGE)
    if kind == 2:
        return (f"pfn {pfn:#x} page cache text ".encode() * 200)[:PAGE]
    rng = np.random.default_rng(pfn)
    return pfn.to_bytes(8, "little") + bytes(rng.integers(0, 4, PAGE - 8, dtype=np.uint8))


def pack(bits: npt.NDArray[np.bool_]) -> npt.NDArray[np.uint8]:
    return np.packbits(bits, bitorder="little")


@dataclass
class Synth:
    """A synthetic machine: RAM map, dumpable map and page contents."""

    ram: npt.NDArray[np.bool_]
    dumpable: npt.NDArray[np.bool_]
    pages: dict[int, bytes] = field(default_factory=dict)

    @classmethod
    def make(cls, seed: int = 1, max_mapnr: int = MAX_MAPNR) -> Synth:
        rng = np.random.default_rng(seed)
        ram = np.ones(max_mapnr, dtype=np.bool_)
        ram[160:300] = False  # a memory hole
        ram[-3:] = False
        dumpable = ram & (rng.random(max_mapnr) > 0.25)
        pages = {int(p): make_page(int(p), int(p) % 4) for p in np.flatnonzero(dumpable)}
        return cls(ram, dumpable, pages)

    @property
    def pfns(self) -> npt.NDArray[np.int64]:
        return np.flatnonzero(self.dumpable).astype(np.int64)

    def data(self, pfns: npt.NDArray[np.int64]) -> bytes:
        return b"".join(self.pages[int(p)] for p in pfns)


def write(
    synth: Synth,
    sink: BytesSink | FileSink | None = None,
    *,
    codec: str = "zlib",
    dump_level: int = 1,
    split_range: tuple[int, int] | None = None,
    limit: int | None = None,
    eraseinfo: bytes | None = None,
    batch: int = 97,
    threads: int = 1,
    note_data: bytes = NOTES,
) -> tuple[BytesSink | FileSink, DiskDumpWriter]:
    """Write `synth` as a kdump-compressed file; stop quietly at DumpLimitReached (incomplete)."""
    sink = sink if sink is not None else BytesSink()
    w = DiskDumpWriter(
        sink, page_size=PAGE, max_mapnr=len(synth.ram), utsname=UTS, timestamp=1700000000.25, nr_cpus=2,
        phys_base=0x1E000000, dump_level=dump_level, codec=get_codec(codec), note_data=note_data,
        threads=threads, split_range=split_range, limit=limit,
    )  # fmt: skip
    w.write_bitmaps(pack(synth.ram), pack(synth.dumpable))
    pfns = synth.pfns
    if split_range is not None:
        pfns = pfns[(pfns >= split_range[0]) & (pfns < split_range[1])]
    try:
        for a in range(0, len(pfns), batch):
            w.write_pages(pfns[a : a + batch], synth.data(pfns[a : a + batch]))
    except DumpLimitReached:
        w.finish(incomplete=True, eraseinfo=eraseinfo)
    else:
        w.finish(eraseinfo=eraseinfo)
    return sink, w


def written(synth: Synth, **kw: object) -> bytes:
    sink, _ = write(synth, **kw)  # type: ignore[arg-type]
    assert isinstance(sink, BytesSink)
    return bytes(sink.data)


@pytest.fixture(scope="module")
def synth() -> Synth:
    return Synth.make()


@pytest.fixture(scope="module")
def dump_bytes(synth: Synth) -> bytes:
    return written(synth)


# --- round trips -----------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", CODEC_NAMES)
@pytest.mark.parametrize("dump_level", [0, 1, 31])
def test_writer_reader_round_trip_each_codec(synth: Synth, codec: str, dump_level: int) -> None:
    d = DiskDump(BytesSource(written(synth, codec=codec, dump_level=dump_level)))
    assert d.codec.name == codec
    assert d.dump_level == dump_level
    pfns = synth.pfns
    assert d.read_pages(pfns) == synth.data(pfns)
    for p in pfns[::7]:
        assert d.read_page(int(p)) == synth.pages[int(p)]
    rev = pfns[::-3]
    assert d.read_pages(rev) == synth.data(rev)  # any order, repeats allowed
    assert d.read_pages(np.r_[pfns[:3], pfns[:3]]) == synth.data(np.r_[pfns[:3], pfns[:3]])
    assert not d.incomplete and not d.truncated


def test_page_states_and_errors_follow_crash(synth: Synth, dump_bytes: bytes) -> None:
    d = DiskDump(BytesSource(dump_bytes))
    states = d.page_states(0, MAX_MAPNR + 50)
    expect = np.full(MAX_MAPNR + 50, PAGE_MISSING, dtype=np.uint8)
    expect[:MAX_MAPNR][synth.ram] = PAGE_EXCLUDED
    expect[:MAX_MAPNR][synth.dumpable] = PAGE_PRESENT
    assert np.array_equal(states, expect)
    assert np.array_equal(d.page_states(500, 700), expect[500:700])
    excluded = int(np.flatnonzero(synth.ram & ~synth.dumpable)[0])
    with pytest.raises(PageExcludedError) as e:
        d.read_page(excluded)
    assert e.value.paddr == excluded * PAGE
    for pfn in (200, MAX_MAPNR - 1, MAX_MAPNR, 10**12, -1):  # hole, hole, past max_mapnr
        with pytest.raises(PageMissingError):
            d.read_page(pfn)
    with pytest.raises(PageExcludedError):
        d.read_pages(np.array([int(synth.pfns[0]), excluded]))


def test_header_and_sub_header_as_makedumpfile_writes_them(synth: Synth, dump_bytes: bytes) -> None:
    d = DiskDump(BytesSource(dump_bytes))
    h = DiskDumpHeader.unpack(dump_bytes)
    sub = KdumpSubHeader.unpack(dump_bytes[PAGE : PAGE + KDUMP_SUB_HEADER.size])
    assert h.signature == b"KDUMP   " and h.header_version == 6
    assert d.utsname == UTS and d.nr_cpus == 2 and d.phys_base == 0x1E000000
    assert d.timestamp == 1700000000.25 and (h.tv_sec, h.tv_usec) == (1700000000, 250000)
    assert h.status == 0x1 and h.block_size == PAGE
    assert h.sub_hdr_size == -(-(104 + len(NOTES)) // PAGE)
    bitmap_bytes = (MAX_MAPNR + 7) // 8
    assert h.bitmap_blocks == 2 * ((bitmap_bytes + PAGE - 1) // PAGE)
    assert h.max_mapnr == MAX_MAPNR == sub.max_mapnr_64
    assert (h.total_ram_blocks, h.device_blocks, h.written_blocks, h.current_cpu) == (0, 0, 0, 0)
    # Not split: every pfn field 0; no eraseinfo: offset 0 (section 8 of the reference).
    assert (sub.split, sub.start_pfn, sub.end_pfn, sub.start_pfn_64, sub.end_pfn_64) == (0, 0, 0, 0, 0)
    assert (sub.offset_eraseinfo, sub.size_eraseinfo) == (0, 0)
    assert sub.offset_note == PAGE + 104 and sub.size_note == len(NOTES)
    assert d.note_data == NOTES
    # offset_vmcoreinfo points at the note's desc (the text), not at its header.
    assert dump_bytes[sub.offset_vmcoreinfo : sub.offset_vmcoreinfo + sub.size_vmcoreinfo] == VMCOREINFO
    assert d.vmcoreinfo == VMCOREINFO
    assert dump_bytes[DISK_DUMP_HEADER.size : PAGE] == bytes(PAGE - DISK_DUMP_HEADER.size)
    assert np.array_equal(d.bitmap1, pack(synth.ram)) and np.array_equal(d.bitmap2, pack(synth.dumpable))


def test_max_mapnr_above_4g_pfns_is_clamped_in_the_32bit_field() -> None:
    w = DiskDumpWriter(
        BytesSink(), page_size=PAGE, max_mapnr=2**32 + 9, utsname=UTS, timestamp=0, nr_cpus=1,
        phys_base=0, dump_level=0, codec=get_codec("none"), note_data=b"",
    )  # fmt: skip
    assert w.header.max_mapnr == 0xFFFFFFFF and w.sub_header.max_mapnr_64 == 2**32 + 9
    assert w.sub_header.offset_note == 0 and w.sub_header.offset_vmcoreinfo == 0


def test_negative_phys_base_is_stored_as_the_same_unsigned_bits() -> None:
    # KASLR can put the kernel below its link address: VMCOREINFO then says NUMBER(phys_base)=-211812352.
    w = DiskDumpWriter(
        BytesSink(), page_size=PAGE, max_mapnr=16, utsname=UTS, timestamp=0, nr_cpus=1,
        phys_base=-211812352, dump_level=0, codec=get_codec("none"), note_data=b"",
    )  # fmt: skip
    assert w.sub_header.phys_base == 2**64 - 211812352


def test_zero_pages_share_one_page_first_in_the_data_area(synth: Synth, dump_bytes: bytes) -> None:
    d = DiskDump(BytesSource(dump_bytes))
    pfns, descs = d.descriptors(0, MAX_MAPNR)
    assert np.array_equal(pfns, synth.pfns)
    table_end = d.table_offset + len(pfns) * PAGE_DESC.itemsize  # not padded
    assert d.zero_page_offset() == table_end
    assert dump_bytes[table_end : table_end + PAGE] == bytes(PAGE)
    zero = np.array([synth.pages[int(p)] == bytes(PAGE) for p in pfns])
    assert zero.sum() > 10
    pd_zero = np.array([(table_end, PAGE, 0, 0)], dtype=PAGE_DESC)
    assert all(descs[zero].tobytes()[i : i + 24] == pd_zero.tobytes() for i in range(0, 24 * zero.sum(), 24))
    # The first non-zero page follows the zero page.
    assert descs["offset"][~zero][0] == table_end + PAGE
    assert int(descs["offset"][~zero].min()) == table_end + PAGE


def test_without_level_bit_1_zero_pages_are_compressed_like_others(synth: Synth) -> None:
    d = DiskDump(BytesSource(written(synth, dump_level=0)))
    assert d.zero_page_offset() is None
    pfns, descs = d.descriptors(0, MAX_MAPNR)
    assert len(np.unique(descs["offset"])) == len(pfns)
    assert descs["offset"].min() == d.table_offset + len(pfns) * PAGE_DESC.itemsize


@pytest.mark.parametrize("codec", CODEC_NAMES)
def test_page_that_does_not_shrink_is_stored_raw(synth: Synth, codec: str) -> None:
    d = DiskDump(BytesSource(written(synth, codec=codec)))
    pfns, descs = d.descriptors(0, MAX_MAPNR)
    kinds = pfns % 4
    random = descs[kinds == 1]
    assert (random["flags"] == 0).all() and (random["size"] == PAGE).all()
    text = descs[kinds == 2]
    if codec == "none":
        assert (text["flags"] == 0).all()
    else:
        assert (text["flags"] == get_codec(codec).flag).all() and (text["size"] < PAGE).all()
    assert (descs["page_flags"] == 0).all()


class _ExactlyAPage(Codec):
    """A codec whose output is exactly one page long: not smaller, so not kept."""

    name = "exactly-a-page"  # no C library: the one-page function below is used
    flag = 0x1

    def _py_function(self, page_size: int) -> Callable[[bytes], bytes]:
        return lambda page: b"\x78" * PAGE


def test_compressed_form_of_exactly_a_page_is_not_kept(synth: Synth) -> None:
    sink = BytesSink()
    w = DiskDumpWriter(
        sink, page_size=PAGE, max_mapnr=MAX_MAPNR, utsname=UTS, timestamp=0, nr_cpus=1,
        phys_base=0, dump_level=0, codec=_ExactlyAPage(), note_data=b"",
    )  # fmt: skip
    w.write_bitmaps(pack(synth.ram), pack(synth.dumpable))
    w.write_pages(synth.pfns, synth.data(synth.pfns))
    w.finish()
    d = DiskDump(BytesSource(bytes(sink.data)))
    _, descs = d.descriptors(0, MAX_MAPNR)
    assert (descs["flags"] == 0).all() and (descs["size"] == PAGE).all()
    assert d.read_pages(synth.pfns) == synth.data(synth.pfns)


def test_bitmap_bits_past_max_mapnr_are_written_as_zeros(synth: Synth) -> None:
    b1, b2 = pack(synth.ram), pack(synth.dumpable)
    b1[-1] |= 0xF8  # MAX_MAPNR % 8 == 3: bits 3..7 of the last byte are past max_mapnr
    b2[-1] |= 0xF8
    sink = BytesSink()
    w = DiskDumpWriter(
        sink, page_size=PAGE, max_mapnr=MAX_MAPNR, utsname=UTS, timestamp=0, nr_cpus=1,
        phys_base=0, dump_level=1, codec=get_codec("zlib"), note_data=b"",
    )  # fmt: skip
    w.write_bitmaps(b1, b2)
    assert w.num_dumpable == len(synth.pfns)
    d = DiskDump(BytesSource(bytes(sink.data)))
    assert np.array_equal(d.bitmap1, pack(synth.ram)) and np.array_equal(d.bitmap2, pack(synth.dumpable))


def test_output_is_the_same_whatever_the_threads_and_batches(synth: Synth) -> None:
    one = written(synth, codec="zstd", batch=1000)
    assert written(synth, codec="zstd", batch=7, threads=3) == one
    assert written(synth, codec="zstd", batch=1, threads=2) == one


def test_file_sink_and_file_source(tmp_path: Path, synth: Synth) -> None:
    path = tmp_path / "dump.kdump"
    with FileSink(path) as sink:
        write(synth, sink)
    assert (path.stat().st_mode & 0o777) == 0o600
    assert path.read_bytes() == written(synth)
    with FileSource(path) as src:
        assert DiskDump(src).read_pages(synth.pfns) == synth.data(synth.pfns)
    with pytest.raises(FileExistsError):
        FileSink(path)


# --- split -----------------------------------------------------------------------------------------


def test_split_parts_each_hold_their_range(synth: Synth) -> None:
    bounds = [0, 400, 401, 900, MAX_MAPNR]
    parts = [DiskDump(BytesSource(written(synth, split_range=r))) for r in itertools.pairwise(bounds)]
    global_data_start = None
    for part, (lo, hi) in zip(parts, itertools.pairwise(bounds), strict=True):
        assert part.split and (part.start_pfn, part.end_pfn) == (lo, hi)
        sub = part.sub_header
        assert (sub.start_pfn, sub.end_pfn, sub.start_pfn_64, sub.end_pfn_64) == (lo, hi, lo, hi)
        # Full-size bitmaps in every part.
        assert np.array_equal(part.bitmap2, pack(synth.dumpable))
        mine = synth.pfns[(synth.pfns >= lo) & (synth.pfns < hi)]
        assert part.num_dumpable == len(mine)
        if len(mine):
            assert part.read_pages(mine) == synth.data(mine)
        states = part.page_states(0, MAX_MAPNR)
        outside = np.ones(MAX_MAPNR, dtype=np.bool_)
        outside[lo:hi] = False
        assert (states[outside] == PAGE_MISSING).all()
        other = synth.pfns[(synth.pfns < lo) | (synth.pfns >= hi)]
        with pytest.raises(PageMissingError):
            part.read_page(int(other[0]))
        # The descriptor table is sized for the global number of dumpable pages in every part.
        start = part.zero_page_offset()
        assert start == part.table_offset + len(synth.pfns) * PAGE_DESC.itemsize
        global_data_start = global_data_start or start
        assert start == global_data_start


def test_writer_rejects_pfns_it_cannot_place(synth: Synth) -> None:
    w = DiskDumpWriter(
        BytesSink(), page_size=PAGE, max_mapnr=MAX_MAPNR, utsname=UTS, timestamp=0, nr_cpus=1,
        phys_base=0, dump_level=1, codec=get_codec("zlib"), note_data=b"", split_range=(100, 600),
    )  # fmt: skip
    with pytest.raises(RuntimeError):
        w.write_pages(np.array([100]), bytes(PAGE))
    w.write_bitmaps(pack(synth.ram), pack(synth.dumpable))
    pfns = synth.pfns[(synth.pfns >= 100) & (synth.pfns < 600)]
    excluded = int(np.flatnonzero(synth.ram & ~synth.dumpable)[5])
    outside = int(synth.pfns[-1])
    for bad in ([excluded], [outside], [int(pfns[1]), int(pfns[0])]):
        with pytest.raises(ValueError):
            w.write_pages(np.array(bad), bytes(PAGE * len(bad)))
    with pytest.raises(ValueError):
        w.write_pages(pfns[:2], bytes(PAGE))
    w.write_pages(pfns[:2], synth.data(pfns[:2]))
    with pytest.raises(ValueError):  # not after what was written
        w.write_pages(pfns[1:2], synth.data(pfns[1:2]))


def test_a_skipped_pfn_reads_as_incomplete(synth: Synth) -> None:
    sink = BytesSink()
    w = DiskDumpWriter(
        sink, page_size=PAGE, max_mapnr=MAX_MAPNR, utsname=UTS, timestamp=0, nr_cpus=1,
        phys_base=0, dump_level=1, codec=get_codec("lzo"), note_data=b"",
    )  # fmt: skip
    w.write_bitmaps(pack(synth.ram), pack(synth.dumpable))
    pfns = synth.pfns
    keep = np.r_[pfns[:10], pfns[11:]]
    w.write_pages(keep, synth.data(keep))
    w.finish()
    d = DiskDump(BytesSource(bytes(sink.data)))
    with pytest.raises(PageIncompleteError):
        d.read_page(int(pfns[10]))
    assert d.read_pages(keep) == synth.data(keep)
    assert d.page_states(int(pfns[10]), int(pfns[10]) + 1)[0] == PAGE_INCOMPLETE


# --- incomplete dumps ------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["zlib", "none"])
def test_limit_reached_gives_an_incomplete_dump_readable_for_its_pages(synth: Synth, codec: str) -> None:
    full = written(synth, codec=codec)
    limit = len(full) * 2 // 3
    sink = BytesSink()
    with pytest.raises(DumpLimitReached) as e:
        w = DiskDumpWriter(
            sink, page_size=PAGE, max_mapnr=MAX_MAPNR, utsname=UTS, timestamp=0, nr_cpus=1,
            phys_base=0, dump_level=1, codec=get_codec(codec), note_data=b"", limit=limit,
        )  # fmt: skip
        w.write_bitmaps(pack(synth.ram), pack(synth.dumpable))
        w.write_pages(synth.pfns, synth.data(synth.pfns))
    assert e.value.next_pfn is not None and isinstance(e.value, KdumpyError)
    with pytest.raises(DumpLimitReached):  # stays stopped
        w.write_pages(synth.pfns[-1:], synth.data(synth.pfns[-1:]))
    w.finish(incomplete=True, eraseinfo=b"dropped: past the limit")
    data = bytes(sink.data)
    assert len(data) <= limit
    d = DiskDump(BytesSource(data))
    assert d.incomplete and d.status & DUMP_DH_COMPRESSED_INCOMPLETE and d.eraseinfo is None
    done = synth.pfns[synth.pfns < e.value.next_pfn]
    rest = synth.pfns[synth.pfns >= e.value.next_pfn]
    assert len(done) and len(rest)
    assert d.read_pages(done) == synth.data(done)
    for p in rest[:20]:
        with pytest.raises(PageIncompleteError):
            d.read_page(int(p))
    states = d.page_states(0, MAX_MAPNR)
    assert (states[done] == PAGE_PRESENT).all() and (states[rest] == PAGE_INCOMPLETE).all()


def test_batches_after_the_limit_stop_at_the_first_page_that_does_not_fit(synth: Synth) -> None:
    sink, _w = write(synth, limit=len(written(synth)) // 2, batch=5)
    d = DiskDump(BytesSource(bytes(sink.data)))  # type: ignore[union-attr]
    states = d.page_states(0, MAX_MAPNR)[synth.pfns]
    # Present pages first, then incomplete ones: nothing was written after the stop.
    first_missing = int(np.argmax(states == PAGE_INCOMPLETE))
    assert first_missing > 0 and (states[first_missing:] == PAGE_INCOMPLETE).all()
    assert d.incomplete


class FullDisk(BytesSink):
    """A sink whose file system fills up at `capacity` bytes of file (ENOSPC, like a full /var/crash)."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity

    def write_at(self, offset: int, data: bytes | memoryview) -> None:
        if offset + len(memoryview(data).cast("B")) > self.capacity and offset >= PAGE:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        super().write_at(offset, data)


def test_enospc_keeps_descriptors_of_pages_written_and_flags_incomplete(synth: Synth) -> None:
    full = written(synth)
    sink = FullDisk(len(full) * 3 // 4)
    write(synth, sink, batch=400)  # type: ignore[arg-type]
    d = DiskDump(BytesSource(bytes(sink.data)))
    assert d.incomplete
    states = d.page_states(0, MAX_MAPNR)[synth.pfns]
    present = synth.pfns[states == PAGE_PRESENT]
    assert len(present) > len(synth.pfns) // 2  # the failed batch was retried page by page
    assert d.read_pages(present) == synth.data(present)


def _write_packed(synth: Synth, sink: BytesSink, threads: int, codec: str = "lzo", batch: int = 300) -> None:
    """What kdumpy dump does: a Packer compresses each batch, write_compressed() stores it."""
    w = DiskDumpWriter(
        sink, page_size=PAGE, max_mapnr=len(synth.ram), utsname=UTS, timestamp=1700000000.25, nr_cpus=2,
        phys_base=0x1E000000, dump_level=1, codec=get_codec(codec), note_data=NOTES,
    )  # fmt: skip
    w.write_bitmaps(pack(synth.ram), pack(synth.dumpable))
    packer = Packer(get_codec(codec), PAGE, threads)
    pfns = synth.pfns
    try:
        for a in range(0, len(pfns), batch):
            p = pfns[a : a + batch]
            pages = np.frombuffer(synth.data(p), dtype=np.uint8).reshape(-1, PAGE).copy()
            zero = zero_pages(pages)
            packed = packer.pack(pages, np.flatnonzero(~zero))
            w.write_compressed(p, packed.sizes, packed.pieces, zero)
            packer.release(packed)
    except DumpLimitReached:
        w.finish(incomplete=True)
    else:
        w.finish()
    finally:
        packer.close()


@pytest.mark.parametrize("threads", [0, 1, 3])
@pytest.mark.parametrize("codec", ["lzo", "zstd", "none"])
def test_write_compressed_from_a_packer_equals_write_pages(synth: Synth, threads: int, codec: str) -> None:
    sink = BytesSink()
    _write_packed(synth, sink, threads, codec)
    assert bytes(sink.data) == written(synth, codec=codec, dump_level=1)


def test_enospc_inside_a_batch_of_several_pieces_keeps_what_was_written(synth: Synth) -> None:
    full = written(synth, codec="lzo")
    sink = FullDisk(len(full) * 3 // 4)
    _write_packed(synth, sink, threads=3, batch=1200)
    d = DiskDump(BytesSource(bytes(sink.data)))
    assert d.incomplete
    states = d.page_states(0, MAX_MAPNR)[synth.pfns]
    present = synth.pfns[states == PAGE_PRESENT]
    assert len(synth.pfns) // 2 < len(present) < len(synth.pfns)
    assert d.read_pages(present) == synth.data(present)


def test_write_compressed_checks_sizes_and_zero_pages(synth: Synth) -> None:
    sink = BytesSink()
    w = DiskDumpWriter(
        sink, page_size=PAGE, max_mapnr=len(synth.ram), utsname=UTS, timestamp=0, nr_cpus=1,
        phys_base=0, dump_level=0, codec=get_codec("none"), note_data=b"",
    )  # fmt: skip
    w.write_bitmaps(pack(synth.ram), pack(synth.dumpable))
    p = synth.pfns[:2]
    with pytest.raises(ValueError, match="stored size"):
        w.write_compressed(p, [PAGE], [bytes(PAGE)])
    with pytest.raises(ValueError, match="stored size"):
        w.write_compressed(p, [PAGE, PAGE + 1], [bytes(2 * PAGE + 1)])
    with pytest.raises(ValueError, match="dump_level & 1"):
        w.write_compressed(p, [PAGE], [bytes(PAGE)], zero=np.array([True, False]))
    with pytest.raises(ValueError, match="pieces hold"):
        w.write_compressed(p, [PAGE, PAGE], [bytes(PAGE)])


def test_other_os_errors_propagate(synth: Synth) -> None:
    class Broken(BytesSink):
        def write_at(self, offset: int, data: bytes | memoryview) -> None:
            if offset > 100 * PAGE:
                raise OSError(errno.EIO, "I/O error")
            super().write_at(offset, data)

    with pytest.raises(OSError):
        write(synth, Broken())


def test_eraseinfo_is_appended_after_the_data(synth: Synth) -> None:
    text = b"erase jiffies 8\nerase modules.a 16\n"
    data = written(synth, eraseinfo=text)
    d = DiskDump(BytesSource(data))
    assert d.eraseinfo == text and data.endswith(text)
    assert d.sub_header.offset_eraseinfo == len(data) - len(text)
    # Otherwise the same file, with the sub-header rewritten (update_eraseinfo_of_sub_header()).
    without = patched(written(synth), SUB + 64, "<QQ", len(data) - len(text), len(text))
    assert data[: -len(text)] == without


@pytest.mark.parametrize("version", [1, 2, 3, 4, 5, 6])
def test_older_header_versions_use_only_the_fields_they_had(synth: Synth, version: int) -> None:
    data = written(synth, eraseinfo=b"erased\n", split_range=(0, MAX_MAPNR))
    data = patched(data, 8, "<i", version)
    if version < 6:
        # Fields a version lacks may hold anything; crash ignores them (and so must we).
        data = patched(data, SUB + 80, "<QQQ", 2**40, 2**41, 2**50)
    d = DiskDump(BytesSource(data))
    assert d.header_version == version and d.max_mapnr == MAX_MAPNR
    assert d.split == (version >= 2)
    assert (d.start_pfn, d.end_pfn) == (0, MAX_MAPNR)
    assert (d.vmcoreinfo == VMCOREINFO) == (version >= 3)
    assert d.note_data == (NOTES if version >= 4 else b"")
    assert d.eraseinfo == (b"erased\n" if version >= 5 else None)
    assert d.read_pages(synth.pfns) == synth.data(synth.pfns)


def test_split_range_of_versions_before_6_comes_from_the_32bit_fields(synth: Synth) -> None:
    data = written(synth, split_range=(400, 900))
    data = patched(patched(data, 8, "<i", 5), SUB + 80, "<QQ", 0, 0)
    d = DiskDump(BytesSource(data))
    assert (d.start_pfn, d.end_pfn) == (400, 900)
    mine = synth.pfns[(synth.pfns >= 400) & (synth.pfns < 900)]
    assert d.read_pages(mine) == synth.data(mine)


# --- bitmaps ---------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 5000), st.integers(0, 2**32 - 1), st.floats(0, 1))
def test_ranks_equal_a_naive_count(nbits: int, seed: int, density: float) -> None:
    rng = np.random.default_rng(seed)
    bits = rng.random(nbits) < density
    raw = np.packbits(bits, bitorder="little")
    if len(raw):
        raw[-1] |= 0xFF << (nbits % 8) & 0xFF if nbits % 8 else 0  # junk past nbits must not count
    bm = _Bitmap(raw, nbits)
    pfns = np.sort(rng.integers(0, nbits + 1, 50)).astype(np.int64)
    naive = np.r_[0, np.cumsum(bits)][pfns]
    assert np.array_equal(bm.rank(pfns), naive)
    assert [bm.rank_one(int(p)) for p in pfns] == naive.tolist()
    assert bm.count(0, nbits) == int(bits.sum())
    if nbits:
        lo, hi = sorted(rng.integers(0, nbits + 1, 2).tolist())
        assert np.array_equal(bm.bits(lo, hi), bits[lo:hi])


# --- bad input -------------------------------------------------------------------------------------


def patched(data: bytes, offset: int, fmt: str, *values: int) -> bytes:
    buf = bytearray(data)
    struct.pack_into(fmt, buf, offset, *values)
    return bytes(buf)


def test_file_truncated_anywhere_fails_with_dump_errors_only(synth: Synth, dump_bytes: bytes) -> None:
    d0 = DiskDump(BytesSource(dump_bytes))
    marks = [0, 8, 463, 464, PAGE, PAGE + 104, d0.table_offset, d0.table_offset + 24, len(dump_bytes) - 1]
    cuts = sorted(set(marks + list(range(0, len(dump_bytes), len(dump_bytes) // 50 + 7))))
    opened = 0
    for cut in cuts:
        try:
            d = DiskDump(BytesSource(dump_bytes[:cut]))
        except DumpError:
            continue
        opened += 1
        assert d.truncated
        for p in synth.pfns[cut % 3 :: 3]:
            with contextlib.suppress(TruncatedDumpError):
                assert d.read_page(int(p)) == synth.pages[int(p)]
        states = d.page_states(0, MAX_MAPNR)
        assert set(np.unique(states[synth.pfns]).tolist()) <= {PAGE_PRESENT, PAGE_INCOMPLETE}
    assert opened > len(cuts) // 2


@pytest.mark.parametrize(
    ("offset", "fmt", "value", "error"),
    [
        (0, "<8s", b"KDUMP  \0", CorruptDumpError),
        (0, "<8s", b"DISKDUMP", UnsupportedError),
        (8, "<i", 0, CorruptDumpError),
        (8, "<i", 7, CorruptDumpError),
        (8, ">i", 6, UnsupportedError),  # big-endian
        (12 + 4 * 65, "<7s", b"i686\0\0\0", UnsupportedError),  # 32-bit layout
        (428, "<i", 0, CorruptDumpError),  # block_size
        (428, "<i", 3000, CorruptDumpError),
        (428, "<i", 1 << 30, CorruptDumpError),
        (432, "<i", 0, CorruptDumpError),  # sub_hdr_size
        (432, "<i", 2**31 - 1, TruncatedDumpError),
        (436, "<I", 2**32 - 1, TruncatedDumpError),  # bitmap_blocks
        (436, "<I", 0, CorruptDumpError),  # bitmaps shorter than max_mapnr needs
        (424, "<I", 0x3, CorruptDumpError),  # two codec bits
    ],
)
def test_bad_header_fields_are_refused_at_open(
    dump_bytes: bytes, offset: int, fmt: str, value: object, error: type[Exception]
) -> None:
    data = bytearray(dump_bytes)
    struct.pack_into(fmt, data, offset, value)
    with pytest.raises(error):
        DiskDump(BytesSource(bytes(data)))


SUB = PAGE  # the sub-header's file offset


@pytest.mark.parametrize(
    ("field_offset", "value"),
    [
        (96, 2**40),  # max_mapnr_64 far beyond the bitmaps
        (96, 2**64 - 1),
        (48, 2**62),  # offset_note past the end
        (56, 2**63 - 1),  # size_note absurd
        (48, 2**63 + 5),  # offset_note negative as off_t
        (32, len(b"x") + 2**40),  # offset_vmcoreinfo
        (40, 2**63),  # size_vmcoreinfo
    ],
)
def test_bad_sub_header_fields_are_refused_without_allocating(
    dump_bytes: bytes, field_offset: int, value: int
) -> None:
    data = patched(dump_bytes, SUB + field_offset, "<Q", value)
    tracemalloc.start()
    try:
        with pytest.raises(DumpError):
            DiskDump(BytesSource(data))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * len(dump_bytes)


def test_hostile_max_mapnr_on_a_tiny_file(dump_bytes: bytes) -> None:
    tiny = patched(dump_bytes[: 3 * PAGE], SUB + 96, "<Q", 2**40)
    tiny = patched(tiny, 436, "<I", 1)
    tracemalloc.start()
    try:
        with pytest.raises(CorruptDumpError, match="too short for max_mapnr"):
            DiskDump(BytesSource(tiny))
        assert tracemalloc.get_traced_memory()[1] < 1 << 20
    finally:
        tracemalloc.stop()


def test_invalid_split_range_is_corrupt(dump_bytes: bytes) -> None:
    data = patched(dump_bytes, SUB + 12, "<i", 1)
    data = patched(data, SUB + 80, "<QQ", 500, 100)
    with pytest.raises(CorruptDumpError):
        DiskDump(BytesSource(data))


def desc_at(d: DiskDump, pfn: int) -> int:
    pfns, _ = d.descriptors(0, MAX_MAPNR)
    return d.table_offset + int(np.searchsorted(pfns, pfn)) * PAGE_DESC.itemsize


@pytest.mark.parametrize(
    ("desc", "error"),
    [
        ((2**40, 100, 1, 0), TruncatedDumpError),  # data past the end
        ((-4096, 100, 1, 0), CorruptDumpError),
        ((PAGE, PAGE + 1, 1, 0), CorruptDumpError),  # larger than a page
        ((PAGE, 0, 1, 0), CorruptDumpError),
        ((PAGE, 100, 0x3, 0), CorruptDumpError),  # two codec bits
        ((PAGE, 100, 0x8, 0), CorruptDumpError),
        ((PAGE, 100, 0, 0), CorruptDumpError),  # raw but not a page
        ((PAGE, 100, 1, 0), CorruptDumpError),  # not a zlib stream
        ((0, 0, 0, 0), PageIncompleteError),
    ],
)
def test_bad_descriptors_fail_at_read_page(
    synth: Synth, dump_bytes: bytes, desc: tuple[int, int, int, int], error: type[Exception]
) -> None:
    pfn = int(synth.pfns[synth.pfns % 4 == 2][3])
    d0 = DiskDump(BytesSource(dump_bytes))
    data = patched(dump_bytes, desc_at(d0, pfn), "<qIIQ", *desc)
    d = DiskDump(BytesSource(data))
    with pytest.raises(error):
        d.read_page(pfn)
    with pytest.raises(error):
        d.read_pages(synth.pfns)
    others = synth.pfns[synth.pfns != pfn]
    assert d.read_pages(others) == synth.data(others)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_random_corruption_raises_only_kdumpy_errors(
    synth: Synth, dump_bytes: bytes, data: st.DataObject
) -> None:
    d0 = DiskDump(BytesSource(dump_bytes))
    buf = bytearray(dump_bytes)
    region = data.draw(st.sampled_from(["header", "sub", "bitmaps", "table"]))
    lo, hi = {
        "header": (0, 464),
        "sub": (PAGE, PAGE + 104),
        "bitmaps": (d0.table_offset - d0.header.bitmap_blocks * PAGE, d0.table_offset),
        "table": (d0.table_offset, d0.table_offset + d0.num_dumpable * 24),
    }[region]
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(lo, hi - 1))
        buf[pos] = data.draw(st.integers(0, 255))
    try:
        d = DiskDump(BytesSource(bytes(buf)))
        d.page_states(0, min(d.max_mapnr, 10 * MAX_MAPNR))
        for p in synth.pfns[::9]:
            with contextlib.suppress(KdumpyError):
                d.read_page(int(p))
    except KdumpyError:
        pass


# --- real vmcore: byte-exactness with makedumpfile 1.7.2 -------------------------------------------

MAKEDUMPFILE = shutil.which("makedumpfile")


def rewrite(src: DiskDump, sink: BytesSink | FileSink, codec: str | None = None) -> None:
    """Write `src`'s pages again with our writer, from its bitmaps, notes and header fields."""
    w = DiskDumpWriter(
        sink, page_size=src.block_size, max_mapnr=src.max_mapnr, utsname=src.utsname,
        timestamp=src.timestamp, nr_cpus=src.nr_cpus, phys_base=src.phys_base, dump_level=src.dump_level,
        # Re-encoded as makedumpfile did (zlib by libz), unless another codec is asked for.
        codec=get_codec(codec) if codec else get_codec(src.codec.name, deflate="libz"),
        note_data=src.note_data,
        split_range=(src.start_pfn, src.end_pfn) if src.split else None, threads=2,
    )  # fmt: skip
    w.write_bitmaps(src.bitmap1, src.bitmap2)
    pfns, _ = src.descriptors(0, src.max_mapnr)
    for a in range(0, len(pfns), 8192):
        w.write_pages(pfns[a : a + 8192], src.read_pages(pfns[a : a + 8192]))
    w.finish(eraseinfo=src.eraseinfo)


def makedumpfile(*args: str | Path) -> None:
    assert MAKEDUMPFILE is not None
    r = subprocess.run([MAKEDUMPFILE, *map(str, args)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr


def elf_loads(path: Path) -> list[tuple[int, int, int]]:
    """(p_offset, p_paddr, p_filesz) of each PT_LOAD of an ELF64 vmcore (parsed here, independently)."""
    with open(path, "rb") as f:
        eh = f.read(64)
        assert eh[:4] == b"\x7fELF" and eh[4] == 2
        (phoff,) = struct.unpack_from("<Q", eh, 32)
        phentsize, phnum = struct.unpack_from("<HH", eh, 54)
        f.seek(phoff)
        ph = f.read(phentsize * phnum)
    out = []
    for i in range(phnum):
        p_type, _flags, off, _vaddr, paddr, filesz, _memsz, _align = struct.unpack_from(
            "<IIQQQQQQ", ph, i * phentsize
        )
        if p_type == 1 and filesz:
            out.append((off, paddr, filesz))
    return out


@pytest.mark.foreign
@pytest.mark.skipif(MAKEDUMPFILE is None, reason="makedumpfile not installed")
@pytest.mark.parametrize(("level", "codec_opt"), [("31", "-l"), ("1", "-c"), ("0", "-l")])
def test_real_vmcore_rewrite_equals_makedumpfile_byte_for_byte(
    tmp_path: Path, vmcore_61: Path, level: str, codec_opt: str
) -> None:
    theirs = tmp_path / "theirs.kdump"
    makedumpfile(codec_opt, "-d", level, vmcore_61, theirs)
    with FileSource(theirs) as src:
        d = DiskDump(src)
        sink = BytesSink()
        rewrite(d, sink)
        assert bytes(sink.data) == theirs.read_bytes()
        if level == "0":
            # Every page of the vmcore reads back from makedumpfile's file through our reader.
            with open(vmcore_61, "rb") as core:
                for off, paddr, filesz in elf_loads(vmcore_61):
                    first = paddr // d.block_size
                    n = filesz // d.block_size
                    for a in range(0, n, 8192):
                        k = min(8192, n - a)
                        core.seek(off + a * d.block_size)
                        expect = core.read(k * d.block_size)
                        assert d.read_pages(np.arange(first + a, first + a + k)) == expect


@pytest.mark.foreign
@pytest.mark.skipif(MAKEDUMPFILE is None, reason="makedumpfile not installed")
def test_real_vmcore_split_parts_equal_makedumpfile_byte_for_byte(tmp_path: Path, vmcore_61: Path) -> None:
    parts = [tmp_path / f"part{i}.kdump" for i in range(3)]
    makedumpfile("--split", "--splitblock-size", "4", "-d", "31", "-l", vmcore_61, *parts)
    ranges = []
    for part in parts:
        with FileSource(part) as src:
            d = DiskDump(src)
            ranges.append((d.start_pfn, d.end_pfn))
            sink = BytesSink()
            rewrite(d, sink)
            assert bytes(sink.data) == part.read_bytes()
    assert ranges[0][0] == 0 and ranges[0][1] < ranges[1][1] < ranges[2][1]


@pytest.mark.foreign
@pytest.mark.skipif(MAKEDUMPFILE is None, reason="makedumpfile not installed")
@pytest.mark.parametrize("codec", ["lzo", "zlib", "none"])
def test_makedumpfile_reads_every_page_we_write(tmp_path: Path, vmcore_61: Path, codec: str) -> None:
    ref = tmp_path / "ref.kdump"
    makedumpfile("-l", "-d", "31", vmcore_61, ref)
    ours = tmp_path / "ours.kdump"
    with FileSource(ref) as src, FileSink(ours) as sink:
        rewrite(DiskDump(src), sink, codec)
    # makedumpfile re-filters our file (decompressing every page) into a file of its own.
    again = tmp_path / "again.kdump"
    makedumpfile("-c", "-d", "31", ours, again)
    with FileSource(ours) as a, FileSource(again) as b:
        da, db = DiskDump(a), DiskDump(b)
        pa, _ = da.descriptors(0, da.max_mapnr)
        pb, _ = db.descriptors(0, db.max_mapnr)
        assert np.array_equal(pa, pb)
        for i in range(0, len(pa), 8192):
            assert da.read_pages(pa[i : i + 8192]) == db.read_pages(pa[i : i + 8192])
