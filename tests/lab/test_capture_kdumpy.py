"""`kdumpy dump -l -d 31` as the core collector inside a real 6.12 capture kernel (crashkernel=192M,
nr_cpus=1), as kdump-utils' kdump.conf would run it; 6.1 is covered by the demo test
(tests/lab/test_commands.py). The dump must read back with the crashed kernel's release, dump level
31, and the crash in its log."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kdumpy.lab.cache import cache_dir
from kdumpy.lab.report import dump_dmesg
from kdumpy.lab.scenario import Scenario, run_crash

pytestmark = pytest.mark.lab

CAPTURE = "{python} -m kdumpy dump -l -d 31 --message-level 7 /proc/vmcore {out}/dump.kdump"


def test_kdumpy_dump_in_the_612_capture_kernel(
    tmp_path: Path, lab_kernels: dict[str, dict[str, str]]
) -> None:
    out = tmp_path / "capture"
    sc = Scenario(kernel="6.12", trigger="sysrq", crashkernel="192M", capture_cpus=1, capture_cmd=CAPTURE)
    # About 60 s under TCG once QEMU is ours (6.12 reads /proc/vmcore slowly); bounded at 3 minutes.
    run_crash(sc, out, cache_dir(), timeout=180)
    console = (out / "console.log").read_text(errors="replace")
    assert "capture done rc=0" in console
    dump = out / "dump.kdump"
    assert dump.exists(), f"no dump (console: {out / 'console.log'})"
    assert dump.stat().st_mode & 0o777 == 0o600

    proc = subprocess.run(
        [sys.executable, "-m", "kdumpy", "info", "--json", str(dump)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    info = json.loads(proc.stdout)[0]
    assert info["release"] == lab_kernels["6.12"]["release"]
    assert info["format"] == "kdump"
    assert info["codec"] == "lzo"
    assert info["dump_level"] == 31
    assert info["complete"] is True
    assert 0 < info["pages"]["present"] < info["max_pfn"] // 4

    log = dump_dmesg(dump)
    assert "sysrq triggered crash" in log
