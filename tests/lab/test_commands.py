"""The lab's commands, run as a user runs them: `kdumpy lab demo` end to end, and `kdumpy lab snapshot`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kdumpy.memory.dump import KdumpDump, open_dump

pytestmark = pytest.mark.lab


def _kdumpy(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kdumpy", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_demo_boots_crashes_captures_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = _kdumpy("lab", "demo", "--out", str(out), "--timeout", "500", timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    # Armed by kdumpy load, saved by kdumpy dump in the capture kernel, read by kdumpy report.
    assert "armed" in proc.stdout
    assert "Panic       sysrq triggered crash" in proc.stdout
    assert "Class       sysrq" in proc.stdout
    assert "done: the dump shows 'sysrq triggered crash'" in proc.stdout
    dump = out / "dump.kdump"
    assert dump.stat().st_mode & 0o777 == 0o600
    with open_dump(dump) as d:
        assert d.format == "kdump" and isinstance(d, KdumpDump)
        assert d.dd.dump_level == 31 and d.dd.codec.name == "lzo" and not d.incomplete
    assert (out / "report.txt").read_text().startswith("Dump")


def test_snapshot_of_a_running_guest_has_vmcoreinfo(tmp_path: Path) -> None:
    dump = tmp_path / "snap.elf"
    args = ["lab", "snapshot", "--kernel", "6.1", "--ram", "512M", "--out", str(dump), "--timeout", "300"]
    proc = _kdumpy(*args, timeout=400)
    try:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
        assert "VMCOREINFO note present" in proc.stdout
        with dump.open("rb") as f:
            head = f.read(1 << 20)
        assert head[:4] == b"\x7fELF"
        assert b"OSRELEASE=6.1." in head
    finally:
        dump.unlink(missing_ok=True)
