"""The dead kernel's virtual memory: typed reads by symbol and by address, from any dump."""

from __future__ import annotations

import struct

from kdumpy.errors import UnsupportedError, VmcoreinfoError
from kdumpy.formats.diskdump import Utsname
from kdumpy.formats.elf import EM_X86_64
from kdumpy.formats.vmcoreinfo import VmcoreInfo
from kdumpy.memory.dump import Dump, ElfDump
from kdumpy.memory.x86_64 import START_KERNEL_MAP, X86_64Mmu

__all__ = ["Kernel"]

_U8, _U16, _U32, _U64 = (struct.Struct(f"<{c}") for c in "BHIQ")
_UTS_LEN = 65  # __NEW_UTS_LEN + 1


class Kernel:
    """Typed reads of the crashed kernel's memory, by symbol and virtual address."""

    def __init__(self, dump: Dump) -> None:
        info = dump.vmcoreinfo
        if info is None:
            raise VmcoreinfoError(f"{dump.path}: the dump has no VMCOREINFO note")
        if dump.machine != EM_X86_64:
            raise UnsupportedError(
                f"{dump.path}: only x86_64 dumps are supported (ELF machine {dump.machine})"
            )
        self.dump = dump
        self.info: VmcoreInfo = info
        self.page_size = info.pagesize or dump.page_size
        self.mmu = X86_64Mmu(dump.read, info, phys_base=_phys_base_from_loads(dump))

    def translate(self, vaddr: int) -> int:
        return self.mmu.translate(vaddr)

    def read(self, vaddr: int, n: int) -> bytes:
        """`n` bytes at `vaddr`, translating each page (AddressError or a PageError on failure)."""
        ps = self.page_size
        parts = []
        while n > 0:
            chunk = min(n, ps - (vaddr % ps))
            parts.append(self.dump.read(self.mmu.translate(vaddr), chunk))
            vaddr += chunk
            n -= chunk
        return b"".join(parts)

    def read_u8(self, vaddr: int) -> int:
        return int(_U8.unpack(self.read(vaddr, 1))[0])

    def read_u16(self, vaddr: int) -> int:
        return int(_U16.unpack(self.read(vaddr, 2))[0])

    def read_u32(self, vaddr: int) -> int:
        return int(_U32.unpack(self.read(vaddr, 4))[0])

    def read_u64(self, vaddr: int) -> int:
        return int(_U64.unpack(self.read(vaddr, 8))[0])

    read_ulong = read_u64
    read_pointer = read_u64

    def read_cstring(self, vaddr: int, limit: int = 4096) -> str:
        """A NUL-terminated string of at most `limit` bytes (without reading past it)."""
        out = bytearray()
        while len(out) < limit:
            chunk = self.read(
                vaddr + len(out), min(limit - len(out), self.page_size - (vaddr + len(out)) % self.page_size)
            )
            nul = chunk.find(b"\0")
            if nul >= 0:
                out += chunk[:nul]
                break
            out += chunk
        return out.decode("utf-8", "replace")

    def symbol(self, name: str) -> int:
        """Address of a symbol VMCOREINFO exports."""
        return self.info.require_symbol(name)

    def utsname(self) -> Utsname:
        """`init_uts_ns.name`, read through the page tables."""
        base = self.symbol("init_uts_ns") + self.info.require_offset("uts_namespace", "name")
        raw = self.read(base, 6 * _UTS_LEN)
        fields = [
            raw[i * _UTS_LEN : (i + 1) * _UTS_LEN].split(b"\0", 1)[0].decode("utf-8", "replace")
            for i in range(6)
        ]
        return Utsname(*fields)


def _phys_base_from_loads(dump: Dump) -> int | None:
    """phys_base from the kernel-text PT_LOAD, for old kernels that do not export NUMBER(phys_base)."""
    if not isinstance(dump, ElfDump):
        return None
    for paddr, vaddr, _ in dump.load_vaddrs():
        if vaddr >= START_KERNEL_MAP:
            return paddr - (vaddr - START_KERNEL_MAP)
    return None
