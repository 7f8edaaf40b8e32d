"""The C compression libraries makedumpfile links, called through ctypes: liblzo2, libz, libzstd, libsnappy;
and libdeflate, which writes zlib-format pages faster and smaller than libz.

Each `PageCompressor` compresses a batch of pages, each page by the call makedumpfile makes
(`write_kdump_pages_cyclic()`: `lzo1x_1_compress`, `compress2(level 1)`, `ZSTD_compressCCtx(level 1)`,
`snappy_compress`), so the bytes are the library's, identical to makedumpfile's; the "libdeflate"
compressor writes the same format as libz's (RFC 1950, what every reader's `uncompress()` takes) with
other bytes (`libdeflate_zlib_compress` at `LIBDEFLATE_LEVEL`). The whole batch is
one call into kdumpy's C helper (`kdumpy/_pack.c`, built at install, given the libraries' function
addresses), during which ctypes releases the GIL: no Python per page, and compressors on several
threads run in parallel. Where the helper was not built, one ctypes call per page does the same.

A compressor is private to one thread (lzo's work memory, zstd's context, libdeflate's
compressor). `load()` opens a library by its soname once per process and returns None when it is not
installed; `kdumpy.formats.codecs` then falls back to the PyPI bindings. A helper built from an older
`_pack.c` (its build is optional, so one may be left in place) is not used: `helper()` checks its ABI
number.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["LIBDEFLATE_LEVEL", "LIBRARIES", "PageCompressor", "compressor", "helper", "load", "pack_by_page"]

LIBRARIES: dict[str, tuple[str, ...]] = {
    "lzo": ("liblzo2.so.2", "lzo2"),
    "zlib": ("libz.so.1", "z"),
    "zstd": ("libzstd.so.1", "zstd"),
    "snappy": ("libsnappy.so.1", "snappy"),
    "libdeflate": ("libdeflate.so.0", "deflate"),
}
"""Codec (or, for libdeflate, deflate library) name -> (soname tried first, name for
ctypes.util.find_library)."""

LIBDEFLATE_LEVEL = 2
"""libdeflate's level for zlib pages. On the lab's 5 GiB mixed vmcore, against libz's level 1 (what
makedumpfile calls): level 2 took 25-42% less time and wrote 1-4% fewer bytes; level 1 was faster
still but wrote 0.3-0.5% more bytes than libz."""

_loaded: dict[str, ctypes.CDLL | None] = {}
_helper: list[ctypes.CDLL | None] = []

_P = ctypes.c_void_p
_SZ = ctypes.c_size_t


def load(codec: str) -> ctypes.CDLL | None:
    """The C library of `codec`, or None when it is not installed (looked up once per process)."""
    if codec not in _loaded:
        if codec not in LIBRARIES:
            return None
        soname, short = LIBRARIES[codec]
        lib: ctypes.CDLL | None
        try:
            lib = ctypes.CDLL(soname)
        except OSError:
            # Not under its Debian soname: ask the linker cache (slower: it runs ldconfig).
            from ctypes.util import find_library

            path = find_library(short)
            try:
                lib = ctypes.CDLL(path) if path else None
            except OSError:
                lib = None
        if lib is not None:
            try:
                _setup(codec, lib)
            except (AttributeError, RuntimeError):
                lib = None  # an unexpected build of the library: use the PyPI binding
        _loaded[codec] = lib
    return _loaded[codec]


def helper() -> ctypes.CDLL | None:
    """kdumpy's batch compressor (`kdumpy/_pack.c`), or None when it was not built."""
    if not _helper:
        import importlib.machinery
        import os.path

        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # not pathlib: 3 ms of start-up
        lib: ctypes.CDLL | None = None
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = os.path.join(here, f"_pack{suffix}")
            if os.path.exists(path):
                lib = _open_helper(path)
                break
        _helper.append(lib)
    return _helper[0]


def _open_helper(path: str) -> ctypes.CDLL | None:
    """The helper at `path`, or None when it cannot be loaded or is not the `_pack.c` of this module
    (an older build left in place)."""
    try:
        lib = ctypes.CDLL(path)
        lib.kdumpy_pack.argtypes = [_P, _P, _P, ctypes.c_int64, _P, _P, ctypes.c_int64]
        lib.kdumpy_pack.restype = ctypes.c_int64
        lib.kdumpy_pack_abi.restype = ctypes.c_int64
        abi = int(lib.kdumpy_pack_abi())
    except (OSError, AttributeError):
        return None
    return lib if abi == _HELPER_ABI else None


_HELPER_ABI = 2
"""KDUMPY_PACK_ABI of the `_pack.c` this module drives (2: libdeflate)."""


class _Packer(ctypes.Structure):
    """struct kdumpy_packer of kdumpy/_pack.c."""

    _fields_ = [
        ("codec", ctypes.c_int64), ("page_size", ctypes.c_int64), ("bound", ctypes.c_int64),
        ("compress", _P), ("reset", _P), ("state", _P), ("zero_out", _P), ("zero_len", ctypes.c_int64),
    ]  # fmt: skip


_HELPER_CODEC = {"lzo": 1, "zlib": 2, "zstd": 3, "snappy": 4, "libdeflate": 5}


def _address(fn: Any) -> int | None:
    """A library function's address, for the helper to call."""
    return ctypes.cast(fn, _P).value


def _setup(codec: str, lib: ctypes.CDLL) -> None:
    """Declare the prototypes once (a pointer passed as a bare int needs its argtype)."""
    if codec == "lzo":
        # lzo_init(): __lzo_init_v2(LZO_VERSION, sizeof(short), sizeof(int), sizeof(long),
        # sizeof(lzo_uint32_t), sizeof(lzo_uint), lzo_sizeof_dict_t, sizeof(char *), sizeof(lzo_voidp),
        # sizeof(lzo_callback_t)); the callback struct is six pointer-sized members.
        lib.lzo_version.restype = ctypes.c_uint
        ptr = ctypes.sizeof(ctypes.c_void_p)
        args = (
            ctypes.sizeof(ctypes.c_short),
            ctypes.sizeof(ctypes.c_int),
            ctypes.sizeof(ctypes.c_long),
            4,
            ctypes.sizeof(_SZ),
            ptr,
            ptr,
            ptr,
            6 * ptr,
        )
        if lib.__lzo_init_v2(lib.lzo_version(), *args) != 0:
            raise RuntimeError("lzo_init() failed")
        fn = lib.lzo1x_1_compress
        fn.argtypes = [_P, _SZ, _P, _P, _P]
        fn.restype = ctypes.c_int
    elif codec == "zlib":
        lib.compress2.argtypes = [_P, _P, _P, ctypes.c_ulong, ctypes.c_int]
        lib.compress2.restype = ctypes.c_int
        lib.compressBound.argtypes = [ctypes.c_ulong]
        lib.compressBound.restype = ctypes.c_ulong
        lib.zlibVersion.restype = ctypes.c_char_p
        lib.deflateInit_.argtypes = [_P, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.deflateInit_.restype = ctypes.c_int
        for name in ("deflate", "deflateReset", "deflateEnd"):
            fn = getattr(lib, name)
            fn.argtypes = [_P, ctypes.c_int] if name == "deflate" else [_P]
            fn.restype = ctypes.c_int
    elif codec == "zstd":
        lib.ZSTD_createCCtx.restype = _P
        lib.ZSTD_createCCtx.argtypes = []
        lib.ZSTD_freeCCtx.argtypes = [_P]
        lib.ZSTD_freeCCtx.restype = _SZ
        lib.ZSTD_compressCCtx.argtypes = [_P, _P, _SZ, _P, _SZ, ctypes.c_int]
        lib.ZSTD_compressCCtx.restype = _SZ
        lib.ZSTD_compressBound.argtypes = [_SZ]
        lib.ZSTD_compressBound.restype = _SZ
    elif codec == "snappy":
        lib.snappy_compress.argtypes = [_P, _SZ, _P, _P]
        lib.snappy_compress.restype = ctypes.c_int
        lib.snappy_max_compressed_length.argtypes = [_SZ]
        lib.snappy_max_compressed_length.restype = _SZ
    elif codec == "libdeflate":
        lib.libdeflate_alloc_compressor.argtypes = [ctypes.c_int]
        lib.libdeflate_alloc_compressor.restype = _P
        lib.libdeflate_free_compressor.argtypes = [_P]
        lib.libdeflate_free_compressor.restype = None
        lib.libdeflate_zlib_compress.argtypes = [_P, _P, _SZ, _P, _SZ]
        lib.libdeflate_zlib_compress.restype = _SZ
        lib.libdeflate_zlib_compress_bound.argtypes = [_P, _SZ]
        lib.libdeflate_zlib_compress_bound.restype = _SZ


class _ZStream(ctypes.Structure):
    """struct z_stream_s (zlib.h)."""

    _fields_ = [
        ("next_in", _P), ("avail_in", ctypes.c_uint), ("total_in", ctypes.c_ulong),
        ("next_out", _P), ("avail_out", ctypes.c_uint), ("total_out", ctypes.c_ulong),
        ("msg", _P), ("state", _P), ("zalloc", _P), ("zfree", _P), ("opaque", _P),
        ("data_type", ctypes.c_int), ("adler", ctypes.c_ulong), ("reserved", ctypes.c_ulong),
    ]  # fmt: skip


_Z_FINISH = 4
_Z_STREAM_END = 1


class PageCompressor:
    """One thread's compressor for `codec`, over pages of `page_size` bytes."""

    def __init__(self, codec: str, lib: ctypes.CDLL, page_size: int) -> None:
        self.codec = codec
        self.page_size = page_size
        self._lib = lib
        self._len = _SZ(0)  # lzo_uint / uLongf / size_t out-length, all 64-bit on LP64
        self._cctx: int | None = None
        self._ldc: int | None = None
        ps = page_size
        if codec == "lzo":
            # LZO1X_1_MEM_COMPRESS = 16384 * lzo_sizeof_dict_t (a pointer); worst case from lzo's FAQ.
            self._wrk = ctypes.create_string_buffer(16384 * ctypes.sizeof(ctypes.c_void_p))
            self.bound = ps + ps // 16 + 64 + 3
        elif codec == "zlib":
            self.bound = int(lib.compressBound(ps))
            # makedumpfile (since 1.6.7, compress_mdf()): one deflate stream per thread, reset after
            # each page, rather than compress2()'s allocation per page; the bytes are compress2()'s.
            self._zs = _ZStream()
            if lib.deflateInit_(ctypes.byref(self._zs), 1, lib.zlibVersion(), ctypes.sizeof(_ZStream)) != 0:
                raise MemoryError("deflateInit failed")
        elif codec == "zstd":
            cctx = lib.ZSTD_createCCtx()
            if not cctx:
                raise MemoryError("ZSTD_createCCtx failed")
            self._cctx = int(cctx)
            self.bound = int(lib.ZSTD_compressBound(ps))
        elif codec == "snappy":
            self.bound = int(lib.snappy_max_compressed_length(ps))
        elif codec == "libdeflate":
            ldc = lib.libdeflate_alloc_compressor(LIBDEFLATE_LEVEL)
            if not ldc:
                raise MemoryError("libdeflate_alloc_compressor failed")
            self._ldc = int(ldc)
            self.bound = ps  # asked for less than a page; what does not fit is stored raw
        else:
            raise ValueError(f"no C library for codec {codec!r}")
        """Most bytes one page may take while it is compressed (the output area must have this much
        room after the last stored page)."""
        self._helper = helper()
        self.finds_zero = self._helper is not None
        """Whether `pack()` can leave out the zero pages itself."""
        if self._helper is not None:
            pk = self._packer = _Packer()
            pk.codec, pk.page_size, pk.bound = _HELPER_CODEC[codec], ps, self.bound
            if codec == "lzo":
                pk.compress, pk.state = _address(lib.lzo1x_1_compress), ctypes.addressof(self._wrk)
            elif codec == "zlib":
                pk.compress, pk.state = _address(lib.deflate), ctypes.addressof(self._zs)
                pk.reset = _address(lib.deflateReset)
            elif codec == "zstd":
                pk.compress, pk.state = _address(lib.ZSTD_compressCCtx), self._cctx
            elif codec == "libdeflate":
                pk.compress, pk.state = _address(lib.libdeflate_zlib_compress), self._ldc
            else:
                pk.compress = _address(lib.snappy_compress)
            self._zero = ctypes.create_string_buffer(self.bound)
            pk.zero_out = ctypes.addressof(self._zero)

    def pack(
        self, src: int, index: int | None, count: int, dst: int, sizes: int, exclude_zero: bool = False
    ) -> int:
        """Store `count` pages as `compress_pages` does, from raw addresses: the pages at `src`
        (those of the int64 array at `index`, or the first `count`), each page's stored size into
        the int64 array at `sizes`. Returns the bytes stored. One call without the GIL when the C
        helper is built; else one ctypes call a page. `exclude_zero` (only when `finds_zero`) leaves
        out all-zero pages, their size 0."""
        if self._helper is not None:
            pk = ctypes.byref(self._packer)
            stored = int(self._helper.kdumpy_pack(pk, src, index, count, dst, sizes, exclude_zero))
            if stored < 0:
                raise RuntimeError(f"kdumpy/_pack.c does not know codec {self.codec!r}")
            return stored
        if exclude_zero:
            raise ValueError("exclude_zero needs the C helper")
        return pack_by_page(self.compress_pages, src, index, count, dst, sizes)

    def compress_pages(self, src: int, index: Sequence[int], dst: int) -> list[int]:
        """Compress the pages at `src + i * page_size` for each i of `index`, storing them back to back
        from `dst`: the compressed form when smaller than a page, else the page itself (as
        makedumpfile, also when the library fails). Returns each page's stored size; a size equal to
        the page size means stored raw. `dst` needs `len(index) * page_size + bound - page_size` bytes.
        """
        ps = self.page_size
        sizes: list[int] = []
        add = sizes.append
        move = ctypes.memmove
        out = self._len
        out_addr = ctypes.addressof(out)
        off = dst
        codec = self.codec
        if codec == "lzo":
            fn = self._lib.lzo1x_1_compress
            wrk = ctypes.addressof(self._wrk)
            for i in index:
                page = src + i * ps
                if fn(page, ps, off, out_addr, wrk) or (n := out.value) >= ps:
                    move(off, page, ps)
                    n = ps
                add(n)
                off += n
        elif codec == "zstd":
            fn = self._lib.ZSTD_compressCCtx
            cctx, cap = self._cctx, self.bound
            for i in index:
                page = src + i * ps
                n = fn(cctx, off, cap, page, ps, 1)
                if n >= ps:  # also ZSTD_isError(): error codes are the highest size_t values
                    move(off, page, ps)
                    n = ps
                add(n)
                off += n
        elif codec == "zlib":
            deflate, reset = self._lib.deflate, self._lib.deflateReset
            zs = self._zs
            zp = ctypes.addressof(zs)
            cap = self.bound
            for i in index:
                page = src + i * ps
                zs.next_in = page
                zs.avail_in = ps
                zs.next_out = off
                zs.avail_out = cap
                rc = deflate(zp, _Z_FINISH)
                n = zs.total_out
                reset(zp)
                if rc != _Z_STREAM_END or n >= ps:
                    move(off, page, ps)
                    n = ps
                add(n)
                off += n
        elif codec == "libdeflate":
            fn = self._lib.libdeflate_zlib_compress
            ldc = self._ldc
            for i in index:
                page = src + i * ps
                n = fn(ldc, page, ps, off, ps - 1)
                if not n:  # does not fit in less than a page
                    move(off, page, ps)
                    n = ps
                add(n)
                off += n
        else:
            fn = self._lib.snappy_compress
            cap = self.bound
            for i in index:
                page = src + i * ps
                out.value = cap
                if fn(page, ps, off, out_addr) or (n := out.value) >= ps:
                    move(off, page, ps)
                    n = ps
                add(n)
                off += n
        return sizes

    def compress_one(self, page: bytes) -> bytes:
        """`page` (any length) compressed as makedumpfile calls the library, even when not smaller."""
        n = len(page)
        lib = self._lib
        codec = self.codec
        if codec == "lzo":
            cap = n + n // 16 + 64 + 3
        elif codec == "zlib":
            cap = int(lib.compressBound(n))
        elif codec == "zstd":
            cap = int(lib.ZSTD_compressBound(n))
        elif codec == "libdeflate":
            cap = int(lib.libdeflate_zlib_compress_bound(self._ldc, n))
        else:
            cap = int(lib.snappy_max_compressed_length(n))
        buf = ctypes.create_string_buffer(cap)
        out = self._len
        out.value = cap
        if codec == "lzo":
            rc = lib.lzo1x_1_compress(page, n, buf, ctypes.byref(out), self._wrk)
        elif codec == "zlib":
            rc = lib.compress2(buf, ctypes.byref(out), page, n, 1)
        elif codec == "snappy":
            rc = lib.snappy_compress(page, n, buf, ctypes.byref(out))
        elif codec == "libdeflate":
            out.value = lib.libdeflate_zlib_compress(self._ldc, page, n, buf, cap)
            rc = int(out.value == 0)
        else:
            out.value = lib.ZSTD_compressCCtx(self._cctx, buf, cap, page, n, 1)
            rc = int(out.value > cap)
        if rc:
            raise RuntimeError(f"{codec}: the library failed to compress ({rc})")
        return buf.raw[: out.value]

    def close(self) -> None:
        if self._cctx is not None:
            self._lib.ZSTD_freeCCtx(self._cctx)
            self._cctx = None
        if self._ldc is not None:
            self._lib.libdeflate_free_compressor(self._ldc)
            self._ldc = None
        zs: _ZStream | None = getattr(self, "_zs", None)
        if zs is not None:
            self._lib.deflateEnd(ctypes.byref(zs))
            del self._zs

    def __del__(self) -> None:
        self.close()


def pack_by_page(
    compress_pages: Callable[[int, Sequence[int], int], list[int]],
    src: int, index: int | None, count: int, dst: int, sizes: int,
) -> int:  # fmt: skip
    """`PageCompressor.pack()` through a one-page-at-a-time `compress_pages`."""
    idx: Sequence[int] = range(count) if index is None else (ctypes.c_int64 * count).from_address(index)[:]
    got = compress_pages(src, idx, dst)
    out = (ctypes.c_int64 * count).from_address(sizes)
    for i, n in enumerate(got):
        out[i] = n
    return sum(got)


def compressor(codec: str, page_size: int) -> PageCompressor | None:
    """A new compressor for `codec` through its C library, or None when the library is missing."""
    lib = load(codec)
    return PageCompressor(codec, lib, page_size) if lib is not None else None
