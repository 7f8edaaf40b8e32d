"""Page-table walks over a small synthetic physical memory built by hand."""

from __future__ import annotations

import struct

import pytest

from kdumpy.errors import AddressError
from kdumpy.formats.vmcoreinfo import VmcoreInfo
from kdumpy.memory.x86_64 import START_KERNEL_MAP, X86_64Mmu

PHYS_BASE = 0x2C00000
TOP = 0x100000  # physical address of the top-level table


class Phys:
    """Sparse physical memory: 4 KiB pages in a dict."""

    def __init__(self) -> None:
        self.pages: dict[int, bytearray] = {}

    def page(self, paddr: int) -> bytearray:
        return self.pages.setdefault(paddr & ~0xFFF, bytearray(4096))

    def set_entry(self, table: int, index: int, value: int) -> None:
        struct.pack_into("<Q", self.page(table), index * 8, value)

    def read(self, paddr: int, n: int) -> bytes:
        from kdumpy.errors import PageMissingError

        out = b""
        while n:
            page = self.pages.get(paddr & ~0xFFF)
            if page is None:
                raise PageMissingError(paddr)
            k = min(n, 4096 - (paddr & 0xFFF))
            out += bytes(page[paddr & 0xFFF : (paddr & 0xFFF) + k])
            paddr, n = paddr + k, n - k
        return out


def _info(l5: bool, sme_mask: int = 0) -> VmcoreInfo:
    top_vaddr = TOP - PHYS_BASE + START_KERNEL_MAP
    return VmcoreInfo(
        f"OSRELEASE=6.1.0\nPAGESIZE=4096\nSYMBOL(init_top_pgt)={top_vaddr:x}\n"
        f"NUMBER(phys_base)={PHYS_BASE}\nNUMBER(pgtable_l5_enabled)={int(l5)}\n"
        f"NUMBER(sme_mask)={sme_mask}\n"
    )


def _map(phys: Phys, vaddr: int, target: int, *, l5: bool, leaf_shift: int = 12, flag: int = 0) -> None:
    """Map `vaddr` to `target` with tables allocated from 0x200000 up; leaf at `leaf_shift`."""
    shifts = (48, 39, 30, 21, 12) if l5 else (39, 30, 21, 12)
    table = TOP
    for shift in shifts:
        index = (vaddr >> shift) & 511
        if shift == leaf_shift:
            phys.set_entry(table, index, target | 0x63 | flag | (0x80 if shift in (30, 21) else 0))
            return
        existing = struct.unpack_from("<Q", phys.page(table), index * 8)[0]
        if existing & 1:
            table = existing & 0x000FFFFFFFFFF000 & ~flag
            continue
        nxt = 0x200000 + 0x1000 * len(phys.pages)
        phys.page(nxt)
        phys.set_entry(table, index, nxt | 0x63 | flag)
        table = nxt


@pytest.mark.parametrize("l5", [False, True])
def test_4k_page_translates_through_every_level(l5: bool) -> None:
    phys = Phys()
    phys.page(TOP)
    vaddr = 0xFFFF888012345678 if not l5 else 0xFF11000012345678
    _map(phys, vaddr, 0x7654000, l5=l5)
    mmu = X86_64Mmu(phys.read, _info(l5))
    assert mmu.levels == (5 if l5 else 4)
    assert mmu.translate(vaddr) == 0x7654678


@pytest.mark.parametrize(("shift", "size"), [(21, 2 << 20), (30, 1 << 30)])
def test_large_pages_keep_the_low_bits(shift: int, size: int) -> None:
    phys = Phys()
    phys.page(TOP)
    vaddr = 0xFFFF888040000000 + 0x123456
    _map(phys, vaddr & ~(size - 1), 0x80000000, l5=False, leaf_shift=shift)
    mmu = X86_64Mmu(phys.read, _info(False))
    assert mmu.walk(vaddr) == (0x80000000 + (vaddr & (size - 1)), size)


def test_sme_bit_is_masked_from_entries() -> None:
    sme = 1 << 47
    phys = Phys()
    phys.page(TOP)
    _map(phys, 0xFFFF888000001000, 0x5000, l5=False, flag=sme)
    mmu = X86_64Mmu(phys.read, _info(False, sme_mask=sme))
    assert mmu.translate(0xFFFF888000001010) == 0x5010


def test_kernel_image_translates_by_phys_base_without_tables() -> None:
    mmu = X86_64Mmu(Phys().read, _info(False))
    assert mmu.translate(START_KERNEL_MAP + 0x1234) == PHYS_BASE + 0x1234


def test_unmapped_address_and_missing_table_raise_address_error() -> None:
    phys = Phys()
    phys.page(TOP)
    mmu = X86_64Mmu(phys.read, _info(False))
    with pytest.raises(AddressError, match="not mapped"):
        mmu.translate(0xFFFF888000000000)
    phys.set_entry(TOP, 0x111, 0x9990000 | 0x63)  # points at a table that is not in memory
    with pytest.raises(AddressError, match="not in the dump"):
        X86_64Mmu(phys.read, _info(False)).translate(0xFFFF888000000000)
