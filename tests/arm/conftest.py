"""A fake root for the arming tests: a directory tree shaped like a Debian 6.1 guest of the lab
(1 GiB of RAM, crashkernel=128M), built from plain files."""

from __future__ import annotations

import gzip
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent / "data"
RELEASE_61 = "6.1.0-56-amd64"
RELEASE_612 = "6.12.117+deb12-amd64"

# /proc/iomem of the lab's 1G QEMU guest (pc machine), 6.1 with crashkernel=128M.
IOMEM_1G = """\
00000000-00000fff : Reserved
00001000-0009fbff : System RAM
0009fc00-0009ffff : Reserved
000a0000-000bffff : PCI Bus 0000:00
000f0000-000fffff : Reserved
  000f0000-000fffff : System ROM
00100000-3ffdffff : System RAM
  1e000000-1f7fffff : Kernel code
  1f800000-1ff0ffff : Kernel rodata
  2f000000-36ffffff : Crash kernel
3ffe0000-3fffffff : Reserved
40000000-febfffff : PCI Bus 0000:00
fffc0000-ffffffff : Reserved
"""


def fake_bzimage(cmdline_size: int = 2047, version: str = RELEASE_61, signed: bool = True) -> bytes:
    """Enough of an x86 bzImage for kdumpy: MZ/PE headers (with or without a security directory)
    and the setup header (HdrS, protocol 2.15, XLF_KERNEL_64, cmdline_size, kernel_version)."""
    data = bytearray(0x5000)
    data[0:2] = b"MZ"
    pe = 0x80
    struct.pack_into("<I", data, 0x3C, pe)
    data[pe : pe + 4] = b"PE\0\0"
    opt = pe + 24
    struct.pack_into("<H", data, opt, 0x20B)
    struct.pack_into("<I", data, opt + 108, 6)
    struct.pack_into("<II", data, opt + 112 + 4 * 8, 0x4000 if signed else 0, 0x800 if signed else 0)
    data[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", data, 0x206, 0x020F)
    struct.pack_into("<H", data, 0x236, 0x1 | 0x2)
    struct.pack_into("<I", data, 0x238, cmdline_size)
    struct.pack_into("<I", data, 0x260, 40 << 20)
    vstr = (version + " (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian").encode() + b"\0"
    # kernel_version points where Debian's 6.1.0-56 image has it: past the first 16 KiB.
    struct.pack_into("<H", data, 0x20E, 0x42C0)
    data[0x44C0 : 0x44C0 + len(vstr)] = vstr
    return bytes(data)


def build_root(
    base: Path,
    *,
    release: str = RELEASE_61,
    cmdline: str = "BOOT_IMAGE=/boot/vmlinuz console=ttyS0 crashkernel=128M panic=1 quiet",
    crash_size: int = 128 << 20,
    loaded: int = 0,
    iomem: str = IOMEM_1G,
    config: bool = True,
) -> Path:
    def put(path: str, text: str | bytes) -> None:
        p = base / path.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            p.write_bytes(text)
        else:
            p.write_text(text)

    put("/proc/cmdline", cmdline + "\n")
    put("/proc/iomem", iomem if crash_size else iomem.replace("  2f000000-36ffffff : Crash kernel\n", ""))
    put("/proc/meminfo", "MemTotal:         863804 kB\n")
    put("/proc/sys/kernel/osrelease", release + "\n")
    put("/proc/sys/kernel/arch", "x86_64\n")
    put("/proc/sys/kernel/kexec_load_disabled", "0\n")
    for name, value in (
        ("kernel/panic_on_oops", 0),
        ("kernel/panic_on_warn", 0),
        ("kernel/softlockup_panic", 0),
        ("kernel/hung_task_panic", 0),
        ("kernel/unknown_nmi_panic", 0),
        ("kernel/panic", 1),
        ("vm/panic_on_oom", 0),
    ):
        put(f"/proc/sys/{name}", f"{value}\n")
    put("/proc/sysrq-trigger", "")
    put("/sys/kernel/kexec_crash_size", f"{crash_size}\n")
    put("/sys/kernel/kexec_crash_loaded", f"{loaded}\n")
    put("/sys/kernel/security/lockdown", "[none] integrity confidentiality\n")
    put(f"/boot/vmlinuz-{release}", fake_bzimage(version=release))
    put(f"/boot/initrd.img-{release}", b"\x1f\x8b" + b"\0" * 4096)
    if config:
        cfg = DATA / f"config-{release}.gz"
        put(f"/boot/config-{release}", gzip.decompress(cfg.read_bytes()).decode())
    (base / "etc/default/grub.d").mkdir(parents=True, exist_ok=True)
    put("/etc/default/grub", 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n')
    (base / "var/crash").mkdir(parents=True, exist_ok=True)
    return base


@pytest.fixture
def fake_root(tmp_path: Path) -> Callable[..., Path]:
    """fake_root(**kw) -> the root directory (see build_root for the keywords)."""
    counter = iter(range(1000))

    def make(**kw: object) -> Path:
        return build_root(tmp_path / f"root{next(counter)}", **kw)  # type: ignore[arg-type]

    return make


@pytest.fixture
def make_bzimage() -> Callable[..., bytes]:
    """fake_bzimage(cmdline_size=..., version=..., signed=...) -> bytes."""
    return fake_bzimage
