"""`kdumpy dump` against Debian's makedumpfile 1.7.2 on real 6.1 vmcores, level by level.

For each dump level: bitmap 2 (the dumpable pfns), the set of pfns stored as the shared zero page,
and the per-category counts of makedumpfile's report (`--message-level 16`) must be equal. Both write
lzo, and our writer follows makedumpfile byte for byte, so the files are compared whole as well; with
zlib, whole when its pages are written by libz (`--deflate libz`), page for page by libdeflate.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from tests.foreign.conftest import tool

from kdumpy.collect.dump import DumpJob, run_dump
from kdumpy.formats.diskdump import DiskDump
from kdumpy.formats.io import FileSource
from kdumpy.memory.dump import PageState, open_dump
from kdumpy.memory.pages import Category

pytestmark = [pytest.mark.foreign, pytest.mark.lab]

LEVELS = [0, 1, 2, 3, 4, 8, 11, 16, 17, 31]
_REPORT = {
    "Pages filled with zero": Category.ZERO,
    "Non-private cache pages": Category.CACHE,
    "Private cache pages": Category.CACHE_PRIVATE,
    "User process data pages": Category.USER,
    "Free pages": Category.FREE,
    "Hwpoison pages": Category.HWPOISON,
    "Offline pages": Category.OFFLINE,
}


def _makedumpfile(vmcore: Path, level: int, out: Path) -> dict[Category, int]:
    proc = subprocess.run(
        [tool("makedumpfile"), "-l", "-d", str(level), "--message-level", "16", str(vmcore), str(out)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    counts = {}
    for name, cat in _REPORT.items():
        m = re.search(rf"{re.escape(name)}\s*: 0x([0-9a-f]+)", proc.stdout + proc.stderr)
        assert m, f"no '{name}' in makedumpfile's report"
        counts[cat] = int(m.group(1), 16)
    return counts


def _zero_pfns(path: Path) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[type-arg]
    dd = DiskDump(FileSource(path))
    pfns, descs = dd.descriptors(0, dd.max_mapnr)
    zoff = dd.zero_page_offset()
    zero = pfns[descs["offset"] == zoff] if zoff is not None else pfns[:0]
    return np.asarray(dd.bitmap2).copy(), zero


@pytest.mark.parametrize("name", ["vmcore_61", "vmcore_61_mixed"])
@pytest.mark.parametrize("level", LEVELS)
def test_dump_level_agrees_with_makedumpfile_on_61(
    name: str, level: int, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    vmcore: Path = request.getfixturevalue(name)
    theirs = tmp_path / "makedumpfile.kdump"
    ours = tmp_path / "kdumpy.kdump"
    their_counts = _makedumpfile(vmcore, level, theirs)
    with open_dump(str(vmcore)) as dump:
        result = run_dump(dump, [str(ours)], DumpJob(dump_level=level, codec="lzo"))
    b2_theirs, zero_theirs = _zero_pfns(theirs)
    b2_ours, zero_ours = _zero_pfns(ours)
    assert np.array_equal(b2_ours, b2_theirs), "bitmap 2 differs"
    assert np.array_equal(zero_ours, zero_theirs), "the shared-zero-page pfns differ"
    assert result.excluded == their_counts
    assert ours.read_bytes() == theirs.read_bytes()


def test_zlib_dump_is_makedumpfiles_with_libz_and_smaller_with_libdeflate(
    vmcore_61_mixed: Path, tmp_path: Path
) -> None:
    from kdumpy.cli import main

    theirs = tmp_path / "makedumpfile.kdump"
    subprocess.run(
        [tool("makedumpfile"), "-c", "-d", "31", str(vmcore_61_mixed), str(theirs)],
        capture_output=True, timeout=300, check=True,
    )  # fmt: skip
    libz, libdeflate = tmp_path / "libz.kdump", tmp_path / "libdeflate.kdump"
    assert main(["dump", "-c", "-d", "31", "--deflate", "libz", str(vmcore_61_mixed), str(libz)]) == 0
    assert libz.read_bytes() == theirs.read_bytes()
    assert main(["dump", "-c", "-d", "31", str(vmcore_61_mixed), str(libdeflate)]) == 0
    b2_theirs, zero_theirs = _zero_pfns(theirs)
    b2_ours, zero_ours = _zero_pfns(libdeflate)
    assert np.array_equal(b2_ours, b2_theirs) and np.array_equal(zero_ours, zero_theirs)
    assert libdeflate.stat().st_size < theirs.stat().st_size
    a, b = DiskDump(FileSource(libdeflate)), DiskDump(FileSource(theirs))
    pfns, _ = a.descriptors(0, a.max_mapnr)
    for i in range(0, len(pfns), 8192):
        assert a.read_pages(pfns[i : i + 8192]) == b.read_pages(pfns[i : i + 8192])


@pytest.mark.parametrize("level", [16, 31])
def test_settled_cycles_filter_as_all_pages_do(
    vmcore_61_mixed: Path, level: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Cycles of nothing but largest-order free blocks are decided from each block's first struct
    # page, and cycles without RAM not at all (pipeline._settled_cycle); reading and classifying every
    # struct page must give the same bitmaps and counts. The 1 GiB guest has no hole: one is made.
    from kdumpy.collect import pipeline

    taken = []
    settled = pipeline._settled_cycle

    def counted(*args: object) -> object:
        got = settled(*args)  # type: ignore[arg-type]
        taken.append(got is not None and bool(got[0].any()))  # a free cycle, not the hole
        return got

    hole = (3 * pipeline.CYCLE_PFNS, 4 * pipeline.CYCLE_PFNS)
    with open_dump(str(vmcore_61_mixed)) as dump:
        states = dump.page_states

        def with_hole(lo: int, hi: int) -> np.ndarray:  # type: ignore[type-arg]
            out = states(lo, hi).copy()
            out[max(hole[0], lo) - lo : max(0, min(hole[1], hi) - lo)] = PageState.MISSING
            return out

        monkeypatch.setattr(dump, "page_states", with_hole)
        monkeypatch.setattr(pipeline, "_settled_cycle", counted)
        fast = pipeline.filter_pages(dump, level)
        monkeypatch.setattr(pipeline, "_settled_cycle", lambda *args: None)
        full = pipeline.filter_pages(dump, level)
    assert any(taken), "no cycle was all free blocks: the shortcut was not exercised"
    assert not np.unpackbits(fast.bitmap1, bitorder="little")[hole[0] : hole[1]].any()
    assert np.array_equal(fast.bitmap1, full.bitmap1)
    assert np.array_equal(fast.bitmap2, full.bitmap2)
    assert fast.excluded == full.excluded


@pytest.mark.parametrize("level", [1, 31])
def test_short_of_memory_the_dump_is_the_same_in_smaller_cycles_and_batches(
    vmcore_61_mixed: Path, level: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kdumpy.collect import dump as dump_module
    from kdumpy.collect import pipeline

    sizes: list[int] = []
    filter_pages, copy_pages = pipeline.filter_pages, pipeline.copy_pages

    def filtering(*args: object, cycle: int, **kw: object) -> object:
        sizes.append(cycle)
        return filter_pages(*args, cycle=cycle, **kw)  # type: ignore[arg-type]

    def copying(*args: object, batch: int, **kw: object) -> object:
        sizes.append(batch)
        return copy_pages(*args, batch=batch, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(dump_module, "_memory_is_short", lambda: True)
    monkeypatch.setattr(dump_module, "filter_pages", filtering)
    monkeypatch.setattr(dump_module, "copy_pages", copying)
    theirs, ours = tmp_path / "makedumpfile.kdump", tmp_path / "kdumpy.kdump"
    _makedumpfile(vmcore_61_mixed, level, theirs)
    with open_dump(str(vmcore_61_mixed)) as dump:
        run_dump(dump, [str(ours)], DumpJob(dump_level=level, codec="lzo", threads=1))
    assert sizes == [pipeline.SMALL_CYCLE_PFNS, pipeline.SMALL_BATCH_PAGES]
    assert ours.read_bytes() == theirs.read_bytes()
