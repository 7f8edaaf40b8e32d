"""Page codecs: names and flags, round trips, makedumpfile's exact output, and hostile input."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from kdumpy.errors import CorruptDumpError, UnsupportedError
from kdumpy.formats import clib
from kdumpy.formats.codecs import CODECS, DEFLATE, Codec, Packer, codec_for_flag, get_codec

PAGE = 4096
FLAGS = {"zlib": 0x1, "lzo": 0x2, "snappy": 0x4, "zstd": 0x20, "none": 0}


def sample_pages() -> list[bytes]:
    rng = np.random.default_rng(7)
    return [
        bytes(PAGE),
        os.urandom(PAGE),
        (b"kernel text and some page cache " * 200)[:PAGE],
        bytes(rng.integers(0, 3, PAGE, dtype=np.uint8)),
        bytes(range(256)) * (PAGE // 256),
        bytes(PAGE - 1) + b"\x01",  # zero but for its last byte: not the shared zero page's bytes
    ]


@pytest.mark.parametrize("name", list(FLAGS))
def test_each_codec_has_makedumpfile_flag_and_is_found_by_name_and_flag(name: str) -> None:
    codec = get_codec(name)
    assert codec.name == name
    assert codec.flag == FLAGS[name]
    assert codec_for_flag(codec.flag) is codec


@pytest.mark.parametrize("name", list(FLAGS))
def test_each_codec_round_trips_pages(name: str) -> None:
    codec = get_codec(name)
    for page in sample_pages():
        assert codec.decompress(codec.compress(page), PAGE) == page
        assert codec.decompress(codec.compress(memoryview(page)), PAGE) == page


@pytest.mark.parametrize("name", ["zlib", "lzo", "snappy", "zstd"])
def test_compressible_pages_shrink_and_random_pages_do_not(name: str) -> None:
    codec = get_codec(name)
    assert len(codec.compress(bytes(PAGE))) < PAGE // 10
    # Random data never shrinks below a page: the writer then stores it raw.
    assert len(codec.compress(os.urandom(PAGE))) >= PAGE


@pytest.mark.parametrize("name", list(FLAGS))
def test_compress_many_equals_page_by_page_whatever_the_thread_count(name: str) -> None:
    codec = get_codec(name)
    pages = sample_pages() * 130  # more than one chunk of work per thread
    blob = b"".join(pages)
    expected = [codec.compress(p) for p in pages]
    assert codec.compress_many(memoryview(blob), PAGE) == expected
    assert codec.compress_many(memoryview(blob), PAGE, threads=4) == expected
    assert codec.compress_many(b"", PAGE, threads=4) == []


def test_compress_many_rejects_partial_pages() -> None:
    with pytest.raises(ValueError):
        get_codec("zlib").compress_many(bytes(PAGE + 1), PAGE)


def test_zlib_with_libz_is_level_1_zlib_wrapped_as_makedumpfile_compress2() -> None:
    page = sample_pages()[2]
    out = get_codec("zlib", deflate="libz").compress(page)
    assert out == zlib.compress(page, 1)
    assert out[0] == 0x78  # RFC 1950 header, not raw deflate


def _libdeflate_compress(page: bytes, level: int) -> bytes:
    """`page` compressed by libdeflate's zlib-format call, made here without kdumpy."""
    lib = _lib("deflate")
    lib.libdeflate_alloc_compressor.restype = ctypes.c_void_p
    lib.libdeflate_zlib_compress.restype = ctypes.c_size_t
    lib.libdeflate_zlib_compress.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t,
                                             ctypes.c_void_p, ctypes.c_size_t]  # fmt: skip
    lib.libdeflate_free_compressor.argtypes = [ctypes.c_void_p]
    comp = lib.libdeflate_alloc_compressor(level)
    out = ctypes.create_string_buffer(2 * PAGE)
    n = lib.libdeflate_zlib_compress(comp, page, len(page), out, len(out))
    lib.libdeflate_free_compressor(comp)
    assert n
    return out.raw[:n]


def test_zlib_pages_are_libdeflate_streams_that_libz_reads() -> None:
    # tools/setup.sh installs libdeflate0: without it the default would quietly be libz.
    assert clib.load("libdeflate") is not None, "libdeflate0 is not installed (tools/setup.sh installs it)"
    codec = get_codec("zlib")
    assert DEFLATE[0] == "libdeflate" and "libdeflate" in repr(codec)
    libz = get_codec("zlib", deflate="libz")
    assert "(libdeflate)" in repr(codec) and "(libz)" in repr(libz)
    for page in sample_pages():
        out = codec.compress(page)
        assert out == _libdeflate_compress(page, clib.LIBDEFLATE_LEVEL)
        assert zlib.decompress(out) == page  # CPython's zlib is libz: what crash and makedumpfile call
        assert codec.decompress(out, PAGE) == page
    # Its point: fewer bytes than libz's level 1 over the sample's compressible pages.
    compressible = [p for p in sample_pages() if len(libz.compress(p)) < PAGE]
    ours = sum(len(codec.compress(p)) for p in compressible)
    assert ours < sum(len(libz.compress(p)) for p in compressible)


def test_unknown_deflate_library_is_refused() -> None:
    with pytest.raises(UnsupportedError, match="libdeflate, libz"):
        get_codec("zlib", deflate="isal")


def test_unknown_codec_is_unsupported_and_lists_known_names() -> None:
    with pytest.raises(UnsupportedError) as e:
        get_codec("lz4")
    for name in FLAGS:
        assert name in str(e.value)


@pytest.mark.parametrize("flag", [0x3, 0x8, 0x10, 0x21, 0x40, 0xFFFFFFFF])
def test_several_or_unknown_flag_bits_are_corrupt(flag: int) -> None:
    with pytest.raises(CorruptDumpError):
        codec_for_flag(flag)


@pytest.mark.parametrize("name", ["zlib", "lzo", "snappy", "zstd", "none"])
def test_wrong_size_or_garbage_is_corrupt(name: str) -> None:
    codec = get_codec(name)
    data = codec.compress(sample_pages()[2])
    with pytest.raises(CorruptDumpError):
        codec.decompress(data, PAGE * 2)  # decodes to one page, not two
    with pytest.raises(CorruptDumpError):
        codec.decompress(data, PAGE // 2)
    if name != "none":
        for junk in (b"", b"\x00", os.urandom(64), data[: len(data) // 2]):
            with pytest.raises(CorruptDumpError):
                codec.decompress(junk, PAGE)


def test_hostile_size_claims_are_refused_before_allocating() -> None:
    import zstandard

    # A zstd frame that records a content size is decoded into a buffer of that size.
    frame = zstandard.ZstdCompressor(level=1).compress(bytes(PAGE * 4))
    with pytest.raises(CorruptDumpError, match="claims"):
        get_codec("zstd").decompress(frame, PAGE)
    # A snappy block starts with its length: here 2**32 - 1 bytes.
    with pytest.raises(CorruptDumpError, match="claims"):
        get_codec("snappy").decompress(b"\xff\xff\xff\xff\x0f\x00", PAGE)


def test_missing_library_is_unsupported_naming_the_pip_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lzo", None)  # makes `import lzo` raise ImportError
    monkeypatch.setitem(clib._loaded, "lzo", None)  # and liblzo2 is not installed
    with pytest.raises(UnsupportedError, match="python-lzo"):
        get_codec("lzo")
    fresh = type(codec_for_flag(0x2))()  # the shared instance may hold the module already
    with pytest.raises(UnsupportedError, match="python-lzo"):
        fresh.decompress(b"\x11\x00\x00", PAGE)
    with pytest.raises(UnsupportedError, match="python-lzo"):
        fresh.compress(bytes(PAGE))


def test_compression_needs_only_the_c_library(monkeypatch: pytest.MonkeyPatch) -> None:
    if clib.load("lzo") is None:
        pytest.skip("liblzo2 not installed")
    monkeypatch.setitem(sys.modules, "lzo", None)
    fresh = type(codec_for_flag(0x2))()
    fresh.check()
    assert len(fresh.compress(bytes(PAGE))) < PAGE // 10


def _lib(name: str) -> ctypes.CDLL:
    path = ctypes.util.find_library(name)
    if path is None:
        pytest.skip(f"lib{name} not installed")
    return ctypes.CDLL(path)


def _system_compress(name: str, page: bytes) -> bytes:
    """The page compressed by the C library with makedumpfile's exact call."""
    out = ctypes.create_string_buffer(2 * PAGE + 1024)
    if name == "lzo":
        lib = _lib("lzo2")
        n = ctypes.c_size_t()
        wrk = ctypes.create_string_buffer(1 << 16)  # LZO1X_1_MEM_COMPRESS
        assert lib.lzo1x_1_compress(page, ctypes.c_size_t(PAGE), out, ctypes.byref(n), wrk) == 0
        return out.raw[: n.value]
    if name == "zstd":
        lib = _lib("zstd")
        lib.ZSTD_compress.restype = ctypes.c_size_t
        m = lib.ZSTD_compress(out, ctypes.c_size_t(len(out)), page, ctypes.c_size_t(PAGE), 1)
        return out.raw[:m]
    if name == "snappy":
        lib = _lib("snappy")
        n = ctypes.c_size_t(len(out))
        assert lib.snappy_compress(page, ctypes.c_size_t(PAGE), out, ctypes.byref(n)) == 0
        return out.raw[: n.value]
    lib = _lib("z")
    n2 = ctypes.c_ulong(len(out))
    assert lib.compress2(out, ctypes.byref(n2), page, ctypes.c_ulong(PAGE), 1) == 0
    return out.raw[: n2.value]


@pytest.mark.parametrize("name", ["zlib", "lzo", "snappy", "zstd"])
def test_output_equals_the_c_library_called_as_makedumpfile_does(name: str) -> None:
    codec: Codec = get_codec(name, deflate="libz")
    for page in sample_pages():
        assert codec.compress(page) == _system_compress(name, page)


@pytest.mark.parametrize("name", ["zlib", "lzo", "snappy", "zstd"])
def test_pypi_fallback_without_the_c_library_round_trips(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(clib._loaded, name, None)
    monkeypatch.setitem(clib._loaded, "libdeflate", None)  # zlib: libz's bytes then, from CPython's zlib
    codec = type(CODECS[name])()  # no compressor cached yet
    for page in sample_pages():
        out = codec.compress(page)
        assert codec.decompress(out, PAGE) == page
        if name != "snappy":  # cramjam's snappy is valid but not always Google's bytes
            assert out == _system_compress(name, page)


def _pages_array(pages: list[bytes]) -> np.ndarray:  # type: ignore[type-arg]
    return np.frombuffer(b"".join(pages), dtype=np.uint8).reshape(len(pages), PAGE).copy()


# Backends: the C helper over the C library (one call a batch), the C library alone (one ctypes call
# a page), the PyPI binding. "none" has no library to take away; "zlib" is libdeflate's pages,
# "zlib/libz" libz's (the PyPI binding of both is CPython's zlib).
_PACKER_CASES = [
    (n, b) for n in ("zlib", "zlib/libz", "lzo", "snappy", "zstd", "none")
    for b in ("helper", "ctypes", "pypi") if (n != "none" or b == "helper") and (n != "zlib" or b != "pypi")
]  # fmt: skip


@pytest.mark.parametrize(("name", "backend"), _PACKER_CASES)
@pytest.mark.parametrize("threads", [0, 1, 3])
def test_packer_stores_each_page_as_makedumpfile_whatever_the_threads(
    name: str, threads: int, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if backend == "helper" and clib.helper() is None:
        pytest.fail("the C helper kdumpy/_pack.c was not built (tools/setup.sh builds it)")
    if backend != "helper":
        monkeypatch.setattr(clib, "_helper", [None])
    name, _, deflate = name.partition("/")
    if backend == "pypi":
        monkeypatch.setitem(clib._loaded, name, None)
        monkeypatch.setitem(clib._loaded, "libdeflate", None)
    codec = type(CODECS[name])(deflate) if deflate else type(CODECS[name])()
    assert name != "zlib" or backend == "pypi" or (deflate or "libdeflate") in repr(codec)
    pages = sample_pages() * 40
    arr = _pages_array(pages)
    index = np.array([i for i in range(len(pages)) if i % 7 != 3], dtype=np.int64)
    packer = Packer(codec, PAGE, threads)
    try:
        for idx in (None, index, index[:5], index[:0]):
            want = [pages[i] for i in (range(len(pages)) if idx is None else idx.tolist())]
            packed = packer.pack(arr, idx)
            blob = b"".join(bytes(p) for p in packed.pieces)
            assert len(blob) == int(packed.sizes.sum())
            pos = 0
            for page, size in zip(want, packed.sizes.tolist(), strict=True):
                stored = blob[pos : pos + size]
                pos += size
                if size == PAGE:  # stored raw: the compressed form was not smaller
                    assert stored == page
                    assert name == "none" or len(codec.compress(page)) >= PAGE
                else:
                    assert stored == codec.compress(page)
            packer.release(packed)
        # Leaving out the zero pages (-d 1): found by the C helper on the compressing threads, else
        # by numpy; the others stored as before.
        packed = packer.pack(arr, exclude_zero=True)
        assert packed.zero is not None
        assert packed.zero.tolist() == [p == bytes(PAGE) for p in pages]
        nonzero = [p for p in pages if p != bytes(PAGE)]
        assert len(packed.sizes) == len(nonzero)
        blob = b"".join(bytes(p) for p in packed.pieces)
        assert len(blob) == int(packed.sizes.sum())
        pos = 0
        for page, size in zip(nonzero, packed.sizes.tolist(), strict=True):
            assert blob[pos : pos + size] == (page if size == PAGE else codec.compress(page))
            pos += size
        packer.release(packed)
    finally:
        packer.close()


@pytest.mark.parametrize("name", ["lzo", "zlib", "zstd", "snappy"])
def test_packer_reads_pages_at_any_alignment(name: str) -> None:
    pages = sample_pages()
    want = Packer(get_codec(name), PAGE).pack(_pages_array(pages), exclude_zero=True)
    raw = np.zeros(len(pages) * PAGE + 3, dtype=np.uint8)
    odd = raw[3:].reshape(len(pages), PAGE)  # 3 bytes past an aligned address
    odd[:] = _pages_array(pages)
    got = Packer(get_codec(name), PAGE).pack(odd, exclude_zero=True)
    assert got.zero is not None and want.zero is not None
    assert got.zero.tolist() == want.zero.tolist()
    assert got.sizes.tolist() == want.sizes.tolist()
    assert b"".join(map(bytes, got.pieces)) == b"".join(map(bytes, want.pieces))


def test_packer_takes_a_strided_batch_as_its_copy() -> None:
    arr = _pages_array(sample_pages() * 2)
    packer = Packer(get_codec("lzo"), PAGE)
    want = packer.pack(np.ascontiguousarray(arr[::2]), exclude_zero=True)
    want_bytes, want_zero = b"".join(map(bytes, want.pieces)), want.zero
    packer.release(want)
    got = packer.pack(arr[::2], exclude_zero=True)
    assert got.zero is not None and want_zero is not None
    assert got.zero.tolist() == want_zero.tolist()
    assert b"".join(map(bytes, got.pieces)) == want_bytes
    with pytest.raises(ValueError, match="whole batch"):
        packer.pack(arr, np.arange(2), exclude_zero=True)


@pytest.mark.parametrize(
    ("source", "loads"),
    [
        ("long kdumpy_pack(void) { return 0; }", False),  # before the ABI number
        ("long kdumpy_pack(void) { return 0; } long kdumpy_pack_abi(void) { return 1; }", False),
        ("long kdumpy_pack(void) { return 0; } long kdumpy_pack_abi(void) { return %d; }", True),
    ],
    ids=["no-abi", "older-abi", "this-abi"],
)
def test_only_the_helper_of_this_version_is_used(source: str, loads: bool, tmp_path: Path) -> None:
    import shutil
    import subprocess

    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.fail("gcc is not installed (tools/setup.sh installs it)")
    c, so = tmp_path / "old.c", tmp_path / "old.so"
    c.write_text(source.replace("%d", str(clib._HELPER_ABI)))
    subprocess.run([gcc, "-shared", "-fPIC", "-o", str(so), str(c)], check=True, timeout=60)
    assert (clib._open_helper(str(so)) is not None) is loads
