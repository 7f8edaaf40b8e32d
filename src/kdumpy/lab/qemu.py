"""One QEMU guest at a time, bounded in time, leaving no process behind.

The serial console is read line by line in a thread; the lab waits for "KDUMPY-LAB: ..." markers
rather than for QEMU's exit code, which is 0 whether the capture worked or the guest panicked
(`panic=1` with `-no-reboot`, lab pitfall 6).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

from kdumpy.errors import LabError

__all__ = ["MARKER", "Guest", "Running", "kvm_usable"]

MARKER = "KDUMPY-LAB: "
QEMU = "qemu-system-x86_64"


@dataclass
class Guest:
    """What to boot and how."""

    vmlinuz: Path
    initrd: Path
    cmdline: str
    out_dir: Path
    """Exported read-write as 9p tag "out"; the guest finds plan.sh there and leaves its results."""
    ram: str = "1G"
    smp: int = 2
    accel: str = "tcg"
    la57: bool = False
    """Plain `-cpu max` under TCG turns 5-level paging on; by default it is turned off (pitfall 5)."""
    disk: Path | None = None
    """A raw image given as a virtio disk, with snapshot=on so the cached image never changes."""
    qmp: Path | None = None
    """A unix socket for QMP (inject-nmi, dump-guest-memory)."""

    def command(self) -> list[str]:
        if self.accel == "kvm":
            accel, cpu = ["-accel", "kvm"], "host"
        else:
            accel, cpu = ["-accel", "tcg"], "max" if self.la57 else "max,la57=off"
        cmd = [
            QEMU,
            *accel,
            "-cpu",
            cpu,
            "-m",
            self.ram,
            "-smp",
            str(self.smp),
            "-kernel",
            str(self.vmlinuz),
            "-initrd",
            str(self.initrd),
            "-append",
            self.cmdline,
            "-nodefaults",
            "-display",
            "none",
            "-vga",
            "none",
            "-serial",
            "stdio",
            "-monitor",
            "none",
            "-no-reboot",
            # Lets the guest hand VMCOREINFO to QEMU (through qemu_fw_cfg) for dump-guest-memory.
            "-device",
            "vmcoreinfo",
            "-virtfs",
            f"local,path={self.out_dir},mount_tag=out,security_model=none,id=out",
            # "/" spans several host filesystems: remap inode numbers so they stay unique (pitfall 8).
            "-virtfs",
            "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,id=hostroot,multidevs=remap",
        ]
        if self.disk is not None:
            cmd += ["-drive", f"file={self.disk},format=raw,if=virtio,snapshot=on"]
        if self.qmp is not None:
            cmd += ["-qmp", f"unix:{self.qmp},server=on,wait=off"]
        return cmd


@dataclass
class Running:
    """A started guest: its console lines, and waits on markers. Use as a context manager: leaving
    it kills QEMU's whole process group if it is still there."""

    guest: Guest
    console_log: Path
    echo: IO[str] | None = None
    """Where to copy the console as it arrives (e.g. sys.stderr for --verbose)."""
    lines: list[str] = field(default_factory=list)
    started: float = 0.0
    _proc: subprocess.Popen[bytes] | None = None
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _reader: threading.Thread | None = None

    def __enter__(self) -> Running:
        self.started = time.monotonic()
        try:
            # A session of its own, so a timeout kills QEMU and anything it started, and nothing else.
            self._proc = subprocess.Popen(
                self.guest.command(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except FileNotFoundError as e:
            raise LabError(f"{QEMU} is not installed (run tools/setup.sh)") from e
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.kill()

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        with self.console_log.open("w") as log:
            for raw in self._proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                log.write(f"[{self.elapsed():7.2f}] {line}\n")
                log.flush()
                if self.echo is not None:
                    self.echo.write(line + "\n")
                    self.echo.flush()
                with self._cond:
                    self.lines.append(line)
                    self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def wait_for(self, *patterns: str, timeout: float, start: int = 0) -> tuple[int, re.Match[str]]:
        """The first console line from index `start` on that matches one of the regular expressions,
        as (index, match); a LabError when QEMU exits or `timeout` seconds pass first."""
        compiled = [re.compile(p) for p in patterns]
        deadline = time.monotonic() + timeout
        i = start
        with self._cond:
            while True:
                while i < len(self.lines):
                    for c in compiled:
                        m = c.search(self.lines[i])
                        if m:
                            return i, m
                    i += 1
                error = next((ln for ln in self.lines if MARKER + "ERROR" in ln), None)
                if error is not None:
                    raise LabError(f"guest: {error.split(MARKER, 1)[1]} (console: {self.console_log})")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise LabError(
                        f"no {' or '.join(patterns)!r} on the console within {timeout:.0f} s "
                        f"(console: {self.console_log})"
                    )
                if not self.alive() and (self._reader is None or not self._reader.is_alive()):
                    last = self.lines[-1] if self.lines else "(no output)"
                    raise LabError(
                        f"QEMU exited before {' or '.join(patterns)!r}; last line: {last} "
                        f"(console: {self.console_log})"
                    )
                self._cond.wait(min(left, 0.5))

    def wait_exit(self, timeout: float) -> bool:
        """Whether QEMU exited by itself within `timeout` seconds."""
        if self._proc is None:
            return True
        try:
            self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        if self._reader is not None:
            self._reader.join(timeout=5)
        return True

    def kill(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc.wait(timeout=30)
        if self._reader is not None:
            self._reader.join(timeout=5)


def kvm_usable() -> bool:
    """Whether KVM can be tried at all: /dev/kvm opens and the CPU shows vmx or svm. (Here /dev/kvm
    answers ioctls without either, and a stock kernel then hangs after the decompressor, so the lab
    still proves KVM with a bounded probe boot before using it.)"""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR)
    except OSError:
        return False
    os.close(fd)
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return re.search(r"^flags\s*:.*\b(vmx|svm)\b", flags, re.M) is not None
