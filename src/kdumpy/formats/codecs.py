"""Page codecs of the kdump-compressed format, by name and by flag: zlib, lzo, snappy, zstd and none.

Each compresses one page exactly as makedumpfile does (`write_kdump_pages_cyclic()`), so that our
files can equal its files byte for byte; except zlib, which by default compresses with libdeflate
(`DEFLATE`): the same zlib format, written faster and smaller than by libz's level 1, with other bytes
(`get_codec("zlib", deflate="libz")` gives makedumpfile's). Each decompresses with the checks crash applies in
`cache_page()`: the result must be exactly one page. Decompression never allocates more than the page
size asked for, whatever a hostile stream claims.

Compression goes through the C library makedumpfile links when it is installed (`kdumpy.formats.clib`:
the same bytes, and the GIL is released during each call), else through the PyPI binding; a codec with
neither gives `UnsupportedError` naming its pip package. `get_codec()` checks that up front;
`codec_for_flag()` does not, so a reader can still open a file whose codec is missing and report on it.
Decompression uses the PyPI bindings, imported on first use.

`Packer` compresses whole batches of pages for the writer: one call per batch, pages stored back to
back in a reused output area, optionally spread over a long-lived pool of threads.
"""

from __future__ import annotations

import ctypes
import threading
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kdumpy.errors import CorruptDumpError, UnsupportedError
from kdumpy.formats import clib

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

    import numpy as np
    import numpy.typing as npt

__all__ = [
    "CODECS",
    "DEFLATE",
    "DUMP_DH_COMPRESSED_LZO",
    "DUMP_DH_COMPRESSED_SNAPPY",
    "DUMP_DH_COMPRESSED_ZLIB",
    "DUMP_DH_COMPRESSED_ZSTD",
    "FLAG_MASK",
    "Codec",
    "Packed",
    "Packer",
    "codec_for_flag",
    "get_codec",
    "zero_pages",
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
_MIN_TASK_PAGES = 32  # a Packer batch is split over its threads only in tasks at least this big
# Codecs a Packer compresses on a thread pool when the C helper is missing (one ctypes call a page). A
# thread re-takes the GIL after every page's library call, and a thread that does so every microsecond
# or two starves the others (the GIL convoy): with lzo (about 1 us a page), snappy and zstd (2-3 us)
# two threads and the reading thread were measured no faster than one thread, a few percent slower.
# zlib's 20-40 us per page (libz; libdeflate about 13 us) leaves room to scale. With the helper a
# whole task runs without the GIL.
_POOL_CODECS = frozenset({"zlib"})


DEFLATE = ("libdeflate", "libz")
"""The libraries that can write zlib pages, the default first: libdeflate (libdeflate0; libz when it
is not installed) or libz, as makedumpfile (its bytes exactly)."""


def _import(module: str, package: str) -> Any:
    try:
        return __import__(module)
    except ImportError as e:
        raise UnsupportedError(
            f"codec needs the Python package {package!r}, which is not installed (pip install {package})"
        ) from e


class _PyCompressor:
    """A `clib.PageCompressor` look-alike over a PyPI binding's one-page function (the GIL is held)."""

    def __init__(self, fn: Callable[[bytes], bytes], page_size: int) -> None:
        self._fn = fn
        self.page_size = page_size
        self.bound = page_size  # only what is stored (at most a page) is copied out

    def compress_pages(self, src: int, index: Sequence[int], dst: int) -> list[int]:
        ps = self.page_size
        fn = self._fn
        sizes: list[int] = []
        off = dst
        for i in index:
            page = ctypes.string_at(src + i * ps, ps)
            out = fn(page)
            n = len(out)
            if n >= ps:
                out, n = page, ps
            ctypes.memmove(off, out, n)
            sizes.append(n)
            off += n
        return sizes

    finds_zero = False

    def pack(
        self, src: int, index: int | None, count: int, dst: int, sizes: int, exclude_zero: bool = False
    ) -> int:
        """`clib.PageCompressor.pack()` over this binding (without `exclude_zero`)."""
        if exclude_zero:
            raise ValueError("exclude_zero needs the C helper")
        return clib.pack_by_page(self.compress_pages, src, index, count, dst, sizes)

    def compress_one(self, page: bytes) -> bytes:
        return self._fn(page)

    def close(self) -> None:
        pass


class Codec:
    """One page codec. Subclasses implement `_py_compressor` and `_decompress`."""

    name: str = "none"
    """Name as on the command line: "zlib", "lzo", "snappy", "zstd" or "none"."""
    flag: int = 0
    """Bit in disk_dump_header.status and page_desc.flags (0 for none)."""
    package: str | None = None
    """pip package providing the library, if any."""

    def __init__(self) -> None:
        self._local = threading.local()

    def check(self) -> None:
        """Raise `UnsupportedError` if neither the C library nor the PyPI binding is there to compress."""
        if self.name != "none" and clib.load(self.name) is None:
            self._py_function(4096)

    def compressor(self, page_size: int) -> clib.PageCompressor | _PyCompressor:
        """The calling thread's batch compressor for pages of `page_size` bytes (C library first)."""
        comp = getattr(self._local, "comp", None)
        if comp is None or comp.page_size != page_size:
            comp = clib.compressor(self._library(), page_size) if self.name != "none" else None
            if comp is None:
                comp = _PyCompressor(self._py_function(page_size), page_size)
            self._local.comp = comp
        return comp

    def _library(self) -> str:
        """The `clib` library that compresses, by its `clib.LIBRARIES` name."""
        return self.name

    def _py_function(self, page_size: int) -> Callable[[bytes], bytes]:
        """The PyPI binding's one-page compress function, as makedumpfile calls its library."""
        return bytes

    def compress(self, page: bytes | memoryview) -> bytes:
        """Compressed form of `page`, as makedumpfile would write it (may be larger than the page)."""
        data = bytes(page)
        if self.name == "none":
            return data
        return self.compressor(len(data)).compress_one(data)

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
        so the output is the same whatever the thread count. (The writer uses `Packer`.)
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
        from concurrent.futures import ThreadPoolExecutor

        bounds = [(i, min(i + _CHUNK_PAGES, n)) for i in range(0, n, _CHUNK_PAGES)]
        with ThreadPoolExecutor(max_workers=threads) as pool:
            parts = pool.map(lambda b: self._compress_range(view, page_size, b[0], b[1]), bounds)
            out: list[bytes] = []
            for part in parts:
                out.extend(part)
        return out

    def _compress_range(self, view: memoryview, page_size: int, first: int, last: int) -> list[bytes]:
        return [self.compress(view[i * page_size : (i + 1) * page_size]) for i in range(first, last)]

    def __repr__(self) -> str:
        return f"<Codec {self.name}>"


class _Zlib(Codec):
    name = "zlib"
    flag = DUMP_DH_COMPRESSED_ZLIB

    def __init__(self, deflate: str = DEFLATE[0]) -> None:
        super().__init__()
        if deflate not in DEFLATE:
            raise ValueError(f"unknown deflate library {deflate!r}")
        self.deflate = deflate
        """"libdeflate" or "libz": see `DEFLATE`."""

    def _library(self) -> str:
        if self.deflate == "libdeflate" and clib.load("libdeflate") is not None:
            return "libdeflate"
        return "zlib"

    def __repr__(self) -> str:
        return f"<Codec zlib ({'libdeflate' if self._library() == 'libdeflate' else 'libz'})>"

    def _py_function(self, page_size: int) -> Callable[[bytes], bytes]:
        # makedumpfile: compress2(..., Z_BEST_SPEED), i.e. a zlib-wrapped (RFC 1950) level-1 stream;
        # CPython's zlib module calls the same libz.
        return lambda page: zlib.compress(page, 1)

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
        super().__init__()
        self._decompress_fn: Callable[[bytes, bool, int], bytes] | None = None

    def _py_function(self, page_size: int) -> Callable[[bytes], bytes]:
        # makedumpfile: lzo1x_1_compress, raw (no header). python-lzo level 1 is lzo1x_1; it holds
        # the GIL and takes only bytes.
        compress = _import("lzo", "python-lzo").compress
        return lambda page: bytes(compress(page, 1, False))

    def _decompress(self, data: bytes, out_size: int) -> bytes:
        # Raw lzo1x; python-lzo decodes into a buffer of out_size bytes and fails on overrun.
        if self._decompress_fn is None:
            self._decompress_fn = _import("lzo", "python-lzo").decompress
        return bytes(self._decompress_fn(bytes(data), False, out_size))


class _Snappy(Codec):
    name = "snappy"
    flag = DUMP_DH_COMPRESSED_SNAPPY
    package = "cramjam"

    def _py_function(self, page_size: int) -> Callable[[bytes], bytes]:
        # makedumpfile: snappy_compress(), a raw snappy block (not the framing format). The Rust
        # implementation inside cramjam writes valid but different blocks for some pages (about 6% of
        # a real vmcore's): byte-exact output needs Google's libsnappy (clib), tried first.
        compress_raw = _import("cramjam", "cramjam").snappy.compress_raw
        return lambda page: bytes(compress_raw(page))

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

    def _py_function(self, page_size: int) -> Callable[[bytes], bytes]:
        # makedumpfile: ZSTD_compressCCtx(level 1): one standard frame with the content size.
        # A ZstdCompressor must not be shared between threads: this one is the caller's (compressor()).
        compress = _import("zstandard", "zstandard").ZstdCompressor(level=1).compress
        return lambda page: bytes(compress(page))

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

    def _decompress(self, data: bytes, out_size: int) -> bytes:
        return bytes(data)


CODECS: dict[str, Codec] = {c.name: c for c in (_Zlib(), _Lzo(), _Snappy(), _Zstd(), _None())}
"""Every codec by name."""

_BY_FLAG: dict[int, Codec] = {c.flag: c for c in CODECS.values()}
_ZLIB_LIBZ = _Zlib("libz")


def get_codec(name: str, *, deflate: str = DEFLATE[0]) -> Codec:
    """The codec called `name`; `UnsupportedError` if unknown or if its library is missing.
    `deflate` chooses the library that writes zlib pages (`DEFLATE`)."""
    if deflate not in DEFLATE:
        raise UnsupportedError(f"unknown deflate library {deflate!r}; known: {', '.join(DEFLATE)}")
    codec = CODECS.get(name)
    if codec is None:
        raise UnsupportedError(f"unknown codec {name!r}; known: {', '.join(CODECS)}")
    if codec is CODECS["zlib"] and deflate == "libz":
        codec = _ZLIB_LIBZ
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


def zero_pages(pages: npt.NDArray[np.uint8]) -> npt.NDArray[np.bool_]:
    """Which rows of `pages` (n x page_size bytes) are all zeros, makedumpfile's is_zero_page()."""
    import numpy as np

    rows = pages.view(np.uint64) if pages.shape[1] % 8 == 0 else pages
    return np.logical_not(rows.any(axis=1))


@dataclass
class Packed:
    """A batch of pages compressed as the kdump writer stores them."""

    sizes: npt.NDArray[np.int64]
    """Stored size of each stored page, in order: the compressed size, or the page size for a page
    stored raw (its compressed form was not smaller, or the codec is none)."""
    pieces: list[memoryview]
    """The stored bytes of those pages back to back, in pieces that split only between pages."""
    zero: npt.NDArray[np.bool_] | None = None
    """With `exclude_zero`: which pages of the batch are all zeros (not stored, not in `sizes`)."""
    area: npt.NDArray[np.uint8] | None = None
    """The output area the pieces lie in, for `Packer.release()`."""


class Packer:
    """Compresses batches of pages for the writer, one batch per call, over `threads` threads.

    A batch is one contiguous array of pages (n x page_size, C order); the pages to compress are
    given by index (the others, zero pages, are not stored). Each task compresses a contiguous
    share of the batch into its own region of one output area, in one call to the C helper (else one
    library call per page), with no per-page objects. With `threads == 0` the caller's thread
    compresses; with `threads >= 1` a long-lived pool does (without the helper, zlib only: see
    `_POOL_CODECS`), and `submit()` returns at once so the
    caller can read the next batch meanwhile. Each page is compressed on its own: the output is the
    same whatever the thread count.
    """

    def __init__(self, codec: Codec, page_size: int, threads: int = 0) -> None:
        codec.check()
        self.codec = codec
        self.page_size = page_size
        if codec.name not in _POOL_CODECS and clib.helper() is None:
            threads = 0
        self.threads = threads
        """Threads compressing (0: the caller's thread); see `_POOL_CODECS`."""
        self._pool: ThreadPoolExecutor | None = None
        if threads > 0:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(threads, thread_name_prefix="kdumpy-compress")
        # Room a task's region needs past its pages while the last one is being compressed.
        comp = codec.compressor(page_size)
        self._slack = comp.bound - page_size if codec.flag else 0
        self._finds_zero = bool(codec.flag) and comp.finds_zero
        self._free: list[npt.NDArray[np.uint8]] = []

    def submit(
        self, pages: npt.NDArray[np.uint8], index: npt.NDArray[np.int64] | None = None, *,
        exclude_zero: bool = False,
    ) -> Callable[[], Packed]:  # fmt: skip
        """Start compressing `pages[index]` (all pages when None); the returned function waits for
        and returns the `Packed` batch. `pages` must not change until then. With `exclude_zero`
        (and no index) the all-zero pages are found and left out (`Packed.zero`): on the
        compressing threads by the C helper, else here."""
        import numpy as np

        ps = self.page_size
        if exclude_zero and index is not None:
            raise ValueError("exclude_zero works on a whole batch, not on an index")
        if not pages.flags.c_contiguous:  # the compressors walk the pages by address
            pages = np.ascontiguousarray(pages)
        m = len(pages) if index is None else len(index)
        in_c = exclude_zero and self._finds_zero
        if exclude_zero and not in_c:
            zero = zero_pages(pages)
            if zero.any():
                return self._with_zero(self.submit(pages, np.flatnonzero(~zero)), zero)
            return self._with_zero(self.submit(pages), zero)
        if not self.codec.flag:  # none: the pages are stored as they are
            flat = pages.reshape(-1) if index is None else pages[index].reshape(-1)
            done = Packed(np.full(m, ps, dtype=np.int64), [flat.data] if m else [])
            return lambda: done
        idx = None if index is None else np.ascontiguousarray(index, dtype=np.int64)
        k = max(1, min(self.threads, m // _MIN_TASK_PAGES))
        area = self._area(m * ps + k * self._slack)
        sizes = np.empty(m, dtype=np.int64)
        bounds = [(m * j // k, m * (j + 1) // k) for j in range(k)]
        regions = [a * ps + j * self._slack for j, (a, _) in enumerate(bounds)]
        src, dst, sz = pages.ctypes.data, area.ctypes.data, sizes.ctypes.data
        ix = None if idx is None else idx.ctypes.data
        tasks = [
            (src, ix + 8 * a, b - a, dst + r, sz + 8 * a, in_c) if ix is not None
            else (src + a * ps, None, b - a, dst + r, sz + 8 * a, in_c)
            for (a, b), r in zip(bounds, regions, strict=True)
        ]  # fmt: skip
        if self._pool is None:
            comp = self.codec.compressor(ps)
            done = self._packed([comp.pack(*t) for t in tasks], regions, area, sizes, in_c)
            return lambda: done
        futures: list[Future[int]] = [self._pool.submit(self._task, *t) for t in tasks]

        def wait() -> Packed:
            _ = (pages, idx)  # kept alive until the pages are compressed
            return self._packed([f.result() for f in futures], regions, area, sizes, in_c)

        return wait

    @staticmethod
    def _with_zero(wait: Callable[[], Packed], zero: npt.NDArray[np.bool_]) -> Callable[[], Packed]:
        def with_zero() -> Packed:
            packed = wait()
            packed.zero = zero
            return packed

        return with_zero

    def pack(
        self, pages: npt.NDArray[np.uint8], index: npt.NDArray[np.int64] | None = None, *,
        exclude_zero: bool = False,
    ) -> Packed:  # fmt: skip
        """`submit()` and wait."""
        return self.submit(pages, index, exclude_zero=exclude_zero)()

    def release(self, packed: Packed) -> None:
        """Give `packed`'s output area back for the next batches (its pieces are then invalid)."""
        if packed.area is not None:
            self._free.append(packed.area)
            packed.area = None
            packed.pieces = []

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._free.clear()

    def _task(self, src: int, index: int | None, count: int, dst: int, sizes: int, exclude_zero: bool) -> int:
        return self.codec.compressor(self.page_size).pack(src, index, count, dst, sizes, exclude_zero)

    def _area(self, nbytes: int) -> npt.NDArray[np.uint8]:
        import numpy as np

        for i, a in enumerate(self._free):
            if len(a) >= nbytes:
                return self._free.pop(i)
        return np.empty(nbytes, dtype=np.uint8)

    @staticmethod
    def _packed(
        stored: list[int], regions: list[int], area: npt.NDArray[np.uint8], sizes: npt.NDArray[np.int64],
        found_zero: bool,
    ) -> Packed:  # fmt: skip
        view = area.data
        pieces = [view[r : r + n] for n, r in zip(stored, regions, strict=True) if n]
        if not found_zero:
            return Packed(sizes, pieces, None, area)
        zero = sizes == 0
        return Packed(sizes[~zero] if zero.any() else sizes, pieces, zero, area)
