"""The collector's passes and the `kdumpy dump` command on small synthetic vmcores (no struct pages
there, so only levels 0 and 1 apply: zero pages), plus the makedumpfile-style command line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tests.synthetic import PAGE, elf_vmcore, page_pattern

from kdumpy.cli import main
from kdumpy.collect.dump import DumpJob, run_dump, split_points
from kdumpy.collect.levels import describe, parse_levels
from kdumpy.collect.pipeline import PageReader, dumpable_batches, masked_view
from kdumpy.errors import UsageError
from kdumpy.memory.dump import PageState, open_dump
from kdumpy.memory.pages import Category

ZERO_PFNS = {0, 5, 6, 40}  # page_pattern(0) is all zeros too


@pytest.fixture
def vmcore(tmp_path: Path) -> Path:
    content = {pfn: bytes(PAGE) for pfn in ZERO_PFNS}
    return elf_vmcore(tmp_path / "vmcore", [(0, 32 * PAGE, 32 * PAGE), (36 * PAGE, 12 * PAGE, 12 * PAGE)],
                      content=content)


def test_levels_parse_and_describe() -> None:
    assert parse_levels("31") == [31]
    assert parse_levels("11,31") == [11, 31]
    assert describe(17) == "zero pages, free pages"
    for bad in ("32", "x", "-1"):
        with pytest.raises(UsageError):
            parse_levels(bad)


@pytest.mark.parametrize("codec", ["none", "zlib", "lzo", "zstd"])
def test_level1_shares_zero_pages_and_keeps_the_rest(vmcore: Path, tmp_path: Path, codec: str) -> None:
    out = tmp_path / "out"
    with open_dump(str(vmcore)) as dump:
        res = run_dump(dump, [str(out)], DumpJob(dump_level=1, codec=codec))
    assert res.excluded[Category.ZERO] == len(ZERO_PFNS)
    assert res.written_pages == 44
    with open_dump(str(out)) as back:
        assert back.dd.dump_level == 1  # type: ignore[attr-defined]
        for pfn in (0, 7, 31, 36, 47):
            assert back.read_pages(pfn, 1) == page_pattern(pfn)
        for pfn in ZERO_PFNS:
            assert back.read_pages(pfn, 1) == bytes(PAGE)


@pytest.mark.parametrize("codec", ["zlib", "lzo", "zstd", "snappy", "none"])
def test_output_is_the_same_whatever_the_thread_count(vmcore: Path, tmp_path: Path, codec: str) -> None:
    outs = []
    for threads in (0, 1, 2, 3):
        out = tmp_path / f"out{threads}"
        with open_dump(str(vmcore)) as dump:
            res = run_dump(dump, [str(out)], DumpJob(dump_level=1, codec=codec, threads=threads))
        assert res.excluded[Category.ZERO] == len(ZERO_PFNS)
        outs.append(out.read_bytes())
    assert all(o == outs[0] for o in outs)


def test_batches_cross_runs_and_respect_range() -> None:
    bits = np.zeros(200, dtype=np.uint8)
    bits[3:20] = 1
    bits[40:42] = 1
    bits[150:199] = 1
    packed = np.packbits(bits, bitorder="little")
    want = np.flatnonzero(bits)
    got = list(dumpable_batches(packed, 0, 200, limit=16))
    assert [len(b) for b in got] == [16, 16, 16, 16, 4]
    assert np.array_equal(np.concatenate(got), want)
    got = list(dumpable_batches(packed, 10, 160, limit=1000))
    assert len(got) == 1 and np.array_equal(got[0], want[(want >= 10) & (want < 160)])
    assert list(dumpable_batches(packed, 50, 60)) == []


def test_page_reader_equals_read_pages_also_for_partial_pages(tmp_path: Path) -> None:
    # Segments that start and end inside pages: the parts outside read as zeros.
    segments = [(0, 5 * PAGE + 100, 5 * PAGE + 100), (8 * PAGE + 512, 3 * PAGE, 3 * PAGE)]
    path = elf_vmcore(tmp_path / "vmcore", segments)
    with open_dump(str(path)) as dump:
        present = np.flatnonzero(dump.page_states(0, dump.max_pfn) == PageState.PRESENT).astype(np.int64)
        out = np.empty((len(present), PAGE), dtype=np.uint8)
        PageReader(dump).read(present, out)
        assert out.tobytes() == b"".join(dump.read_pages(int(p), 1) for p in present)


def test_size_limit_with_threads_keeps_the_pages_written(vmcore: Path, tmp_path: Path) -> None:
    out = tmp_path / "dump"
    with open_dump(str(vmcore)) as dump:
        res = run_dump(dump, [str(out)], DumpJob(dump_level=1, codec="none", threads=2, limit=30 * PAGE))
    assert not res.complete
    with open_dump(str(out)) as back:
        assert back.incomplete
        present = np.flatnonzero(back.page_states(0, 48) == PageState.PRESENT)
        assert 0 < len(present) < 44
        for pfn in present.tolist():
            assert back.read_pages(pfn, 1) == (bytes(PAGE) if pfn in ZERO_PFNS else page_pattern(pfn))


def test_elf_output_counts_zero_pages_and_keeps_the_rest(vmcore: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.elf"
    with open_dump(str(vmcore)) as dump:
        res = run_dump(dump, [str(out)], DumpJob(dump_level=1, elf=True))
    assert res.excluded[Category.ZERO] == len(ZERO_PFNS)
    with open_dump(str(out)) as back:
        # Excluded runs shorter than 256 pages are written as zeros (makedumpfile -E), not cut out.
        assert not (back.page_states(0, 48) == PageState.EXCLUDED).any()
        assert back.read_pages(7, 1) == page_pattern(7)
        assert back.read_pages(40, 1) == bytes(PAGE)


def test_split_parts_hold_their_ranges(vmcore: Path, tmp_path: Path) -> None:
    outs = [tmp_path / "p1", tmp_path / "p2", tmp_path / "p3"]
    with open_dump(str(vmcore)) as dump:
        run_dump(dump, [str(p) for p in outs], DumpJob(dump_level=1, codec="lzo"))
    with open_dump([str(p) for p in outs]) as whole:
        assert whole.format == "kdump-split"
        for pfn in (0, 20, 31, 47):
            assert whole.read_pages(pfn, 1) == page_pattern(pfn)


def test_split_points_balance_dumpable_pages() -> None:
    bits = np.zeros(100, dtype=np.uint8)
    bits[:10] = 1
    bits[90:] = 1
    parts = split_points(np.packbits(bits, bitorder="little"), 100, 2)
    assert parts[0][0] == 0 and parts[-1][1] == 100 and parts[0][1] == parts[1][0]
    assert 10 <= parts[0][1] <= 90


def test_cli_writes_a_dump_and_refuses_to_overwrite(vmcore: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "dump"
    assert main(["dump", "-c", "-d", "1", "--message-level", "16", str(vmcore), str(out)]) == 0
    assert "Pages filled with zero  : 0x0000000000000004" in capsys.readouterr().out
    assert main(["dump", "-c", "-d", "1", str(vmcore), str(out)]) == 1
    assert main(["dump", "-f", "-c", "-d", "1", str(vmcore), str(out)]) == 0


def test_cli_names_unknown_and_unsupported_options(vmcore: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dump", "--frobnicate", str(vmcore), str(tmp_path / "x")]) == 1
    assert "--frobnicate" in capsys.readouterr().err
    assert main(["dump", "--eppic", "f.c", str(vmcore), str(tmp_path / "x")]) == 1
    assert "--eppic" in capsys.readouterr().err
    assert main(["dump", "-d", "99", str(vmcore), str(tmp_path / "x")]) == 1
    assert main(["dump", "-E", "-c", str(vmcore), str(tmp_path / "x")]) == 1


def test_cli_size_limit_marks_the_dump_incomplete(vmcore: Path, tmp_path: Path) -> None:
    out = tmp_path / "dump"
    assert main(["dump", "-d", "0", "-L", "40K", "--message-level", "0", str(vmcore), str(out)]) == 1
    with open_dump(str(out)) as back:
        assert back.incomplete


def test_cli_mem_usage_needs_struct_pages(vmcore: Path) -> None:
    # The synthetic vmcore has no mem_section: --mem-usage (a -d 31 pass) fails cleanly.
    assert main(["dump", "--mem-usage", str(vmcore)]) == 1


def test_masked_view_reports_and_counts_only_the_mask(tmp_path: Path) -> None:
    # The ELF writer behind -E counts what the view says is present: the counts must follow the mask.
    p = elf_vmcore(tmp_path / "vmcore", [(0x100000, 0x10000, 0x10000)])
    with open_dump(p) as dump:
        mask = np.zeros((dump.max_pfn + 7) // 8, dtype=np.uint8)
        mask[0x100 // 8] = 0b101  # pfns 0x100 and 0x102
        view = masked_view(dump, mask)
        states = view.page_states(0x100, 0x110)
        assert np.flatnonzero(states == PageState.PRESENT).tolist() == [0, 2]
        assert view.page_counts()[PageState.PRESENT] == 2
        assert view.page_counts()[PageState.EXCLUDED] == 14
        assert dump.page_counts()[PageState.PRESENT] == 16


def test_cli_without_libdeflate_says_so_and_writes_libz_pages(
    vmcore: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    libz, fallback = tmp_path / "libz", tmp_path / "fallback"
    assert main(["dump", "-c", "-d", "1", "--deflate", "libz", str(vmcore), str(libz)]) == 0
    from kdumpy.formats import clib, codecs

    monkeypatch.setitem(clib._loaded, "libdeflate", None)  # as if libdeflate0 were not installed
    monkeypatch.setitem(codecs.CODECS, "zlib", type(codecs.CODECS["zlib"])())  # no compressor cached yet
    capsys.readouterr()
    assert main(["dump", "-c", "-d", "1", str(vmcore), str(fallback)]) == 0
    assert "libdeflate is not installed" in capsys.readouterr().out
    with open_dump(str(libz)) as a, open_dump(str(fallback)) as b:
        for pfn in range(a.max_pfn):
            if a.page_states(pfn, pfn + 1)[0] == 0:  # present
                assert a.read_pages(pfn, 1) == b.read_pages(pfn, 1)
    assert libz.stat().st_size == fallback.stat().st_size
