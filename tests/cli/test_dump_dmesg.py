"""`kdumpy dump --dump-dmesg VMCORE LOGFILE`: makedumpfile's option, makedumpfile's bytes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.lab, pytest.mark.foreign]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kdumpy", *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_dump_dmesg_writes_makedumpfiles_text_and_refuses_to_overwrite(
    vmcore_61: Path, tmp_path: Path
) -> None:
    ours, theirs = tmp_path / "ours.txt", tmp_path / "theirs.txt"
    done = _run("dump", "--dump-dmesg", str(vmcore_61), str(ours))
    assert done.returncode == 0, done.stderr
    subprocess.run(["makedumpfile", "--dump-dmesg", str(vmcore_61), str(theirs)], check=True,
                   capture_output=True, timeout=120)  # fmt: skip
    assert ours.read_bytes() == theirs.read_bytes()
    again = _run("dump", "--dump-dmesg", str(vmcore_61), str(ours))
    assert again.returncode == 1 and "exists" in again.stderr
    assert _run("dump", "-f", "--dump-dmesg", str(vmcore_61), str(ours)).returncode == 0
