"""open_dump() over synthetic ELF vmcores: page states, reads, errors, detection."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from tests.synthetic import PAGE, elf_vmcore, page_pattern

from kdumpy.errors import DumpError, PageExcludedError, PageIncompleteError, PageMissingError
from kdumpy.memory.dump import PageState, PhysRange, open_dump


@pytest.fixture
def vmcore(tmp_path: Path) -> Path:
    # RAM at [4K, 0x9fc00) (ends mid-page, like the first range of a real /proc/vmcore),
    # [1M, 1M+64K) and [2M, 2M+32K) of which only the first 16K are in the file.
    return elf_vmcore(
        tmp_path / "vmcore",
        [(0x1000, 0x9EC00, 0x9EC00), (0x100000, 0x10000, 0x10000), (0x200000, 0x4000, 0x8000)],
    )


def test_elf_ranges_states_and_metadata(vmcore: Path) -> None:
    with open_dump(vmcore) as d:
        assert d.format == "elf64"
        assert d.page_size == PAGE
        assert d.vmcoreinfo is not None and d.vmcoreinfo.osrelease == "6.1.0-test-amd64"
        assert [c.pid for c in d.cpus] == [1, 2]
        assert d.ranges == [
            PhysRange(0x1000, 0x9FC00),
            PhysRange(0x100000, 0x110000),
            PhysRange(0x200000, 0x208000),
        ]
        states = d.page_states(0, 0x210)
        assert states[0] == PageState.MISSING
        assert (states[1:0xA0] == PageState.PRESENT).all()  # the mid-page end counts as present
        assert (states[0xA0:0x100] == PageState.MISSING).all()
        assert (states[0x200:0x204] == PageState.PRESENT).all()
        assert (states[0x204:0x208] == PageState.EXCLUDED).all()  # filesz < memsz
        assert not d.incomplete


def test_reads_return_the_pages_and_zero_fill_a_partial_page(vmcore: Path) -> None:
    with open_dump(vmcore) as d:
        assert d.read_pages(0x100, 3) == page_pattern(0x100) + page_pattern(0x101) + page_pattern(0x102)
        assert d.read(0x100FF8, 16) == page_pattern(0x100)[-8:] + page_pattern(0x101)[:8]
        last = d.read_pages(0x9F, 1)
        assert last[:0xC00] == page_pattern(0x9F)[:0xC00] and last[0xC00:] == bytes(0x400)


def test_reads_outside_the_data_raise_typed_page_errors(vmcore: Path) -> None:
    with open_dump(vmcore) as d:
        with pytest.raises(PageMissingError):
            d.read(0xA0000, 8)
        with pytest.raises(PageExcludedError):
            d.read_pages(0x203, 2)
        with pytest.raises(PageMissingError):
            d.read(0x10_0000_0000, 1)


def test_truncated_elf_is_incomplete_and_keeps_what_it_has(vmcore: Path) -> None:
    size = os.path.getsize(vmcore)
    os.truncate(vmcore, size - 0x6000)  # the last segment's 4 pages and 2 of the previous one
    with open_dump(vmcore) as d:
        assert d.incomplete
        assert d.read_pages(0x100, 1) == page_pattern(0x100)
        with pytest.raises(PageIncompleteError):
            d.read_pages(0x200, 1)
        assert int(np.count_nonzero(d.page_states(0, 0x210) == PageState.INCOMPLETE)) == 6


def test_non_dumps_give_one_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    text = tmp_path / "text"
    text.write_text("hello\n" * 1000)
    with pytest.raises(DumpError, match="empty file"):
        open_dump(empty)
    with pytest.raises(DumpError, match="not a crash dump"):
        open_dump(text)


def test_elf32_vmcore_reads_the_same(tmp_path: Path) -> None:
    p = elf_vmcore(tmp_path / "vmcore32", [(0x100000, 0x8000, 0x8000)], elf_class=32)
    with open_dump(p) as d:
        assert d.format == "elf32"
        assert d.read_pages(0x100, 8) == b"".join(page_pattern(x) for x in range(0x100, 0x108))


def test_mapped_reads_equal_file_reads_across_windows(
    vmcore: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # /proc/vmcore is read through a moving mmap window; the same code over a regular file, with a
    # window of 3 pages so that reads straddle and move it, gives the bytes preadv gives.
    from kdumpy.memory import dump as dump_mod

    monkeypatch.setattr(dump_mod, "_MMAP_WINDOW", 3 * PAGE)
    with open_dump(vmcore) as plain, open(vmcore, "rb") as f:
        mapped = dump_mod.ElfDump(str(vmcore), f, os.fstat(f.fileno()).st_size, mapped=True)
        assert isinstance(plain, dump_mod.ElfDump) and not plain.mapped
        reads = [(0x1, 0x9F), (0x50, 7), (0x9F, 1), (0x100, 16), (0x10E, 2), (0x200, 4), (0x1, 2)]
        for start, count in reads:
            want, got = bytearray(count * PAGE), bytearray(count * PAGE)
            plain.read_pages_into(start, count, memoryview(want))
            mapped.read_pages_into(start, count, memoryview(got))
            assert got == want, (start, count)
        assert mapped.mapped  # it never fell back to reading
        mapped.close()


def test_proc_vmcore_is_opened_mapped(vmcore: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kdumpy.memory import dump as dump_mod

    monkeypatch.setattr(dump_mod, "PROC_VMCORE", os.path.realpath(vmcore))
    with open_dump(vmcore) as d:
        assert isinstance(d, dump_mod.ElfDump) and d.mapped
        assert d.read_pages(0x100, 1) == page_pattern(0x100)
