"""kdumpy reads what Debian's makedumpfile 1.7.2 writes: kdump-compressed in each codec it has (zlib,
lzo), filtered (-d 31) with the shared zero page, flattened (-F), --split sets and ELF (-E).

Every page kdumpy calls present must be the source vmcore's page, byte for byte, and every source page
the file lacks must be reported EXCLUDED (never read as zeros).
"""

from __future__ import annotations

import filecmp
from pathlib import Path

import numpy as np
import pytest

from kdumpy.errors import PageExcludedError
from kdumpy.formats.diskdump import DiskDump
from kdumpy.formats.io import FileSource
from kdumpy.memory.dump import PageState, open_dump
from tests.foreign.conftest import (
    Artifacts,
    KdumpLayout,
    assert_pages_match_source,
    kdumpy,
    run,
    tool,
)

pytestmark = [pytest.mark.foreign, pytest.mark.lab]

# name -> makedumpfile options; Debian's build has zlib (-c) and lzo (-l) only.
KDUMP_OUTPUTS = {
    "d0-zlib": ("-d", "0", "-c"),
    "lzo": ("-l",),
    "d31-lzo": ("-d", "31", "-l"),
    "d31-zlib": ("-d", "31", "-c"),
}
CASES = [("vmcore_61", kind) for kind in KDUMP_OUTPUTS] + [
    ("vmcore_612", "d0-zlib"),
    ("vmcore_612", "d31-lzo"),
]
CODEC_OF = {"-c": "zlib", "-l": "lzo"}


def _first_excluded(path: Path | list[Path]) -> int | None:
    with open_dump(path) as dump:
        states = dump.page_states(0, dump.max_pfn)
    hits = np.flatnonzero(states == PageState.EXCLUDED)
    return int(hits[0]) if len(hits) else None


def _assert_excluded_page_raises(path: Path | list[Path]) -> None:
    pfn = _first_excluded(path)
    assert pfn is not None, f"{path}: a -d 31 dump with no excluded page"
    with open_dump(path) as dump, pytest.raises(PageExcludedError):
        dump.read_pages(pfn, 1)


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_makedumpfile_kdump_pages_are_the_source_pages(
    name: str, kind: str, request: pytest.FixtureRequest, artifacts: Artifacts
) -> None:
    src: Path = request.getfixturevalue(name)
    opts = KDUMP_OUTPUTS[kind]
    out = artifacts.makedumpfile(src, *opts, name=f"mdf-{kind}.kdump")
    with open_dump(out) as dump:
        assert dump.format == "kdump"
        meta = dump.metadata()
        assert meta["codec"] == CODEC_OF[opts[-1]]
        level = meta["dump_level"]
        with open_dump(src) as s:
            assert dump.vmcoreinfo is not None and s.vmcoreinfo is not None
            assert dump.vmcoreinfo.osrelease == s.vmcoreinfo.osrelease
            assert len(dump.cpus) == len(s.cpus)
    assert level == (31 if "31" in opts else 0)
    report = assert_pages_match_source(out, src, everything=level == 0)
    assert report.present > 1000
    if level == 31:
        assert report.excluded > 0
        _assert_excluded_page_raises(out)


@pytest.mark.parametrize("name", ["vmcore_61", "vmcore_612"])
def test_shared_zero_page_descriptor_is_the_one_makedumpfile_wrote(
    name: str, request: pytest.FixtureRequest, artifacts: Artifacts
) -> None:
    src: Path = request.getfixturevalue(name)
    out = artifacts.makedumpfile(src, "-d", "31", "-l", name="mdf-d31-lzo.kdump")
    layout = KdumpLayout.parse(out)
    raw = layout.descs(out)
    # makedumpfile writes the zero page first in the data area, right after the descriptor table.
    zero_offset = layout.data[0]
    dd = DiskDump(FileSource(out))
    assert dd.table_offset == layout.table[0]
    assert dd.num_dumpable == layout.num_dumpable
    assert dd.zero_page_offset() == zero_offset
    pfns, descs = dd.descriptors(0, dd.max_mapnr)
    assert len(pfns) == len(raw)
    assert np.array_equal(descs.view(np.uint8), raw.view(np.uint8)), (
        "descriptors differ from the file's table"
    )
    assert np.array_equal(pfns, np.flatnonzero(np.unpackbits(dd.bitmap2, bitorder="little")[: dd.max_mapnr]))
    zero = descs["offset"] == zero_offset
    assert zero.sum() > 0
    assert (descs["size"][zero] == layout.block_size).all() and (descs["flags"][zero] == 0).all()
    # Each pfn that shares the zero page is all zeros in the source, and reads so.
    with open_dump(src) as s, open_dump(out) as d:
        for pfn in pfns[zero][:: max(1, int(zero.sum()) // 200)].tolist():
            assert s.read_pages(pfn, 1) == bytes(layout.block_size) == d.read_pages(pfn, 1)


def test_makedumpfile_flattened_stream_reads_directly_and_after_rebuild(
    vmcore_61: Path, tmp_path: Path
) -> None:
    flat = tmp_path / "mdf.flat"
    run([tool("makedumpfile"), "-F", "-d", "31", "-l", vmcore_61], stdout=flat, timeout=300)
    with open_dump(flat) as dump:
        assert dump.format == "kdump-flat"
    report = assert_pages_match_source(flat, vmcore_61)
    assert report.present > 1000 and report.excluded > 0

    ours = tmp_path / "rebuilt-by-kdumpy.kdump"
    kdumpy("rebuild", flat, ours, timeout=120)
    theirs = tmp_path / "rebuilt-by-makedumpfile.kdump"
    run([tool("makedumpfile"), "-R", theirs], stdin=flat, timeout=120)
    assert filecmp.cmp(ours, theirs, shallow=False), "kdumpy rebuild differs from makedumpfile -R"
    with open_dump(ours) as dump:
        assert dump.format == "kdump"
    assert assert_pages_match_source(ours, vmcore_61) == report


def test_makedumpfile_split_set_reads_as_one_dump(
    vmcore_61: Path, artifacts: Artifacts, tmp_path: Path
) -> None:
    parts = [tmp_path / "split.1", tmp_path / "split.2"]
    # The default splitblock is 1 GiB: all of a 1 GiB guest would land in the first part.
    run(
        [tool("makedumpfile"), "--split", "--splitblock-size", "1024", "-d", "31", "-l", vmcore_61, *parts],
        timeout=300,
    )
    whole = artifacts.makedumpfile(vmcore_61, "-d", "31", "-l", name="mdf-d31-lzo.kdump")
    for order in (parts, parts[::-1]):
        with open_dump(order) as dump:
            assert dump.format == "kdump-split"
    report = assert_pages_match_source(parts, vmcore_61)
    # The set holds what one unsplit makedumpfile run of the same level holds.
    assert report == assert_pages_match_source(whole, vmcore_61)
    _assert_excluded_page_raises(parts)

    ranges = []
    for part in parts:
        with open_dump(part) as dump:
            assert dump.format == "kdump-split-part"
            lo, hi = dump.metadata()["split_range"]
            ranges.append((lo, hi))
            states = dump.page_states(0, dump.max_pfn)
            assert (states[:lo] == PageState.MISSING).all() and (states[hi:] == PageState.MISSING).all()
            assert (states[lo:hi] == PageState.PRESENT).any()
    assert ranges[0][0] == 0 and ranges[0][1] == ranges[1][0]


@pytest.mark.parametrize("name", ["vmcore_61", "vmcore_612"])
def test_makedumpfile_elf_output_pages_are_the_source_pages(
    name: str, request: pytest.FixtureRequest, artifacts: Artifacts
) -> None:
    src: Path = request.getfixturevalue(name)
    out = artifacts.makedumpfile(src, "-E", "-d", "31", name="mdf-d31.elf")
    with open_dump(out) as dump:
        assert dump.format == "elf64"
    report = assert_pages_match_source(out, src)
    assert report.present > 1000 and report.excluded > 0
    _assert_excluded_page_raises(out)
