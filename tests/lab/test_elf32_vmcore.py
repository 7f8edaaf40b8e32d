"""A kernel-made ELF32 /proc/vmcore: the vmcore_61_elf32 fixture is the 6.1 guest armed with
`kdumpy load --elf32-core-headers` (kexec_load(2) with ELF32 core headers, what `kexec -p
--elf32-core-headers` did), crashed with sysrq, and the capture kernel's /proc/vmcore copied with dd.
The copy must be ELFCLASS32, and read the same through kdumpy and makedumpfile."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kdumpy.memory.dump import open_dump
from kdumpy.memory.kernel import Kernel

pytestmark = pytest.mark.lab

ELFCLASS32 = 1


def test_kexec_load_with_elf32_core_headers_gives_an_elf32_proc_vmcore(
    vmcore_61_elf32: Path, lab_kernels: dict[str, dict[str, str]], tmp_path: Path
) -> None:
    # The guest's console: the arming was `kdumpy load --elf32-core-headers`, and the capture kernel
    # booted with the elfcorehdr= that kdumpy placed.
    console = (vmcore_61_elf32.parent / "console.log").read_text(errors="replace")
    assert "with kexec_load, ELF32 core headers, into 128M reserved" in console
    assert "elfcorehdr=0x" in console

    with vmcore_61_elf32.open("rb") as f:
        ident = f.read(16)
    assert ident[:4] == b"\x7fELF" and ident[4] == ELFCLASS32

    release = lab_kernels["6.1"]["release"]
    with open_dump(vmcore_61_elf32) as dump:
        assert dump.format == "elf32"
        info = dump.vmcoreinfo
        assert info is not None and info.osrelease == release
        assert len(dump.cpus) == 2
        # init_uts_ns read through the dead kernel's page tables agrees with VMCOREINFO.
        assert Kernel(dump).utsname().release == info.osrelease

    ours = subprocess.run(
        [sys.executable, "-m", "kdumpy", "dmesg", str(vmcore_61_elf32)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    theirs = tmp_path / "makedumpfile-dmesg.txt"
    subprocess.run(
        ["makedumpfile", "--dump-dmesg", str(vmcore_61_elf32), str(theirs)],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert ours == theirs.read_text(errors="replace")
    assert "sysrq triggered crash" in ours


def test_its_loads_are_those_kexec_file_load_gives_less_the_kernel_text(
    vmcore_61_elf32: Path, vmcore_61: Path
) -> None:
    # vmcore_61 is the same guest armed with kexec_file_load: the kernel's own ELF64 header has the
    # kernel-text load first, then one load per RAM range outside the crash region and the low 1 MiB.
    # kdumpy's ELF32 header has the same RAM loads and no text load (its vaddr needs 64 bits).
    with open_dump(vmcore_61_elf32) as d32, open_dump(vmcore_61) as d64:
        text, *ram = d64.elf.loads  # type: ignore[attr-defined]
        assert text.vaddr >= 0xFFFFFFFF80000000
        loads = d32.elf.loads  # type: ignore[attr-defined]
        assert [(p.paddr, p.memsz) for p in loads] == [(p.paddr, p.memsz) for p in ram]
        assert sum(p.memsz for p in loads) == sum(p.memsz for p in ram)
        # p_vaddr keeps the low 32 bits of the direct-map address: the crashed kernel's KASLR base,
        # read by the loader from /proc/kcore, is the one its page tables give.
        base = Kernel(d32).mmu.direct_map_base()
        assert [p.vaddr for p in loads] == [(base + p.paddr) & 0xFFFFFFFF for p in loads]
