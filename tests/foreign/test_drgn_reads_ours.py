"""drgn (its bundled libkdumpfile reads kdump-compressed files) opens kdumpy's outputs of the 6.1 and
6.12 vmcores, and `get_dmesg()` returns the same bytes as on the source vmcore.

Not ELF32: drgn takes an x86_64 ELFCLASS32 core for a 32-bit platform (x32) and cuts every kernel
address to 32 bits, so it reads the right bytes only when KASLR happens to keep the cut ranges of the
direct map and the kernel image apart (a new capture of the same scenario failed with "address is not
mapped"). The last test pins that fact; makedumpfile and kdumpy check the ELF32 files.

drgn runs in a child interpreter, so a hang or a crash in libkdumpfile is bounded by a timeout.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.foreign.conftest import Artifacts, run

pytestmark = [pytest.mark.foreign, pytest.mark.lab]

_DMESG = """
import sys
import drgn
from drgn.helpers.linux.printk import get_dmesg

prog = drgn.Program()
prog.set_core_dump(sys.argv[1])
prog.load_debug_info([sys.argv[2]])
sys.stdout.buffer.write(get_dmesg(prog))
"""

CASES = [
    *[("vmcore_61", "vmlinux_61", "kdump", c) for c in ("zlib", "lzo", "snappy", "zstd")],
    ("vmcore_61", "vmlinux_61", "flat", "lzo"),
    *[("vmcore_612", "vmlinux_612", "kdump", c) for c in ("zlib", "lzo", "snappy", "zstd")],
]

_SOURCE: dict[Path, bytes] = {}


def drgn_dmesg(dump: Path, vmlinux: Path, *, codec: str | None = None) -> bytes:
    proc = run([sys.executable, "-c", _DMESG, dump, vmlinux], timeout=300, check=False)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        if codec and "compress" in err.lower():
            pytest.skip(f"drgn's libkdumpfile cannot read {codec}: {err.splitlines()[-1]}")
        pytest.fail(f"drgn on {dump} exited {proc.returncode}:\n{err[-3000:]}")
    return proc.stdout


@pytest.mark.parametrize(("name", "debug", "fmt", "codec"), CASES)
def test_drgn_get_dmesg_of_our_output_equals_the_source(
    name: str, debug: str, fmt: str, codec: str, request: pytest.FixtureRequest, artifacts: Artifacts
) -> None:
    src: Path = request.getfixturevalue(name)
    vmlinux: Path = request.getfixturevalue(debug)
    if src not in _SOURCE:
        _SOURCE[src] = drgn_dmesg(src, vmlinux)
    want = _SOURCE[src]
    assert b"Linux version" in want and want.count(b"\n") > 100
    ours = artifacts.ours(src, fmt, codec)
    got = drgn_dmesg(ours, vmlinux, codec=codec)
    if got != want:
        a, b = want.splitlines(), got.splitlines()
        i = next((k for k in range(min(len(a), len(b))) if a[k] != b[k]), min(len(a), len(b)))
        pytest.fail(f"dmesg differs from line {i}: source {a[i : i + 1]!r}, ours {b[i : i + 1]!r}")


_PLATFORM = """
import sys
import drgn

prog = drgn.Program()
prog.set_core_dump(sys.argv[1])
print(bool(prog.platform.flags & drgn.PlatformFlags.IS_64_BIT))
"""


@pytest.mark.parametrize("source", ["ours", "kernel"])
def test_drgn_takes_an_x86_64_elf32_core_for_a_32_bit_platform(
    source: str, request: pytest.FixtureRequest, artifacts: Artifacts
) -> None:
    if source == "ours":
        dump = artifacts.ours(request.getfixturevalue("vmcore_61"), "elf32", "none")
    else:
        dump = request.getfixturevalue("vmcore_61_elf32")  # the capture kernel's own ELF32 /proc/vmcore
    with open(dump, "rb") as f:
        assert f.read(5)[4] == 1  # ELFCLASS32
    assert run([sys.executable, "-c", _PLATFORM, dump], timeout=120).stdout.strip() == b"False"
    # The same capture as ELF64 is 64-bit to drgn.
    elf64 = request.getfixturevalue("vmcore_61")
    assert run([sys.executable, "-c", _PLATFORM, elf64], timeout=120).stdout.strip() == b"True"
