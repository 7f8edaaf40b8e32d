"""Debian's makedumpfile 1.7.2 takes kdumpy's outputs as its input, and kdumpy's kdump-compressed output
is byte for byte what makedumpfile writes for the same vmcore (`-d 0`, lzo, and zlib with
`--deflate libz`); with zlib pages by libdeflate (the default) all but the page data is, and the
data is smaller.

makedumpfile here is built with zlib and lzo only (-p and -z print "option is disabled"), so snappy
and zstd outputs are left to crash and drgn (test_crash_reads_ours.py, test_drgn_reads_ours.py).
"""

from __future__ import annotations

import filecmp
from pathlib import Path

import pytest

from tests.foreign.conftest import (
    DISK_DUMP_HEADER,
    Artifacts,
    KdumpLayout,
    assert_pages_match_source,
    assert_same_pages,
    run,
    tool,
)

pytestmark = [pytest.mark.foreign, pytest.mark.lab]

_DMESG: dict[Path, str] = {}


def dmesg(dump: Path, tmp_path: Path) -> str:
    """`makedumpfile --dump-dmesg DUMP out` as text."""
    out = tmp_path / f"{dump.name}.dmesg"
    run([tool("makedumpfile"), "--dump-dmesg", dump, out], timeout=120)
    text = out.read_text(errors="replace")
    out.unlink()
    return text


def source_dmesg(src: Path, tmp_path: Path) -> str:
    if src not in _DMESG:
        _DMESG[src] = dmesg(src, tmp_path)
        assert "Linux version" in _DMESG[src]
    return _DMESG[src]


# (vmcore fixture, kdumpy output format, codec)
DMESG_CASES = [
    ("vmcore_61", "kdump", "zlib"),
    ("vmcore_61", "kdump", "lzo"),
    ("vmcore_61", "kdump", "none"),
    ("vmcore_61", "elf", "none"),
    ("vmcore_61", "elf32", "none"),
    ("vmcore_612", "kdump", "zlib"),
    ("vmcore_612", "elf", "none"),
]


@pytest.mark.parametrize(("name", "fmt", "codec"), DMESG_CASES)
def test_makedumpfile_dump_dmesg_of_our_output_equals_the_source_log(
    name: str, fmt: str, codec: str, request: pytest.FixtureRequest, artifacts: Artifacts, tmp_path: Path
) -> None:
    src: Path = request.getfixturevalue(name)
    ours = artifacts.ours(src, fmt, codec)
    assert dmesg(ours, tmp_path) == source_dmesg(src, tmp_path)


@pytest.mark.parametrize(("name", "codec"), [("vmcore_61", "zlib"), ("vmcore_612", "lzo")])
def test_makedumpfile_filters_our_kdump_file_as_it_filters_the_source(
    name: str, codec: str, request: pytest.FixtureRequest, artifacts: Artifacts, tmp_path: Path
) -> None:
    src: Path = request.getfixturevalue(name)
    ours = artifacts.ours(src, "kdump", codec)
    again = tmp_path / "again.kdump"
    run([tool("makedumpfile"), "-d", "31", "-l", ours, again], timeout=300)
    # Same pages kept, same pages dropped, same content as makedumpfile -d 31 of the vmcore itself.
    direct = artifacts.makedumpfile(src, "-d", "31", "-l", name="mdf-d31-lzo.kdump")
    assert_same_pages(again, direct, artifacts.digest(direct))
    report = assert_pages_match_source(again, src)
    assert report.excluded > 0


@pytest.mark.parametrize(("name", "codec"), [("vmcore_61", "lzo"), ("vmcore_612", "zstd")])
def test_makedumpfile_rebuilds_our_flattened_stream_into_our_kdump_file(
    name: str, codec: str, request: pytest.FixtureRequest, artifacts: Artifacts, tmp_path: Path
) -> None:
    src: Path = request.getfixturevalue(name)
    flat = artifacts.ours(src, "flat", codec)
    rebuilt = tmp_path / "rebuilt.kdump"
    run([tool("makedumpfile"), "-R", rebuilt], stdin=flat, timeout=120)
    assert_same_pages(rebuilt, src, artifacts.digest(src))
    assert filecmp.cmp(rebuilt, artifacts.ours(src, "kdump", codec), shallow=False), (
        "makedumpfile -R of our flattened stream differs from our kdump output"
    )


# --- byte-exactness against makedumpfile -d 0 -------------------------------------------------------

_TIMESTAMP = (408, 424)
"""struct timeval timestamp in disk_dump_header: may differ (everything else must not)."""


def _first_difference(a: Path, b: Path, start: int, length: int) -> int | None:
    """First offset in [start, start + length) where the files differ (a shorter file differs at its end)."""
    step = 8 << 20
    with a.open("rb") as fa, b.open("rb") as fb:
        for off in range(start, start + length, step):
            n = min(step, start + length - off)
            fa.seek(off)
            fb.seek(off)
            x, y = fa.read(n), fb.read(n)
            if x != y:
                for i in range(min(len(x), len(y))):
                    if x[i] != y[i]:
                        return off + i
                return off + min(len(x), len(y))
    return None


def layout_differences(ours: Path, theirs: Path) -> list[str]:
    """Each difference between two kdump-compressed files, by field and by section."""
    lo, lt = KdumpLayout.parse(ours), KdumpLayout.parse(theirs)
    out = []
    for part, a, b in (("header", lo.header, lt.header), ("sub-header", lo.sub, lt.sub)):
        for key in a:
            if a[key] != b[key] and key not in ("tv_sec", "tv_usec"):
                out.append(f"{part}.{key}: ours {a[key]!r}, makedumpfile {b[key]!r}")
    so, st = ours.stat().st_size, theirs.stat().st_size
    if so != st:
        out.append(f"file size: ours {so}, makedumpfile {st}")
    for (name, off, length), (_, off2, length2) in zip(lt.sections(), lo.sections(), strict=True):
        if (off, length) != (off2, length2):
            out.append(f"{name}: ours at {off2:#x} +{length2:#x}, makedumpfile at {off:#x} +{length:#x}")
            continue
        if name == "disk_dump_header":
            first = _first_difference(ours, theirs, DISK_DUMP_HEADER.size, length - DISK_DUMP_HEADER.size)
        else:
            first = _first_difference(ours, theirs, off, length)
        if first is None:
            continue
        where = f"{name}: first difference at file offset {first:#x}"
        if name == "page_desc table":
            i = (first - off) // 24
            da, db = lo.descs(ours)[i], lt.descs(theirs)[i]
            where += f" (descriptor {i}: ours {da}, makedumpfile {db})"
        out.append(where)
    return out


BYTE_CASES = [("vmcore_61", "zlib", "-c"), ("vmcore_61", "lzo", "-l"), ("vmcore_612", "zlib", "-c")]


@pytest.mark.parametrize(("name", "codec", "flag"), BYTE_CASES)
def test_kdump_output_is_byte_identical_to_makedumpfile_d0(
    name: str, codec: str, flag: str, request: pytest.FixtureRequest, artifacts: Artifacts
) -> None:
    src: Path = request.getfixturevalue(name)
    theirs = artifacts.makedumpfile(src, "-d", "0", flag, name=f"mdf-d0-{codec}.kdump")
    ours = artifacts.ours(src, "kdump", codec, deflate="libz")  # zlib pages by makedumpfile's library
    if filecmp.cmp(ours, theirs, shallow=False):
        return
    diffs = layout_differences(ours, theirs)
    first = _first_difference(ours, theirs, 0, max(ours.stat().st_size, theirs.stat().st_size))
    assert first is not None
    if not diffs and _TIMESTAMP[0] <= first < _TIMESTAMP[1]:
        return  # only the timestamp differs
    pytest.fail(f"first differing byte at {first:#x}; " + "; ".join(diffs))


@pytest.mark.parametrize("name", ["vmcore_61", "vmcore_612"])
def test_libdeflate_output_differs_from_makedumpfile_only_in_page_data_and_is_smaller(
    name: str, request: pytest.FixtureRequest, artifacts: Artifacts
) -> None:
    src: Path = request.getfixturevalue(name)
    theirs = artifacts.makedumpfile(src, "-d", "0", "-c", name="mdf-d0-zlib.kdump")
    ours = artifacts.ours(src, "kdump", "zlib")
    lo, lt = KdumpLayout.parse(ours), KdumpLayout.parse(theirs)
    for key in lt.header:
        if key not in ("tv_sec", "tv_usec"):
            assert lo.header[key] == lt.header[key], key
    assert lo.sub == lt.sub
    for (part, off, length), (_, off2, length2) in zip(lt.sections(), lo.sections(), strict=True):
        if part == "page data":
            continue
        assert (off, length) == (off2, length2), part
        if part != "page_desc table":  # its offsets and sizes follow the streams' lengths
            start = off + DISK_DUMP_HEADER.size if part == "disk_dump_header" else off
            assert _first_difference(ours, theirs, start, length - (start - off)) is None, part
    flags = lo.descs(ours)["flags"]
    assert set(flags.tolist()) <= {0, 1} and (flags == 1).sum() > len(flags) // 2  # zlib streams
    assert ours.stat().st_size < theirs.stat().st_size
    assert_same_pages(ours, theirs, artifacts.digest(theirs))
