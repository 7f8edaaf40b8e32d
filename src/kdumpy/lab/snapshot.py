"""`kdumpy lab snapshot`: QEMU's dump-guest-memory of a running (not crashed) guest.

The ELF that QEMU writes carries the guest's VMCOREINFO note when the guest has handed it over:
that needs `-device vmcoreinfo` and the qemu_fw_cfg module loaded in the guest (lab pitfall 4);
/init loads it with the other guest modules.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kdumpy.errors import LabError, UsageError
from kdumpy.lab import assets, initramfs
from kdumpy.lab.cache import locked
from kdumpy.lab.disk import data_disk
from kdumpy.lab.plan import write_plan
from kdumpy.lab.qemu import MARKER, Guest, Running
from kdumpy.lab.qmp import Qmp
from kdumpy.lab.scenario import choose_accel, guest_python, workload_command

__all__ = ["FORMATS", "SnapshotResult", "snapshot"]

# What this QEMU (7.2, Debian) offers: no lzo or snappy in its build.
FORMATS = ("elf", "kdump-zlib")


@dataclass
class SnapshotResult:
    """The dump and what it took."""

    path: Path
    release: str
    seconds_to_idle: float
    seconds_to_dump: float
    has_vmcoreinfo: bool


def snapshot(
    kernel: str,
    dest: Path,
    cache: Path,
    *,
    ram: str = "1G",
    workload: str = "idle",
    fmt: str = "elf",
    la57: bool = False,
    accel: str = "auto",
    timeout: float = 600,
    progress: Callable[[str], None] | None = None,
) -> SnapshotResult:
    """Boot `kernel`, bring it to idle (after the workload, if any), dump its memory to `dest`."""
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    say = progress or (lambda _msg: None)
    k = assets.kernel(kernel, cache)
    initrd = initramfs.build(k, cache)
    disk = data_disk(cache) if workload == "mix" else None
    accel = choose_accel(accel, k, initrd, cache)
    dest = dest.resolve()
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="kdumpy-snap-"))
    try:
        python = guest_python()
        workload_cmd = workload_command(workload, python, work / "workload.json")
        values = {
            "LAB_MODE": "idle",
            "LAB_SYSCTLS": "",
            "LAB_DISK": "1" if disk else "",
            "LAB_ARM": "",
            "LAB_WORKLOAD_CMD": workload_cmd,
            "LAB_CAPTURE_CMD": "",
        }
        write_plan(work, values)
        guest = Guest(
            k.vmlinuz,
            initrd,
            "console=ttyS0 panic=1 quiet loglevel=4",
            work,
            ram=ram,
            accel=accel,
            la57=la57,
            disk=disk,
            qmp=work / "qmp.sock",
        )
        with locked(cache / "locks" / "qemu"), Running(guest, work / "console.log") as run:
            run.wait_for(MARKER + "idle", timeout=min(timeout, 600))
            idle = run.elapsed()
            say(f"{idle:6.1f}s  guest {k.release} idle; dumping its memory ({fmt})")
            t0 = time.monotonic()
            with Qmp(work / "qmp.sock") as qmp:
                # Synchronous: QMP answers when the file is complete.
                qmp.command(
                    "dump-guest-memory", timeout=timeout, paging=False, protocol=f"file:{dest}", format=fmt
                )
                dumped = time.monotonic() - t0
                # QEMU may close the socket before it answers.
                with contextlib.suppress(LabError):
                    qmp.command("quit")
            run.wait_exit(10)
        if fmt == "elf":
            with dest.open("rb") as f:
                has_note = b"VMCOREINFO" in f.read(1 << 20)
        else:
            has_note = True  # kdump-compressed: QEMU stores VMCOREINFO in the sub-header
        dest.chmod(0o600)
        say(f"{dumped:6.1f}s  wrote {dest} ({dest.stat().st_size / 1e6:.0f} MB)")
        return SnapshotResult(dest, k.release, round(idle, 1), round(dumped, 1), has_note)
    finally:
        shutil.rmtree(work, ignore_errors=True)
