"""The dead kernel's memory on real vmcores of Debian kernels: page tables, symbols, utsname."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdumpy.memory.dump import open_dump
from kdumpy.memory.kernel import Kernel

pytestmark = pytest.mark.lab

VMCORES = ["vmcore_61", "vmcore_612", "vmcore_612_la57", "vmcore_61_elf32"]


@pytest.mark.parametrize("name", VMCORES)
def test_release_read_through_init_uts_ns_equals_osrelease(name: str, request: pytest.FixtureRequest) -> None:
    path: Path = request.getfixturevalue(name)
    with open_dump(path) as dump:
        kernel = Kernel(dump)
        info = dump.vmcoreinfo
        assert info is not None and info.osrelease
        uts = kernel.utsname()
        assert uts.release == info.osrelease
        assert uts.sysname == "Linux"
        assert uts.machine == "x86_64"
        assert kernel.mmu.levels == (5 if name.endswith("la57") else 4)


@pytest.mark.parametrize("name", ["vmcore_61", "vmcore_612_la57"])
def test_direct_map_walk_agrees_with_the_vmcore_pt_load_vaddrs(
    name: str, request: pytest.FixtureRequest
) -> None:
    # /proc/vmcore's PT_LOAD vaddrs are the kernel's own __va() of each RAM range: a page-table walk of
    # such an address must land on the segment's paddr.
    path: Path = request.getfixturevalue(name)
    with open_dump(path) as dump:
        kernel = Kernel(dump)
        checked = 0
        for paddr, vaddr, memsz in dump.load_vaddrs():  # type: ignore[attr-defined]
            if vaddr >= 0xFFFFFFFF80000000 or memsz < 0x200000:
                continue
            for off in (0, memsz // 2 & ~0xFFF, (memsz - 1) & ~0xFFF):
                assert kernel.mmu.walk(vaddr + off)[0] == paddr + off
                checked += 1
        assert checked >= 3


@pytest.mark.parametrize("name", ["vmcore_61", "vmcore_612", "vmcore_612_la57"])
def test_direct_map_base_is_found_from_the_page_tables(name: str, request: pytest.FixtureRequest) -> None:
    path: Path = request.getfixturevalue(name)
    with open_dump(path) as dump:
        offsets = {v - p for p, v, _ in dump.load_vaddrs() if v < 0xFFFFFFFF80000000}  # type: ignore[attr-defined]
        assert len(offsets) == 1
        assert Kernel(dump).mmu.direct_map_base() == offsets.pop()
