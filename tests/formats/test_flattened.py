"""The flattened stream: FlatSink -> rebuild gives the direct file exactly, FlatSource reads it in
place, makedumpfile -R agrees, and bad or cut streams fail with typed errors."""

from __future__ import annotations

import contextlib
import io
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.formats.test_diskdump import Synth, write, written

from kdumpy.errors import CorruptDumpError, DumpError, PageIncompleteError, TruncatedDumpError
from kdumpy.formats.diskdump import DiskDump
from kdumpy.formats.flattened import (
    FLAT_HEADER_SIZE,
    FlatSink,
    FlatSource,
    is_flattened,
    rebuild,
)
from kdumpy.formats.io import BytesSink, BytesSource, FileSink

MAKEDUMPFILE = shutil.which("makedumpfile")
END = struct.pack(">qq", -1, -1)


@pytest.fixture(scope="module")
def synth() -> Synth:
    return Synth.make(seed=3)


def flat_stream(synth: Synth, **kw: object) -> bytes:
    out = io.BytesIO()
    sink = FlatSink(out)
    write(synth, sink, **kw)  # type: ignore[arg-type]
    sink.close()
    return out.getvalue()


def header(sig: bytes = b"makedumpfile", typ: int = 1, version: int = 1) -> bytes:
    return struct.pack(">16sqq", sig, typ, version).ljust(FLAT_HEADER_SIZE, b"\0")


def record(offset: int, data: bytes) -> bytes:
    return struct.pack(">qq", offset, len(data)) + data


@pytest.mark.parametrize("codec", ["zlib", "lzo", "none"])
def test_flatsink_then_rebuild_equals_the_direct_file(synth: Synth, codec: str) -> None:
    direct = written(synth, codec=codec, eraseinfo=b"erase x 4\n")
    stream = flat_stream(synth, codec=codec, eraseinfo=b"erase x 4\n")
    assert is_flattened(stream) and stream.endswith(END)
    out = BytesSink()
    assert rebuild(io.BytesIO(stream), out) == len(direct)
    assert bytes(out.data) == direct


def test_rebuild_into_a_file(tmp_path: Path, synth: Synth) -> None:
    path = tmp_path / "rebuilt.kdump"
    with FileSink(path) as sink:
        rebuild(io.BytesIO(flat_stream(synth)), sink)
    assert path.read_bytes() == written(synth)


def test_flatsource_reads_what_the_direct_file_holds(tmp_path: Path, synth: Synth) -> None:
    direct = written(synth)
    path = tmp_path / "dump.flat"
    path.write_bytes(flat_stream(synth))
    with FlatSource(path) as src:
        assert src.complete and src.size == len(direct)
        assert src.read_at(0, src.size) == direct
        for off in (0, 1, 4095, 4096, 5000, len(direct) - 10):
            assert src.read_at(off, 10) == direct[off : off + 10]
        with pytest.raises(TruncatedDumpError):
            src.read_at(len(direct) - 5, 10)
        d = DiskDump(src)
        assert d.read_pages(synth.pfns) == synth.data(synth.pfns)


def test_flatsink_alone_is_a_valid_empty_stream() -> None:
    out = io.BytesIO()
    FlatSink(out).close()
    assert out.getvalue() == header() + END
    assert rebuild(io.BytesIO(out.getvalue()), BytesSink()) == 0


def test_flatsink_never_writes_an_empty_record() -> None:
    # makedumpfile -R stops at a zero-size record and then rejects it as a bad end marker.
    out = io.BytesIO()
    sink = FlatSink(out)
    sink.write_at(10, b"")
    sink.write_at(20, b"ab")
    sink.close()
    assert out.getvalue() == header() + record(20, b"ab") + END


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 300), st.binary(min_size=0, max_size=60)), max_size=25))
def test_overlapping_records_later_wins_in_rebuild_and_flatsource(
    tmp_path_factory: pytest.TempPathFactory, writes: list[tuple[int, bytes]]
) -> None:
    model = BytesSink()
    out = io.BytesIO()
    sink = FlatSink(out)
    for off, data in writes:
        model.write_at(off, data)
        sink.write_at(off, data)
    sink.close()
    rebuilt = BytesSink()
    assert rebuild(io.BytesIO(out.getvalue()), rebuilt) == len(model.data)
    assert rebuilt.data == model.data
    path = tmp_path_factory.mktemp("flat") / "f.flat"
    path.write_bytes(out.getvalue())
    with FlatSource(path) as src:
        assert src.size == len(model.data)
        assert src.read_at(0, src.size) == bytes(model.data)
        for off, data in writes:
            if data:
                assert src.read_at(off, len(data)) == bytes(model.data[off : off + len(data)])


def test_stream_without_end_marker_is_truncated(synth: Synth) -> None:
    stream = flat_stream(synth)
    for cut in (len(stream) - 16, len(stream) - 17, FLAT_HEADER_SIZE + 8, len(stream) // 2, 100):
        with pytest.raises(TruncatedDumpError):
            rebuild(io.BytesIO(stream[:cut]), BytesSink())


@pytest.mark.parametrize(
    "stream",
    [
        header(sig=b"makedumpfilX") + END,
        header(sig=b"makedumpfile-x") + END,  # strcmp: the NUL must follow the signature
        header(typ=2) + END,
        header() + struct.pack(">qq", 0, 0) + END,  # a zero-size record ends the loop: not the marker
        header() + struct.pack(">qq", -1, 5),
        header() + struct.pack(">qq", -2, -1),
        header() + record(0, b"x") + struct.pack(">qq", -1, 0),
    ],
)
def test_bad_streams_are_corrupt(stream: bytes) -> None:
    with pytest.raises(CorruptDumpError):
        rebuild(io.BytesIO(stream), BytesSink())


def test_hostile_record_size_does_not_allocate_it() -> None:
    stream = header() + struct.pack(">qq", 0, 2**62) + b"abc"
    with pytest.raises(TruncatedDumpError):
        rebuild(io.BytesIO(stream), BytesSink())


def test_is_flattened() -> None:
    assert is_flattened(header())
    assert not is_flattened(header(typ=3))
    assert not is_flattened(b"KDUMP   " + bytes(100))
    assert not is_flattened(b"makedumpfile")


def test_flatsource_of_a_cut_stream_reads_what_arrived(tmp_path: Path, synth: Synth) -> None:
    direct = written(synth)
    stream = flat_stream(synth)
    path = tmp_path / "cut.flat"
    path.write_bytes(stream[: len(stream) * 3 // 4])
    with FlatSource(path) as src:
        assert not src.complete
        d = DiskDump(src)
        assert d.truncated
        head = src.read_at(0, 4 * 4096)
        assert head == direct[: 4 * 4096]
        for p in synth.pfns:
            with contextlib.suppress(DumpError, PageIncompleteError):
                assert d.read_page(int(p)) == synth.pages[int(p)]


def test_flatsource_rejects_bad_files(tmp_path: Path) -> None:
    path = tmp_path / "bad.flat"
    path.write_bytes(header(sig=b"other") + END)
    with pytest.raises(CorruptDumpError):
        FlatSource(path)
    path.write_bytes(header() + struct.pack(">qq", -5, 3) + b"abc")
    with pytest.raises(CorruptDumpError):
        FlatSource(path)
    path.write_bytes(header()[:100])
    with pytest.raises(TruncatedDumpError):
        FlatSource(path)


@pytest.mark.foreign
@pytest.mark.skipif(MAKEDUMPFILE is None, reason="makedumpfile not installed")
def test_makedumpfile_R_rebuilds_our_stream_byte_identical(tmp_path: Path, synth: Synth) -> None:
    for codec in ("zlib", "lzo"):
        out = tmp_path / f"{codec}.kdump"
        r = subprocess.run(
            [MAKEDUMPFILE, "-R", str(out)],
            input=flat_stream(synth, codec=codec, eraseinfo=b"e\n"),
            capture_output=True,
            timeout=120,
        )
        assert r.returncode == 0, r.stderr
        assert out.read_bytes() == written(synth, codec=codec, eraseinfo=b"e\n")


@pytest.mark.foreign
@pytest.mark.skipif(MAKEDUMPFILE is None, reason="makedumpfile not installed")
def test_makedumpfile_F_output_reads_in_place_and_rebuilds_as_its_R(tmp_path: Path, vmcore_61: Path) -> None:
    flat = tmp_path / "d31.flat"
    with open(flat, "wb") as f:
        r = subprocess.run([MAKEDUMPFILE, "-F", "-l", "-d", "31", str(vmcore_61)], stdout=f, timeout=600)
    assert r.returncode == 0
    theirs = tmp_path / "theirs.kdump"
    with open(flat, "rb") as f:
        r = subprocess.run([MAKEDUMPFILE, "-R", str(theirs)], stdin=f, capture_output=True, timeout=600)
    assert r.returncode == 0, r.stderr
    expect = theirs.read_bytes()
    ours = BytesSink()
    with open(flat, "rb") as f:
        assert rebuild(f, ours) == len(expect)  # type: ignore[arg-type]
    assert bytes(ours.data) == expect
    with FlatSource(flat) as src:
        assert src.complete and src.read_at(0, src.size) == expect
        d = DiskDump(src)
        ref = DiskDump(BytesSource(expect))
        pfns, _ = ref.descriptors(0, ref.max_mapnr)
        for a in range(0, len(pfns), 8192):
            assert d.read_pages(pfns[a : a + 8192]) == ref.read_pages(pfns[a : a + 8192])
