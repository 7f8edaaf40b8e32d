"""makedumpfile's flattened stream (`-F`), its reader in place, and its rebuild to a file (`-R`).

The stream is a 4096-byte start header, then one record per write the dump writer made: a
big-endian `{int64 offset, int64 buf_size}` header and `buf_size` bytes that belong at `offset` of the
rebuilt file, then the end marker `{-1, -1}` (makedumpfile.c: `write_start_flat_header()`,
`write_buffer()`, `write_end_flat_header()`, `rearrange_dumpdata()`). Records may come in any order
and a later record overwrites an earlier one (header rewrites).
"""

from __future__ import annotations

import bisect
import os
import struct
from typing import BinaryIO

import numpy as np

from kdumpy.errors import CorruptDumpError, TruncatedDumpError
from kdumpy.formats.io import Sink, check_range

__all__ = [
    "END_FLAG_FLAT_HEADER",
    "FLAT_HEADER",
    "FLAT_HEADER_SIZE",
    "FLAT_RECORD_HEADER",
    "FLAT_SIGNATURE",
    "TYPE_FLAT_HEADER",
    "VERSION_FLAT_HEADER",
    "FlatSink",
    "FlatSource",
    "is_flattened",
    "rebuild",
]

FLAT_SIGNATURE = b"makedumpfile"
FLAT_HEADER_SIZE = 4096  # MAX_SIZE_MDF_HEADER
TYPE_FLAT_HEADER = 1
VERSION_FLAT_HEADER = 1
END_FLAG_FLAT_HEADER = -1

FLAT_HEADER = struct.Struct(">16sqq")
"""struct makedumpfile_header: char signature[16] ("makedumpfile" + NULs), int64 type, int64 version."""
FLAT_RECORD_HEADER = struct.Struct(">qq")
"""struct makedumpfile_data_header: int64 offset, int64 buf_size (both big-endian)."""

_SIG16 = FLAT_SIGNATURE.ljust(16, b"\0")
_END_RECORD = FLAT_RECORD_HEADER.pack(END_FLAG_FLAT_HEADER, END_FLAG_FLAT_HEADER)
_COPY_CHUNK = 1 << 20


def _check_start_header(head: bytes) -> str | None:
    """Why `head` is not a flattened start header, or None if it is."""
    if len(head) < FLAT_HEADER.size:
        return "too short for a flattened header"
    sig, typ, _version = FLAT_HEADER.unpack_from(head)
    # rearrange_dumpdata() compares the signature with strcmp(): up to the first NUL.
    if sig.split(b"\0", 1)[0] != FLAT_SIGNATURE:
        return "no makedumpfile signature"
    if typ != TYPE_FLAT_HEADER:
        return f"flattened header type {typ}, expected {TYPE_FLAT_HEADER}"
    return None


def is_flattened(head: bytes) -> bool:
    """True if `head` (the first bytes of a file, at least 32) starts a flattened stream."""
    return _check_start_header(head) is None


class FlatSink:
    """A `Sink` writing the flattened stream to a sequential binary stream (stdout, a pipe, a socket).

    The start header goes out with the first write (or at `close()` if nothing was written); each
    `write_at` becomes one record; `close()` writes the end marker and flushes, but leaves the stream
    open (it is usually stdout).
    """

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._started = False
        self._closed = False
        self.bytes_out = 0
        """Bytes of stream written so far (makedumpfile's -L counts these when writing to stdout)."""

    def _start(self) -> None:
        if not self._started:
            head = FLAT_HEADER.pack(_SIG16, TYPE_FLAT_HEADER, VERSION_FLAT_HEADER).ljust(
                FLAT_HEADER_SIZE, b"\0"
            )
            self._stream.write(head)
            self.bytes_out += len(head)
            self._started = True

    def write_at(self, offset: int, data: bytes | memoryview) -> None:
        if self._closed:
            raise ValueError("write to a closed FlatSink")
        if offset < 0:
            raise ValueError(f"negative offset {offset}")
        self._start()
        size = memoryview(data).nbytes
        if size == 0:
            # rearrange_dumpdata() stops at a record with buf_size 0 and then rejects it as a bad end
            # marker: never emit one.
            return
        self._stream.write(FLAT_RECORD_HEADER.pack(offset, size))
        self._stream.write(data)
        self.bytes_out += FLAT_RECORD_HEADER.size + size

    def close(self) -> None:
        if self._closed:
            return
        self._start()
        self._stream.write(_END_RECORD)
        self.bytes_out += len(_END_RECORD)
        self._stream.flush()
        self._closed = True


def _read_exact(stream: BinaryIO, n: int, what: str) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = stream.read(n - len(buf))
        if not chunk:
            raise TruncatedDumpError(f"flattened stream ends inside {what} ({len(buf)} of {n} bytes)")
        buf += chunk
    return bytes(buf)


def rebuild(stream: BinaryIO, sink: Sink) -> int:
    """Write the file a flattened `stream` describes into `sink`, like `makedumpfile -R`.

    Checks the start header (signature and type 1), places each record, and stops at the exact end
    marker (-1, -1). A stream that ends without it raises `TruncatedDumpError`; any other record with
    a negative offset or a non-positive size raises `CorruptDumpError`. Returns the size of the rebuilt
    file (the highest end of any record). Memory stays bounded by one copy chunk, whatever the
    records claim.
    """
    head = _read_exact(stream, FLAT_HEADER_SIZE, "the start header")
    why = _check_start_header(head)
    if why is not None:
        raise CorruptDumpError(f"not a flattened dump: {why}")
    end = 0
    while True:
        try:
            rec = _read_exact(stream, FLAT_RECORD_HEADER.size, "a record header")
        except TruncatedDumpError as e:
            raise TruncatedDumpError(f"flattened stream ends without its end marker ({e})") from e
        offset, size = FLAT_RECORD_HEADER.unpack(rec)
        if not (offset >= 0 and size > 0):
            # The loop condition of rearrange_dumpdata(); what stops it must be exactly (-1, -1).
            if offset == END_FLAG_FLAT_HEADER and size == END_FLAG_FLAT_HEADER:
                return end
            raise CorruptDumpError(f"flattened stream: invalid record header (offset {offset}, size {size})")
        done = 0
        while done < size:
            chunk = _read_exact(stream, min(_COPY_CHUNK, size - done), f"the record at offset {offset:#x}")
            sink.write_at(offset + done, chunk)
            done += len(chunk)
        end = max(end, offset + size)


MAX_REBUILT_SIZE = 1 << 46
"""64 TiB: larger than any file the rebuilt dump could be (ext4 and XFS stop at 16 TiB and 8 EiB with
sparse holes; a dump's own data never comes near). A record past it is corrupt, not sparse."""


class FlatSource:
    """A `Source` over a flattened file, read in place without rebuilding it.

    The records are indexed once (their offsets, not their data) into a sorted list of disjoint
    segments, later records winning where they overlap, as in a rebuild; `read_at` assembles bytes
    from the segments and reads holes as zeros. `size` is the highest end of any record.

    A file cut short (no end marker, or a last record with part of its data) still opens:
    `complete` is then False and only the bytes present are indexed, so a dump inside reads as far
    as it was received.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.name = os.fspath(path)
        self._fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            self._index()
        except BaseException:
            os.close(self._fd)
            raise

    def _index(self) -> None:
        file_size = os.fstat(self._fd).st_size
        head = os.pread(self._fd, FLAT_HEADER_SIZE, 0)
        why = _check_start_header(head)
        if why is not None:
            raise CorruptDumpError(f"{self.name}: not a flattened dump: {why}")
        if len(head) < FLAT_HEADER_SIZE:
            raise TruncatedDumpError(f"{self.name}: flattened start header is cut short")
        starts: list[int] = []
        ends: list[int] = []
        fpos: list[int] = []
        complete = False
        pos = FLAT_HEADER_SIZE
        size = 0
        while pos + FLAT_RECORD_HEADER.size <= file_size:
            offset, n = FLAT_RECORD_HEADER.unpack(os.pread(self._fd, FLAT_RECORD_HEADER.size, pos))
            pos += FLAT_RECORD_HEADER.size
            if not (offset >= 0 and n > 0):
                if offset == END_FLAG_FLAT_HEADER and n == END_FLAG_FLAT_HEADER:
                    complete = True
                    break
                raise CorruptDumpError(
                    f"{self.name}: invalid flattened record at {pos - 16:#x} (offset {offset}, size {n})"
                )
            if offset + n > MAX_REBUILT_SIZE:
                # The rebuilt file could not be written (makedumpfile -R fails with EFBIG): corrupt.
                raise CorruptDumpError(
                    f"{self.name}: flattened record at {pos - 16:#x} places data at {offset:#x}, "
                    "past the end of any dump file"
                )
            n = min(n, file_size - pos)  # a last record cut short keeps what arrived
            if n > 0:
                _paint(starts, ends, fpos, offset, offset + n, pos)
                size = max(size, offset + n)
            pos += n
        self.complete: bool = complete
        """True when the stream ends with the exact end marker."""
        self.size: int = size
        self._starts = np.array(starts, dtype=np.int64)
        self._ends = np.array(ends, dtype=np.int64)
        self._fpos = np.array(fpos, dtype=np.int64)

    def read_at(self, offset: int, n: int) -> bytes:
        check_range(offset, n, self.size, self.name)
        out = bytearray(n)
        end = offset + n
        i = int(np.searchsorted(self._ends, offset, side="right"))
        while i < len(self._starts) and self._starts[i] < end:
            s = max(int(self._starts[i]), offset)
            e = min(int(self._ends[i]), end)
            src = int(self._fpos[i]) + (s - int(self._starts[i]))
            chunk = os.pread(self._fd, e - s, src)
            if len(chunk) != e - s:
                raise TruncatedDumpError(f"{self.name}: flattened file shrank while reading")
            out[s - offset : e - offset] = chunk
            i += 1
        return bytes(out)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = -1

    def __enter__(self) -> FlatSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _paint(starts: list[int], ends: list[int], fpos: list[int], s: int, e: int, p: int) -> None:
    """Insert segment [s, e) whose data is at file position p, replacing what it overlaps.

    The lists hold disjoint segments sorted by start. makedumpfile's records rarely overlap, so the
    common case is one bisect and one insert.
    """
    i = bisect.bisect_left(starts, s) - 1  # the last segment starting before s
    if i >= 0 and ends[i] > s:
        # The segment before starts earlier and overlaps: keep its head, and its tail if it sticks out.
        os_, oe, op = starts[i], ends[i], fpos[i]
        ends[i] = s
        if oe > e:
            starts.insert(i + 1, e)
            ends.insert(i + 1, oe)
            fpos.insert(i + 1, op + (e - os_))
        i += 1
    else:
        i += 1
    # Remove or trim the segments starting inside [s, e).
    j = i
    while j < len(starts) and starts[j] < e:
        if ends[j] > e:
            fpos[j] += e - starts[j]
            starts[j] = e
            break
        j += 1
    del starts[i:j], ends[i:j], fpos[i:j]
    starts.insert(i, s)
    ends.insert(i, e)
    fpos.insert(i, p)
