"""The lab's commands, run as a user runs them: `kdumpy lab demo` end to end, and `kdumpy lab snapshot`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab


def _kdumpy(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kdumpy", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_demo_boots_crashes_captures_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = _kdumpy("lab", "demo", "--out", str(out), "--timeout", "500", timeout=600)
    try:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
        assert "Kernel panic - not syncing: sysrq triggered crash" in proc.stdout
        assert "done: the dump shows 'sysrq triggered crash'" in proc.stdout
        assert (out / "vmcore").stat().st_mode & 0o777 == 0o600
    finally:
        # About 1 GB: do not leave it in pytest's kept temporary directories.
        (out / "vmcore").unlink(missing_ok=True)


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
