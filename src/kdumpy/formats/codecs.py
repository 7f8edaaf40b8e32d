"""Page codecs of the kdump-compressed format, by name and by flag: zlib, lzo, snappy, zstd and none.

Each compresses one page exactly as makedumpfile does (`write_kdump_pages_cyclic()`), so that our
files can equal its files byte for byte, and decompresses with the checks crash applies in
`cache_page()`: the result must be exactly one page. Decompression never allocates more than the page
size asked for, whatever a hostile stream claims.

The libraries are imported on first use; a missing one gives `UnsupportedError` naming its pip package.
`get_codec()` checks that up front; `codec_for_flag()` does not, so a reader can still open a file whose
codec is missing and report on it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kdumpy.errors import CorruptDumpError, UnsupportedError

__all__ = [
    "CODECS",
    "DUMP_DH_COMPRESSED_LZO",
    "DUMP_DH_COMPRESSED_SNAPPY",
    "DUMP_DH_COMPRESSED_ZLIB",
    "DUMP_DH_COMPRESSED_ZSTD",
    "FLAG_MASK",
    "Codec",
    "codec_for_flag",
    "get_codec",
]

# diskdump_mod.h: the same bits mark the codec in disk_dump_header.status and in page_desc.flags.
DUMP_DH_COMPRESSED_ZLIB = 0x1
DUMP_DH_COMPRESSED_LZO = 0x2
DUMP_DH_COMPRESSED_SNAPPY = 0x4
DUMP_DH_COMPRESSED_ZSTD = 0x20
FLAG_MASK = (
    DUMP_DH_COMPRESSED_ZLIB | DUMP_DH_COMPRESSED_LZO | DUMP_DH_COMPRESSED_SNAPPY | DUMP_DH_COMPRESSED_ZSTD
)

# Pages per task when compress_many spreads work over threads: large enough to amortise the
# executor, small enough to balance the load.
_CHUNK_PAGES = 256


def _import(module: str, package: str) -> Any:
    try:
        return __import__(module)
    except ImportError as e:
        raise UnsupportedError(
            f"codec needs the Python package {package!r}, which is not installed (pip install {package})"
        ) from e


class Codec:
    """One page codec. Subclasses implement `_compress` and `_decompress`."""

    name: str = "none"
    """Name as on the command line: "zlib", "lzo", "snappy", "zstd" or "none"."""
    flag: int = 0
    """Bit in disk_dump_header.status and page_desc.flags (0 for none)."""
    package: str | None = None
    """pip package providing the library, if any."""

    def check(self) -> None:
        """Raise `UnsupportedError` if the library is missing."""

    def compress(self, page: bytes | memoryview) -> bytes:
        """Compressed form of `page`, as makedumpfile would write it (may be larger than the page)."""
        return bytes(page)

    def decompress(self, data: bytes, out_size: int) -> bytes:
        """The `out_size` bytes `data` decompresses to; anything else is `CorruptDumpError`."""
        try:
            out = self._decompress(data, out_size)
        except CorruptDumpError:
            raise
        except UnsupportedError:
            raise
        except Exception as e:  # each library has its own error type; all mean a corrupt page
            raise CorruptDumpError(f"{self.name}: page does not decompress ({e})") from e
        if len(out) != out_size:
            raise CorruptDumpError(f"{self.name}: page decompresses to {len(out)} bytes, expected {out_size}")
        return out

    def _decompress(self, data: bytes, out_size: int) -> bytes:
        return bytes(data)

    def compress_many(self, pages: memoryview | bytes, page_size: int, threads: int = 1) -> list[bytes]:
        """Compress `len(pages) // page_size` contiguous pages; results in page order.

        With `threads > 1` chunks of pages go to a thread pool; each page is compressed on its own,
        so the output is the same whatever the thread count.
        """
        view = memoryview(pages).cast("B")
        if len(view) % page_size:
            raise ValueError(f"{len(view)} bytes is not a whole number of {page_size}-byte pages")
        n = len(view) // page_size
        if n == 0:
            return []
        self.check()
        if threads <= 1 or n <= _CHUNK_PAGES:
            return self._compress_range(view, page_size, 0, n)
        bounds = [(i, min(i + _CHUNK_PAGES, n)) for i in range(0, n, _CHUNK_PAGES)]
        with ThreadPoolExecutor(max_workers=threads) as pool:
            parts = pool.map(lambda b: self._compress_range(view, page_size, b[0], b[1]), bounds)
            out: list[bytes] = []
            for part in parts:
                out.extend(part)
        return out

    def _compress_range(self, view: memoryview, page_size: int, first: int, last: int) -> list[bytes]:
        fn = self._page_compressor()
        return [fn(view[i * page_size : (i + 1) * page_size]) for i in range(first, last)]

    def _page_compressor(self) -> Callable[[memoryview], bytes]:
        """A function compressing one page, private to the calling thread."""
        return self.compress

    def __repr__(self) -> str:
        return f"<Codec {self.name}>"


class _Zlib(Codec):
    name = "zlib"
    flag = DUMP_DH_COMPRESSED_ZLIB

    def compress(self, page: bytes | memoryview) -> bytes:
        # makedumpfile: compress2(..., Z_BEST_SPEED), i.e. a zlib-wrapped (RFC 1950) level-1 stream.
        return zlib.compress(page, 1)

    def _decompress(self, data: bytes, out_size: int) -> bytes:
        # crash uses uncompress(): the stream must end (Z_STREAM_END) within one page.
        d = zlib.decompressobj()
        out = d.decompress(data, out_size)
        if not d.eof:
            raise CorruptDumpError("zlib: page stream does not end within one page")
        return out


class _Lzo(Codec):
    name = "lzo"
    flag = DUMP_DH_COMPRESSED_LZO
    package = "python-lzo"

    def __init__(self) -> None:
        self._decompress_fn: Callable[[bytes, bool, int], bytes] | None = None

    def check(self) -> None:
        _import("lzo", "python-lzo")

    def compress(self, page: bytes | memoryview) -> bytes:
        # makedumpfile: lzo1x_1_compress, raw (no header). python-lzo level 1 is lzo1x_1; it takes
        # only bytes, hence the copy.
        lzo = _import("lzo", "python-lzo")
        return bytes(lzo.compress(bytes(page), 1, False))

    def _page_compressor(self) -> Callable[[memoryview], bytes]:
        compress = _import("lzo", "python-lzo").compress
        return lambda page: bytes(compress(bytes(page), 1, False))

    def _decompress(self, data: bytes, out_size: int) -> bytes:
        # Raw lzo1x; python-lzo decodes into a buffer of out_size bytes and fails on overrun.
        if self._decompress_fn is None:
            self._decompress_fn = _import("lzo", "python-lzo").decompress
        return bytes(self._decompress_fn(bytes(data), False, out_size))


class _LibSnappy:
    """Google's libsnappy through its C API (snappy-c.h), what makedumpfile links.

    The Rust implementation inside cramjam writes valid but different blocks for some pages (about
    6% of a real vmcore's), so byte-exact output needs the C library when it is installed.
    """

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._compress = lib.snappy_compress
        self._compress.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_char_p,
            ctypes.POINTER(ctypes.c_size_t),
        ]
        self._compress.restype = ctypes.c_int
        max_len = lib.snappy_max_compressed_length
        max_len.argtypes = [ctypes.c_size_t]
        max_len.restype = ctypes.c_size_t
        self._max_len = max_len
        self._local = threading.local()

    def compress(self, page: bytes | memoryview) -> bytes:
        data = bytes(page)
        cap = self._max_len(len(data))
        out = getattr(self._local, "out", None)
        if out is None or len(out) < cap:
            out = self._local.out = ctypes.create_string_buffer(cap)
        n = ctypes.c_size_t(cap)
        # snappy_compress() returns SNAPPY_OK (0); ctypes drops the GIL for the call.
        if self._compress(data, len(data), out, ctypes.byref(n)) != 0:
            raise RuntimeError("snappy_compress failed")
        return out.raw[: n.value]


_libsnappy: _LibSnappy | bool | None = False  # False: not looked for yet


def _find_libsnappy() -> _LibSnappy | None:
    global _libsnappy
    if _libsnappy is False:
        path = ctypes.util.find_library("snappy")
        try:
            _libsnappy = _LibSnappy(ctypes.CDLL(path)) if path else None
        except (OSError, AttributeError):
            _libsnappy = None
    assert _libsnappy is not True
    return _libsnappy


class _Snappy(Codec):
    name = "snappy"
    flag = DUMP_DH_COMPRESSED_SNAPPY
    package = "cramjam"

    def check(self) -> None:
        _import("cramjam", "cramjam")

    def compress(self, page: bytes | memoryview) -> bytes:
        # makedumpfile: snappy_compress(), a raw snappy block (not the framing format). Google's
        # library when installed (same bytes as makedumpfile), else cramjam (valid, may differ).
        lib = _find_libsnappy()
        if lib is not None:
            return lib.compress(page)
        cramjam = _import("cramjam", "cramjam")
        return bytes(cramjam.snappy.compress_raw(bytes(page)))

    def _decompress(self, data: bytes, out_size: int) -> bytes:
        cramjam = _import("cramjam", "cramjam")
        # The block starts with its uncompressed length; check it before the library allocates it.
        claimed = int(cramjam.snappy.decompress_raw_len(data))
        if claimed != out_size:
            raise CorruptDumpError(f"snappy: page claims {claimed} bytes, expected {out_size}")
        return bytes(cramjam.snappy.decompress_raw(data))


class _Zstd(Codec):
    name = "zstd"
    flag = DUMP_DH_COMPRESSED_ZSTD
    package = "zstandard"

    def __init__(self) -> None:
        # ZstdCompressor objects must not be shared between threads.
        self._local = threading.local()

    def check(self) -> None:
        _import("zstandard", "zstandard")

    def _compressor(self) -> Any:
        c = getattr(self._local, "c", None)
        if c is None:
            zstandard = _import("zstandard", "zstandard")
            # makedumpfile: ZSTD_compressCCtx(level 1): one standard frame with the content size.
            c = self._local.c = zstandard.ZstdCompressor(level=1)
        return c

    def compress(self, page: bytes | memoryview) -> bytes:
        return bytes(self._compressor().compress(page))

    def _page_compressor(self) -> Callable[[memoryview], bytes]:
        return self._compressor().compress  # type: ignore[no-any-return]

    def _decompress(self, data: bytes, out_size: int) -> bytes:
        zstandard = _import("zstandard", "zstandard")
        # A frame that records its content size is decoded into a buffer of that size, ignoring
        # max_output_size: check the size first so a hostile frame cannot make us allocate it.
        claimed = zstandard.frame_content_size(data)
        if claimed not in (-1, out_size):
            raise CorruptDumpError(f"zstd: page claims {claimed} bytes, expected {out_size}")
        return bytes(zstandard.ZstdDecompressor().decompress(data, max_output_size=out_size))


class _None(Codec):
    name = "none"
    flag = 0

    def compress(self, page: bytes | memoryview) -> bytes:
        return bytes(page)

    def _decompress(self, data: bytes, out_size: int) -> bytes:
        return bytes(data)


CODECS: dict[str, Codec] = {c.name: c for c in (_Zlib(), _Lzo(), _Snappy(), _Zstd(), _None())}
"""Every codec by name."""

_BY_FLAG: dict[int, Codec] = {c.flag: c for c in CODECS.values()}


def get_codec(name: str) -> Codec:
    """The codec called `name`; `UnsupportedError` if unknown or if its library is missing."""
    codec = CODECS.get(name)
    if codec is None:
        raise UnsupportedError(f"unknown codec {name!r}; known: {', '.join(CODECS)}")
    codec.check()
    return codec


def codec_for_flag(flag: int) -> Codec:
    """The codec a page_desc.flags (or header status with other bits masked) names; 0 is none.

    Several codec bits, or a bit no makedumpfile writes, mean the record is corrupt.
    """
    codec = _BY_FLAG.get(flag)
    if codec is None:
        raise CorruptDumpError(
            f"invalid compression flags {flag:#x} (known: zlib 0x1, lzo 0x2, snappy 0x4, zstd 0x20)"
        )
    return codec
