"""Details of the kdump-compressed layout that the real vmcores do not pin down, on synthetic dumps.

phys_base: KASLR moves the kernel physically, and the kernel prints VMCOREINFO's NUMBER(phys_base)
with %ld, so about half of the lab's vmcores have a negative phys_base and half a positive one.
makedumpfile keeps it in an unsigned long (kdump_sub_header.phys_base): -220200960 is stored as
0xfffffffff2e00000. The byte-exactness tests on real vmcores see only the sign their boot got.

A dump with no dumpable page: crash maps both bitmaps whole and refuses a file that ends inside them
(diskdump.c read_dump_header(): "Mmap: Beyond the end of mapped file, corrupted?").
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.foreign.conftest import KdumpLayout, info_json, kdumpy
from tests.synthetic import VMCOREINFO, elf_vmcore, notes

pytestmark = pytest.mark.foreign

PHYS_BASE = -220200960  # seen in a 6.1 lab vmcore


@pytest.mark.parametrize("phys_base", [PHYS_BASE, 0x12C00000])
def test_sub_header_phys_base_is_the_unsigned_long_makedumpfile_writes(
    phys_base: int, tmp_path: Path
) -> None:
    info = VMCOREINFO.replace("NUMBER(phys_base)=0", f"NUMBER(phys_base)={phys_base}")
    assert info != VMCOREINFO
    elf = elf_vmcore(tmp_path / "vmcore", [(0x1000, 0x8000, 0x8000)], note_data=notes(vmcoreinfo=info))
    first, second = tmp_path / "first.kdump", tmp_path / "second.kdump"
    kdumpy("convert", elf, first, "--format", "kdump", timeout=60)
    # kdump -> kdump takes it from the sub-header, not from VMCOREINFO: it must survive unchanged.
    kdumpy("convert", first, second, "--format", "kdump", timeout=60)
    for out in (first, second):
        assert KdumpLayout.parse(out).sub["phys_base"] == phys_base & 0xFFFF_FFFF_FFFF_FFFF


def test_dump_with_no_present_page_converts_to_a_kdump_file_that_reads_back(tmp_path: Path) -> None:
    # RAM whose every page is excluded (p_filesz 0): bitmap 2 is empty, no descriptor, no data.
    elf = elf_vmcore(tmp_path / "vmcore", [(0x1000, 0, 0x20000)])
    out = tmp_path / "empty.kdump"
    kdumpy("convert", elf, out, "--format", "kdump", timeout=60)
    layout = KdumpLayout.parse(out)
    assert layout.num_dumpable == 0
    bitmaps_end = layout.bitmap2[0] + layout.bitmap2[1]
    assert out.stat().st_size >= bitmaps_end, (
        f"the file ends at {out.stat().st_size:#x}, inside the bitmaps (they end at {bitmaps_end:#x})"
    )
    (info,) = info_json(out)
    assert info["pages"] == {"present": 0, "excluded": 0x20, "incomplete": 0}
