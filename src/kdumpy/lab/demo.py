"""`kdumpy lab demo`: the README's main command. Builds what is missing, boots Debian's 6.1 in
QEMU, arms kdump, crashes the kernel, lets the capture kernel save the dump, and reports on it.

Arming is kexec-tools' and the capture is dd of /proc/vmcore until kdumpy's loader and collector
land; the report is makedumpfile's dmesg plus `kdumpy info` when that command works.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from kdumpy.lab import assets, initramfs
from kdumpy.lab.report import dump_dmesg, panic_lines, shows
from kdumpy.lab.scenario import TRIGGERS, Scenario, run_crash

__all__ = ["demo"]


def _kdumpy_info(dump: Path) -> str | None:
    """`kdumpy info DUMP` as a separate program, as a user would run it; None if it fails."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "kdumpy", "info", str(dump)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0 or not proc.stdout.strip():
        return None
    return proc.stdout.rstrip()


def demo(
    cache: Path,
    out_dir: Path,
    *,
    kernel: str = "6.1",
    trigger: str = "sysrq",
    accel: str = "auto",
    timeout: float = 600,
    write: Callable[[str], None] = print,
) -> int:
    """Run the demo, writing progress and the report through `write`; 0 when the dump shows the crash."""
    t0 = time.monotonic()

    def step(msg: str) -> None:
        write(f"[{time.monotonic() - t0:6.1f}s] {msg}")

    step(f"resolving and fetching the Debian {kernel} kernel (cached after the first run)")
    k = assets.kernel(kernel, cache)
    step(f"kernel {k.release} from {k.package} {k.version}")
    initrd = initramfs.build(k, cache)
    step(
        f"initramfs {initrd.name} ({initrd.stat().st_size / 1e6:.1f} MB: "
        f"busybox, /init, {len(k.modules)} modules)"
    )
    step(f"booting it in QEMU, arming kdump with kexec -s -p, crashing it with {trigger}")
    sc = Scenario(kernel=kernel, trigger=trigger)
    result = run_crash(
        sc, out_dir, cache, accel=accel, timeout=timeout, progress=lambda m: step("  guest " + m)
    )
    assert result.vmcore is not None
    step(f"capture saved: {result.vmcore} ({result.vmcore.stat().st_size / 1e6:.0f} MB, ELF /proc/vmcore)")

    step("reading the dead kernel's log out of the dump (makedumpfile --dump-dmesg)")
    log = dump_dmesg(result.vmcore)
    (out_dir / "dmesg.txt").write_text(log)
    write("")
    write("== why it died ==")
    for line in panic_lines(log):
        write("  " + line)
    write("== last lines of its log ==")
    for line in log.splitlines()[-12:]:
        write("  " + line)
    info = _kdumpy_info(result.vmcore)
    if info is not None:
        write("== kdumpy info ==")
        for line in info.splitlines():
            write("  " + line)
    write("")
    found = shows(log, TRIGGERS[trigger].expect)
    timings = ", ".join(f"{k_} {v:.0f}s" for k_, v in result.timings.items())
    step(f"guest timeline: {timings}")
    if found is None:
        step(f"the dump's log does not show the {trigger} crash: see {result.console}")
        return 1
    step(f"done: the dump shows {found!r}; files in {out_dir}")
    return 0
