"""Run host commands in a lab guest's first kernel, with any crashkernel= (or none) and any RAM, and
optionally crash it and run a command in the capture kernel: the arming acceptance tests' hook.

It drives the lab's own /init through plan.sh, as the crash scenarios do: LAB_ARM (checked by /init:
kexec_crash_loaded must read 1 after it) arms, LAB_TRIGGER_CMD runs the first-kernel script through
chroot into the host root, and either powers off or crashes; LAB_CAPTURE_CMD runs in the capture
kernel. Scripts are shell text with {out} (the output directory's host path) and {python} (the venv
interpreter, so `{python} -m kdumpy ...`) filled in. Only the lab's public functions are used.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kdumpy.errors import LabError
from kdumpy.lab import assets, initramfs
from kdumpy.lab.cache import cache_dir, locked
from kdumpy.lab.plan import write_plan
from kdumpy.lab.qemu import MARKER, Guest, Running
from kdumpy.lab.scenario import choose_accel, guest_python

__all__ = ["GuestRun", "kernel_config", "kernel_paths", "run"]


@dataclass
class GuestRun:
    """What a guest run left: its output directory (files the scripts wrote), console and timings."""

    out_dir: Path
    console: Path
    release: str
    script_rc: int | None = None
    """Exit status of the first-kernel script (None when it crashed the kernel)."""
    capture_rc: int | None = None
    """Exit status of the capture-kernel script (None without a crash)."""
    timings: dict[str, float] = field(default_factory=dict)

    def read(self, name: str) -> str:
        return (self.out_dir / name).read_text()


def kernel_paths(series: str, cache: Path | None = None) -> tuple[Path, Path, str]:
    """(vmlinuz, initrd, release) of a lab kernel, as host paths a guest sees through the host root."""
    c = cache_dir(cache)
    k = assets.kernel(series, c)
    return k.vmlinuz, initramfs.build(k, c), k.release


def kernel_config(series: str, cache: Path | None = None) -> Path:
    """The kernel's /boot/config-<release>, extracted once from its cached .deb (the guest's /boot is
    the host's, which does not hold it)."""
    c = cache_dir(cache)
    k = assets.kernel(series, c)
    dest = c / "kernels" / k.release / f"config-{k.release}"
    if dest.exists():
        return dest
    debs = sorted((c / "debs").glob(f"{k.package}_*.deb"))
    if not debs:
        raise LabError(f"no .deb of {k.package} in {c / 'debs'} to take the kernel config from")
    member = f"./boot/config-{k.release}"
    fsys = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(debs[-1])], stdout=subprocess.PIPE)
    try:
        tar = subprocess.run(
            ["tar", "-x", "-O", member], stdin=fsys.stdout, capture_output=True, timeout=600, check=False
        )
    finally:
        if fsys.stdout:
            fsys.stdout.close()
        fsys.wait(timeout=60)
    if tar.returncode != 0 or not tar.stdout:
        raise LabError(f"cannot extract {member} from {debs[-1].name}: {tar.stderr.decode(errors='replace')}")
    tmp = dest.with_suffix(".tmp")
    tmp.write_bytes(tar.stdout)
    tmp.replace(dest)
    return dest


def run(
    series: str,
    out_dir: Path,
    script: str,
    *,
    crashkernel: str | None = "128M",
    ram: str = "1G",
    extra_cmdline: str = "",
    arm: str = "",
    crash: bool = False,
    capture_script: str = "",
    timeout: float = 300,
    cache: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> GuestRun:
    """Boot `series` with `ram` and crashkernel= (None: none at all), run `arm` then `script` in the
    first kernel; unless `crash`, power off after the script. With `crash`, the script is expected
    to crash the kernel and `capture_script` runs in the capture kernel."""
    say = progress or (lambda _m: None)
    c = cache_dir(cache)
    k = assets.kernel(series, c)
    initrd = initramfs.build(k, c)
    accel = choose_accel("auto", k, initrd, c)
    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    python = guest_python()

    def fill(text: str) -> str:
        return text.replace("{out}", shlex.quote(str(out_dir))).replace("{python}", shlex.quote(python))

    first = f"chroot /hostroot /bin/sh -c {shlex.quote(fill(script))} >/out/first.log 2>&1"
    if crash:
        trigger = f'{first}; echo "{MARKER}script did not crash rc=$?"; sync; poweroff -f'
    else:
        trigger = f'{first}; echo "{MARKER}script done rc=$?"; sync; poweroff -f'
    plan = {
        "LAB_MODE": "crash",
        "LAB_SYSCTLS": "",
        "LAB_DISK": "",
        "LAB_ARM": fill(arm),
        "LAB_WORKLOAD_CMD": "",
        "LAB_TRIGGER": "guestcmd",
        "LAB_TRIGGER_CMD": trigger,
        "LAB_CAPTURE_CMD": fill(capture_script) if capture_script else "true",
    }
    write_plan(out_dir, plan)
    cmdline = "console=ttyS0 panic=1 quiet loglevel=4 lab.role=first"
    if crashkernel is not None:
        cmdline += f" crashkernel={crashkernel}"
    if extra_cmdline:
        cmdline += " " + extra_cmdline
    console = out_dir / "console.log"
    result = GuestRun(out_dir, console, k.release)
    guest = Guest(k.vmlinuz, initrd, cmdline, out_dir, ram=ram, accel=accel)
    with locked(c / "locks" / "qemu"), Running(guest, console) as r:

        def step(label: str, pattern: str, bound: float, start: int = 0) -> tuple[int, str]:
            i, m = r.wait_for(pattern, timeout=min(bound, timeout), start=start)
            result.timings[label] = round(r.elapsed(), 1)
            say(f"{r.elapsed():6.1f}s {series} {label}")
            return i, m.group(1) if m.groups() else m.group(0)

        i, _ = step("first kernel up", MARKER + "first kernel up", 180)
        if arm:
            i, _ = step("armed", MARKER + "armed", 120, i)
        i, _ = step("script", MARKER + "trigger guestcmd", 60, i)
        if not crash:
            _, rc = step("script done", MARKER + r"script done rc=(\d+)", timeout, i)
            result.script_rc = int(rc)
        else:
            try:
                i, _ = step("capture kernel up", MARKER + "capture kernel up", 180, i)
            except LabError as e:
                log = (out_dir / "first.log").read_text() if (out_dir / "first.log").exists() else ""
                raise LabError(f"{e}; first-kernel script output: {log.strip()[-500:]}") from e
            _, rc = step("capture done", MARKER + r"capture done rc=(\d+)", 300, i)
            result.capture_rc = int(rc)
        r.wait_exit(30)
    return result
