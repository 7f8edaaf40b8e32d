"""`kdumpy convert` on real vmcores: ELF -> kdump-compressed (each codec) -> ELF, the flattened stream
and its rebuild (files and stdin/stdout), ELF32 in and out, and `kdumpy info --json` on each output.

Every present page must come back byte-identical. A 1 GB conversion costs seconds, so 6.1 goes through
every codec and 6.12 through two; the conversions are shared with tests/foreign (one per session).
"""

from __future__ import annotations

import filecmp
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.foreign.conftest import (
    CODECS,
    PAGE_DESC,
    Artifacts,
    KdumpLayout,
    assert_same_pages,
    info_json,
    kdumpy,
    session_artifacts,
)

from kdumpy.memory.dump import open_dump

pytestmark = [pytest.mark.foreign, pytest.mark.lab]

ROUND_TRIPS = [("vmcore_61", codec) for codec in CODECS] + [("vmcore_612", "zlib"), ("vmcore_612", "zstd")]
FLAT_CASES = [("vmcore_61", "lzo"), ("vmcore_612", "zstd")]
# disk_dump_header.status / page_desc.flags bit of each codec (diskdump_mod.h).
CODEC_FLAG = {"zlib": 0x1, "lzo": 0x2, "snappy": 0x4, "zstd": 0x20, "none": 0}


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Artifacts]:
    made = session_artifacts(tmp_path_factory)
    yield made
    made.remove_large()


def _fixture(request: pytest.FixtureRequest, name: str) -> Path:
    path: Path = request.getfixturevalue(name)
    return path


@pytest.mark.parametrize(("name", "codec"), ROUND_TRIPS)
def test_elf_to_kdump_to_elf_keeps_every_present_page(
    name: str, codec: str, request: pytest.FixtureRequest, artifacts: Artifacts, tmp_path: Path
) -> None:
    src = _fixture(request, name)
    want = artifacts.digest(src)
    kd = artifacts.ours(src, "kdump", codec)
    assert_same_pages(kd, src, want)
    back = tmp_path / "back.elf"
    kdumpy("convert", kd, back, "--format", "elf", timeout=300)
    with open_dump(back) as dump:
        assert dump.format == "elf64"
    assert_same_pages(back, src, want)
    back.unlink()  # 1 GB


@pytest.mark.parametrize(("name", "codec"), ROUND_TRIPS)
def test_kdump_output_stores_each_page_in_its_codec_or_raw(
    name: str, codec: str, request: pytest.FixtureRequest, artifacts: Artifacts
) -> None:
    kd = artifacts.ours(_fixture(request, name), "kdump", codec)
    layout = KdumpLayout.parse(kd)
    assert layout.header["status"] == CODEC_FLAG[codec]
    assert layout.header["header_version"] == 6
    assert layout.sub["dump_level"] == 0
    descs = layout.descs(kd)
    assert len(descs) == layout.num_dumpable and descs.dtype == PAGE_DESC
    flags = set(np.unique(descs["flags"]).tolist())
    assert flags <= {0, CODEC_FLAG[codec]}
    raw = descs["flags"] == 0
    # A page that does not shrink is stored raw: full size; a compressed one is smaller than a page.
    assert (descs["size"][raw] == layout.block_size).all()
    assert (descs["size"][~raw] < layout.block_size).all()
    if codec != "none":
        assert CODEC_FLAG[codec] in flags
    # Data follows the table in pfn order, one page after the other.
    assert int(descs["offset"][0]) == layout.data[0]
    ends = descs["offset"][:-1] + descs["size"][:-1].astype(np.int64)
    assert np.array_equal(ends, descs["offset"][1:])
    assert int(descs["offset"][-1]) + int(descs["size"][-1]) == kd.stat().st_size


@pytest.mark.parametrize(("name", "codec"), FLAT_CASES)
def test_flattened_output_rebuilds_into_the_kdump_output(
    name: str, codec: str, request: pytest.FixtureRequest, artifacts: Artifacts, tmp_path: Path
) -> None:
    src = _fixture(request, name)
    flat = artifacts.ours(src, "flat", codec)
    with open_dump(flat) as dump:
        assert dump.format == "kdump-flat"
    assert_same_pages(flat, src, artifacts.digest(src))
    rebuilt = tmp_path / "rebuilt.kdump"
    kdumpy("rebuild", flat, rebuilt, timeout=120)
    assert filecmp.cmp(rebuilt, artifacts.ours(src, "kdump", codec), shallow=False)


def test_convert_to_stdout_and_rebuild_from_stdin_give_the_same_files(
    vmcore_61: Path, artifacts: Artifacts, tmp_path: Path
) -> None:
    codec = FLAT_CASES[0][1]
    streamed = tmp_path / "stdout.flat"
    kdumpy("convert", vmcore_61, "-", "--codec", codec, stdout=streamed, timeout=300)
    assert filecmp.cmp(streamed, artifacts.ours(vmcore_61, "flat", codec), shallow=False)
    rebuilt = tmp_path / "stdout.kdump"
    kdumpy("rebuild", stdin=streamed, stdout=rebuilt, timeout=120)
    assert filecmp.cmp(rebuilt, artifacts.ours(vmcore_61, "kdump", codec), shallow=False)


def test_elf32_vmcore_to_kdump_to_elf64_keeps_every_page(
    vmcore_61_elf32: Path, artifacts: Artifacts, tmp_path: Path
) -> None:
    with open_dump(vmcore_61_elf32) as dump:
        assert dump.format == "elf32"
    want = artifacts.digest(vmcore_61_elf32)
    kd = artifacts.ours(vmcore_61_elf32, "kdump", "lzo")
    assert_same_pages(kd, vmcore_61_elf32, want)
    back = tmp_path / "back.elf"
    kdumpy("convert", kd, back, "--format", "elf", timeout=300)
    with open_dump(back) as dump:
        assert dump.format == "elf64"
    assert_same_pages(back, vmcore_61_elf32, want)


def test_elf64_vmcore_written_as_elf32_keeps_every_page(vmcore_61: Path, artifacts: Artifacts) -> None:
    e32 = artifacts.ours(vmcore_61, "elf", "none", elf32=True)
    assert e32.read_bytes()[:5] == b"\x7fELF\x01"  # ELFCLASS32
    with open_dump(e32) as dump:
        assert dump.format == "elf32"
    assert_same_pages(e32, vmcore_61, artifacts.digest(vmcore_61))


def _pages(d: dict[str, Any]) -> dict[str, int]:
    pages: dict[str, int] = d["pages"]
    return pages


INFO_CASES = [(n, "kdump", c) for n, c in ROUND_TRIPS] + [(n, "flat", c) for n, c in FLAT_CASES]
INFO_CASES += [("vmcore_61", "elf", "none")]


@pytest.mark.parametrize(("name", "fmt", "codec"), INFO_CASES)
def test_info_json_reports_the_release_and_page_counts_of_each_output(
    name: str, fmt: str, codec: str, request: pytest.FixtureRequest, artifacts: Artifacts
) -> None:
    src = _fixture(request, name)
    (want,) = info_json(src)
    with open_dump(src) as dump:
        assert dump.vmcoreinfo is not None
        assert want["release"] == dump.vmcoreinfo.osrelease
    (got,) = info_json(artifacts.ours(src, fmt, codec))
    assert got["release"] == want["release"]
    assert got["format"] == {"kdump": "kdump", "flat": "kdump-flat", "elf": "elf64"}[fmt]
    assert _pages(got) == _pages(want)
    assert _pages(got)["present"] == len(artifacts.digest(src).present) > 100_000
    assert _pages(got)["excluded"] == 0
    assert got["complete"] is True
    assert got["cpus"] == want["cpus"]
    assert got["crash_time"] == want["crash_time"]
    if fmt != "elf":
        assert got["codec"] == codec
        assert got["dump_level"] == 0
