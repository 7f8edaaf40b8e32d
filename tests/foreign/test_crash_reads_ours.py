"""crash 8.0.2 (it links zlib, lzo, snappy and zstd), with the matching debug vmlinux, opens kdumpy's
outputs of the 6.1 vmcore in every codec, as ELF and as a flattened stream, and its `log` is the same
text as its `log` of the source vmcore.

Not ELF32: crash's is_netdump() (netdump.c) takes an ELFCLASS32 core only for EM_386, ARM, PPC and
MIPS, so it refuses any x86_64 ELF32 vmcore ("machine type mismatch ... (unknown)"), the kernel's own
(vmcore_61_elf32) as kdumpy's (the last test here); makedumpfile and drgn read kdumpy's ELF32 output
instead (test_makedumpfile_reads_ours.py, test_drgn_reads_ours.py).
"""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from tests.foreign.conftest import CODECS, Artifacts, run, tool

pytestmark = [pytest.mark.foreign, pytest.mark.lab]

CASES = [("kdump", codec) for codec in CODECS] + [("elf", "none"), ("flat", "lzo")]

_SOURCE_LOG: dict[Path, str] = {}


def crash_log(vmlinux: Path, dump: Path, tmp_path: Path) -> str:
    """crash's `log` of `dump`, run silently (-s: no banner) from a command file."""
    cmds = tmp_path / "crash.cmds"
    cmds.write_text("log\nq\n")
    proc = run([tool("crash"), "-s", vmlinux, dump, "-i", cmds], timeout=300)
    return proc.stdout.decode(errors="replace")


@pytest.mark.parametrize(("fmt", "codec"), CASES)
def test_crash_log_of_our_output_equals_its_log_of_the_source(
    fmt: str, codec: str, vmcore_61: Path, vmlinux_61: Path, artifacts: Artifacts, tmp_path: Path
) -> None:
    if vmcore_61 not in _SOURCE_LOG:
        _SOURCE_LOG[vmcore_61] = crash_log(vmlinux_61, vmcore_61, tmp_path)
    want = _SOURCE_LOG[vmcore_61]
    assert "Linux version" in want and len(want.splitlines()) > 100, want[-2000:]
    got = crash_log(vmlinux_61, artifacts.ours(vmcore_61, fmt, codec), tmp_path)
    if got != want:
        diff = difflib.unified_diff(want.splitlines(), got.splitlines(), "source", "ours", lineterm="", n=1)
        pytest.fail("crash log differs:\n" + "\n".join(list(diff)[:40]))


@pytest.mark.parametrize("source", ["kernel", "kdumpy"])
def test_crash_refuses_an_x86_64_elf32_vmcore(
    source: str,
    request: pytest.FixtureRequest,
    vmlinux_61: Path,
    artifacts: Artifacts,
    tmp_path: Path,
) -> None:
    if source == "kernel":  # /proc/vmcore of a capture kernel loaded with ELF32 core headers
        dump: Path = request.getfixturevalue("vmcore_61_elf32")
    else:
        dump = artifacts.ours(request.getfixturevalue("vmcore_61"), "elf32", "none")
    cmds = tmp_path / "crash.cmds"
    cmds.write_text("log\nq\n")
    proc = run([tool("crash"), "-s", vmlinux_61, dump, "-i", cmds], timeout=300, check=False)
    said = (proc.stdout + proc.stderr).decode(errors="replace")  # crash prints both on stdout
    assert proc.returncode != 0
    assert "machine type mismatch" in said and "not a supported file format" in said, said
