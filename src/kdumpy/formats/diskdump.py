"""makedumpfile's kdump-compressed ("diskdump") format: header, sub-header, bitmaps, page descriptors.

Layout (makedumpfile.c `write_kdump_header()`, `write_kdump_pages_and_bitmap_cyclic()`; crash
diskdump.c `read_dump_header()`), in units of `block_size` (= the page size):

    block 0                     struct disk_dump_header (464 bytes, rest of the block zero)
    block 1                     struct kdump_sub_header (104 bytes), then the ELF PT_NOTE data
    block 1 + sub_hdr_size      bitmap 1 (page is RAM), then bitmap 2 (page is dumpable),
                                each padded to whole blocks; bitmap_blocks counts both
    then                        page_desc[num_dumpable], 24 bytes each, not padded
    then                        page data (the shared zero page first when dump_level & 1)
    then                        eraseinfo text (optional)

The LP64 little-endian layout is read and written (x86_64 and the other 64-bit little-endian
machines share it); 32-bit and big-endian dumps raise `UnsupportedError`.

A page's descriptor is the rank of its pfn among the set bits of bitmap 2, counted from the start
of the file's pfn range (split files); ranks come from a per-block prefix popcount table, vectorised.

Split files (`--split`): each file carries full-size bitmaps and a descriptor table sized for the
global number of dumpable pages, but only descriptors for its own [start_pfn, end_pfn). Like crash
(`read_diskdump()`: SEEK_ERROR for a pfn beyond every part), a pfn outside a part's range reads as
`PAGE_MISSING` from that part: the split set reader picks the part by range.
"""

from __future__ import annotations

import errno
import itertools
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt

from kdumpy.errors import (
    CorruptDumpError,
    KdumpyError,
    PageExcludedError,
    PageIncompleteError,
    PageMissingError,
    TruncatedDumpError,
    UnsupportedError,
)
from kdumpy.formats.codecs import FLAG_MASK, Codec, Packer, codec_for_flag
from kdumpy.formats.io import Sink, Source, check_range

__all__ = [
    "DISKDUMP_SIGNATURE",
    "DISK_DUMP_HEADER",
    "DL_EXCLUDE_ZERO",
    "DUMP_DH_COMPRESSED_INCOMPLETE",
    "DUMP_DH_EXCLUDED_VMEMMAP",
    "KDUMP_SIGNATURE",
    "KDUMP_SUB_HEADER",
    "PAGE_DESC",
    "PAGE_EXCLUDED",
    "PAGE_INCOMPLETE",
    "PAGE_MISSING",
    "PAGE_PRESENT",
    "DiskDump",
    "DiskDumpHeader",
    "DiskDumpWriter",
    "DumpLimitReached",
    "KdumpSubHeader",
    "Utsname",
]

KDUMP_SIGNATURE = b"KDUMP   "
DISKDUMP_SIGNATURE = b"DISKDUMP"  # the older diskdump format, not read here
DUMP_DH_COMPRESSED_INCOMPLETE = 0x8
DUMP_DH_EXCLUDED_VMEMMAP = 0x10
DL_EXCLUDE_ZERO = 0x1  # dump_level bit: zero pages share one stored page
_HEADER_VERSION = 6  # what makedumpfile 1.7.2 writes
_DISKDUMP_HEADER_BLOCKS = 1

# page_states() values
PAGE_PRESENT = 0  # in the file: read_page() returns it
PAGE_EXCLUDED = 1  # RAM (bitmap 1) filtered out (not in bitmap 2)
PAGE_MISSING = 2  # not RAM (bitmap 1 clear), >= max_mapnr, or outside a split part's range
PAGE_INCOMPLETE = 3  # dumpable, but its descriptor was never written (offset 0) or lies past the end

_UTS_LEN = 65  # __NEW_UTS_LEN + 1

DISK_DUMP_HEADER = struct.Struct("<8si65s65s65s65s65s65s6xqqIiiIIIIIIi")
"""struct disk_dump_header (diskdump_mod.h), LP64: 464 bytes, field by field as `DiskDumpHeader`."""
KDUMP_SUB_HEADER = struct.Struct("<QiiQQqQqQqQQQQ")
"""struct kdump_sub_header (diskdump_mod.h), LP64: 104 bytes, field by field as `KdumpSubHeader`."""
PAGE_DESC = np.dtype([("offset", "<i8"), ("size", "<u4"), ("flags", "<u4"), ("page_flags", "<u8")])
"""struct page_desc: file offset of the data, stored size, codec flag (0 raw), page_flags (always 0)."""

assert DISK_DUMP_HEADER.size == 464 and KDUMP_SUB_HEADER.size == 104 and PAGE_DESC.itemsize == 24

_SUB_HEADER_SIZES = {1: 12, 2: 32, 3: 48, 4: 64, 5: 80, 6: 104}  # bytes of kdump_sub_header per version
_MAX_BLOCK_SIZE = 1 << 20
_DESC_CHUNK = 1 << 16  # descriptors read at once by page_states()
_DATA_RUN = 8 << 20  # largest coalesced data read or write
_NOSPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_VALID_FLAGS = np.array([0, 0x1, 0x2, 0x4, 0x20], dtype=np.uint32)  # raw or exactly one codec bit
_32BIT_MACHINES = ("i386", "i486", "i586", "i686", "ppc", "mips", "s390", "sh", "sparc")


class DumpLimitReached(KdumpyError):
    """The writer stopped: the -L size limit or the file system is full.

    Descriptors of every page written so far are on disk; the caller ends with
    `finish(incomplete=True)`, as makedumpfile does after ENOSPC (`check_and_modify_headers()`).
    """

    def __init__(self, why: str, next_pfn: int | None, bytes_written: int) -> None:
        where = f" before pfn {next_pfn:#x}" if next_pfn is not None else ""
        super().__init__(f"dump stopped{where}: {why}; the dump is incomplete")
        self.why = why
        self.next_pfn = next_pfn
        """First pfn not written (None if it stopped before any page)."""
        self.bytes_written = bytes_written
        """Size of the file when it stopped."""


_ULONG_MASK = (1 << 64) - 1

@dataclass
class Utsname:
    """struct new_utsname of the crashed kernel (init_uts_ns.name), each field a NUL-padded char[65]."""

    sysname: str
    """"Linux"."""
    nodename: str
    """Host name."""
    release: str
    """Kernel release, e.g. "6.1.0-18-amd64"."""
    version: str
    """Build version string, e.g. "#1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)"."""
    machine: str
    """Architecture, e.g. "x86_64"."""
    domainname: str
    """NIS domain name, usually "(none)"."""

    def pack(self) -> list[bytes]:
        out = []
        for f in fields(self):
            raw = getattr(self, f.name).encode("utf-8", "surrogateescape")
            if len(raw) >= _UTS_LEN:
                raise ValueError(f"utsname.{f.name} is longer than {_UTS_LEN - 1} bytes")
            out.append(raw)
        return out

    @classmethod
    def unpack(cls, raw: tuple[bytes, ...] | list[bytes]) -> Utsname:
        return cls(*(r.split(b"\0", 1)[0].decode("utf-8", "surrogateescape") for r in raw))


@dataclass
class DiskDumpHeader:
    """struct disk_dump_header, block 0 of the file."""

    signature: bytes
    """b"KDUMP   " (b"DISKDUMP" for the old diskdump format)."""
    header_version: int
    """Format version; makedumpfile writes 6."""
    utsname: Utsname
    """The crashed kernel's uname."""
    tv_sec: int
    """Crash time, seconds (VMCOREINFO CRASHTIME)."""
    tv_usec: int
    """Crash time, microseconds."""
    status: int
    """Codec bit (0x1 zlib, 0x2 lzo, 0x4 snappy, 0x20 zstd), 0x8 incomplete, 0x10 excluded vmemmap."""
    block_size: int
    """Block size in bytes, = the page size."""
    sub_hdr_size: int
    """Blocks of sub-header plus notes."""
    bitmap_blocks: int
    """Blocks of both bitmaps together."""
    max_mapnr: int
    """min(max_mapnr, UINT_MAX); the full value is in the sub-header (version 6)."""
    total_ram_blocks: int
    """Unused by makedumpfile (0)."""
    device_blocks: int
    """Unused by makedumpfile (0)."""
    written_blocks: int
    """Unused by makedumpfile (0)."""
    current_cpu: int
    """Unused by makedumpfile (0)."""
    nr_cpus: int
    """Number of CORE/NT_PRSTATUS notes."""

    def pack(self) -> bytes:
        return DISK_DUMP_HEADER.pack(
            self.signature, self.header_version, *self.utsname.pack(), self.tv_sec, self.tv_usec,
            self.status, self.block_size, self.sub_hdr_size, self.bitmap_blocks, self.max_mapnr,
            self.total_ram_blocks, self.device_blocks, self.written_blocks, self.current_cpu, self.nr_cpus,
        )  # fmt: skip

    @classmethod
    def unpack(cls, buf: bytes) -> DiskDumpHeader:
        v = DISK_DUMP_HEADER.unpack_from(buf)
        return cls(v[0], v[1], Utsname.unpack(v[2:8]), *v[8:])


@dataclass
class KdumpSubHeader:
    """struct kdump_sub_header, at the start of block 1. Fields past the file's version read as 0."""

    phys_base: int
    """Physical address the kernel was loaded at, minus its link address (v1)."""
    dump_level: int
    """makedumpfile -d bits (v1)."""
    split: int
    """1 in a --split part (v2)."""
    start_pfn: int
    """First pfn of a split part, truncated to 32 bits (v2, obsolete)."""
    end_pfn: int
    """End pfn of a split part, truncated to 32 bits (v2, obsolete)."""
    offset_vmcoreinfo: int
    """File offset of the VMCOREINFO text (the note's desc) (v3)."""
    size_vmcoreinfo: int
    """Its size (v3)."""
    offset_note: int
    """File offset of the copied PT_NOTE data (v4)."""
    size_note: int
    """Its size, the PT_NOTE p_filesz (v4)."""
    offset_eraseinfo: int
    """File offset of the eraseinfo text, 0 if none (v5)."""
    size_eraseinfo: int
    """Its size (v5)."""
    start_pfn_64: int
    """First pfn of a split part (v6)."""
    end_pfn_64: int
    """End pfn (exclusive) of a split part (v6)."""
    max_mapnr_64: int
    """Number of pfns covered by the bitmaps (v6)."""

    def pack(self) -> bytes:
        return KDUMP_SUB_HEADER.pack(*(getattr(self, f.name) for f in fields(self)))

    @classmethod
    def unpack(cls, buf: bytes, header_version: int = _HEADER_VERSION) -> KdumpSubHeader:
        # A field a version does not have may hold anything (crash reads a whole block): zero it.
        n = _SUB_HEADER_SIZES.get(header_version, KDUMP_SUB_HEADER.size)
        padded = buf[:n].ljust(KDUMP_SUB_HEADER.size, b"\0")
        return cls(*KDUMP_SUB_HEADER.unpack(padded))


# --- bitmaps ---------------------------------------------------------------------------------------

_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
_RANK_BLOCK = 64  # bytes (512 pfns) per prefix-count entry; crash uses 1024-pfn sections
_RANK_CHUNK = 1 << 14  # pfns ranked at once, bounding the temporaries


class _Bitmap:
    """A bitmap of `nbits` pfns (LSB first) with vectorised bit tests and ranks."""

    def __init__(self, data: bytes | npt.NDArray[np.uint8], nbits: int) -> None:
        nbytes = (nbits + 7) // 8
        src = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes) else np.asarray(data, np.uint8)
        if src.size < nbytes:
            raise ValueError(f"bitmap of {src.size} bytes is shorter than the {nbytes} needed")
        # One spare block so that rank(nbits) and byte lookups at the end stay in bounds.
        nblocks = nbytes // _RANK_BLOCK + 1
        buf = np.zeros(nblocks * _RANK_BLOCK, dtype=np.uint8)
        buf[:nbytes] = src[:nbytes]
        if nbits % 8:
            buf[nbytes - 1] &= (1 << (nbits % 8)) - 1  # bits past max_mapnr never count
        self._buf = buf
        self.nbits = nbits
        self.array: npt.NDArray[np.uint8] = buf[:nbytes]
        self._prefix: npt.NDArray[np.int64] | None = None

    def prefix(self) -> npt.NDArray[np.int64]:
        """prefix[b] = set bits before block b."""
        if self._prefix is None:
            blocks = self._buf.reshape(-1, _RANK_BLOCK)
            counts = np.empty(len(blocks), dtype=np.int64)
            step = 1 << 14
            for i in range(0, len(blocks), step):
                counts[i : i + step] = _POPCOUNT[blocks[i : i + step]].sum(axis=1, dtype=np.int64)
            prefix = np.zeros(len(blocks) + 1, dtype=np.int64)
            np.cumsum(counts, out=prefix[1:])
            self._prefix = prefix
        return self._prefix

    def bits(self, lo: int, hi: int) -> npt.NDArray[np.bool_]:
        """One bool per pfn of [lo, hi), 0 <= lo <= hi <= nbits."""
        b0 = lo >> 3
        b1 = (hi + 7) >> 3
        bits: npt.NDArray[np.bool_] = np.unpackbits(self._buf[b0:b1], bitorder="little").view(np.bool_)
        return np.asarray(bits[lo - 8 * b0 : hi - 8 * b0], dtype=np.bool_)

    def test(self, pfns: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        """Bit of each pfn (all in [0, nbits))."""
        shifted: npt.NDArray[np.uint8] = self._buf[pfns >> 3] >> (pfns & 7).astype(np.uint8)
        return (shifted & 1).astype(np.bool_)

    def rank(self, pfns: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Set bits strictly below each pfn (all in [0, nbits])."""
        prefix = self.prefix()
        out = np.empty(len(pfns), dtype=np.int64)
        rows2d = self._buf.reshape(-1, _RANK_BLOCK)
        for a in range(0, len(pfns), _RANK_CHUNK):
            p = pfns[a : a + _RANK_CHUNK]
            byte = p >> 3
            blk = byte // _RANK_BLOCK
            ublk, inv = np.unique(blk, return_inverse=True)
            # Exclusive running count of set bits over the bytes of each touched block.
            cs = np.zeros((len(ublk), _RANK_BLOCK + 1), dtype=np.int32)
            np.cumsum(_POPCOUNT[rows2d[ublk]], axis=1, dtype=np.int32, out=cs[:, 1:])
            partial = self._buf[byte] & ((np.left_shift(1, p & 7)) - 1).astype(np.uint8)
            out[a : a + _RANK_CHUNK] = prefix[blk] + cs[inv.ravel(), byte % _RANK_BLOCK] + _POPCOUNT[partial]
        return out

    def rank_one(self, pfn: int) -> int:
        """`rank()` of one pfn, without the array machinery (the writer asks twice a batch)."""
        byte = pfn >> 3
        start = byte - byte % _RANK_BLOCK
        n = int(self.prefix()[start // _RANK_BLOCK]) + int(_POPCOUNT[self._buf[start:byte]].sum())
        if pfn & 7:
            n += int(_POPCOUNT[int(self._buf[byte]) & ((1 << (pfn & 7)) - 1)])
        return n

    def count(self, lo: int, hi: int) -> int:
        """Set bits in [lo, hi)."""
        return self.rank_one(hi) - self.rank_one(lo)


def _find_note_desc(note_data: bytes, name: bytes) -> tuple[int, int] | None:
    """(offset of the desc within note_data, n_descsz) of the first note called `name`.

    Elf32_Nhdr and Elf64_Nhdr are both three u32; name and desc are padded to 4 bytes
    (append_elf_note()). makedumpfile finds VMCOREINFO by name the same way.
    """
    off = 0
    while off + 12 <= len(note_data):
        namesz, descsz, _type = struct.unpack_from("<III", note_data, off)
        name_off = off + 12
        desc_off = name_off + (namesz + 3) // 4 * 4
        nxt = desc_off + (descsz + 3) // 4 * 4
        if desc_off + descsz > len(note_data):
            return None
        if note_data[name_off : name_off + namesz].rstrip(b"\0") == name:
            return desc_off, descsz
        off = nxt
    return None


# --- reader ----------------------------------------------------------------------------------------


class DiskDump:
    """A kdump-compressed file (or one part of a --split set), read through a `Source`.

    Opening checks the header and sub-header against `source.size` before anything is allocated;
    the bitmaps are then read whole (they are at most the file's size). Descriptors and page data
    are read on demand.
    """

    def __init__(self, source: Source) -> None:
        self.source = source
        size = source.size
        if size < DISK_DUMP_HEADER.size:
            raise TruncatedDumpError(f"file of {size} bytes is too short for a kdump-compressed header")
        head = source.read_at(0, DISK_DUMP_HEADER.size)
        if head[:8] == DISKDUMP_SIGNATURE:
            raise UnsupportedError("the old diskdump format (signature DISKDUMP) is not supported")
        if head[:8] != KDUMP_SIGNATURE:
            raise CorruptDumpError("not a kdump-compressed file (no 'KDUMP   ' signature)")
        version = struct.unpack_from("<i", head, 8)[0]
        if not 1 <= version <= _HEADER_VERSION:
            if 1 <= struct.unpack_from(">i", head, 8)[0] <= _HEADER_VERSION:
                raise UnsupportedError("big-endian kdump-compressed files are not supported")
            raise CorruptDumpError(f"kdump-compressed header version {version} (known: 1 to 6)")
        hdr = DiskDumpHeader.unpack(head)
        self.header = hdr
        """The disk_dump_header as stored."""
        machine = hdr.utsname.machine
        if machine in _32BIT_MACHINES or (machine.startswith("arm") and machine != "arm64"):
            raise UnsupportedError(f"kdump-compressed files of 32-bit machines ({machine}) are not supported")
        bs = hdr.block_size
        if bs < 512 or bs > _MAX_BLOCK_SIZE or bs & (bs - 1):
            raise CorruptDumpError(f"invalid block size {bs}")
        if hdr.sub_hdr_size < 1:
            raise CorruptDumpError(f"invalid sub-header size {hdr.sub_hdr_size} blocks")
        offset_bitmap1 = (_DISKDUMP_HEADER_BLOCKS + hdr.sub_hdr_size) * bs
        len_bitmap = hdr.bitmap_blocks * bs
        check_range(bs, KDUMP_SUB_HEADER.size, size, "kdump sub-header")
        check_range(offset_bitmap1, len_bitmap, size, "bitmaps")  # crash: "Beyond the end of mapped file"
        sub = KdumpSubHeader.unpack(source.read_at(bs, KDUMP_SUB_HEADER.size), version)
        self.sub_header = sub
        """The kdump_sub_header as stored (fields past the version zeroed)."""

        self.header_version: int = version
        self.utsname: Utsname = hdr.utsname
        self.timestamp: float = hdr.tv_sec + hdr.tv_usec / 1e6
        self.status: int = hdr.status
        self.block_size: int = bs
        self.page_size: int = bs
        self.nr_cpus: int = hdr.nr_cpus
        self.phys_base: int = sub.phys_base
        self.dump_level: int = sub.dump_level
        self.codec: Codec = codec_for_flag(hdr.status & FLAG_MASK)
        self.incomplete: bool = bool(hdr.status & DUMP_DH_COMPRESSED_INCOMPLETE)
        # crash: max_mapnr_64 from version 6 on, the 32-bit header field before.
        max_mapnr = sub.max_mapnr_64 if version >= 6 else hdr.max_mapnr
        self.max_mapnr: int = max_mapnr
        # makedumpfile writes two bitmaps, each padded to whole blocks: both must cover max_mapnr.
        need = (max_mapnr + 7) // 8
        if need > len_bitmap // 2:
            raise CorruptDumpError(
                f"bitmaps of {hdr.bitmap_blocks} blocks are too short for max_mapnr {max_mapnr:#x}"
                f" (need 2 x {need} bytes)"
            )

        self.split: bool = version >= 2 and sub.split != 0
        if self.split:
            start, end = (sub.start_pfn_64, sub.end_pfn_64) if version >= 6 else (sub.start_pfn, sub.end_pfn)
            if start > end or start > max_mapnr:
                raise CorruptDumpError(
                    f"invalid split range [{start:#x}, {end:#x}) for max_mapnr {max_mapnr:#x}"
                )
            end = min(end, max_mapnr)
        else:
            start, end = 0, max_mapnr
        self.start_pfn: int = start
        self.end_pfn: int = end

        self.note_data: bytes = b""
        if version >= 4 and sub.offset_note and sub.size_note:
            check_range(sub.offset_note, sub.size_note, size, "ELF notes")
            self.note_data = source.read_at(sub.offset_note, sub.size_note)
        self.vmcoreinfo: bytes | None = None
        if version >= 3 and sub.offset_vmcoreinfo and sub.size_vmcoreinfo:
            check_range(sub.offset_vmcoreinfo, sub.size_vmcoreinfo, size, "VMCOREINFO")
            self.vmcoreinfo = source.read_at(sub.offset_vmcoreinfo, sub.size_vmcoreinfo)
        self.truncated: bool = False
        """The file lacks pages it announces: its descriptor table or the last page's data lie past
        the end, or the last descriptor was never written. A dump cut short (a full disk, a broken
        transfer) says so here even without the INCOMPLETE flag; pages present still read."""
        self.eraseinfo: bytes | None = None
        if version >= 5 and sub.offset_eraseinfo and sub.size_eraseinfo:
            check_range(sub.offset_eraseinfo, 0, size, "eraseinfo")
            if sub.offset_eraseinfo + sub.size_eraseinfo > size:
                self.truncated = True  # it is the last thing in the file
            else:
                self.eraseinfo = source.read_at(sub.offset_eraseinfo, sub.size_eraseinfo)

        self._bm1 = _Bitmap(source.read_at(offset_bitmap1, need), max_mapnr)
        self._bm2 = _Bitmap(source.read_at(offset_bitmap1 + len_bitmap // 2, need), max_mapnr)
        self.bitmap1: npt.NDArray[np.uint8] = self._bm1.array
        self.bitmap2: npt.NDArray[np.uint8] = self._bm2.array
        self.table_offset: int = offset_bitmap1 + len_bitmap
        """File offset of page_desc[0] (crash: data_offset)."""
        self._rank_base = self._bm2.count(0, start)
        self.num_dumpable: int = self._bm2.count(start, end)
        """Descriptors this file holds: set bits of bitmap 2 in [start_pfn, end_pfn)."""
        table_end = self.table_offset + self.num_dumpable * PAGE_DESC.itemsize
        if table_end > size:
            self.truncated = True
        elif self.num_dumpable:
            last = self._read_descs(self.num_dumpable - 1, 1)[0]
            # Pages are written in pfn order, so a complete file has its last descriptor and data.
            if last["offset"] <= 0 or int(last["offset"]) + int(last["size"]) > size:
                self.truncated = True

    @staticmethod
    def probe(head: bytes) -> bool:
        """True if `head` starts a kdump-compressed file (or the old diskdump format, refused at open)."""
        return head[:8] in (KDUMP_SIGNATURE, DISKDUMP_SIGNATURE)

    def zero_page_offset(self) -> int | None:
        """File offset of the shared zero page (when dump_level & 1), where makedumpfile puts it.

        That is right after a descriptor table sized for the global number of dumpable pages.
        """
        if not self.dump_level & DL_EXCLUDE_ZERO:
            return None
        return self.table_offset + self._bm2.count(0, self.max_mapnr) * PAGE_DESC.itemsize

    # -- pages --

    def _read_descs(self, first: int, n: int) -> npt.NDArray[np.void]:
        """Descriptors [first, first + n) of the table; entries past the end of the file read as zeros."""
        out = np.zeros(n, dtype=PAGE_DESC)
        start = self.table_offset + first * PAGE_DESC.itemsize
        avail = max(0, min(n, (self.source.size - start) // PAGE_DESC.itemsize))
        if avail:
            out[:avail] = np.frombuffer(
                self.source.read_at(start, avail * PAGE_DESC.itemsize), dtype=PAGE_DESC
            )
        return out

    def _desc_index(self, pfns: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        return self._bm2.rank(pfns) - self._rank_base

    def page_states(self, start_pfn: int, end_pfn: int) -> npt.NDArray[np.uint8]:
        """One state per pfn of [start_pfn, end_pfn): PAGE_PRESENT, _EXCLUDED, _MISSING or _INCOMPLETE.

        Follows crash's read_diskdump(): a pfn >= max_mapnr, outside a split part's range, or not in
        bitmap 1 is missing; in bitmap 1 but not bitmap 2, excluded. A dumpable page whose descriptor
        has offset 0 (never written, cache_page()) or whose descriptor or data lie past the end of the
        file is incomplete.
        """
        if end_pfn < start_pfn:
            raise ValueError(f"end_pfn {end_pfn} < start_pfn {start_pfn}")
        states = np.full(end_pfn - start_pfn, PAGE_MISSING, dtype=np.uint8)
        lo = max(start_pfn, self.start_pfn)
        hi = min(end_pfn, self.end_pfn)
        if lo >= hi:
            return states
        ram = self._bm1.bits(lo, hi)
        dump = self._bm2.bits(lo, hi)
        sub = states[lo - start_pfn : hi - start_pfn]
        sub[ram] = PAGE_EXCLUDED
        sub[ram & dump] = PAGE_PRESENT
        # Descriptors are indexed by bitmap 2 alone (crash pfn_to_pos()); check those of present pages.
        d_idx = np.flatnonzero(dump)
        if len(d_idx):
            first = int(self._desc_index(np.array([lo], dtype=np.int64))[0])
            size = self.source.size
            for a in range(0, len(d_idx), _DESC_CHUNK):
                sel = d_idx[a : a + _DESC_CHUNK]
                descs = self._read_descs(first + a, len(sel))
                bad = (descs["offset"] <= 0) | (descs["offset"] + descs["size"].astype(np.int64) > size)
                bad &= ram[sel]
                sub[sel[bad]] = PAGE_INCOMPLETE
        return states

    def descriptors(self, start_pfn: int, end_pfn: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.void]]:
        """(pfns, page_desc records) for the pfns of [start_pfn, end_pfn) that have a descriptor here.

        Those are the set bits of bitmap 2 inside this file's range; descriptors past the end of the
        file come back as zeros (as never written).
        """
        lo = max(start_pfn, self.start_pfn)
        hi = min(end_pfn, self.end_pfn)
        if lo >= hi:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=PAGE_DESC)
        pfns = lo + np.flatnonzero(self._bm2.bits(lo, hi)).astype(np.int64)
        if not len(pfns):
            return pfns, np.zeros(0, dtype=PAGE_DESC)
        first = int(self._desc_index(pfns[:1])[0])
        return pfns, self._read_descs(first, len(pfns))

    def _check_pfns(self, pfns: npt.NDArray[np.int64]) -> None:
        """Raise the error crash's read_diskdump() would give for the first unreadable pfn."""
        bs = self.block_size
        inside = (pfns >= self.start_pfn) & (pfns < self.end_pfn)
        if not inside.all():
            raise PageMissingError(int(pfns[np.argmin(inside)]) * bs)
        ram = self._bm1.test(pfns)
        dump = self._bm2.test(pfns)
        ok = ram & dump
        if not ok.all():
            i = int(np.argmin(ok))
            if not ram[i]:
                raise PageMissingError(int(pfns[i]) * bs)
            raise PageExcludedError(int(pfns[i]) * bs)

    def _check_desc(self, pfn: int, index: int, d: np.void) -> None:
        """Raise the error for one bad descriptor (the vectorised check found it)."""
        bs = self.block_size
        offset, size, flags = int(d["offset"]), int(d["size"]), int(d["flags"])
        if self.table_offset + (index + 1) * PAGE_DESC.itemsize > self.source.size:
            raise TruncatedDumpError(f"the descriptor of pfn {pfn:#x} lies past the end of the file")
        if offset == 0:
            raise PageIncompleteError(pfn * bs)  # crash cache_page(): PAGE_INCOMPLETE
        if offset < 0 or size == 0 or size > bs:
            raise CorruptDumpError(f"pfn {pfn:#x}: invalid page descriptor (offset {offset}, size {size})")
        check_range(offset, size, self.source.size, f"data of pfn {pfn:#x}")
        if codec_for_flag(flags).flag == 0 and size != bs:
            raise CorruptDumpError(f"pfn {pfn:#x}: raw page of {size} bytes, expected {bs}")
        raise AssertionError("descriptor flagged bad but passes every check")

    def read_page(self, pfn: int) -> bytes:
        """The page at `pfn`, decompressed: exactly block_size bytes.

        PageMissingError / PageExcludedError / PageIncompleteError as crash's PAGE_* results;
        TruncatedDumpError or CorruptDumpError when the file is cut short or a record is wrong.
        """
        pfn = int(pfn)
        if pfn < 0 or pfn >= self.max_mapnr:
            raise PageMissingError(max(pfn, 0) * self.block_size)
        return self.read_pages(np.array([pfn], dtype=np.int64))

    def read_pages(self, pfns: npt.ArrayLike) -> bytes:
        """The pages at `pfns`, in the order given, concatenated; errors as `read_page`.

        Descriptors are read in runs and data in coalesced runs; pages sharing one stored copy (the
        zero page) are decompressed once.
        """
        p = np.asarray(pfns, dtype=np.int64).ravel()
        bs = self.block_size
        if not len(p):
            return b""
        bad = (p < 0) | (p >= self.max_mapnr)
        if bad.any():
            raise PageMissingError(max(int(p[np.argmax(bad)]), 0) * bs)
        self._check_pfns(p)
        idx = self._desc_index(p)
        # Read the descriptors, one read per run of consecutive indices.
        uidx, inv = np.unique(idx, return_inverse=True)
        descs = np.zeros(len(uidx), dtype=PAGE_DESC)
        breaks = np.flatnonzero(np.diff(uidx) != 1) + 1
        for a, b in zip(np.r_[0, breaks], np.r_[breaks, len(uidx)], strict=True):
            descs[a:b] = self._read_descs(int(uidx[a]), int(b - a))
        pd = descs[inv.ravel()]
        # Validate every descriptor before reading any data; report the first bad one, in request order.
        off = pd["offset"]
        size = pd["size"].astype(np.int64)
        flags = pd["flags"]
        ok = (self.table_offset + (idx + 1) * PAGE_DESC.itemsize <= self.source.size) & (off > 0)
        ok &= (size > 0) & (size <= bs) & (off + size <= self.source.size)
        ok &= np.isin(flags, _VALID_FLAGS) & ((flags != 0) | (size == bs))
        if not ok.all():
            i = int(np.argmin(ok))
            self._check_desc(int(p[i]), int(idx[i]), pd[i])
        # Unique stored pages (the zero page is shared), read in coalesced runs sorted by offset.
        uoff, first, inv = np.unique(off, return_index=True, return_inverse=True)
        inv = inv.ravel()
        usize, uflags = size[first], flags[first]
        if not (np.array_equal(usize[inv], size) and np.array_equal(uflags[inv], flags)):
            raise CorruptDumpError("descriptors share page data but disagree on its size or codec")
        uend = uoff + usize
        reach = np.maximum.accumulate(uend)  # a run continues while the next page starts inside it
        run_starts = np.r_[0, np.flatnonzero(uoff[1:] > reach[:-1]) + 1, len(uoff)].tolist()
        pages: list[bytes] = [b""] * len(uoff)
        offs, sizes, flist = uoff.tolist(), usize.tolist(), uflags.tolist()
        for a, b in itertools.pairwise(run_starts):
            while a < b:
                # Cap each read at _DATA_RUN bytes (at least one page).
                j = a + max(1, int(np.searchsorted(reach[a:b], offs[a] + _DATA_RUN, side="right")))
                base = offs[a]
                buf = self.source.read_at(base, int(reach[j - 1]) - base)
                for k in range(a, j):
                    raw = buf[offs[k] - base : offs[k] - base + sizes[k]]
                    pages[k] = codec_for_flag(flist[k]).decompress(raw, bs) if flist[k] else raw
                a = j
        return b"".join([pages[k] for k in inv.tolist()])


# --- writer ----------------------------------------------------------------------------------------


class DiskDumpWriter:
    """Writes a kdump-compressed file the way makedumpfile 1.7.2 does, byte for byte.

    Call `write_bitmaps()` once, `write_pages()` for each run of dumpable pfns in ascending order
    (or `write_compressed()` with pages a `Packer` compressed), then `finish()`; the caller closes the
    sink. Pages are compressed with `codec` (over `threads` threads); a page that does not shrink
    below the page size is stored raw (flags 0); with dump_level & 1, zero pages share one stored
    zero page written first in the data area.

    A pfn skipped by the caller keeps a zero descriptor, which readers see as incomplete.
    With `limit` (-L), or when the file system is full, `write_pages` writes what fits, then the
    descriptors of the pages written, and raises `DumpLimitReached`; `finish()` then marks the
    header INCOMPLETE.
    """

    def __init__(
        self,
        sink: Sink,
        *,
        page_size: int,
        max_mapnr: int,
        utsname: Utsname,
        timestamp: float,
        nr_cpus: int,
        phys_base: int,
        dump_level: int,
        codec: Codec,
        note_data: bytes,
        threads: int = 1,
        split_range: tuple[int, int] | None = None,
        limit: int | None = None,
    ) -> None:
        if page_size < 512 or page_size > _MAX_BLOCK_SIZE or page_size & (page_size - 1):
            raise ValueError(f"invalid page size {page_size}")
        if max_mapnr < 0:
            raise ValueError(f"invalid max_mapnr {max_mapnr}")
        if split_range is not None and not 0 <= split_range[0] <= split_range[1] <= max_mapnr:
            raise ValueError(f"split range {split_range} is not inside [0, {max_mapnr}]")
        self._sink = sink
        self.page_size = page_size
        self.max_mapnr = max_mapnr
        self.codec = codec
        self.dump_level = dump_level
        self.threads = threads
        self.limit = limit
        self.split_range = split_range
        self._start, self._end = split_range if split_range is not None else (0, max_mapnr)
        bs = page_size
        size_note = len(note_data)
        self._note_data = bytes(note_data)
        # write_kdump_header(): sub_hdr_size = divideup(sizeof(kh) + size_note, block_size);
        # len_bitmap = 2 * divideup(divideup(max_mapnr, 8), page_size) * page_size.
        self.sub_hdr_size = -(-(KDUMP_SUB_HEADER.size + size_note) // bs)
        self._bitmap_bytes = (max_mapnr + 7) // 8
        self.len_bitmap = 2 * -(-self._bitmap_bytes // bs) * bs
        self.offset_bitmap1 = (_DISKDUMP_HEADER_BLOCKS + self.sub_hdr_size) * bs
        self.table_offset = self.offset_bitmap1 + self.len_bitmap
        tv_sec = math.floor(timestamp)
        tv_usec = min(round((timestamp - tv_sec) * 1e6), 999_999)
        self.header = DiskDumpHeader(
            signature=KDUMP_SIGNATURE,
            header_version=_HEADER_VERSION,
            utsname=utsname,
            tv_sec=tv_sec,
            tv_usec=tv_usec,
            status=codec.flag,
            block_size=bs,
            sub_hdr_size=self.sub_hdr_size,
            bitmap_blocks=self.len_bitmap // bs,
            max_mapnr=min(max_mapnr, 0xFFFFFFFF),  # MIN(max_mapnr, UINT_MAX)
            total_ram_blocks=0,
            device_blocks=0,
            written_blocks=0,
            current_cpu=0,
            nr_cpus=nr_cpus,
        )
        utsname.pack()  # fail early on an over-long field
        offset_note = bs + KDUMP_SUB_HEADER.size if size_note else 0
        vmci = _find_note_desc(self._note_data, b"VMCOREINFO") if size_note else None
        split = split_range is not None
        self.sub_header = KdumpSubHeader(
            # The kernel prints NUMBER(phys_base) signed (KASLR can make it negative);
            # the sub-header holds the same bits as an unsigned long.
            phys_base=phys_base & _ULONG_MASK,
            dump_level=dump_level,
            split=int(split),
            # 32-bit copies, "only for compatibility purpose": MIN(pfn, UINT_MAX); 0 when not split.
            start_pfn=min(self._start, 0xFFFFFFFF) if split else 0,
            end_pfn=min(self._end, 0xFFFFFFFF) if split else 0,
            offset_vmcoreinfo=offset_note + vmci[0] if vmci else 0,
            size_vmcoreinfo=vmci[1] if vmci else 0,
            offset_note=offset_note,
            size_note=size_note,
            offset_eraseinfo=0,
            size_eraseinfo=0,
            start_pfn_64=self._start if split else 0,
            end_pfn_64=self._end if split else 0,
            max_mapnr_64=max_mapnr,
        )
        self.bytes_written = 0
        """Size of the file so far (the highest end of anything written)."""
        self.num_dumpable = 0
        """Set bits of bitmap 2 (global, also in a split part); fixed by write_bitmaps()."""
        self._bm2: _Bitmap | None = None
        self._rank_base = 0
        self._data_end = 0
        self._last_pfn = -1
        self._pd_zero: np.void | None = None
        self._stopped: DumpLimitReached | None = None
        self._finished = False
        self._packer: Packer | None = None

    def _write(self, offset: int, data: bytes | memoryview) -> None:
        self._sink.write_at(offset, data)
        self.bytes_written = max(self.bytes_written, offset + memoryview(data).nbytes)

    def write_bitmaps(self, bitmap1: npt.ArrayLike, bitmap2: npt.ArrayLike) -> None:
        """Write header, sub-header, notes and both bitmaps (each ceil(max_mapnr / 8) bytes, uint8).

        Fixes num_dumpable = popcount(bitmap2) over all pfns, which sizes the descriptor table even
        in a split part (makedumpfile's get_num_dumpable_cyclic_withsplit()), and so where the data
        starts. With dump_level & 1 the shared zero page is written first in the data area.
        """
        if self._bm2 is not None:
            raise RuntimeError("write_bitmaps() was already called")
        b1 = np.asarray(bitmap1, dtype=np.uint8).ravel()
        b2 = np.asarray(bitmap2, dtype=np.uint8).ravel()
        for name, b in (("bitmap1", b1), ("bitmap2", b2)):
            if b.size != self._bitmap_bytes:
                raise ValueError(f"{name} has {b.size} bytes, expected {self._bitmap_bytes}")
        bm1 = _Bitmap(b1, self.max_mapnr)
        bm2 = _Bitmap(b2, self.max_mapnr)
        self.num_dumpable = bm2.count(0, self.max_mapnr)
        self._rank_base = bm2.count(0, self._start)
        self._bm2 = bm2
        bs = self.page_size
        self._write(0, self.header.pack())
        self._write(bs, self.sub_header.pack())
        if self._note_data:
            self._write(self.sub_header.offset_note, self._note_data)
        # makedumpfile writes ceil(max_mapnr / 8) bytes of each bitmap; the block padding stays a hole.
        if self._bitmap_bytes:
            self._write(self.offset_bitmap1, bm1.array.tobytes())
            self._write(self.offset_bitmap1 + self.len_bitmap // 2, bm2.array.tobytes())
        self._data_end = self.table_offset + self.num_dumpable * PAGE_DESC.itemsize
        if self.num_dumpable == 0 and not self.dump_level & DL_EXCLUDE_ZERO and self.len_bitmap:
            # Nothing follows the bitmaps: give the file their full length, or readers (crash
            # included) find them cut short. Elsewhere later data extends the file past the padding.
            self._write(self.table_offset - 1, b"\0")
        if self.dump_level & DL_EXCLUDE_ZERO:
            # pd_zero = {offset: start of data, size: page_size, flags: 0, page_flags: 0}
            self._pd_zero = np.array([(self._data_end, bs, 0, 0)], dtype=PAGE_DESC)[0]
            if self.limit is not None and self._data_end + bs > self.limit:
                self._stop("size limit reached", self._first_pfn())
            try:
                self._write(self._data_end, bytes(bs))
            except OSError as e:
                if e.errno not in _NOSPACE_ERRNOS:
                    raise
                self._stop(e.strerror or "no space left on device", self._first_pfn(), e)
            self._data_end += bs

    def _first_pfn(self) -> int | None:
        assert self._bm2 is not None
        if self._end <= self._start:
            return None
        bits = np.flatnonzero(self._bm2.bits(self._start, self._end))
        return self._start + int(bits[0]) if len(bits) else None

    def _stop(self, why: str, next_pfn: int | None, cause: BaseException | None = None) -> None:
        self._stopped = DumpLimitReached(why, next_pfn, self.bytes_written)
        raise self._stopped from cause

    def write_pages(self, pfns: npt.ArrayLike, data: bytes | memoryview) -> None:
        """Write the next pages: `pfns` ascending, each set in bitmap 2 and inside the split range;
        `data` holds their len(pfns) * page_size bytes in the same order."""
        p, idx = self._check_pfns(pfns)
        n = len(p)
        bs = self.page_size
        view = memoryview(data).cast("B")
        if len(view) != n * bs:
            raise ValueError(f"{len(view)} bytes of data for {n} pages of {bs} bytes")
        if n == 0:
            return
        pages = np.frombuffer(view, dtype=np.uint8).reshape(n, bs)
        if self._packer is None:
            # Threads only pay off over several tasks; one thread compresses in the caller's.
            self._packer = Packer(self.codec, bs, self.threads if self.threads > 1 else 0)
        packed = self._packer.pack(pages, exclude_zero=self._pd_zero is not None)
        try:
            self._write_checked(p, idx, packed.sizes, packed.pieces, packed.zero)
        finally:
            self._packer.release(packed)

    def write_compressed(
        self,
        pfns: npt.ArrayLike,
        sizes: npt.ArrayLike,
        pieces: Sequence[bytes | memoryview],
        zero: npt.NDArray[np.bool_] | None = None,
    ) -> None:
        """Write the next pages, already compressed with the writer's codec (`Packer`).

        `pfns` as for `write_pages()`; `zero` marks those stored as the shared zero page (dump_level
        & 1); `sizes` gives the stored size of each other page in order (the page size: stored raw),
        and `pieces` their stored bytes back to back, split only between pages.
        """
        p, idx = self._check_pfns(pfns)
        self._write_checked(p, idx, np.asarray(sizes, dtype=np.int64), pieces, zero)

    def _check_pfns(self, pfns: npt.ArrayLike) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """The pfns as an array, checked, and their descriptor indices."""
        if self._bm2 is None:
            raise RuntimeError("write_pages() before write_bitmaps()")
        if self._finished:
            raise RuntimeError("write_pages() after finish()")
        if self._stopped is not None:
            raise self._stopped
        p = np.asarray(pfns, dtype=np.int64).ravel()
        n = len(p)
        if n == 0:
            return p, p
        if p[0] <= self._last_pfn or (n > 1 and not bool(np.all(np.diff(p) > 0))):
            raise ValueError("pfns must be strictly ascending and follow the pfns already written")
        if p[0] < self._start or p[-1] >= self._end:
            raise ValueError(f"pfns outside the dump's range [{self._start:#x}, {self._end:#x})")
        if not self._bm2.test(p).all():
            raise ValueError("pfns not set in bitmap 2 cannot be written")
        # Usually the pages are every dumpable pfn of [p[0], p[-1]]: their descriptors follow each other.
        first, last = self._bm2.rank_one(int(p[0])), self._bm2.rank_one(int(p[-1]) + 1)
        if last - first == n:
            idx = np.arange(first - self._rank_base, last - self._rank_base, dtype=np.int64)
        else:
            idx = self._bm2.rank(p) - self._rank_base
        return p, idx

    def _write_checked(
        self,
        p: npt.NDArray[np.int64],
        idx: npt.NDArray[np.int64],
        dsize: npt.NDArray[np.int64],
        pieces: Sequence[bytes | memoryview],
        zero: npt.NDArray[np.bool_] | None,
    ) -> None:
        n = len(p)
        if n == 0:
            return
        bs = self.page_size
        if zero is None:
            nz = np.arange(n)
        else:
            if len(zero) != n:
                raise ValueError(f"zero mask of {len(zero)} pages for {n} pfns")
            if self._pd_zero is None and zero.any():
                raise ValueError("zero pages are shared only with dump_level & 1")
            nz = np.flatnonzero(~zero)
        if len(dsize) != len(nz) or (len(dsize) and not bool(((dsize > 0) & (dsize <= bs)).all())):
            raise ValueError("one stored size per page written, each from 1 to the page size")
        # Keep the compressed form only if it is smaller than a page (write_kdump_pages_cyclic()).
        compressed = dsize < bs
        rel_ends = np.cumsum(dsize)
        ends = self._data_end + rel_ends
        offsets = ends - dsize

        n_fit = len(nz)
        if self.limit is not None and len(nz) and int(ends[-1]) > self.limit:
            n_fit = int(np.searchsorted(ends, self.limit, side="right"))
        why = "size limit reached"
        cause: OSError | None = None
        try:
            n_written = self._write_data(pieces, rel_ends, n_fit)
        except _NoSpace as e:
            n_written, cause = e.written, e.cause
            why = cause.strerror or "no space left on device"
        cut = int(nz[n_written]) if n_written < len(nz) else n  # pages [0, cut) are now complete

        descs = np.zeros(cut, dtype=PAGE_DESC)
        if self._pd_zero is not None and zero is not None:
            descs[zero[:cut]] = self._pd_zero
        w = nz[:n_written]
        descs["offset"][w] = offsets[:n_written]
        descs["size"][w] = dsize[:n_written]
        descs["flags"][w] = np.where(compressed[:n_written], self.codec.flag, 0)
        stop = cut < n
        try:
            self._write_descs(idx[:cut], descs)
        except OSError as e:
            if e.errno not in _NOSPACE_ERRNOS:
                raise
            # makedumpfile: "This dumpfile may lost some important data."
            why, cause, stop = f"{e.strerror}; descriptors of the last pages may be lost", e, True
        if n_written:
            self._data_end = int(ends[n_written - 1])
        if cut:
            self._last_pfn = int(p[cut - 1])
        if stop:
            self._stop(why, int(p[cut]) if cut < n else None, cause)

    def _write_data(
        self, pieces: Sequence[bytes | memoryview], rel_ends: npt.NDArray[np.int64], n_fit: int
    ) -> int:
        """Write the first `n_fit` stored pages (ending at `rel_ends` from the data end) from `pieces`,
        one write per piece; return `n_fit`.

        On ENOSPC/EDQUOT, rewrite the failed piece page by page to learn how many pages made it, then
        raise _NoSpace with that count.
        """
        total = int(rel_ends[n_fit - 1]) if n_fit else 0
        pos = 0
        for piece in pieces:
            if pos >= total:
                break
            view = memoryview(piece).cast("B")
            chunk = view[: total - pos]
            try:
                self._write(self._data_end + pos, chunk)
            except OSError as e:
                if e.errno not in _NOSPACE_ERRNOS:
                    raise
                k = int(np.searchsorted(rel_ends, pos, side="right"))  # first page of this piece
                start = pos
                try:
                    while k < n_fit and start < pos + len(chunk):
                        end = int(rel_ends[k])
                        self._write(self._data_end + start, chunk[start - pos : end - pos])
                        start = end
                        k += 1
                except OSError:
                    raise _NoSpace(k, e) from e
                raise _NoSpace(k, e) from e
            pos += len(chunk)
        if pos < total:
            raise ValueError(f"pieces hold {pos} bytes, the stored sizes add up to {total}")
        return n_fit

    def _write_descs(self, idx: npt.NDArray[np.int64], descs: npt.NDArray[np.void]) -> None:
        """Write descriptors at their table positions, one write per run of consecutive indices."""
        if not len(idx):
            return
        breaks = np.flatnonzero(np.diff(idx) != 1) + 1
        for a, b in zip(np.r_[0, breaks], np.r_[breaks, len(idx)], strict=True):
            self._write(self.table_offset + int(idx[a]) * PAGE_DESC.itemsize, descs[a:b].tobytes())

    def finish(self, *, incomplete: bool = False, eraseinfo: bytes | None = None) -> None:
        """Append eraseinfo after the data and rewrite the sub-header (update_eraseinfo_of_sub_header());
        set the INCOMPLETE flag in the header when asked or when the writer was stopped."""
        if self._bm2 is None:
            raise RuntimeError("finish() before write_bitmaps()")
        if self._finished:
            return
        self._finished = True
        if self._packer is not None:
            self._packer.close()
            self._packer = None
        if eraseinfo:
            fits = self.limit is None or self._data_end + len(eraseinfo) <= self.limit
            if self._stopped is None and fits:
                self._write(self._data_end, eraseinfo)
                self.sub_header.offset_eraseinfo = self._data_end
                self.sub_header.size_eraseinfo = len(eraseinfo)
                self._data_end += len(eraseinfo)
                self._write(self.page_size, self.sub_header.pack())
        if incomplete or self._stopped is not None:
            self.header.status |= DUMP_DH_COMPRESSED_INCOMPLETE
            self._write(0, self.header.pack())


class _NoSpace(Exception):
    def __init__(self, written: int, cause: OSError) -> None:
        super().__init__(str(cause))
        self.written = written
        self.cause = cause
