"""A crash scenario: boot a Debian kernel in QEMU, arm kdump, run a workload, crash it one way,
let the capture kernel save /proc/vmcore, and check each step from the console.

The guest is driven by a plan (shell variables in plan.sh on the output share) that /init carries
out; every decision about triggers and workloads is made here, on the host.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from kdumpy.errors import LabError, UsageError
from kdumpy.lab import assets, initramfs
from kdumpy.lab.cache import digest, locked
from kdumpy.lab.disk import data_disk
from kdumpy.lab.module import crash_module
from kdumpy.lab.plan import write_plan
from kdumpy.lab.qemu import MARKER, Guest, Running, kvm_usable
from kdumpy.lab.qmp import Qmp

__all__ = [
    "TRIGGERS",
    "WORKLOADS",
    "CrashResult",
    "Scenario",
    "Trigger",
    "choose_accel",
    "guest_python",
    "run_crash",
    "workload_command",
]

GUEST_DIR = Path(__file__).resolve().parent / "guest"
WORKLOAD_SCRIPT = GUEST_DIR / "workload.py"


@dataclass(frozen=True)
class Trigger:
    """One way to crash the first kernel."""

    sysctls: tuple[str, ...]
    """Set in the guest before arming: the policy that turns the event into a panic."""
    command: str
    """Run by /init (busybox sh, host root at /hostroot); {module} and {python} are filled in."""
    expect: tuple[str, ...]
    """Any of these in the dump's log shows the crash came from this trigger."""
    module: bool = False
    disk: bool = False
    nmi: bool = False
    """The host injects an NMI through QMP when the guest says it waits for one."""
    grace: float = 0.0
    """Extra seconds between the trigger and the panic (a watchdog's period)."""


TRIGGERS: dict[str, Trigger] = {
    "sysrq": Trigger((), "echo c > /proc/sysrq-trigger", ("sysrq triggered crash",)),
    "oom": Trigger(
        ("vm.panic_on_oom=1",),
        "chroot /hostroot {python} {workload} oom",
        ("panic_on_oom", "Out of memory"),
        grace=60,
    ),
    # A write to a frozen filesystem waits in D state in sb_start_write; the hung-task detector
    # reports it after hung_task_timeout_secs, checked every as many seconds.
    "hung-task": Trigger(
        ("kernel.hung_task_panic=1", "kernel.hung_task_timeout_secs=5"),
        "fsfreeze --freeze /hostroot/tmp/disk && (echo blocked > /hostroot/tmp/disk/blocked) &",
        ("hung_task: blocked tasks", "blocked for more than"),
        disk=True,
        grace=60,
    ),
    "nmi": Trigger(
        ("kernel.unknown_nmi_panic=1",),
        'say "waiting for nmi"',
        ("NMI: Not continuing", "Kernel panic - not syncing: NMI"),
        nmi=True,
    ),
    "oops": Trigger(
        ("kernel.panic_on_oops=1",),
        "insmod /hostroot{module} action=oops",
        ("kernel NULL pointer dereference",),
        module=True,
    ),
    "bug": Trigger(
        ("kernel.panic_on_oops=1",), "insmod /hostroot{module} action=bug", ("kernel BUG at",), module=True
    ),
    "warn": Trigger(
        ("kernel.panic_on_warn=1",),
        "insmod /hostroot{module} action=warn",
        ("kdumpy_lab_crash: warning on purpose", "panic_on_warn set"),
        module=True,
    ),
    # The soft-lockup watchdog fires after 2 * watchdog_thresh seconds.
    "softlockup": Trigger(
        ("kernel.softlockup_panic=1", "kernel.watchdog_thresh=3"),
        "insmod /hostroot{module} action=softlockup",
        ("soft lockup",),
        module=True,
        grace=60,
    ),
}

WORKLOADS = ("idle", "mix")


@dataclass(frozen=True)
class Scenario:
    """Everything that decides what a crash run produces (and so keys its cached vmcore)."""

    kernel: str = "6.1"
    trigger: str = "sysrq"
    workload: str = "idle"
    ram: str = "1G"
    crashkernel: str = "128M"
    la57: bool = False
    capture_cpus: int = 1
    capture_cmd: str | None = None
    """A shell command run in the capture kernel (chroot into the host root; {out} is the output
    directory's host path, {python} the venv interpreter) instead of dd of /proc/vmcore."""
    elf32: bool = False
    """Arm with `kdumpy load --elf32-core-headers` (kexec_load, ELF32 core headers): the capture
    kernel's /proc/vmcore is then ELFCLASS32."""

    def check(self) -> None:
        if self.kernel not in assets.SERIES:
            raise UsageError(f"--kernel must be one of {', '.join(assets.SERIES)}, not {self.kernel!r}")
        if self.trigger not in TRIGGERS:
            raise UsageError(f"--trigger must be one of {', '.join(TRIGGERS)}, not {self.trigger!r}")
        if self.workload not in WORKLOADS:
            raise UsageError(f"--workload must be one of {', '.join(WORKLOADS)}, not {self.workload!r}")
        if self.capture_cpus < 1:
            raise UsageError("--capture-cpus must be at least 1")

    def name(self) -> str:
        parts = [self.kernel, self.trigger, self.workload, self.ram, f"ck{self.crashkernel}"]
        parts += ["la57"] * self.la57
        parts += ["elf32"] * self.elf32
        if self.capture_cpus != 1:
            parts.append(f"cpus{self.capture_cpus}")
        return "-".join(parts).replace("/", "_")


@dataclass
class CrashResult:
    """What a run left behind, and how long each step took (seconds since QEMU started)."""

    scenario: Scenario
    release: str
    accel: str
    out_dir: Path
    console: Path
    vmcore: Path | None
    timings: dict[str, float] = field(default_factory=dict)
    capture_rc: int | None = None


def guest_python() -> str:
    """The project's own interpreter (the venv's), which the guest runs through the host root.
    Not /usr/bin/python3: the first python3 on PATH may not be Debian's, and kdumpy is installed
    in the venv only."""
    venv = Path(sys.prefix)
    if sys.prefix != sys.base_prefix and (venv / "bin" / "python").exists():
        return str(venv / "bin" / "python")
    return sys.executable


def _accel_probe(k: assets.Kernel, initrd: Path, cache: Path) -> bool:
    """Whether a stock kernel really boots under KVM: reach /init within a bound."""
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        out = Path(tmp)
        write_plan(out, {"LAB_MODE": "probe"})
        guest = Guest(k.vmlinuz, initrd, "console=ttyS0 panic=1 quiet", out, ram="512M", accel="kvm")
        with locked(cache / "locks" / "qemu"), Running(guest, out / "console.log") as run:
            try:
                run.wait_for(MARKER + "probe ok", timeout=60)
                return True
            except LabError:
                return False


def workload_command(workload: str, python: str, report: Path) -> str:
    """The guest's shell command that brings up `workload` (writing its report to `report`, a host
    path the guest sees), or "" for idle."""
    if workload != "mix":
        return ""
    return shlex.join([python, str(WORKLOAD_SCRIPT), "mix", "--disk", "/tmp/disk", "--report", str(report)])


def choose_accel(requested: str, k: assets.Kernel, initrd: Path, cache: Path) -> str:
    """ "kvm" or "tcg". "auto" tries KVM only where it can work, proves it once with a bounded boot,
    and remembers the verdict per host kernel and QEMU."""
    if requested in ("kvm", "tcg"):
        return requested
    if requested != "auto":
        raise UsageError(f"--accel must be auto, kvm or tcg, not {requested!r}")
    if not kvm_usable():
        return "tcg"
    verdict_file = cache / "accel.json"
    key = digest(Path("/proc/sys/kernel/osrelease").read_text(), assets.host_tools()["qemu-system-x86"])
    try:
        verdicts: dict[str, str] = json.loads(verdict_file.read_text())
    except (OSError, ValueError):
        verdicts = {}
    if key not in verdicts:
        verdicts[key] = "kvm" if _accel_probe(k, initrd, cache) else "tcg"
        verdict_file.write_text(json.dumps(verdicts) + "\n")
    return verdicts[key]


def run_crash(
    sc: Scenario,
    out_dir: Path,
    cache: Path,
    *,
    accel: str = "auto",
    timeout: float = 900,
    progress: Callable[[str], None] | None = None,
    echo: IO[str] | None = None,
) -> CrashResult:
    """Run one crash scenario; the capture (out_dir/vmcore unless capture_cmd says otherwise) and a
    console log stay in `out_dir`. Raises LabError with the console's path when a step fails."""
    sc.check()
    say = progress or (lambda _msg: None)
    trigger = TRIGGERS[sc.trigger]
    k = assets.kernel(sc.kernel, cache)
    initrd = initramfs.build(k, cache)
    need_disk = trigger.disk or sc.workload == "mix"
    disk = data_disk(cache) if need_disk else None
    module = crash_module(k, cache) if trigger.module else None
    accel = choose_accel(accel, k, initrd, cache)
    say(f"kernel {k.release} ({k.package} {k.version}), accelerator {accel}")

    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("vmcore", "vmcore.part", "workload.json"):
        (out_dir / stale).unlink(missing_ok=True)
    python = guest_python()
    # Armed with kdumpy's own loader (kexec_file_load through ctypes, or for elf32 kexec_load with
    # ELF32 core headers): the capture kernel gets the kdump guide's options from `kdumpy load`, the
    # lab's own words from --append.
    kexec = [
        python,
        "-m",
        "kdumpy",
        "load",
        *(["--elf32-core-headers"] if sc.elf32 else []),
        "--kernel",
        str(k.vmlinuz),
        "--initrd",
        str(initrd),
        "--command-line",
        "console=ttyS0",
        "--append",
        f"nr_cpus={sc.capture_cpus} panic=1 lab.role=capture",
    ]
    workload_cmd = workload_command(sc.workload, python, out_dir / "workload.json")
    capture_cmd = ""
    if sc.capture_cmd:
        capture_cmd = sc.capture_cmd.format(out=shlex.quote(str(out_dir)), python=shlex.quote(python))
    write_plan(
        out_dir,
        {
            "LAB_MODE": "crash",
            "LAB_SYSCTLS": " ".join(trigger.sysctls),
            "LAB_DISK": "1" if disk else "",
            "LAB_ARM": shlex.join(kexec),
            "LAB_WORKLOAD_CMD": workload_cmd,
            "LAB_TRIGGER": sc.trigger,
            "LAB_TRIGGER_CMD": trigger.command.format(
                module=module, python=shlex.quote(python), workload=shlex.quote(str(WORKLOAD_SCRIPT))
            ),
            "LAB_CAPTURE_CMD": capture_cmd,
        },
    )
    cmdline = f"console=ttyS0 crashkernel={sc.crashkernel} panic=1 quiet loglevel=4 lab.role=first"
    console = out_dir / "console.log"
    result = CrashResult(sc, k.release, accel, out_dir, console, None)
    sock_dir = Path(tempfile.mkdtemp(prefix="kdumpy-lab-"))
    guest = Guest(
        k.vmlinuz,
        initrd,
        cmdline,
        out_dir,
        ram=sc.ram,
        accel=accel,
        la57=sc.la57,
        disk=disk,
        qmp=sock_dir / "qmp.sock",
    )
    try:
        with locked(cache / "locks" / "qemu"), Running(guest, console, echo=echo) as run:
            deadline = time.monotonic() + timeout

            def step(label: str, pattern: str, bound: float, start: int = 0) -> tuple[int, re.Match[str]]:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise LabError(
                        f"scenario {sc.name()} ran out of its {timeout:.0f} s (console: {console})"
                    )
                i, m = run.wait_for(pattern, timeout=min(bound, left), start=start)
                result.timings[label] = round(run.elapsed(), 1)
                say(f"{run.elapsed():6.1f}s  {label}: {m.group(0).split(MARKER)[-1]}")
                return i, m

            i, _ = step("first kernel up", MARKER + "first kernel up", 180)
            i, _ = step("armed", MARKER + "armed", 180, i)
            if workload_cmd:
                i, _ = step("workload ready", MARKER + "workload ready", 400, i)
            i, _ = step("triggered", MARKER + "trigger ", 120, i)
            if trigger.nmi:
                i, _ = step("waiting for nmi", MARKER + "waiting for nmi", 60, i)
                with Qmp(guest.qmp) as qmp:  # type: ignore[arg-type]
                    qmp.command("inject-nmi")
            i, _ = step("capture kernel up", MARKER + "capture kernel up", 180 + trigger.grace, i)
            # The 6.12 capture kernel copies /proc/vmcore over 9p several times slower than 6.1.
            _, m = step("capture done", MARKER + r"capture done rc=(\d+)", 900, i)
            result.capture_rc = int(m.group(1))
            if not run.wait_exit(30):
                say("QEMU did not power off by itself; killed")
            result.timings["exit"] = round(run.elapsed(), 1)
    finally:
        shutil.rmtree(sock_dir, ignore_errors=True)
    if result.capture_rc != 0:
        raise LabError(
            f"the capture in the capture kernel failed (rc={result.capture_rc}; console: {console})"
        )
    if not capture_cmd:
        vmcore = out_dir / "vmcore"
        if not vmcore.exists() or vmcore.stat().st_size == 0:
            raise LabError(f"the capture kernel reported success but left no {vmcore}")
        with vmcore.open("rb") as f:
            if f.read(4) != b"\x7fELF":
                raise LabError(f"{vmcore} is not an ELF file")
        vmcore.chmod(0o600)
        result.vmcore = vmcore
    (out_dir / "result.json").write_text(
        json.dumps(
            {
                "scenario": sc.name(),
                "release": k.release,
                "accel": accel,
                "timings": result.timings,
                "vmcore": result.vmcore.name if result.vmcore else None,
            },
            indent=2,
        )
        + "\n"
    )
    return result
