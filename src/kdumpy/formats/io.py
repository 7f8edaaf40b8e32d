"""Where dump bytes come from and go to: random-access sources and sinks.

A `Source` answers `read_at(offset, n)` with exactly `n` bytes or raises `TruncatedDumpError`, so every
reader checks lengths in one place. A `Sink` takes `write_at(offset, data)`; the kdump-compressed writer
uses it both for regular files (`FileSink`, pwrite) and for makedumpfile's flattened stream
(`kdumpy.formats.flattened.FlatSink`), which is how makedumpfile itself writes either (`write_buffer()`).
`BytesSource` and `BytesSink` keep everything in memory, for tests and small conversions.
"""

from __future__ import annotations

import os
from types import TracebackType
from typing import Protocol, runtime_checkable

from kdumpy.errors import CorruptDumpError, TruncatedDumpError

__all__ = [
    "BytesSink",
    "BytesSource",
    "FileSink",
    "FileSource",
    "Sink",
    "Source",
    "check_range",
]


@runtime_checkable
class Source(Protocol):
    """Random-access input: a dump file, a flattened stream indexed in place, or bytes in memory."""

    size: int
    """Bytes readable; `read_at` past it raises `TruncatedDumpError`."""

    def read_at(self, offset: int, n: int) -> bytes:
        """Exactly `n` bytes at `offset`, or `TruncatedDumpError`."""
        ...


@runtime_checkable
class Sink(Protocol):
    """Random-access output."""

    def write_at(self, offset: int, data: bytes | memoryview) -> None:
        """Place `data` at `offset`; bytes never written read as zeros (a sparse file)."""
        ...

    def close(self) -> None:
        """Finish the output (the flattened stream writes its end marker here)."""
        ...


def check_range(offset: int, n: int, size: int, what: str = "data") -> None:
    """Raise a typed error unless [offset, offset + n) lies inside a source of `size` bytes.

    Every length and offset read from a file goes through here before anything is allocated for it.
    """
    if offset < 0 or n < 0:
        raise CorruptDumpError(f"{what}: invalid range ({n} bytes at offset {offset})")
    if offset + n > size:
        raise TruncatedDumpError(
            f"{what}: {n} bytes at offset {offset:#x} lie past the end of the file ({size} bytes)"
        )


class FileSource:
    """A regular file read with `os.pread`, opened by path (or an open fd, which stays the caller's)."""

    def __init__(self, path: str | os.PathLike[str] | int) -> None:
        if isinstance(path, int):
            self._fd = path
            self._owned = False
            self.name = f"fd {path}"
        else:
            self._fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            self._owned = True
            self.name = os.fspath(path)
        self.size: int = os.fstat(self._fd).st_size

    def read_at(self, offset: int, n: int) -> bytes:
        check_range(offset, n, self.size, self.name)
        data = os.pread(self._fd, n, offset)
        if len(data) < n:
            # A short pread means the file shrank or is a pipe-like file; loop once more, then give up.
            parts = [data]
            got = len(data)
            while got < n:
                more = os.pread(self._fd, n - got, offset + got)
                if not more:
                    raise TruncatedDumpError(f"{self.name}: file ends at {offset + got:#x}, need {n} bytes")
                parts.append(more)
                got += len(more)
            data = b"".join(parts)
        return data

    def close(self) -> None:
        if self._owned and self._fd >= 0:
            os.close(self._fd)
        self._fd = -1

    def __enter__(self) -> FileSource:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class BytesSource:
    """Bytes in memory as a `Source`."""

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._data = bytes(data)
        self.size: int = len(self._data)

    def read_at(self, offset: int, n: int) -> bytes:
        check_range(offset, n, self.size, "buffer")
        return self._data[offset : offset + n]


class FileSink:
    """A regular file written with `os.pwrite`.

    Given a path, the file is created with `mode` (0o600 by default: a dump holds all of the kernel's
    memory) and must not exist unless `overwrite` (then it is truncated). Given an fd, the caller keeps
    it: `close()` leaves it open.
    """

    def __init__(
        self, path_or_fd: str | os.PathLike[str] | int, *, mode: int = 0o600, overwrite: bool = False
    ) -> None:
        if isinstance(path_or_fd, int):
            self._fd = path_or_fd
            self._owned = False
            self.name = f"fd {path_or_fd}"
        else:
            flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
            flags |= os.O_TRUNC if overwrite else os.O_EXCL
            self._fd = os.open(path_or_fd, flags, mode)
            self._owned = True
            self.name = os.fspath(path_or_fd)

    def write_at(self, offset: int, data: bytes | memoryview) -> None:
        view = memoryview(data).cast("B")
        done = 0
        # pwrite may write less than asked (signals, quotas); an error such as ENOSPC raises OSError.
        while done < len(view):
            done += os.pwrite(self._fd, view[done:], offset + done)

    def fsync(self) -> None:
        """Flush the file to stable storage (the capture kernel reboots right after saving)."""
        os.fsync(self._fd)

    def close(self) -> None:
        if self._owned and self._fd >= 0:
            os.close(self._fd)
        self._fd = -1

    def __enter__(self) -> FileSink:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class BytesSink:
    """A growing bytearray as a `Sink` (holes read as zeros, like a sparse file)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False

    def write_at(self, offset: int, data: bytes | memoryview) -> None:
        if offset < 0:
            raise ValueError(f"negative offset {offset}")
        view = memoryview(data).cast("B")
        if not len(view):
            return  # like pwrite() of nothing: the file does not grow
        end = offset + len(view)
        if end > len(self.data):
            self.data.extend(bytes(end - len(self.data)))
        self.data[offset:end] = view

    def close(self) -> None:
        self.closed = True
