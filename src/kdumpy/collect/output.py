"""Where a dump is written: `<name>-incomplete` first, mode 0600, renamed only once it is whole.

A failed or interrupted write leaves the `-incomplete` file (it holds what was saved) and never a file
under the final name, so nothing downstream mistakes a partial dump for a complete one.
"""

from __future__ import annotations

import os
import sys
from types import TracebackType
from typing import BinaryIO

from kdumpy.errors import UsageError
from kdumpy.formats.flattened import FlatSink
from kdumpy.formats.io import FileSink, Sink

__all__ = ["INCOMPLETE_SUFFIX", "DumpOutput"]

INCOMPLETE_SUFFIX = "-incomplete"


class DumpOutput:
    """A dump file being written; `sink` takes the bytes. Use as a context manager.

    `path == "-"` writes makedumpfile's flattened stream to standard output (it must not be a terminal).
    """

    def __init__(self, path: str, *, flattened: bool = False, force: bool = False) -> None:
        self.path = path
        self.to_stdout = path == "-"
        self._stream: BinaryIO | None = None
        self._file_sink: FileSink | None = None
        if self.to_stdout:
            if sys.stdout.isatty():
                raise UsageError("refusing to write a dump to a terminal: redirect standard output")
            self._stream = sys.stdout.buffer
            self.sink: Sink = FlatSink(self._stream)
            self.partial = "-"
            return
        if os.path.exists(path) and not force:
            raise UsageError(f"{path} exists; use -f to overwrite it")
        self.partial = path + INCOMPLETE_SUFFIX
        if flattened:
            fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.fchmod(fd, 0o600)
            self._stream = os.fdopen(fd, "wb", buffering=1 << 20)
            self.sink = FlatSink(self._stream)
        else:
            self._file_sink = FileSink(self.partial, mode=0o600, overwrite=True)
            self.sink = self._file_sink

    def commit(self) -> None:
        """Flush, sync and give the file its final name."""
        self.sink.close()
        if self._stream is not None:
            self._stream.flush()
            if not self.to_stdout:
                os.fsync(self._stream.fileno())
                self._stream.close()
        if self.to_stdout:
            return
        if self._file_sink is not None:
            fd = os.open(self.partial, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(self.partial, self.path)

    def abort(self) -> None:
        """Close without renaming: the `-incomplete` file stays for whoever wants what it holds."""
        # A flattened stream is left without its end marker, so a rebuild reports it as cut short.
        if self._file_sink is not None:
            self._file_sink.close()
        elif self._stream is not None:
            self._stream.flush()
            if not self.to_stdout:
                self._stream.close()

    def __enter__(self) -> DumpOutput:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if et is None:
            self.commit()
        else:
            self.abort()
