"""x86_64 virtual to physical translation through the crashed kernel's own page tables.

The walk starts at the kernel's top-level table (`init_top_pgt`, physical address from `phys_base`), and
follows 4- or 5-level paging as VMCOREINFO's `pgtable_l5_enabled` says. No direct-map or vmemmap base
is assumed: since 4.20 with KASLR they are randomised, and dumps from QEMU carry PT_LOAD vaddr 0.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Callable

from kdumpy.errors import AddressError, PageError, VmcoreinfoError
from kdumpy.formats.vmcoreinfo import VmcoreInfo

__all__ = ["START_KERNEL_MAP", "X86_64Mmu"]

START_KERNEL_MAP = 0xFFFFFFFF80000000
"""`__START_KERNEL_map`: the kernel image's virtual base (fixed by the x86_64 ABI; KASLR moves the image
within it, which `phys_base` and the symbols' values already reflect)."""

_ENTRY_ADDR = 0x000FFFFFFFFFF000  # bits 12-51 of a page-table entry: the next table or the page
_PRESENT = 0x1
_PSE = 0x80  # a 1 GiB page at the PUD level, a 2 MiB page at the PMD level
_TABLE = struct.Struct("<512Q")
_CACHE_TABLES = 4096  # 16 MiB of page-table pages at most


def _canonical(vaddr: int) -> int:
    """Sign-extend bit 56 (5-level) or 47 (4-level) the way the CPU does; here: kernel half only."""
    return vaddr | (0xFFFF000000000000 if vaddr < (1 << 48) else 0xFF00000000000000)


class X86_64Mmu:
    """Translates the dead kernel's virtual addresses to physical ones."""

    def __init__(
        self, read_phys: Callable[[int, int], bytes], info: VmcoreInfo, phys_base: int | None = None
    ) -> None:
        self._read_phys = read_phys
        nb = info.number("phys_base")
        base = nb if nb is not None else phys_base
        if base is None:
            raise VmcoreinfoError(
                "VMCOREINFO has no NUMBER(phys_base), and the dump gives no other way to it"
            )
        self.phys_base = base
        top = info.symbol("init_top_pgt") or info.symbol("init_level4_pgt")
        if top is None:
            raise VmcoreinfoError("VMCOREINFO has no SYMBOL(init_top_pgt): cannot walk the page tables")
        self.top_table = top - START_KERNEL_MAP + base
        self.levels = 5 if info.number("pgtable_l5_enabled") else 4
        # With SME the encryption bit sits among the address bits of every entry.
        self.sme_mask = info.number("sme_mask") or 0
        self.kernel_image_size = info.number("KERNEL_IMAGE_SIZE") or (1 << 30)
        self._tables: OrderedDict[int, tuple[int, ...]] = OrderedDict()

    def _table(self, paddr: int) -> tuple[int, ...]:
        t = self._tables.get(paddr)
        if t is None:
            try:
                t = _TABLE.unpack(self._read_phys(paddr, _TABLE.size))
            except PageError as e:
                raise AddressError(
                    f"page table at physical address {paddr:#x} is not in the dump ({e})"
                ) from e
            self._tables[paddr] = t
            if len(self._tables) > _CACHE_TABLES:
                self._tables.popitem(last=False)
        return t

    def translate(self, vaddr: int) -> int:
        """The physical address of `vaddr`; AddressError when it is not mapped."""
        if START_KERNEL_MAP <= vaddr < START_KERNEL_MAP + self.kernel_image_size:
            # The kernel image is mapped linearly at phys_base (the kernel's own __pa_symbol()).
            return vaddr - START_KERNEL_MAP + self.phys_base
        return self.walk(vaddr)[0]

    def direct_map_base(self) -> int | None:
        """`page_offset_base`: the lowest kernel address that maps physical address 0.

        KASLR places the direct map on a 1 GiB boundary, and it is the lowest kernel-half region
        (below vmalloc, vmemmap and the kernel image), so the first 1 GiB slot whose walk lands on
        physical 0 is the base. Only present entries are visited: a few hundred table reads at most.
        """
        top_shift = 48 if self.levels == 5 else 39
        for i in range(256, 512):
            base = _canonical(i << top_shift)
            if base >= START_KERNEL_MAP:
                break
            found = self._search_zero(self.top_table, i, top_shift, base)
            if found is not None:
                return found
        return None

    def _search_zero(self, table: int, index: int, shift: int, vbase: int) -> int | None:
        entry = self._table(table)[index]
        if not entry & _PRESENT:
            return None
        if shift == 30:
            try:
                return vbase if self.walk(vbase)[0] == 0 else None
            except AddressError:
                return None
        nxt = entry & _ENTRY_ADDR & ~self.sme_mask
        for j in range(512):
            found = self._search_zero(nxt, j, shift - 9, vbase + (j << (shift - 9)))
            if found is not None:
                return found
        return None

    def walk(self, vaddr: int) -> tuple[int, int]:
        """(physical address, size of the mapping page) from a full page-table walk."""
        shifts = (48, 39, 30, 21, 12) if self.levels == 5 else (39, 30, 21, 12)
        table = self.top_table
        addr_mask = _ENTRY_ADDR & ~self.sme_mask
        for shift in shifts:
            entry = self._table(table)[(vaddr >> shift) & 511]
            if not entry & _PRESENT:
                raise AddressError(f"virtual address {vaddr:#x} is not mapped")
            table = entry & addr_mask
            if shift in (30, 21) and entry & _PSE:
                size = 1 << shift
                return (table & ~(size - 1)) | (vaddr & (size - 1)), size
        return table | (vaddr & 0xFFF), 4096
