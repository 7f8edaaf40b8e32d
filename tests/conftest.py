"""Session fixtures backed by the lab: real vmcores of stock Debian kernels crashed in QEMU.

Each vmcore is made once and cached on disk under the lab cache (~/.cache/kdumpy/lab, or
$KDUMPY_LAB_CACHE), keyed by its scenario and the lab's inputs, so a warm run costs nothing.
A fixture that cannot be produced fails the test that asked for it, with the reason: a missing
dump must never pass as a skipped test. Only the debug vmlinux fixtures (about 1 GB to download
each) may be skipped, and only when KDUMPY_SKIP_DEBUG_VMLINUX=1 is set.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kdumpy.errors import KdumpyError
from kdumpy.lab import fixtures


def _named(name: str) -> Path:
    try:
        return fixtures.named_vmcore(name)
    except KdumpyError as e:
        pytest.fail(f"lab fixture {name} could not be produced: {e}", pytrace=False)


@pytest.fixture(scope="session")
def vmcore_61() -> Path:
    """6.1 (linux-image-amd64), sysrq crash, idle, 1G RAM, crashkernel=128M, `kdumpy load`."""
    return _named("vmcore_61")


@pytest.fixture(scope="session")
def vmcore_612() -> Path:
    """6.12 (linux-image-6.12-amd64), sysrq crash, idle, 1G RAM, crashkernel=128M, `kdumpy load`."""
    return _named("vmcore_612")


@pytest.fixture(scope="session")
def vmcore_61_elf32() -> Path:
    """6.1 as vmcore_61, armed with `kdumpy load --elf32-core-headers` (kexec_load, ELF32 core
    headers): the capture kernel's own ELFCLASS32 /proc/vmcore."""
    return _named("vmcore_61_elf32")


@pytest.fixture(scope="session")
def vmcore_612_la57() -> Path:
    """6.12 on `-cpu max` with 5-level paging (VMCOREINFO NUMBER(pgtable_l5_enabled)=1)."""
    return _named("vmcore_612_la57")


@pytest.fixture(scope="session")
def vmcore_61_mixed() -> Path:
    """6.1 with the mixed workload: ext4 page cache, tmpfs, random and zero anonymous memory,
    hugetlb pages and free memory (sizes in workload.json next to the vmcore)."""
    return _named("vmcore_61_mixed")


@pytest.fixture(scope="session")
def vmcore_612_mixed() -> Path:
    """6.12 with the mixed workload (see vmcore_61_mixed)."""
    return _named("vmcore_612_mixed")


def _debug_vmlinux(series: str) -> Path:
    if os.environ.get("KDUMPY_SKIP_DEBUG_VMLINUX") == "1":
        pytest.skip(f"debug vmlinux of {series} not fetched: KDUMPY_SKIP_DEBUG_VMLINUX=1")
    try:
        return fixtures.debug_vmlinux(series)
    except KdumpyError as e:
        pytest.fail(f"debug vmlinux of {series} could not be produced: {e}", pytrace=False)


@pytest.fixture(scope="session")
def vmlinux_61() -> Path:
    """The debug vmlinux matching vmcore_61* (from linux-image-<release>-dbg, about 630 MB)."""
    return _debug_vmlinux("6.1")


@pytest.fixture(scope="session")
def vmlinux_612() -> Path:
    """The debug vmlinux matching vmcore_612*."""
    return _debug_vmlinux("6.12")


@pytest.fixture(scope="session")
def lab_kernels() -> dict[str, dict[str, str]]:
    """The lab's kernels: {"6.1": {"release", "package", "version", "vmlinuz"}, "6.12": {...}}."""
    try:
        return fixtures.kernels()
    except KdumpyError as e:
        pytest.fail(f"the lab's kernels could not be resolved: {e}", pytrace=False)
