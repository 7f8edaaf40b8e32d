"""Foreign readers on `kdumpy dump -d 31` output of a real 6.1 vmcore: makedumpfile's --dump-dmesg
gives the same log as from the source vmcore (lzo, zlib, -E, -F rebuilt by makedumpfile -R), and crash
with the debug vmlinux opens the lzo and zstd files and runs `log`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from tests.foreign.conftest import kdumpy, tool

pytestmark = [pytest.mark.foreign, pytest.mark.lab]


def _dmesg(path: Path, out: Path) -> bytes:
    proc = subprocess.run([tool("makedumpfile"), "--dump-dmesg", str(path), str(out)],
                          capture_output=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return out.read_bytes()


@pytest.mark.parametrize("opts", [["-l"], ["-c"], ["-E"], ["-F", "-l"]], ids=["lzo", "zlib", "elf", "flat"])
def test_makedumpfile_reads_the_log_of_our_dump(vmcore_61: Path, tmp_path: Path, opts: list[str]) -> None:
    source_log = _dmesg(vmcore_61, tmp_path / "source.log")
    out = tmp_path / "dump"
    if "-F" in opts:
        flat = tmp_path / "dump.flat"
        kdumpy("dump", *opts, "-d", "31", "--message-level", "0", vmcore_61, stdout=flat)
        with flat.open("rb") as f:
            subprocess.run([tool("makedumpfile"), "-R", str(out)], stdin=f, check=True, timeout=120,
                           capture_output=True)
    else:
        kdumpy("dump", *opts, "-d", "31", "--message-level", "0", vmcore_61, out)
    assert _dmesg(out, tmp_path / "ours.log") == source_log


@pytest.mark.parametrize("codec", ["-l", "-z"])
def test_crash_opens_our_dump_and_prints_the_log(
    vmcore_61: Path, vmlinux_61: Path, tmp_path: Path, codec: str
) -> None:
    out = tmp_path / "dump"
    kdumpy("dump", codec, "-d", "31", "--message-level", "0", vmcore_61, out)
    cmds = tmp_path / "cmds"
    cmds.write_text("log\nquit\n")
    proc = subprocess.run([tool("crash"), "-s", "-i", str(cmds), str(vmlinux_61), str(out)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "sysrq" in proc.stdout.lower(), proc.stdout[-2000:]
