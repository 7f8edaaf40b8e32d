"""`kdumpy lab demo`: the README's main command. Builds what is missing, boots Debian's 6.1 in
QEMU, arms kdump, crashes the kernel, lets the capture kernel save the dump, and reports on it.

Every step is kdumpy's own, run as a user would run it: `kdumpy load` arms the first kernel,
`kdumpy dump -l -d 31` saves a filtered dump in the capture kernel, and `kdumpy report` reads it
on the host.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from kdumpy.lab import assets, initramfs
from kdumpy.lab.report import shows
from kdumpy.lab.scenario import TRIGGERS, Scenario, run_crash

__all__ = ["demo"]


CRASHKERNEL = "192M"
"""Room to spare for kdumpy dump in the capture kernel: 112M is the measured minimum
(docs/collector.md, "Capture kernel"); makedumpfile needs 96M."""
CAPTURE = "{python} -m kdumpy dump -l -d 31 --message-level 7 /proc/vmcore {out}/dump.kdump"


def _kdumpy(*args: str) -> str | None:
    """`kdumpy ARGS` as a separate program, as a user would run it; None if it fails."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "kdumpy", *args],
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
    step(
        f"booting it in QEMU with crashkernel={CRASHKERNEL}, arming with `kdumpy load`, crashing it "
        f"with {trigger}; the capture kernel runs `kdumpy dump -l -d 31`"
    )
    sc = Scenario(kernel=kernel, trigger=trigger, crashkernel=CRASHKERNEL, capture_cmd=CAPTURE)
    # A second demo in the same directory starts clean (kdumpy dump refuses to overwrite a dump).
    for old in ("dump.kdump", "dump.kdump-incomplete", "dmesg.txt", "report.txt"):
        (out_dir / old).unlink(missing_ok=True)
    result = run_crash(
        sc, out_dir, cache, accel=accel, timeout=timeout, progress=lambda m: step("  guest " + m)
    )
    dump = out_dir / "dump.kdump"
    if not dump.exists():
        step(f"the capture kernel saved no dump: see {result.console}")
        return 1
    step(f"capture saved: {dump} ({dump.stat().st_size / 1e6:.1f} MB, kdump-compressed, lzo, level 31)")

    step("reading the dead kernel's log and the crash out of the dump (kdumpy dmesg, kdumpy report)")
    log = _kdumpy("dmesg", str(dump)) or ""
    (out_dir / "dmesg.txt").write_text(log)
    report = _kdumpy("report", str(dump))
    write("")
    if report is None:
        step("kdumpy report failed on the dump")
        return 1
    (out_dir / "report.txt").write_text(report + "\n")
    for line in report.splitlines():
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
